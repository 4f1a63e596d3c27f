//! Checking an event against its JSON Schema: the per-event cost schemas add to ingest (the
//! target is at most 2 µs for a 1 KiB event, the schema compiled once).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use weir_core::schema::EventSchemas;

/// A signup event of about 1 KiB.
fn event() -> Value {
    let tags: Vec<String> = (0..75).map(|i| format!("tag-{i:03}")).collect();
    json!({
        "name": "user/signed.up",
        "id": "01JEXAMPLE0000000000000000",
        "ts": 1_765_000_000_000_i64,
        "user": {"id": "u-123", "email": "ada@example.com"},
        "data": {
            "plan": "pro",
            "seats": 12,
            "company": {"name": "Analytical Engines Ltd", "country": "GB", "size": "11-50"},
            "referrer": "https://example.com/pricing?utm_source=newsletter",
            "tags": tags,
        }
    })
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["name", "data"],
        "properties": {
            "user": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}},
            "data": {
                "type": "object",
                "required": ["plan", "seats"],
                "properties": {
                    "plan": {"enum": ["free", "pro", "team"]},
                    "seats": {"type": "integer", "minimum": 1},
                    "company": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string", "maxLength": 200},
                        "country": {"type": "string", "pattern": "^[A-Z]{2}$"}
                    }},
                    "referrer": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 100}
                }
            }
        }
    })
}

fn bench(c: &mut Criterion) {
    let mut schemas = EventSchemas::new();
    schemas
        .insert("user/signed.up", "1", &schema(), "bench")
        .expect("schema");
    let event = event();
    let size = serde_json::to_vec(&event).expect("json").len();
    assert!((1000..1100).contains(&size), "{size} bytes");
    assert!(schemas.check(0, &event).is_empty());
    c.bench_function("schema check, 1 KiB event, valid", |b| {
        b.iter(|| black_box(schemas.check(0, black_box(&event))))
    });
    let mut bad = event.clone();
    bad["data"]["seats"] = json!(0);
    c.bench_function("schema check, 1 KiB event, one violation", |b| {
        b.iter(|| black_box(schemas.check(0, black_box(&bad))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
