//! Messages the engine fails on are kept, never dropped: a broker that refuses to publish the
//! step messages (a permission error, not retryable) for a while leaves runs waiting, and they
//! complete once it publishes again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{function_dir, run_event};
use serde_json::json;
use weir::core::broker::{Broker, BrokerCapabilities, Subscription, TOPIC_STEPS};
use weir::core::engine::{Engine, EngineConfig, EngineHandle, EngineParts, Roles};
use weir::core::run::RunStatus;
use weir::core::{Error, ErrorKind, Result};

/// A broker that refuses its first `single` publishes and first `batches` batch publishes to
/// the `steps` topic with a non-retryable error, then passes everything to `inner`.
struct RefusingBroker {
    inner: Arc<dyn Broker>,
    single: AtomicUsize,
    batches: AtomicUsize,
}

impl RefusingBroker {
    /// Takes one refusal from `left`; true when this call is refused.
    fn refuse(left: &AtomicUsize, topic: &str) -> bool {
        topic == TOPIC_STEPS
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
    }

    fn refusal() -> Error {
        Error::new(
            ErrorKind::Config,
            "test broker: not authorized to publish to steps",
        )
    }
}

#[async_trait]
impl Broker for RefusingBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        if Self::refuse(&self.single, topic) {
            return Err(Self::refusal());
        }
        self.inner.publish(topic, key, payload).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        if Self::refuse(&self.batches, topic) {
            return Err(Self::refusal());
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
    let (state, events) = weir::registry::open_state("memory://")
        .await
        .expect("state");
    let broker = Arc::new(RefusingBroker {
        inner: weir::registry::open_broker("memory://")
            .await
            .expect("broker"),
        single: AtomicUsize::new(single),
        batches: AtomicUsize::new(batches),
    });
    let engine = Engine::new(EngineParts {
        state,
        events,
        broker: broker.clone(),
        drivers: weir::embedded::default_drivers(None)
            .await
            .expect("drivers"),
        config: EngineConfig {
            stuck_message_delay: Duration::from_millis(100),
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
