//! The codec against messages a real Celery 5.7 producer sent (tests/fixtures, made by
//! tests/fixtures/capture.py): through kombu's Redis transport and as RabbitMQ delivered them.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use weir_adapter_celery::{TaskMessage, redis_envelope};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn redis(name: &str) -> TaskMessage {
    redis_envelope::decode(&fixture(&format!("redis-{name}.json")))
        .unwrap_or_else(|r| panic!("{name}: refused: {}", r.reason))
}

/// An AMQP fixture decoded as the adapter's AMQP consumer will: headers, content type and
/// encoding, `reply_to` and the raw body.
fn amqp(name: &str) -> TaskMessage {
    let f: Value = serde_json::from_slice(&fixture(&format!("amqp-{name}.json"))).expect("json");
    let body = base64::engine::general_purpose::STANDARD
        .decode(f["body"].as_str().expect("body"))
        .expect("base64");
    TaskMessage::decode(
        f["headers"].as_object().expect("headers"),
        f["content_type"].as_str().expect("content type"),
        f["content_encoding"].as_str().expect("encoding"),
        f["properties"]["reply_to"].as_str(),
        &body,
    )
    .unwrap_or_else(|r| panic!("{name}: refused: {}", r.reason))
}

#[test]
fn delay_becomes_the_event_celery_slash_task_with_the_task_id() {
    for message in [redis("delay"), amqp("delay")] {
        assert_eq!(message.task, "tasks.send_welcome");
        assert_eq!(message.args, [json!("user-42")]);
        assert!(message.kwargs.is_empty());
        assert!(
            message.reply_to.is_some(),
            "a client waiting on rpc:// names its queue"
        );
        let event = message.to_event().expect("an event");
        assert_eq!(event.name, "celery/tasks.send_welcome");
        assert_eq!(event.id, message.id, "a redelivery starts no second run");
        assert_eq!(event.data["args"], json!(["user-42"]));
        assert_eq!(event.data["task_id"], json!(message.id));
        assert_eq!(
            event.data["root_id"],
            json!(message.id),
            "a task is its own root"
        );
        assert_eq!(event.data["retries"], json!(0));
        assert_eq!(event.data["headers"], json!({}));
    }
}

#[test]
fn args_and_kwargs_are_kept_apart() {
    let m = redis("apply_async_kwargs");
    assert_eq!(
        (m.task.as_str(), m.args.clone()),
        ("tasks.add", vec![json!(2)])
    );
    assert_eq!(Value::Object(m.kwargs), json!({"y": 3}));
}

#[test]
fn countdown_expires_and_custom_headers_are_read() {
    for m in [
        redis("countdown_expires_headers"),
        amqp("countdown_expires_headers"),
    ] {
        let eta = m.eta.clone().expect("a countdown is an eta");
        assert!(eta.contains('T') && eta.ends_with("+00:00"), "{eta}");
        assert_eq!(m.expires.as_deref(), Some("2031-01-02T03:04:05+00:00"));
        assert_eq!(
            Value::Object(m.custom_headers.clone()),
            json!({"tenant": "acme", "trace": [1, 2]}),
            "only the producer's own headers, not the protocol's"
        );
        let event = m.to_event().expect("event");
        assert_eq!(event.data["headers"]["tenant"], "acme");
        assert_eq!(event.data["expires"], "2031-01-02T03:04:05+00:00");
    }
}

#[test]
fn a_priority_message_sits_in_kombus_priority_list() {
    let raw: Value = serde_json::from_slice(&fixture("redis-priority.json")).expect("json");
    assert_eq!(raw["properties"]["priority"], 6);
    assert_eq!(
        redis_envelope::priority_list("weir-capture", 6),
        "weir-capture\x06\x166"
    );
    assert_eq!(redis_envelope::priority_list("q", 0), "q");
    assert_eq!(redis_envelope::priority_list("q", 2), "q");
    assert_eq!(redis_envelope::priority_list("q", 5), "q\x06\x163");
    assert_eq!(redis_envelope::priority_list("q", 255), "q\x06\x169");
    assert_eq!(
        redis_envelope::lists_in_order("q"),
        ["q", "q\x06\x163", "q\x06\x166", "q\x06\x169"]
    );
    assert_eq!(redis("priority").args, [json!(1), json!(1)]);
}

#[test]
fn a_chain_carries_the_rest_of_the_chain_in_reverse_order() {
    for m in [redis("chain"), amqp("chain")] {
        assert_eq!(m.args, [json!(2), json!(2)]);
        let chain = m.embed["chain"].as_array().expect("the rest of the chain");
        // The worker takes the last entry next: add.s(4), then add.si(1, 1).
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1]["args"], json!([4]));
        assert_eq!(chain[0]["args"], json!([1, 1]));
        assert_eq!(chain[0]["immutable"], json!(true));
    }
}

#[test]
fn link_and_link_error_are_callbacks_and_errbacks() {
    let m = redis("link");
    let callbacks = m.embed["callbacks"].as_array().expect("callbacks");
    assert_eq!(callbacks[0]["task"], "tasks.add");
    assert_eq!(callbacks[0]["args"], json!([10]));
    let errbacks = m.embed["errbacks"].as_array().expect("errbacks");
    assert_eq!(errbacks[0]["task"], "tasks.send_welcome");
}

#[test]
fn unicode_and_nul_survive() {
    let m = redis("unicode");
    assert_eq!(m.args[0], json!({"name": "Zoë ✓", "note": "\u{0} nul"}));
}

