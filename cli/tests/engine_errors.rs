//! Messages the engine fails on are kept until the cause is fixed: a broker that refuses to
//! publish the step messages (a permission error, not retryable) for a while leaves runs
//! waiting, and they complete once it publishes again. A message the broker refuses for good
//! for itself (not a permission: that would fail every message at once) becomes a dead letter
//! and fails its run. A result the state store refuses for good fails its attempt instead of
//! running the step again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{function_dir, run_event};
use serde_json::json;
use weir::core::broker::{Broker, BrokerCapabilities, Subscription, TOPIC_EVENTS, TOPIC_STEPS};
use weir::core::engine::{Engine, EngineConfig, EngineHandle, EngineParts, Roles};
use weir::core::events::EventStore;
use weir::core::run::{Run, RunFilter, RunStatus, RunSummary, StepStatus};
use weir::core::state::{
    AttemptOutcome, CreateRun, EdgeJoin, EdgeTally, JoinRule, RunState, StartAttempt, StateStore,
    Timer, Transition,
};
use weir::core::{Error, ErrorKind, Result};

/// A broker that refuses its first `single` publishes and first `batches` batch publishes to
/// the `steps` topic with a non-retryable error of kind `refusal`, then passes everything to
/// `inner`.
struct RefusingBroker {
    inner: Arc<dyn Broker>,
    single: AtomicUsize,
    batches: AtomicUsize,
    refusal: ErrorKind,
    /// The topic refused.
    topic: &'static str,
}

impl RefusingBroker {
    /// Takes one refusal from `left`; true when this call is refused.
    fn refuse(&self, left: &AtomicUsize, topic: &str) -> bool {
        topic == self.topic
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    fn refusal(&self) -> Error {
        let message = match self.refusal {
            ErrorKind::Config => "test broker: not authorized to publish to steps",
            _ => "test broker: this message is refused",
        };
        Error::new(self.refusal, message)
    }
}

#[async_trait]
impl Broker for RefusingBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        if self.refuse(&self.single, topic) {
            return Err(self.refusal());
        }
        self.inner.publish(topic, key, payload).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        if self.refuse(&self.batches, topic) {
            return Err(self.refusal());
        }
        self.inner.publish_batch(topic, messages).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        self.inner.subscribe(topic, group).await
    }
}

/// An engine on memory state whose broker refuses `single` and `batches` step publishes.
async fn engine_refusing(
    dir: &std::path::Path,
    single: usize,
    batches: usize,
) -> (Engine, EngineHandle, Arc<RefusingBroker>) {
    engine_refusing_as(dir, single, batches, ErrorKind::Config).await
}

/// [`engine_refusing`] on memory stores, refusing with errors of kind `refusal`
/// (`Unavailable`: the `events` topic; else the `steps` topic).
async fn engine_refusing_as(
    dir: &std::path::Path,
    single: usize,
    batches: usize,
    refusal: ErrorKind,
) -> (Engine, EngineHandle, Arc<RefusingBroker>) {
    let stores = weir::App::default()
        .registry()
        .open_state("memory://")
        .await
        .expect("state");
    engine_on_parts(dir, stores.state, stores.events, single, batches, refusal).await
}

/// [`engine_refusing`] on the given state store.
async fn engine_on_parts(
    dir: &std::path::Path,
    state: Arc<dyn StateStore>,
    events: Arc<dyn EventStore>,
    single: usize,
    batches: usize,
    refusal: ErrorKind,
) -> (Engine, EngineHandle, Arc<RefusingBroker>) {
    let broker = Arc::new(RefusingBroker {
        inner: weir::App::default()
            .registry()
            .open_broker("memory://")
            .await
            .expect("broker"),
        single: AtomicUsize::new(single),
        batches: AtomicUsize::new(batches),
        refusal,
        topic: if refusal == ErrorKind::Unavailable {
            TOPIC_EVENTS
        } else {
            TOPIC_STEPS
        },
    });
    let engine = Engine::new(EngineParts {
        state,
        events,
        broker: broker.clone(),
        drivers: weir::App::default()
            .drivers(&Default::default())
            .await
            .expect("drivers"),
        config: EngineConfig {
            stuck_message_delay: Duration::from_millis(100),
            ingest_deadline: Duration::from_millis(300),
            scheduler_tick: Duration::from_millis(5),
            ..EngineConfig::default()
        },
    });
    let loaded = weir::functions::load_all(dir, engine.drivers());
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    engine.functions().replace(loaded.functions);
    let handle = engine.start(Roles::ALL).await.expect("start");
    (engine, handle, broker)
}

