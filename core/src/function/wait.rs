//! Waits: what an `async` edge (an event, or any or all of several) or a `wait` edge (a
//! duration or a time) makes a run wait for once the edge's parent step completes.

use std::time::Duration;

use crate::expr::Expr;
use crate::function::matcher::MatchKey;

/// A wait begun by a step's completion. Edges from one parent with the same `async` object
/// (apart from `onTimeout`) share one wait, so that a match takes the `onTimeout: false` edges
/// and skips the `onTimeout: true` ones, and a timeout does the opposite.
#[derive(Debug, Clone)]
pub struct Wait {
    /// The parent step (index into [`crate::function::Function::steps`]).
    pub parent: usize,
    /// Which of the parent's waits this is (0, 1, …), as pauses name it.
    pub ordinal: u32,
    /// The edges it resolves (indexes into [`crate::function::Function::edges`]).
    pub edges: Vec<usize>,
    /// What it waits for.
    pub kind: WaitKind,
}

/// What a wait waits for.
#[derive(Debug, Clone)]
pub enum WaitKind {
    /// Events (`async`).
    Event(EventWait),
    /// Time (`wait`).
    Sleep(Sleep),
}

/// An `async` edge's wait for events.
#[derive(Debug, Clone)]
pub struct EventWait {
    /// The events waited for: one, or the `any` / `all` list.
    pub specs: Vec<EventSpec>,
    /// How the specs combine.
    pub mode: WaitMode,
    /// How long the wait lasts, from the parent's completion.
    pub ttl: Duration,
    /// How far back before the pause was registered an event still counts; `None`: since the
    /// run's trigger event (its `ts`).
    pub lookback: Option<Duration>,
}

/// How the specs of a wait combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// A single `{event, match}`.
    One,
    /// `any`: the first event matching any spec resumes the run.
    Any,
    /// `all`: the run resumes once every spec has matched.
    All,
}

/// One event a wait accepts: its name and `match`.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// The exact event name.
    pub event: String,
    /// The compiled `match` (`event` = the run's trigger, `async` = the incoming event);
    /// `None`: any event of the name matches.
    pub matcher: Option<Expr>,
    /// The `async.X == event.Y` term of the match, by which pauses are filed.
    pub key: Option<MatchKey>,
    /// Whether the key is the whole match (no expression to evaluate once found by key).
    pub key_decides: bool,
}

/// A rule of the function's `cancel`: an event (with its `if`, seen as a match) that cancels a
/// run, within `timeout` of its start.
#[derive(Debug, Clone)]
pub struct CancelRule {
    /// The event and its `if` (`event` = the run's trigger, `async` = the incoming event).
    pub spec: EventSpec,
    /// How long after the run starts the rule holds; `None`: until the run ends.
    pub timeout: Option<Duration>,
}

/// A `wait` edge's time.
#[derive(Debug, Clone)]
pub enum Sleep {
    /// A fixed time after the parent's completion.
    For(Duration),
    /// An expression (`event`, `steps`, `response`) giving an RFC 3339 time or epoch seconds.
    Until(Expr),
}

/// The time a `wait` expression's result names, epoch milliseconds: an RFC 3339 string
/// (`2026-12-24T18:00:00Z`) or a number of epoch seconds.
pub fn time_of(value: &serde_json::Value) -> Result<i64, String> {
    match value {
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                format!("{s:?} is not an RFC 3339 time ({e}), e.g. \"2026-12-24T18:00:00Z\"")
            }),
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e11)
            .map(|f| (f * 1000.0) as i64)
            .ok_or_else(|| format!("{n} is not a time in epoch seconds")),
        other => Err(format!(
            "must give an RFC 3339 time or epoch seconds, got {}",
            crate::event::type_name(other)
        )),
    }
}