#[test]
fn what_weir_does_not_take_is_refused_with_the_reason_and_the_task_id() {
    for (name, says) in [
        ("pickle", "the pickle serializer is not supported"),
        ("protocol1", "protocol 1 is not supported"),
        ("gzip", "compressed task bodies (application/x-gzip)"),
    ] {
        let refused =
            redis_envelope::decode(&fixture(&format!("redis-{name}.json"))).expect_err(name);
        assert!(refused.reason.contains(says), "{name}: {}", refused.reason);
        let id = refused
            .task_id
            .unwrap_or_else(|| panic!("{name}: the task id is known"));
        assert_eq!(id.len(), 36, "{name}: a uuid, got {id}");
    }
}

#[test]
fn malformed_messages_are_refused_not_panicked_on() {
    assert!(
        redis_envelope::decode(b"not json")
            .unwrap_err()
            .task_id
            .is_none()
    );
    let headers = |v: Value| -> Map<String, Value> { v.as_object().cloned().unwrap_or_default() };
    let h = headers(json!({"task": "t", "id": "i-1"}));
    for (body, says) in [
        (&b"{"[..], "not JSON"),
        (&b"{}"[..], "not [args, kwargs, embed]"),
        (&b"[[], {}]"[..], "2 parts"),
        (&b"[{}, {}, {}]"[..], "args must be a list"),
    ] {
        let refused =
            TaskMessage::decode(&h, "application/json", "utf-8", None, body).expect_err(says);
        assert!(refused.reason.contains(says), "{says}: {}", refused.reason);
        assert_eq!(refused.task_id.as_deref(), Some("i-1"));
    }
    let no_task = TaskMessage::decode(
        &headers(json!({"id": "i-2"})),
        "application/json",
        "utf-8",
        None,
        b"[[], {}, {}]",
    )
    .expect_err("no task");
    assert!(no_task.reason.contains("no `task` header"));
    assert_eq!(no_task.task_id.as_deref(), Some("i-2"));
    let yaml =
        TaskMessage::decode(&h, "application/x-yaml", "utf-8", None, b"[]").expect_err("yaml");
    assert!(yaml.reason.contains("yaml serializer"), "{}", yaml.reason);
}

#[test]
fn protocol_1_is_told_by_its_body_whatever_the_headers() {
    let h: Map<String, Value> = json!({"tenant": "acme", "x-delivery-count": 1})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let body = br#"{"task": "tasks.add", "id": "v1-id", "args": [1, 2], "kwargs": {}}"#;
    let refused =
        TaskMessage::decode(&h, "application/json", "utf-8", None, body).expect_err("protocol 1");
    assert!(refused.reason.contains("protocol 1"), "{}", refused.reason);
    assert_eq!(refused.task_id.as_deref(), Some("v1-id"));
}

#[test]
fn headers_of_the_wrong_type_are_refused_not_ignored() {
    for (headers, says) in [
        (
            json!({"task": "t", "id": "i", "eta": 5}),
            "eta must be an ISO 8601 time",
        ),
        (
            json!({"task": "t", "id": "i", "expires": true}),
            "expires must be",
        ),
        (
            json!({"task": "t", "id": "i", "retries": "x"}),
            "retries must be a count",
        ),
    ] {
        let h = headers.as_object().cloned().unwrap_or_default();
        let refused = TaskMessage::decode(&h, "application/json", "UTF-8", None, b"[[], {}, {}]")
            .expect_err(says);
        assert!(refused.reason.contains(says), "{says}: {}", refused.reason);
    }
    let h = json!({"task": "t", "id": "i", "x-death": [], "tenant": "a"});
    let m = TaskMessage::decode(
        h.as_object().expect("object"),
        "application/json",
        "UTF-8",
        None,
        b"[[], {}, {}]",
    )
    .expect("an upper-case encoding name is utf-8 too");
    assert_eq!(
        Value::Object(m.custom_headers),
        json!({"tenant": "a"}),
        "the broker's x- headers are not the producer's"
    );
}

#[test]
fn json_that_is_not_a_kombu_envelope_is_refused_as_such() {
    for entry in [
        &b"[]"[..],
        b"null",
        br#"{"headers": []}"#,
        br#"{"body": 3}"#,
    ] {
        let refused = redis_envelope::decode(entry).expect_err("not an envelope");
        assert!(
            refused.reason.contains("not a kombu message"),
            "{}",
            refused.reason
        );
    }
}

#[test]
fn a_task_name_too_long_for_an_event_is_refused() {
    let long = "t".repeat(300);
    let h: Map<String, Value> = json!({"task": long, "id": "i-3"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let m = TaskMessage::decode(&h, "application/json", "utf-8", None, b"[[], {}, {}]")
        .expect("decodes");
    let refused = m.to_event().expect_err("name too long");
    assert_eq!(refused.task_id.as_deref(), Some("i-3"));
}

#[test]
fn a_retried_or_replaced_task_is_a_new_event_of_the_same_task() {
    let mut message = redis("delay");
    message.retries = 2;
    let retried = message.to_event().expect("an event");
    assert_eq!(retried.id, format!("{}/r2", message.id));
    assert_eq!(
        retried.data["task_id"],
        json!(message.id),
        "its result goes to the task the client waits on"
    );
    message.replaced_task_nesting = 1;
    assert_eq!(
        message.to_event().expect("an event").id,
        format!("{}/r2/n1", message.id)
    );
    message.retries = 0;
    assert_eq!(message.event_id(), format!("{}/n1", message.id));
}
