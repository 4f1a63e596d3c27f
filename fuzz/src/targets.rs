//! The fuzz targets: each parser of outside input, and what must hold of its answers.

use std::path::Path;

use serde_json::{Map, Value};
use weir_core::engine::parse_body;
use weir_core::expr::{Expr, Vars};
use weir_core::function::RuntimeCatalog;

use crate::Target;

/// Every target.
pub const ALL: &[Target] = &[
    Target {
        name: "event-body",
        about: "POST /e bodies: one event or a batch (engine::parse_body); an accepted event parses back from its own JSON unchanged",
        seeds: &[
            r#"{"name": "user/signed.up", "data": {"plan": "pro"}, "user": {"id": "u1"}}"#,
            r#"[{"name": "a", "id": "x1", "ts": 1700000000000, "v": "2"}, {"name": "b", "data": [1, 2.5, null]}]"#,
            r#"{"name": "t/ünïcode", "data": {"s": "\ud83d\ude00\n\t\""}, "user": {"email": "a@b.c"}}"#,
        ],
        json: true,
        run: event_body,
    },
    Target {
        name: "function-definition",
        about: "weir.json documents (function::parse_function): triggers, CEL, steps, edges, waits, retries, cancel rules",
        seeds: &[
            include_str!("../../examples/signup/weir.json"),
            include_str!("../../examples/signup-2022/weir.json"),
            include_str!("../../examples/wasm-greet/weir.json"),
            r#"{"id": "w", "triggers": [{"event": "a/b", "expression": "event.data.n > 1"}, {"cron": "*/5 * * * *"}],
                "cancel": [{"event": "a/cancel", "if": "async.data.id == event.data.id", "timeout": "1h"}],
                "steps": {"a": {"path": "file://./steps/a", "retries": {"attempts": 2}},
                          "b": {"path": "file://./steps/b", "after": [{"step": "a", "async": {"event": "a/more", "match": "async.user.id == event.user.id", "ttl": "2d", "lookback": "1h"}}]},
                          "c": {"path": "file://./steps/c", "after": [{"step": "a", "async": {"any": [{"event": "x/y", "ttl": "1m"}]}, "onTimeout": true}]},
                          "d": {"path": "file://./steps/d", "after": [{"step": "b", "wait": "event.data.at"}, {"step": "c", "if": "output.ok"}], "join": "any"}}}"#,
        ],
        json: true,
        run: function_definition,
    },
    Target {
        name: "cel",
        about: "CEL expressions (expr::Expr::compile), evaluated against an event",
        seeds: &[
            "event.data.plan == 'pro' && size(event.user.id) > 0",
            "user.created_at > '2020-01-01' || has(event.data.x)",
            "event.data.items.exists(i, i.price * 2.5 >= 10.0) ? 'a' : 'b'",
            "[1, 2, 3].map(x, x + 1)[0] in {'a': 1}",
            "event.name.startsWith('user/') && event.data.n % 3 != 0",
        ],
        json: false,
        run: cel,
    },
    Target {
        name: "duration",
        about: "durations (duration::parse_duration): timeouts, ttl, retention",
        seeds: &["30s", "1h 30m", "500ms", "7d", "2w", "1y", "0s", "1.5h"],
        json: false,
        run: duration,
    },
    Target {
        name: "urls",
        about: "driver URLs: Redis state, Redis/AMQP/SQS/Kafka brokers, the Faktory adapter",
        seeds: &[
            "redis://:secret@127.0.0.1:6379/2?prefix=weir&retention=1d",
            "rediss://user:pw@redis.example:6380/0?ca_file=/etc/ca.pem",
            "amqp://guest:guest@127.0.0.1:5672/%2f?prefetch=64&queue_type=quorum",
            "sqs://?region=us-east-1&endpoint=http://127.0.0.1:5000&prefix=weir&visibility=30s",
            "kafka://127.0.0.1:9092,127.0.0.1:9093?group=weir&topics=create",
            "faktory://:password@127.0.0.1:7419?queues=default,critical",
            "tcp://127.0.0.1:7419",
        ],
        json: false,
        run: urls,
    },
    Target {
        name: "celery",
        about: "Celery task messages: kombu's Redis envelope (celery::redis_envelope::decode) and protocol 2 headers and body (TaskMessage::decode)",
        seeds: &[
            r#"{"body": "W1s0LCA0XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-type": "application/json", "content-encoding": "utf-8", "headers": {"lang": "py", "task": "tasks.add", "id": "d6a4f3c2-0000-4000-8000-000000000001", "root_id": "d6a4f3c2-0000-4000-8000-000000000001", "parent_id": null, "group": null, "eta": null, "retries": 0, "argsrepr": "(4, 4)", "kwargsrepr": "{}"}, "properties": {"correlation_id": "d6a4f3c2-0000-4000-8000-000000000001", "reply_to": "abc", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "x"}}"#,
            r#"{"body": "W1tdLCB7ImEiOiAxfSwge31d", "content-type": "application/json", "content-encoding": "utf-8", "headers": {"task": "t.k", "id": "1", "eta": "2030-01-01T00:00:00+00:00", "countdown": 5, "expires": "2031-01-01T00:00:00"}, "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "q"}}}"#,
        ],
        json: true,
        run: celery,
    },
    Target {
        name: "celery-body",
        about: "a Celery task's decoded body [args, kwargs, embed] (TaskMessage::decode, to_event), then what a finished task sends on (chain::follow_ups: chains, callbacks, errbacks, their countdowns)",
        seeds: &[
            r#"[[4, 4], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
            r#"[[2, 2], {"x": 1}, {"callbacks": [{"task": "tasks.add", "args": [10], "kwargs": {}, "options": {"countdown": 5, "expires": 60, "queue": "q", "task_id": "c1"}, "subtask_type": null, "immutable": false}], "errbacks": [{"task": "tasks.report", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": true}], "chain": [{"task": "tasks.add", "args": [1, 1], "kwargs": {}, "options": {"task_id": "t3", "eta": "2030-01-01T00:00:00+00:00"}, "subtask_type": null, "immutable": true}, {"task": "tasks.mul", "args": [4], "kwargs": {}, "options": {"task_id": "t2"}, "subtask_type": "group", "immutable": false}], "chord": null}]"#,
        ],
        json: true,
        run: celery_body,
    },
    Target {
        name: "faktory",
        about: "Faktory protocol lines (command::parse) and PUSH payloads (Job::parse, Job::validate)",
        seeds: &[
            r#"PUSH {"jid": "123861239abnadsa", "jobtype": "SomeName", "args": [1, "string", 3], "queue": "default", "retry": 3, "at": "2030-01-01T00:00:00Z", "custom": {"a": 1}}"#,
            r#"FETCH critical default bulk"#,
            r#"ACK {"jid": "123861239abnadsa"}"#,
            r#"FAIL {"jid": "123861239abnadsa", "errtype": "A", "message": "B", "backtrace": ["x"]}"#,
            r#"HELLO {"hostname": "h", "wid": "w1", "pid": 1, "labels": ["a"], "v": 2, "pwdhash": "abc"}"#,
            r#"MUTATE {"cmd": "kill", "target": "retries", "filter": {"jobtype": "Q*", "jids": ["a"], "regexp": "*x*"}}"#,
        ],
        json: false,
        run: faktory,
    },
];