fn step(after: Option<&str>) -> serde_json::Value {
    let mut step =
        json!({"path": "file://./steps/ok", "runtime": {"type": "process"}, "timeout": "10s"});
    if let Some(parent) = after {
        step["after"] = json!([{ "step": parent }]);
    }
    step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_root_steps_cannot_be_enqueued_is_routed_again() {
    let def =
        json!({"id": "roots", "triggers": [{"event": "t/roots"}], "steps": {"a": step(None)}});
    let f = function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)]);
    let (engine, handle, broker) = engine_refusing(&f.dir, 0, 2).await;
    let run = run_event(&engine, "roots", &json!({"name": "t/roots"})).await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{:#?}", run.history);
    assert_eq!(run.steps["a"].attempts, 1);
    assert_eq!(
        broker.batches.load(Ordering::SeqCst),
        0,
        "both refusals were met"
    );
    // Each refusal is an engine error of the router; the run is counted once.
    let metrics = engine.metrics().encode();
    assert!(
        metrics.contains("weir_engine_errors_total{role=\"router\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_runs_started_total{function=\"roots\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_child_cannot_be_enqueued_moves_the_run_on_later() {
    let def = json!({"id": "chain", "triggers": [{"event": "t/chain"}],
                     "steps": {"a": step(None), "b": step(Some("a")), "c": step(Some("b"))}});
    let f = function_dir(
        &def,
        &[(
            "ok",
            r#"echo x >> "$(dirname "$0")/../$WEIR_STEP_ID.count"; echo '{"ok": true}'"#,
        )],
    );
    let (engine, handle, broker) = engine_refusing(&f.dir, 3, 0).await;
    let run = run_event(&engine, "chain", &json!({"name": "t/chain"})).await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{:#?}", run.history);
    assert_eq!(broker.single.load(Ordering::SeqCst), 0);
    for id in ["a", "b", "c"] {
        assert_eq!(run.steps[id].attempts, 1, "{id}");
        let count = std::fs::read_to_string(f.dir.join(format!("{id}.count"))).expect("ran");
        assert_eq!(
            count.lines().count(),
            1,
            "{id} ran once: its result was kept"
        );
    }
}

/// A broker that refuses to publish step messages for good: the step whose child cannot be
/// enqueued fails `dead_letter_after` (5) times, then its message is a dead letter and its run
/// is failed, saying why, instead of staying `running` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_for_good_fails_the_run_with_a_dead_letter() {
    let def = json!({"id": "stuck", "triggers": [{"event": "t/stuck"}],
                     "steps": {"a": step(None), "b": step(Some("a"))}});
    let f = function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)]);
    // Root steps go out as a batch (let through); `b` goes out alone: refused, always, for
    // itself (a permission refused would keep it instead: see the test above).
    let (engine, handle, _broker) =
        engine_refusing_as(&f.dir, usize::MAX, 0, ErrorKind::InvalidInput).await;
    let run = run_event(&engine, "stuck", &json!({"name": "t/stuck"})).await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Failed, "{:#?}", run.history);
    assert_eq!(run.steps["a"].status, StepStatus::Completed);
    let dead = engine
        .state()
        .list_dead_letters(None, 10)
        .await
        .expect("dead letters");
    assert_eq!(dead.items.len(), 1, "{dead:#?}");
    let letter = &dead.items[0];
    assert_eq!(letter.run_id.as_deref(), Some(run.id.as_str()));
    assert_eq!(letter.deliveries, 5);
    assert!(letter.reason.contains("is refused"), "{}", letter.reason);
    let last = run.history.last().expect("timeline");
    assert_eq!(last.kind, "run.failed");
    assert!(
        last.detail
            .as_deref()
            .is_some_and(|d| d.contains(&letter.id) && d.contains("is refused")),
        "{last:?}"
    );
}

