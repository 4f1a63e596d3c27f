//! Trigger matching with 1,000 live functions: the router's per-event cost of finding the
//! functions an event triggers (name index, wildcards, expressions), and of picking the
//! version (live or canary) a matched function starts on.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use weir_core::Event;
use weir_core::engine::{CanaryVersion, FunctionRegistry};
use weir_core::function::{Function, RuntimeCatalog, parse_function};

struct AnyRuntime;

impl RuntimeCatalog for AnyRuntime {
    fn check(
        &self,
        _: &str,
        _: &serde_json::Map<String, Value>,
        _: Option<&Path>,
    ) -> weir_core::Result<()> {
        Ok(())
    }
}

fn function(i: usize) -> Function {
    // 1,000 functions over 100 event names; every tenth has a wildcard trigger; all have an
    // expression.
    let trigger = if i.is_multiple_of(10) {
        json!({"event": format!("app{}/*", i % 100), "expression": "data.plan == 'pro'"})
    } else {
        json!({"event": format!("app{}/event.happened", i % 100), "expression": format!("data.seats > {}", i % 20)})
    };
    let def = json!({"id": format!("fn-{i}"), "triggers": [trigger],
                     "steps": {"s": {"path": "/bin/true", "runtime": {"type": "process"}}}});
    parse_function(&def, Path::new("/tmp"), format!("v{i}"), &AnyRuntime).expect("valid")
}

fn bench(c: &mut Criterion) {
    let registry = FunctionRegistry::new();
    registry.replace((0..1000).map(function).collect());
    let hit = Event::from_json(
        json!({"name": "app7/event.happened", "data": {"plan": "pro", "seats": 15}}),
        "",
    )
    .expect("event");
    let miss = Event::from_json(json!({"name": "nobody/listens", "data": {}}), "").expect("event");
    let matched = registry.matching(&hit);
    assert!(!matched.is_empty(), "the event matches some functions");
    c.bench_function("triggers/1000_functions/matching_event", |b| {
        b.iter(|| black_box(registry.matching(black_box(&hit))))
    });
    c.bench_function("triggers/1000_functions/unmatched_event", |b| {
        b.iter(|| black_box(registry.matching(black_box(&miss))))
    });

    // Canary routing: which version of a matched function an event starts on, with a
    // canary on every function (by event id, and by user key).
    let live: Vec<std::sync::Arc<Function>> = (0..1000)
        .map(|i| std::sync::Arc::new(function(i)))
        .collect();
    for sticky_user in [false, true] {
        let canaries = live
            .iter()
            .map(|f| {
                let mut canary = (**f).clone();
                canary.version = format!("{}-canary", f.version);
                (
                    f.id.clone(),
                    CanaryVersion {
                        function: std::sync::Arc::new(canary),
                        percent: 10,
                        sticky_user,
                    },
                )
            })
            .collect();
        registry.replace_routed(live.clone(), canaries);
        let event = Event::from_json(
            json!({"name": "app7/event.happened", "user": {"id": "user-4711"}}),
            "",
        )
        .expect("event");
        let target = live[7].clone();
        let name = if sticky_user {
            "triggers/canary_routing/by_user"
        } else {
            "triggers/canary_routing/by_event"
        };
        c.bench_function(name, |b| {
            b.iter(|| black_box(registry.routed(black_box(target.clone()), black_box(&event))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