fn event_body(data: &[u8]) {
    let Ok(events) = parse_body(data, 4096, 1 << 20) else {
        return;
    };
    assert!(!events.is_empty(), "an accepted body has an event");
    for event in events {
        assert!(!event.name.is_empty(), "an accepted event has a name");
        let again = serde_json::to_vec(&event).expect("an event serializes");
        let back = parse_body(&again, 1 << 20, 1 << 21)
            .unwrap_or_else(|e| panic!("an accepted event does not parse back: {e}"));
        assert_eq!(back.len(), 1);
        assert_eq!(
            back[0], event,
            "an accepted event changes through its own JSON"
        );
    }
}

/// Takes every runtime type, with any settings: the fuzzer is after the parser.
struct AnyRuntime;

impl RuntimeCatalog for AnyRuntime {
    fn check(&self, _: &str, _: &Map<String, Value>, _: Option<&Path>) -> weir_core::Result<()> {
        Ok(())
    }
}

fn function_definition(data: &[u8]) {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let dir = Path::new("/nonexistent/weir-fuzz/fn");
    if let Err(problems) = weir_core::function::parse_function(&doc, dir, "v1".into(), &AnyRuntime)
    {
        assert!(!problems.is_empty(), "a refused definition says why");
    }
}

fn cel(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let expr = match Expr::compile(&source) {
        Ok(expr) => expr,
        // A refusal is fine; the parser panicking (caught on its thread) is a finding.
        Err(e) => {
            assert_ne!(e.kind(), weir_core::ErrorKind::Internal, "{e}");
            return;
        }
    };
    let event = serde_json::json!({"name": "user/signed.up", "data": {"plan": "pro", "n": 7,
        "items": [{"price": 4.5}]}, "user": {"id": "u1", "created_at": "2024-01-01"}});
    let mut vars = Vars::new();
    vars.set_json("event", &event);
    let _ = expr.eval_json(&vars);
    let _ = expr.eval_bool(&vars);
}

fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = weir_core::duration::parse_duration(&text);
}

fn urls(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    let _ = weir_state_redis::RedisStateConfig::from_url(&url);
    let _ = weir_broker_redis::RedisBrokerConfig::from_url(&url);
    let _ = weir_broker_amqp::AmqpBrokerConfig::from_url(&url);
    let _ = weir_broker_sqs::SqsBrokerConfig::from_url(&url);
    let _ = weir_broker_kafka::KafkaBrokerConfig::from_url(&url);
    let _ = weir_adapter_faktory::settings::Settings::parse(&url);
}

fn celery(data: &[u8]) {
    let _ = weir_adapter_celery::redis_envelope::decode(data);
    // The same as AMQP delivers it: headers, content type and encoding, then the body.
    if let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(data) {
        let headers = match envelope.get("headers") {
            Some(Value::Object(h)) => h.clone(),
            _ => Map::new(),
        };
        let text = |k: &str| envelope.get(k).and_then(Value::as_str).unwrap_or("");
        let body = text("body").as_bytes();
        let _ = weir_adapter_celery::TaskMessage::decode(
            &headers,
            text("content-type"),
            text("content-encoding"),
            Some("reply"),
            body,
        );
    }
}

fn celery_body(data: &[u8]) {
    use weir_adapter_celery::chain::{Routes, follow_ups, has_chord, rest_of_chain_ids};
    use weir_adapter_celery::results::TaskState;
    let headers: Map<String, Value> = serde_json::from_str(
        r#"{"lang": "py", "task": "tasks.add", "id": "d6a4f3c2-0000-4000-8000-000000000001",
            "root_id": "d6a4f3c2-0000-4000-8000-000000000001", "retries": 0}"#,
    )
    .expect("headers");
    let Ok(message) = weir_adapter_celery::TaskMessage::decode(
        &headers,
        "application/json",
        "utf-8",
        Some("client"),
        data,
    ) else {
        return;
    };
    let Ok(event) = message.to_event() else {
        return;
    };
    let routes = Routes::default();
    let _ = rest_of_chain_ids(&event.data);
    let _ = has_chord(&event.data);
    for state in [
        TaskState::Success(serde_json::json!(5)),
        TaskState::Failure {
            exc_type: "ValueError".into(),
            exc_module: None,
            message: "no".into(),
        },
    ] {
        let _ = follow_ups(&event.data, &state, &routes);
    }
}

fn faktory(data: &[u8]) {
    use weir_adapter_faktory::command::{Command, parse};
    if let Command::Push(payload) = parse(data)
        && let Ok(mut job) = weir_adapter_faktory::job::Job::parse(payload)
        && job.validate(1_700_000_000_000).is_ok()
    {
        let _ = job.to_event();
    }
}