/// A broker that refuses to publish events (unavailable) for longer than ingest's deadline:
/// ingest still answers with the ids, having handed the events' routing to the scheduler (a
/// timer per event in the state store: an outbox), and their runs start through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_broker_will_not_take_are_routed_later_and_accepted() {
    let def =
        json!({"id": "outbox", "triggers": [{"event": "t/outbox"}], "steps": {"a": step(None)}});
    let f = function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)]);
    // Every batch publish of events is refused; the scheduler's single publishes go through.
    let (engine, handle, broker) =
        engine_refusing_as(&f.dir, 0, usize::MAX, ErrorKind::Unavailable).await;
    let run = run_event(&engine, "outbox", &json!({"name": "t/outbox"})).await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{:#?}", run.history);
    let refused = usize::MAX - broker.batches.load(Ordering::SeqCst);
    assert!(
        refused >= 2,
        "the batch publish was tried again within the deadline: {refused}"
    );
    assert!(
        engine
            .events()
            .get(&run.event.id)
            .await
            .expect("get")
            .is_some(),
        "the event is stored"
    );
}

/// A memory state store that refuses, for good (not retryable), to record a completed attempt
/// whose output holds `"huge"`; every other call goes to the memory store.
struct RefusingStore(Arc<dyn StateStore>);

