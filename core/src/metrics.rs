//! What an engine counts, in the Prometheus / OpenMetrics text format (`GET /metrics`).
//!
//! Every process counts what it did itself (events it accepted, runs it started, attempts it
//! ran); a Prometheus server sums the nodes. The series of a function and of its steps exist
//! from the moment the function is loaded, at zero, so `rate()` and alerts see them before
//! the first run. On the hot path a count is an atomic add on a handle looked up by function
//! id (no label set is built per call).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::error::ErrorKind;
use crate::function::Function;
use crate::run::RunStatus;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the step attempt duration buckets: 1 ms to 15 min.
const ATTEMPT_SECONDS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
];

/// The reasons ingest refuses events for, whose series exist at 0 from the start.
const REJECT_REASONS: [&str; 5] = [
    "invalid_input",
    "too_large",
    "timeout",
    "unknown_key",
    "unavailable",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunEndLabels {
    function: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    function: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    function: String,
    step: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdapterJobLabels {
    adapter: &'static str,
    outcome: &'static str,
}

/// How a step attempt ended, as the state store recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The step completed.
    Completed,
    /// The attempt failed and another one is scheduled.
    Retried,
    /// The attempt failed and so did the step (no attempt left, not retryable, or its result
    /// could not be kept).
    Failed,
}

impl AttemptEnd {
    fn as_str(self) -> &'static str {
        match self {
            AttemptEnd::Completed => "completed",
            AttemptEnd::Retried => "retried",
            AttemptEnd::Failed => "failed",
        }
    }
}

/// The engine loop an error counted by [`Metrics::engine_error`] happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Routing an event (creating runs, enqueueing root steps).
    Router,
    /// Handling a step message (attempt, result, next steps).
    Executor,
    /// Firing timers or deleting old runs.
    Scheduler,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Executor => "executor",
            Role::Scheduler => "scheduler",
        }
    }
}

/// Handles of one step's series.
#[derive(Debug)]
struct StepMetrics {
    completed: Counter,
    retried: Counter,
    failed: Counter,
    seconds: Histogram,
}

/// Handles of one function's series (every step of every version loaded).
#[derive(Debug)]
pub struct FunctionMetrics {
    started: Counter,
    completed: Counter,
    failed: Counter,
    cancelled: Counter,
    steps: HashMap<String, StepMetrics>,
}

impl FunctionMetrics {
    /// Counts a run of the function started.
    pub fn run_started(&self) {
        self.started.inc();
    }

    /// Counts a run of the function that finished with `status`.
    pub fn run_finished(&self, status: RunStatus) {
        let counter = match status {
            RunStatus::Completed => &self.completed,
            RunStatus::Failed => &self.failed,
            RunStatus::Cancelled => &self.cancelled,
            RunStatus::Running | RunStatus::Waiting => return,
        };
        counter.inc();
    }

    /// Records that an attempt of `step` spent `took` on its runtime.
    pub fn attempt_took(&self, step: &str, took: Duration) {
        if let Some(s) = self.steps.get(step) {
            s.seconds.observe(took.as_secs_f64());
        }
    }

    /// Counts an attempt of `step` whose end was recorded as `outcome`.
    pub fn attempt_ended(&self, step: &str, outcome: AttemptEnd) {
        let Some(s) = self.steps.get(step) else {
            return;
        };
        let counter = match outcome {
            AttemptEnd::Completed => &s.completed,
            AttemptEnd::Retried => &s.retried,
            AttemptEnd::Failed => &s.failed,
        };
        counter.inc();
    }
}

