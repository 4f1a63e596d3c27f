//! DAG resolution: the engine's own cost of driving a 100-step function through memory state,
//! with a no-op in-process driver (what is left is the engine: step start, record, edge
//! resolution, enqueueing, run finish). Two shapes: a chain of 100 and a fan-out/fan-in
//! (1 → 98 → 1).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use weir_broker_memory::MemoryBroker;
use weir_core::broker::{Broker, TOPIC_STEPS};
use weir_core::driver::{Driver, DriverSet, StepRequest, StepResult};
use weir_core::engine::{Engine, EngineConfig, EngineParts};
use weir_core::function::{RuntimeCatalog, parse_function};
use weir_core::state::StepMessage;
use weir_core::{Event, Result};
use weir_state_memory::{MemoryEventStore, MemoryStateStore};

struct Noop;

#[async_trait]
impl Driver for Noop {
    fn kind(&self) -> &str {
        "noop"
    }
    async fn execute(&self, _: StepRequest) -> Result<StepResult> {
        Ok(StepResult {
            success: true,
            stdout: Bytes::from_static(b"{\"ok\":true}"),
            log: String::new(),
            detail: None,
            retryable: None,
        })
    }
}

struct Catalog;

impl RuntimeCatalog for Catalog {
    fn check(&self, _: &str, _: &Map<String, Value>, _: Option<&Path>) -> weir_core::Result<()> {
        Ok(())
    }
}

fn chain() -> Value {
    let mut steps = Map::new();
    for i in 0..100 {
        let mut s = json!({"runtime": {"type": "noop"}});
        if i > 0 {
            s["after"] = json!([{"step": format!("s{:03}", i - 1), "if": "response.ok"}]);
        }
        steps.insert(format!("s{i:03}"), s);
    }
    json!({"id": "chain", "triggers": [{"event": "bench/dag"}], "steps": steps})
}

fn fan() -> Value {
    let mut steps = Map::new();
    steps.insert("root".into(), json!({"runtime": {"type": "noop"}}));
    let mut join = Vec::new();
    for i in 0..98 {
        steps.insert(
            format!("m{i:02}"),
            json!({"runtime": {"type": "noop"}, "after": [{"step": "root"}]}),
        );
        join.push(json!({"step": format!("m{i:02}")}));
    }
    steps.insert(
        "sink".into(),
        json!({"runtime": {"type": "noop"}, "after": join}),
    );
    json!({"id": "fan", "triggers": [{"event": "bench/dag"}], "steps": steps})
}

/// Runs one whole run by pulling step messages off the broker and executing them inline.
async fn one_run(
    engine: &Engine,
    broker: &Arc<MemoryBroker>,
    sub: &mut Box<dyn weir_core::broker::Subscription>,
) {
    let event = Event::from_json(json!({"name": "bench/dag"}), "").expect("event");
    let runs = engine.route(&event).await.expect("route");
    let run_id = &runs[0];
    let _ = broker;
    loop {
        let run = engine
            .state()
            .get_run_state(run_id)
            .await
            .expect("get")
            .expect("run");
        if run.status != weir_core::run::RunStatus::Running {
            assert_eq!(run.status, weir_core::run::RunStatus::Completed);
            return;
        }
        let d = sub.next().await.expect("message");
        let msg: StepMessage = serde_json::from_slice(&d.payload).expect("msg");
        engine.execute(&msg).await.expect("execute");
        d.ack().await.expect("ack");
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, def) in [("chain_100", chain()), ("fan_1_98_1", fan())] {
        let broker = Arc::new(MemoryBroker::new());
        let engine = Engine::new(EngineParts {
            state: Arc::new(MemoryStateStore::new()),
            events: Arc::new(MemoryEventStore::new()),
            broker: broker.clone() as Arc<dyn Broker>,
            drivers: DriverSet::new().with(Arc::new(Noop)),
            config: EngineConfig::default(),
        });
        let f = parse_function(&def, Path::new("/tmp"), "v1".into(), &Catalog).expect("valid");
        engine.functions().replace(vec![f]);
        let mut sub = rt
            .block_on(broker.subscribe(TOPIC_STEPS, "bench"))
            .expect("subscribe");
        c.bench_function(&format!("dag/{name}/whole_run"), |b| {
            b.iter(|| rt.block_on(one_run(&engine, &broker, &mut sub)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
