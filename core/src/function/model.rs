//! The loaded, validated and compiled form of a function.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::expr::Expr;

/// Attempts per step when `retries.attempts` is not given.
pub const DEFAULT_ATTEMPTS: u32 = 4;
/// A step's timeout when it gives none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// A function ready to run: triggers, steps and edges, expressions compiled.
#[derive(Debug, Clone)]
pub struct Function {
    /// The function's id (a slug).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Content hash of the definition: runs are pinned to it.
    pub version: String,
    /// The directory holding `weir.json`; step paths are relative to it.
    pub dir: PathBuf,
    /// The event triggers.
    pub triggers: Vec<Trigger>,
    /// The cron triggers: each tick starts one run (see [`crate::function::SCHEDULED_EVENT`]).
    pub crons: Vec<crate::function::CronTrigger>,
    /// The steps, in definition order (sorted by id).
    pub steps: Vec<Step>,
    /// Step index by id.
    pub index: HashMap<String, usize>,
    /// Outgoing edges of each step: indexes into `edges`.
    pub children: Vec<Vec<usize>>,
    /// Every edge.
    pub edges: Vec<Edge>,
    /// Steps without incoming edges.
    pub roots: Vec<usize>,
    /// The definition as loaded.
    pub definition: Value,
    /// Environment variables for the steps, from the directory's `.env` file (empty without one).
    pub env: std::sync::Arc<Vec<(String, String)>>,
    /// The waits (`async` and `wait` edges) that begin when their parent step completes.
    pub waits: Vec<crate::function::Wait>,
    /// The `cancel` rules: events that cancel a run.
    pub cancels: Vec<crate::function::CancelRule>,
}

/// An event trigger: exact name or one `*` wildcard segment, plus an optional expression.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// `user/signed.up` or `user/*`.
    pub event: String,
    /// Compiled `expression`, if any.
    pub expression: Option<Expr>,
}

/// How a step with several incoming edges joins them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Runs once every edge resolved, if all were taken (the default).
    All,
    /// Runs once, on the first taken edge.
    Any,
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step id (a slug).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The `path` resolved against the function directory.
    pub path: Option<PathBuf>,
    /// `runtime.type`.
    pub runtime_type: String,
    /// The whole `runtime` object.
    pub runtime: Map<String, Value>,
    /// Attempt timeout.
    pub timeout: Duration,
    /// Attempts before the step fails for good.
    pub attempts: u32,
    /// Incoming edges: indexes into [`Function::edges`].
    pub parents: Vec<usize>,
    /// Join semantics.
    pub join: Join,
    /// The wait (index into [`Function::waits`]) of the step's incoming `async` edge, if it
    /// has one: its matched event is the step's `async` input.
    pub async_wait: Option<usize>,
}

/// An edge `parent → child`, taken when `condition` (if any) is true.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Index of the parent step.
    pub parent: usize,
    /// Index of the child step.
    pub child: usize,
    /// Compiled `if` expression; sees `event`, `steps` and `response`.
    pub condition: Option<Expr>,
    /// The wait (index into [`Function::waits`]) this edge belongs to: an `async` or `wait`
    /// edge is resolved when its wait ends, not when the parent completes.
    pub wait: Option<usize>,
    /// Taken when the wait ends without a match (`"onTimeout": true`, and every `wait` edge)
    /// rather than on a match.
    pub on_timeout: bool,
}

impl Function {
    /// `step` of this function as its driver sees it ahead of any attempt
    /// ([`Driver::prepare`](crate::driver::Driver::prepare)).
    pub fn step_spec(&self, step: &Step) -> crate::driver::StepSpec {
        crate::driver::StepSpec {
            function_id: self.id.clone(),
            function_dir: self.dir.clone(),
            step_id: step.id.clone(),
            path: step.path.clone(),
            runtime: step.runtime.clone(),
            env: self.env.clone(),
            timeout: step.timeout,
        }
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// Whether an event named `name` matches any trigger's name pattern.
    pub fn trigger_names(&self) -> impl Iterator<Item = &str> {
        self.triggers.iter().map(|t| t.event.as_str())
    }
}

/// Whether `pattern` (an exact name, or one with `*` segments) matches `name`.
/// Segments are separated by `/`; a `*` segment matches exactly one segment, and a trailing
/// `*` segment matches the rest (`user/*` matches `user/signed.up` and `user/a/b`).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == name;
    }
    let mut pat = pattern.split('/').peekable();
    let mut segs = name.split('/');
    while let Some(p) = pat.next() {
        let last = pat.peek().is_none();
        match segs.next() {
            None => return false,
            Some(_) if p == "*" && last => return true,
            Some(_) if p == "*" => {}
            Some(s) if s == p => {}
            Some(_) => return false,
        }
    }
    segs.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn wildcards_match_segments() {
        assert!(name_matches("user/signed.up", "user/signed.up"));
        assert!(!name_matches("user/signed.up", "user/signed.upx"));
        assert!(name_matches("user/*", "user/signed.up"));
        assert!(name_matches("user/*", "user/a/b"));
        assert!(!name_matches("user/*", "user"));
        assert!(name_matches("*/created", "order/created"));
        assert!(!name_matches("*/created", "order/deleted"));
        assert!(!name_matches("*/created", "a/b/created"));
    }
}
