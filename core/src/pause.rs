//! Pauses: a run waiting, once a step completed, for an event (an `async` edge) or for a time
//! (a `wait` edge). A pause lives in its run (registered in the same atomic step as the
//! completion that began it) and is filed by the state store under the names (and match keys)
//! of the events it waits for, so that the router finds it without looking at other pauses.
//!
//! How a pause ends decides its edges: a match takes the `onTimeout: false` edges and skips
//! the others; running out of time (`expires_ms`) does the opposite (a sleep's edges are all
//! `onTimeout` edges); a cancelled run's pauses take none.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::state::{Timer, TimerAction};

/// One event a pause waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseSpec {
    /// The exact event name.
    pub event: String,
    /// The match key the pause is filed under (`user.id="u1"`, see
    /// [`crate::function::MatchKey`]); empty when the match has no `async.X == event.Y` term
    /// (then every event of the name is a candidate).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Where a pause is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseStatus {
    /// Waiting for its events (or its time).
    Waiting,
    /// Resumed by a match (with `all`: every spec matched).
    Matched,
    /// Its time ran out (for a sleep: the time came).
    TimedOut,
    /// Its run was cancelled.
    Cancelled,
}

impl PauseStatus {
    /// The status as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseStatus::Waiting => "waiting",
            PauseStatus::Matched => "matched",
            PauseStatus::TimedOut => "timed_out",
            PauseStatus::Cancelled => "cancelled",
        }
    }
}

/// A run's wait that began when `step` completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// The run.
    pub run_id: String,
    /// The run's function.
    pub function_id: String,
    /// The function version the run is pinned to.
    pub function_version: String,
    /// The step whose completion began the wait.
    pub step: String,
    /// Which of that step's waits this is.
    pub ordinal: u32,
    /// The events waited for; empty for a sleep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<PauseSpec>,
    /// Resumes once every spec matched (`all`), not on the first match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// A rule of the function's `cancel` (registered with the run, `step` empty): a match
    /// cancels the run; running out of time does nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancels: bool,
    /// The wait's edges (indexes into the function version's edges) whose `if` held when the
    /// wait began: the ones its end resolves (the others were resolved not taken then).
    /// Empty: every edge of the wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<usize>,
    /// Events that resumed the run's earlier waits: they do not resume this one (A waits for
    /// an approval, then B waits for the next approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The id of the run's trigger event: it never resumes its own run's pauses.
    pub trigger_id: String,
    /// The run's trigger event, kept when a match must be evaluated (its key alone does not
    /// decide it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Event>,
    /// When the wait began, epoch milliseconds.
    pub registered_ms: i64,
    /// When it times out (a sleep: when it ends), epoch milliseconds.
    pub expires_ms: i64,
    /// Where it is.
    pub status: PauseStatus,
    /// The matched events, by spec (`None` where no event matched yet); empty until one did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<Option<Event>>,
    /// When it ended, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<i64>,
}

/// The key of a step's wait within its run: `step/ordinal`.
pub fn pause_key(step: &str, ordinal: u32) -> String {
    format!("{step}/{ordinal}")
}

/// The key of a function's cancel rule within a run: `!cancel/ordinal`.
pub fn cancel_key(ordinal: u32) -> String {
    format!("!cancel/{ordinal}")
}

impl Pause {
    /// The pause's key within its run: `step/ordinal`, or `!cancel/ordinal` for a cancel
    /// rule (step ids hold neither `/` nor `!`).
    pub fn key(&self) -> String {
        if self.cancels {
            cancel_key(self.ordinal)
        } else {
            pause_key(&self.step, self.ordinal)
        }
    }