/// The metrics of one engine, encoded by [`Metrics::encode`].
pub struct Metrics {
    registry: Registry,
    events_accepted: Counter,
    events_rejected: Family<ReasonLabel, Counter>,
    events_unmatched: Counter,
    runs_started: Family<FunctionLabel, Counter>,
    runs_finished: Family<RunEndLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    attempts_running: Gauge<i64, AtomicI64>,
    engine_errors: Family<RoleLabel, Counter>,
    dead_letters: Family<TopicLabel, Counter>,
    runs_swept: Family<OutcomeLabel, Counter>,
    timers_fired: Counter,
    runs_deleted: Counter,
    functions_loaded: Gauge<i64, AtomicI64>,
    adapter_jobs: Family<AdapterJobLabels, Counter>,
    by_function: RwLock<HashMap<String, Arc<FunctionMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("functions", &self.by_function.read().len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn attempt_histogram() -> Histogram {
    Histogram::new(ATTEMPT_SECONDS)
}

impl Metrics {
    /// Every series at zero, under the `weir_` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("weir"),
            events_accepted: Counter::default(),
            events_rejected: Family::default(),
            events_unmatched: Counter::default(),
            runs_started: Family::default(),
            runs_finished: Family::default(),
            attempts: Family::default(),
            attempt_seconds: Family::new_with_constructor(attempt_histogram),
            attempts_running: Gauge::default(),
            engine_errors: Family::default(),
            dead_letters: Family::default(),
            runs_swept: Family::default(),
            timers_fired: Counter::default(),
            runs_deleted: Counter::default(),
            functions_loaded: Gauge::default(),
            adapter_jobs: Family::default(),
            by_function: RwLock::default(),
        };
        let r = &mut m.registry;
        r.register(
            "build",
            "The weir version this process runs",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "events_accepted",
            "Events accepted (stored and published) by this process's ingest",
            m.events_accepted.clone(),
        );
        r.register(
            "events_rejected",
            "Requests of events refused by ingest, by reason (the error kind: invalid_input, too_large, ...)",
            m.events_rejected.clone(),
        );
        r.register(
            "events_unmatched",
            "Events the router found no live function for",
            m.events_unmatched.clone(),
        );
        r.register(
            "runs_started",
            "Runs this process created, by function",
            m.runs_started.clone(),
        );
        r.register(
            "runs_finished",
            "Runs that finished in this process, by function and final status",
            m.runs_finished.clone(),
        );
        r.register(
            "step_attempts",
            "Step attempts this process ran, by function, step and outcome (completed, retried, failed)",
            m.attempts.clone(),
        );
        r.register_with_unit(
            "step_attempt_duration",
            "How long step attempts took on their runtime, by function and step",
            prometheus_client::registry::Unit::Seconds,
            m.attempt_seconds.clone(),
        );
        r.register(
            "step_attempts_running",
            "Step attempts running in this process now",
            m.attempts_running.clone(),
        );
        r.register(
            "engine_errors",
            "Messages the engine failed on and will handle again (state store or broker errors), by role",
            m.engine_errors.clone(),
        );
        r.register(
            "dead_letters",
            "Messages this process gave up on and recorded as dead letters, by topic",
            m.dead_letters.clone(),
        );
        r.register(
            "runs_swept",
            "Stuck runs the sweeper found, by what it did: repaired (steps enqueued again) or failed",
            m.runs_swept.clone(),
        );
        r.register(
            "timers_fired",
            "Timers (retry backoffs, cron ticks, delayed redeliveries) this process fired",
            m.timers_fired.clone(),
        );
        r.register(
            "runs_deleted",
            "Finished runs this process deleted after the run retention",
            m.runs_deleted.clone(),
        );
        r.register(
            "functions_loaded",
            "Live functions loaded in this process",
            m.functions_loaded.clone(),
        );
        r.register(
            "adapter_jobs",
            "Jobs an adapter handled, by adapter and outcome (faktory: pushed, to_weir, fetched, acked, failed, dead)",
            m.adapter_jobs.clone(),
        );
        for reason in REJECT_REASONS {
            let _ = m
                .events_rejected
                .get_or_create_owned(&ReasonLabel { reason });
        }
        for topic in [crate::broker::TOPIC_EVENTS, crate::broker::TOPIC_STEPS] {
            let _ = m.dead_letters.get_or_create_owned(&TopicLabel {
                topic: topic.to_owned(),
            });
        }
        for role in [Role::Router, Role::Executor, Role::Scheduler] {
            // Created at zero, so that an alert on their rate sees them before the first error.
            let _ = m.engine_errors.get_or_create_owned(&RoleLabel {
                role: role.as_str(),
            });
        }
        m
    }

