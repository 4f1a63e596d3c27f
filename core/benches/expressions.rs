//! CEL evaluation cost: a trigger expression against an event, an edge condition over step
//! outputs, and building the trigger variables of an event.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use weir_core::Event;
use weir_core::expr::{Expr, Vars};

fn event() -> Event {
    Event::from_json(
        json!({"name": "user/signed.up",
               "data": {"plan": "pro", "seats": 12, "tags": ["a", "b", "c"], "referrer": "newsletter"},
               "user": {"id": "user-42", "email": "ada@example.com", "created_at": "2024-03-01"}}),
        "",
    )
    .expect("event")
}

fn bench(c: &mut Criterion) {
    let e = event();
    let vars = Vars::for_trigger(&e);
    let trigger = Expr::compile("user.created_at > '2020-01-01'").expect("compiles");
    c.bench_function("expr/trigger_eval", |b| {
        b.iter(|| black_box(trigger.eval_bool(black_box(&vars))))
    });
    let complex = Expr::compile("data.plan == 'pro' && data.seats > 10 && 'b' in data.tags && event.user.email.endsWith('@example.com')")
        .expect("compiles");
    c.bench_function("expr/trigger_eval_complex", |b| {
        b.iter(|| black_box(complex.eval_bool(black_box(&vars))))
    });
    let missing = Expr::compile("data.missing == 'x'").expect("compiles");
    c.bench_function("expr/missing_key", |b| {
        b.iter(|| black_box(missing.eval_bool(black_box(&vars))))
    });
    c.bench_function("expr/vars_for_trigger", |b| {
        b.iter(|| black_box(Vars::for_trigger(black_box(&e))))
    });
    let mut edge_vars = Vars::new();
    edge_vars.set_owned_json(
        "steps",
        json!({"step-1": {"ok": true, "count": 3}, "step-2": {"ok": false}}),
    );
    edge_vars.set_owned_json("response", json!({"ok": true, "count": 3}));
    let edge = Expr::compile("steps['step-1'].ok && response.count >= 3").expect("compiles");
    c.bench_function("expr/edge_eval", |b| {
        b.iter(|| black_box(edge.eval_bool(black_box(&edge_vars))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