    /// The pause's id across runs: `run_id/step/ordinal`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.run_id, self.key())
    }

    /// Whether this is a sleep (no events).
    pub fn is_sleep(&self) -> bool {
        self.specs.is_empty()
    }

    /// The timer that ends the pause at `expires_ms` (scheduled by
    /// [`crate::state::StateStore::watch_pauses`]).
    pub fn expiry_timer(&self) -> Timer {
        Timer {
            id: format!("pause:{}", self.id()),
            due_ms: self.expires_ms,
            action: TimerAction::PauseExpires(PauseRef {
                run_id: self.run_id.clone(),
                key: self.key(),
                specs: self.specs.clone(),
            }),
        }
    }

    /// Records `event` as the match of spec `spec` of a waiting pause: answers whether it was
    /// recorded (false: the pause is not waiting, the spec is out of range or matched already,
    /// or the event is the run's trigger). Resolves the pause (`Matched`) when it is done.
    /// Stores apply this under their own atomicity (it is the rule, not the storage).
    pub fn record_match(&mut self, spec: usize, event: &Event, now_ms: i64) -> bool {
        if self.status != PauseStatus::Waiting
            || spec >= self.specs.len()
            || event.id == self.trigger_id
        {
            return false;
        }
        if self.matched.len() != self.specs.len() {
            self.matched = vec![None; self.specs.len()];
        }
        // A spec keeps its first match, and one event fills one spec.
        if self.matched[spec].is_some() || self.matched.iter().flatten().any(|m| m.id == event.id) {
            return false;
        }
        self.matched[spec] = Some(event.clone());
        if !self.all || self.matched.iter().all(Option::is_some) {
            self.status = PauseStatus::Matched;
            self.resolved_ms = Some(now_ms);
        }
        true
    }

    /// Ends a waiting pause with `status` (`TimedOut` or `Cancelled`); false when it was not
    /// waiting.
    pub fn end(&mut self, status: PauseStatus, now_ms: i64) -> bool {
        if self.status != PauseStatus::Waiting {
            return false;
        }
        self.status = status;
        self.resolved_ms = Some(now_ms);
        true
    }

    /// The timeline entry kind of the pause reaching its status.
    pub fn history_kind(&self) -> &'static str {
        match self.status {
            PauseStatus::Waiting => "pause.registered",
            PauseStatus::Matched => "pause.matched",
            PauseStatus::TimedOut if self.is_sleep() => "pause.woke",
            PauseStatus::TimedOut => "pause.timed_out",
            PauseStatus::Cancelled => "pause.cancelled",
        }
    }

    /// The timeline entry of the pause reaching its status (`event` the matching event).
    pub fn history_entry(&self, event: Option<&Event>) -> crate::run::HistoryEntry {
        let mut entry = crate::run::HistoryEntry::now(self.history_kind());
        if !self.step.is_empty() {
            entry = entry.step(&self.step);
        }
        let until = chrono::DateTime::from_timestamp_millis(self.expires_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| self.expires_ms.to_string());
        let names: Vec<&str> = self.specs.iter().map(|s| s.event.as_str()).collect();
        let detail = match (self.status, event) {
            (PauseStatus::Waiting, _) if self.is_sleep() => format!("sleeps until {until}"),
            (PauseStatus::Waiting, _) => {
                let what = if self.all {
                    format!("all of {}", names.join(", "))
                } else {
                    names.join(" or ")
                };
                format!("waits for {what} until {until}")
            }
            (_, Some(e)) => format!("event {} ({})", e.id, e.name),
            (PauseStatus::TimedOut, None) if self.is_sleep() => "the sleep ended".to_string(),
            (PauseStatus::TimedOut, None) => {
                format!("no matching {} by {until}", names.join(" or "))
            }
            _ => String::new(),
        };
        if detail.is_empty() {
            entry
        } else {
            entry.detail(detail)
        }
    }
}

/// A pause named from outside its run (a timer's action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRef {
    /// The run.
    pub run_id: String,
    /// The pause's key within the run (`step/ordinal`).
    pub key: String,
    /// What it is filed under, to unfile it when its run is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<PauseSpec>,
}

impl PauseRef {
    /// The pause as far as unfiling it goes (its id and specs), for when its run is gone.
    pub fn stub(&self) -> Pause {
        let (step, ordinal) = self.key.rsplit_once('/').unwrap_or((&self.key, "0"));
        let cancels = step == "!cancel";
        Pause {
            run_id: self.run_id.clone(),
            function_id: String::new(),
            function_version: String::new(),
            step: if cancels {
                String::new()
            } else {
                step.to_string()
            },
            ordinal: ordinal.parse().unwrap_or(0),
            specs: self.specs.clone(),
            all: false,
            cancels,
            edges: Vec::new(),
            exclude: Vec::new(),
            trigger_id: String::new(),
            trigger: None,
            registered_ms: 0,
            expires_ms: 0,
            status: PauseStatus::Cancelled,
            matched: Vec::new(),
            resolved_ms: None,
        }
    }
}

/// A waiting pause the router found for an incoming event, and which of its specs the event
/// may match.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseHit {
    /// The pause as filed.
    pub pause: Pause,
    /// The spec (index into [`Pause::specs`]).
    pub spec: usize,
}

/// The answer of [`crate::state::StateStore::resume_pause`] and
/// [`crate::state::StateStore::expire_pause`].
#[derive(Debug, Clone, PartialEq)]
pub struct PauseAnswer {
    /// Whether this call changed the pause.
    pub applied: bool,
    /// The pause after the call; `None` when the run has no such pause.
    pub pause: Option<Pause>,
}