    /// Creates the series of `functions` (at zero where new) and makes them the live set.
    /// Series of functions loaded before stay: their runs may still finish.
    pub fn load<'a>(&self, functions: impl IntoIterator<Item = &'a Function>) {
        let mut map = self.by_function.write();
        // Functions, not versions: a canary is its function's second version.
        let mut ids = std::collections::HashSet::new();
        for f in functions {
            ids.insert(f.id.clone());
            let mut steps: HashMap<String, StepMetrics> = HashMap::new();
            // Steps of versions loaded before keep their handles (a run pinned to an older
            // version may still run them).
            let known = map
                .get(&f.id)
                .map(|m| m.steps.keys().cloned().collect::<Vec<_>>());
            let step_ids = f
                .steps
                .iter()
                .map(|s| s.id.clone())
                .chain(known.into_iter().flatten());
            for step in step_ids {
                if steps.contains_key(&step) {
                    continue;
                }
                let handles = self.step_metrics(&f.id, &step);
                steps.insert(step, handles);
            }
            let run_end = |status: RunStatus| {
                self.runs_finished.get_or_create_owned(&RunEndLabels {
                    function: f.id.clone(),
                    status: status.as_str(),
                })
            };
            let metrics = FunctionMetrics {
                started: self.runs_started.get_or_create_owned(&FunctionLabel {
                    function: f.id.clone(),
                }),
                completed: run_end(RunStatus::Completed),
                failed: run_end(RunStatus::Failed),
                cancelled: run_end(RunStatus::Cancelled),
                steps,
            };
            map.insert(f.id.clone(), Arc::new(metrics));
        }
        self.functions_loaded.set(ids.len() as i64);
    }

    fn step_metrics(&self, function: &str, step: &str) -> StepMetrics {
        let attempts = |outcome: AttemptEnd| {
            self.attempts.get_or_create_owned(&AttemptLabels {
                function: function.to_owned(),
                step: step.to_owned(),
                outcome: outcome.as_str(),
            })
        };
        StepMetrics {
            completed: attempts(AttemptEnd::Completed),
            retried: attempts(AttemptEnd::Retried),
            failed: attempts(AttemptEnd::Failed),
            seconds: self.attempt_seconds.get_or_create_owned(&StepLabels {
                function: function.to_owned(),
                step: step.to_owned(),
            }),
        }
    }

    /// The handles of function `id`'s series; `None` for a function never loaded here.
    pub fn function(&self, id: &str) -> Option<Arc<FunctionMetrics>> {
        self.by_function.read().get(id).cloned()
    }

    /// Counts `n` events accepted by ingest.
    pub fn events_accepted(&self, n: usize) {
        self.events_accepted.inc_by(n as u64);
    }

    /// Counts a request of events refused with an error of `kind`.
    pub fn events_rejected(&self, kind: ErrorKind) {
        self.events_refused(kind.as_str());
    }

    /// Counts a request of events refused for `reason` (an [`ErrorKind`]'s name, or
    /// `unknown_key` for an event key the API does not take).
    pub fn events_refused(&self, reason: &'static str) {
        self.events_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an event that triggered no live function.
    pub fn event_unmatched(&self) {
        self.events_unmatched.inc();
    }

    /// Counts a message from `topic` recorded as a dead letter.
    pub fn dead_lettered(&self, topic: &str) {
        self.dead_letters
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc();
    }

    /// Counts a stuck run the sweeper `outcome` (`repaired`, `failed`).
    pub fn run_swept(&self, outcome: &'static str) {
        self.runs_swept
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts an error the engine's `role` loop failed on (the message is handled again).
    pub fn engine_error(&self, role: Role) {
        self.engine_errors
            .get_or_create(&RoleLabel {
                role: role.as_str(),
            })
            .inc();
    }

    /// Counts `n` jobs of `adapter` that ended in `outcome` (an adapter's own words:
    /// `pushed`, `acked`, …).
    pub fn adapter_jobs(&self, adapter: &'static str, outcome: &'static str, n: u64) {
        self.adapter_jobs
            .get_or_create(&AdapterJobLabels { adapter, outcome })
            .inc_by(n);
    }

    /// Counts a timer fired (its action done).
    pub fn timer_fired(&self) {
        self.timers_fired.inc();
    }

    /// Counts `n` finished runs deleted after the retention.
    pub fn runs_deleted(&self, n: usize) {
        self.runs_deleted.inc_by(n as u64);
    }

    /// Counts an attempt running until the returned guard is dropped.
    pub fn attempt_running(&self) -> RunningGuard<'_> {
        self.attempts_running.inc();
        RunningGuard {
            gauge: &self.attempts_running,
        }
    }

    /// Every series in the OpenMetrics text format (served with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps [`Metrics`]'s running-attempts gauge raised while alive.
#[derive(Debug)]
pub struct RunningGuard<'a> {
    gauge: &'a Gauge<i64, AtomicI64>,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::function::test_support::function_from;

    fn function(id: &str, version: &str, steps: &[&str]) -> Function {
        let steps: Map<String, Value> = steps
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    json!({"path": "http://x/", "runtime": {"type": "http"}}),
                )
            })
            .collect();
        let doc = json!({"id": id, "triggers": [{"event": "a/b"}], "steps": steps});
        function_from(&doc, version)
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn loaded_functions_have_series_at_zero_and_counts_survive_a_reload() {
        let m = Metrics::new();
        m.load(&[function("f", "v1", &["a", "b"])]);
        let text = m.encode();
        assert_eq!(
            value(&text, r#"weir_runs_started_total{function="f"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(
                &text,
                r#"weir_step_attempts_total{function="f",step="b",outcome="retried"}"#
            ),
            Some(0.0)
        );
        let f = m.function("f").expect("loaded");
        f.run_started();
        f.attempt_took("a", Duration::from_millis(3));
        f.attempt_ended("a", AttemptEnd::Retried);
        f.attempt_took("a", Duration::from_millis(30));
        f.attempt_ended("a", AttemptEnd::Completed);
        f.run_finished(RunStatus::Completed);

        // v2 drops step `a` and adds `c`: a run pinned to v1 may still run `a`.
        m.load(&[
            function("f", "v2", &["b", "c"]),
            function("g", "v1", &["x"]),
        ]);
        let f2 = m.function("f").expect("loaded");
        f2.run_started();
        f2.attempt_took("a", Duration::from_secs(2));
        f2.attempt_ended("a", AttemptEnd::Failed);
        f2.attempt_took("c", Duration::from_millis(1));
        f2.attempt_ended("c", AttemptEnd::Completed);
        let text = m.encode();
        assert_eq!(
            value(&text, r#"weir_runs_started_total{function="f"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"weir_runs_finished_total{function="f",status="completed"}"#
            ),
            Some(1.0)
        );
        let attempts = |step: &str, outcome: &str| {
            value(
                &text,
                &format!(
                    r#"weir_step_attempts_total{{function="f",step="{step}",outcome="{outcome}"}}"#
                ),
            )
        };
        assert_eq!(attempts("a", "retried"), Some(1.0));
        assert_eq!(attempts("a", "completed"), Some(1.0));
        assert_eq!(attempts("a", "failed"), Some(1.0));
        assert_eq!(attempts("c", "completed"), Some(1.0));
        let duration = |what: &str| {
            value(
                &text,
                &format!(r#"weir_step_attempt_duration_seconds_{what}{{function="f",step="a"}}"#),
            )
        };
        assert_eq!(duration("count"), Some(3.0));
        assert!((duration("sum").unwrap() - 2.033).abs() < 1e-9, "{text}");
        assert_eq!(
            value(
                &text,
                r#"weir_step_attempt_duration_seconds_bucket{le="0.005",function="f",step="a"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "weir_functions_loaded"), Some(2.0));
        assert!(m.function("never").is_none());
    }

    #[test]
    fn engine_counters_and_the_running_gauge() {
        let m = Metrics::new();
        m.events_accepted(3);
        m.events_rejected(ErrorKind::TooLarge);
        m.events_refused("unknown_key");
        m.event_unmatched();
        m.engine_error(Role::Executor);
        m.timer_fired();
        m.runs_deleted(5);
        let running = m.attempt_running();
        let text = m.encode();
        assert_eq!(value(&text, "weir_step_attempts_running"), Some(1.0));
        drop(running);
        let after = m.encode();
        assert_eq!(value(&after, "weir_step_attempts_running"), Some(0.0));
        for (series, expected) in [
            ("weir_events_accepted_total", 3.0),
            (r#"weir_events_rejected_total{reason="too_large"}"#, 1.0),
            (r#"weir_events_rejected_total{reason="unknown_key"}"#, 1.0),
            ("weir_events_unmatched_total", 1.0),
            (r#"weir_engine_errors_total{role="executor"}"#, 1.0),
            (r#"weir_engine_errors_total{role="router"}"#, 0.0),
            ("weir_timers_fired_total", 1.0),
            ("weir_runs_deleted_total", 5.0),
        ] {
            assert_eq!(value(&after, series), Some(expected), "{series} in {after}");
        }
        assert!(after.contains(&format!(
            "weir_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(after.ends_with("# EOF\n"));
    }
}