#[async_trait]
impl StateStore for RefusingStore {
    async fn finish_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
    ) -> Result<Transition> {
        if let AttemptOutcome::Completed { output, .. } = outcome
            && output.get("huge").is_some()
        {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "test store: this output cannot be kept",
            ));
        }
        self.0
            .finish_attempt(run_id, step_id, attempt, outcome)
            .await
    }

    async fn create_run(&self, run: &Run) -> Result<CreateRun> {
        self.0.create_run(run).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<Run>> {
        self.0.get_run(run_id).await
    }
    async fn get_run_state(&self, run_id: &str) -> Result<Option<RunState>> {
        self.0.get_run_state(run_id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        self.0.list_runs(filter).await
    }
    async fn start_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<StartAttempt> {
        self.0
            .start_attempt(run_id, step_id, attempt, now_ms, lease_ms)
            .await
    }
    async fn start_attempt_with_state(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<(StartAttempt, Option<RunState>)> {
        self.0
            .start_attempt_with_state(run_id, step_id, attempt, now_ms, lease_ms)
            .await
    }
    async fn renew_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        until_ms: i64,
    ) -> Result<bool> {
        self.0
            .renew_attempt(run_id, step_id, attempt, until_ms)
            .await
    }
    async fn retry_attempt(
        &self,
        run_id: &str,
        step_id: &str,
        attempt: u32,
        error: &str,
        log: Option<&str>,
        timer: &Timer,
    ) -> Result<bool> {
        self.0
            .retry_attempt(run_id, step_id, attempt, error, log, timer)
            .await
    }
    async fn transition_step(
        &self,
        run_id: &str,
        step_id: &str,
        from: StepStatus,
        to: StepStatus,
        detail: Option<&str>,
    ) -> Result<Transition> {
        self.0
            .transition_step(run_id, step_id, from, to, detail)
            .await
    }
    async fn resolve_edge(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
    ) -> Result<EdgeTally> {
        self.0.resolve_edge(run_id, child, parent, taken).await
    }
    async fn resolve_edge_and_join(
        &self,
        run_id: &str,
        child: &str,
        parent: &str,
        taken: bool,
        rule: JoinRule,
        skip_reason: &str,
    ) -> Result<EdgeJoin> {
        self.0
            .resolve_edge_and_join(run_id, child, parent, taken, rule, skip_reason)
            .await
    }
    async fn finish_run(&self, run_id: &str, status: RunStatus) -> Result<bool> {
        self.0.finish_run(run_id, status).await
    }
    async fn delete_finished_runs(&self, ended_before_ms: i64, limit: usize) -> Result<usize> {
        self.0.delete_finished_runs(ended_before_ms, limit).await
    }
    async fn schedule_timer(&self, timer: &Timer) -> Result<()> {
        self.0.schedule_timer(timer).await
    }
    async fn claim_due_timers(
        &self,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Vec<Timer>> {
        self.0.claim_due_timers(now_ms, limit, lease_ms).await
    }
    async fn complete_timer(&self, timer_id: &str) -> Result<()> {
        self.0.complete_timer(timer_id).await
    }
    async fn put_blob(&self, id: &str, data: Bytes, ttl: Duration) -> Result<()> {
        self.0.put_blob(id, data, ttl).await
    }
    async fn get_blob(&self, id: &str) -> Result<Option<Bytes>> {
        self.0.get_blob(id).await
    }
    async fn claim_blob(&self, id: &str, data: Bytes, ttl: Duration) -> Result<bool> {
        self.0.claim_blob(id, data, ttl).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_store_refuses_fails_the_attempt_and_the_step_runs_once() {
    let def = json!({"id": "refused", "triggers": [{"event": "t/refused"}],
                     "steps": {"a": step(None), "b": step(Some("a"))}});
    let f = function_dir(
        &def,
        &[(
            "ok",
            r#"echo x >> "$(dirname "$0")/../$WEIR_STEP_ID.count"; echo '{"huge": true}'"#,
        )],
    );
    let stores = weir::App::default()
        .registry()
        .open_state("memory://")
        .await
        .expect("state");
    let (state, events) = (stores.state, stores.events);
    let state: Arc<dyn StateStore> = Arc::new(RefusingStore(state));
    let (engine, handle, _) = engine_on_parts(&f.dir, state, events, 0, 0, ErrorKind::Config).await;
    let run = run_event(&engine, "refused", &json!({"name": "t/refused"})).await;
    // Time for a redelivery (100 ms here) to run the step again, were it going to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.shutdown().await;
    assert_eq!(run.status, RunStatus::Failed, "{:#?}", run.history);
    let a = &run.steps["a"];
    assert_eq!(a.status, StepStatus::Failed);
    let error = a.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("weir could not record its output")
            && error.contains("this output cannot be kept"),
        "{error}"
    );
    assert_eq!(run.steps["b"].status, StepStatus::Skipped);
    let count = std::fs::read_to_string(f.dir.join("a.count")).expect("a ran");
    assert_eq!(count.lines().count(), 1, "a ran once");
    // Counted as recorded: the step answered, but its attempt failed.
    let metrics = engine.metrics().encode();
    for (outcome, n) in [("completed", 0), ("failed", 1)] {
        let series = format!(
            "weir_step_attempts_total{{function=\"refused\",step=\"a\",outcome=\"{outcome}\"}} {n}\n"
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

/// A step message for a run pinned to a function version this node has not loaded (its
/// `weir.json` changed and the node restarted) is not a transient error: the executor hands it
/// back with a delay growing to `stuck_message_delay` (it used to retry every 500 ms for good),
/// and the error says what is missing. The attempt's lease is handed back, so a node that has
/// the version takes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_pinned_to_a_version_no_node_has_waits_with_a_clear_error() {
    let def =
        json!({"id": "pinned", "triggers": [{"event": "t/pinned"}], "steps": {"a": step(None)}});
    let f = function_dir(&def, &[("ok", r#"echo '{"ok": true}'"#)]);
    let (engine, handle, _) = engine_refusing(&f.dir, 0, 0).await;
    let event = weir::core::Event::from_json(json!({"name": "t/pinned"}), "").expect("event");
    let key = format!("pinned:0123456789abcdef:{}", event.id);
    let mut a = weir::core::run::StepState::pending();
    a.status = StepStatus::Queued;
    let run = Run {
        id: Run::id_for_key(&key, &event.id),
        key,
        function_id: "pinned".into(),
        function_version: "0123456789abcdef".into(),
        fn_version: None,
        event,
        status: RunStatus::Running,
        steps: [("a".to_string(), a)].into_iter().collect(),
        created_at: weir::core::event::now_ms(),
        ended_at: None,
        history: Vec::new(),
        pauses: Default::default(),
    };
    engine.state().create_run(&run).await.expect("create");
    let msg = weir::core::state::StepMessage {
        run_id: run.id.clone(),
        step_id: "a".into(),
        attempt: 1,
    };
    let err = engine
        .execute(&msg)
        .await
        .expect_err("no node has the version");
    handle.shutdown().await;
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("pinned")
            && text.contains("0123456789abcdef")
            && text.contains("nor stored in the catalog"),
        "{text}"
    );
    let again = engine
        .state()
        .start_attempt(&run.id, "a", 1, weir::core::event::now_ms(), 30_000)
        .await
        .expect("start");
    assert_eq!(again, StartAttempt::Started, "the lease was handed back");
}
