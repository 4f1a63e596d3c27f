//! Bad messages on a Celery queue weir consumes, on both brokers: a non-JSON body, a pickle
//! body, protocol 1, no `task` header, a 10 MiB body. Each gets a FAILURE result naming why
//! (where its task id is known) or is logged and dropped (not even a message); the consumer
//! keeps going (a good task after them runs), and no message is left behind: the queue is
//! empty and nothing is held once the adapter stopped.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a RabbitMQ (`WEIR_TEST_AMQP_URL`).

mod common;

use std::time::Duration;

use base64::Engine as _;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use weir_adapter_celery::{CeleryAmqpAdapter, CeleryRedisAdapter};
use weir_core::adapter::Adapter;
use weir_core::testkit::{service_url, unique};

/// One test message: its headers, content type and body.
struct Bad {
    headers: Value,
    content_type: &'static str,
    body: Vec<u8>,
}

/// The bad messages, by the task id their result is expected under and a piece of its reason.
fn bad_messages(prefix: &str) -> Vec<(String, &'static str, Bad)> {
    let id = |what: &str| format!("{prefix}-{what}");
    let headers = |id: &str| json!({"task": "tasks.add", "id": id, "lang": "py"});
    let call =
        br#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    let huge = format!(
        r#"[["{}"], {{}}, {{"callbacks": null, "errbacks": null, "chain": null, "chord": null}}]"#,
        "x".repeat(10 * 1024 * 1024)
    );
    vec![
        (
            id("not-json"),
            "the body is not JSON",
            Bad {
                headers: headers(&id("not-json")),
                content_type: "application/json",
                body: b"{{{ not json".to_vec(),
            },
        ),
        (
            id("pickle"),
            "pickle serializer is not supported",
            Bad {
                headers: headers(&id("pickle")),
                content_type: "application/x-python-serialize",
                body: b"\x80\x04\x95".to_vec(),
            },
        ),
        (
            id("v1"),
            "protocol 1 is not supported",
            Bad {
                headers: json!({}),
                content_type: "application/json",
                body: json!({"task": "tasks.add", "id": id("v1"), "args": [2, 3], "kwargs": {}})
                    .to_string()
                    .into_bytes(),
            },
        ),
        (
            id("no-task"),
            "no `task` header",
            Bad {
                headers: json!({"id": id("no-task")}),
                content_type: "application/json",
                body: call.to_vec(),
            },
        ),
        (
            id("huge"),
            "bytes weir takes",
            Bad {
                headers: headers(&id("huge")),
                content_type: "application/json",
                body: huge.into_bytes(),
            },
        ),
    ]
}

/// A good task after the bad ones: it must run.
fn good(prefix: &str) -> (String, Bad) {
    let id = format!("{prefix}-good");
    let body =
        br#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    let bad = Bad {
        headers: json!({"task": "tasks.add", "id": id, "lang": "py"}),
        content_type: "application/json",
        body: body.to_vec(),
    };
    (id, bad)
}

/// The function of `celery/tasks.add`: the sum of the args, in shell.
fn adder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_function(
        dir.path(),
        "adder",
        &json!({"id": "adder", "triggers": [{"event": "celery/tasks.add"}],
                "steps": {"add": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"args=$(sed -n 's/.*"args":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p'); set -- $args; echo $(($1 + $2))"#,
    );
    dir
}

/// The result meta of `task_id`, waiting up to 20 s for it.
async fn result_of(redis: &redis::Client, task_id: &str) -> Value {
    let mut conn = redis
        .get_multiplexed_async_connection_with_config(&slow_replies())
        .await
        .expect("redis");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let meta: Option<String> = redis::cmd("GET")
            .arg(format!("celery-task-meta-{task_id}"))
            .query_async(&mut conn)
            .await
            .expect("GET");
        if let Some(meta) = meta {
            return serde_json::from_str(&meta).expect("meta is JSON");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result for {task_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `adapter` while `send` puts the messages on its queue, then checks every result.
async fn every_bad_message_is_answered_and_the_good_one_runs(
    adapter: Box<dyn Adapter>,
    redis_url: &str,
    prefix: &str,
    send: impl AsyncFnOnce(Vec<Bad>),
) {
    let dir = adder();
    let (engine, handle) = common::engine(dir.path(), &["adder"]).await;
    let running = common::run_adapter(adapter, &engine);
    let bad = bad_messages(prefix);
    let (good_id, good) = good(prefix);
    let expected: Vec<(String, &str)> = bad.iter().map(|(id, why, _)| (id.clone(), *why)).collect();
    let mut messages: Vec<Bad> = bad.into_iter().map(|(_, _, m)| m).collect();
    messages.push(good);
    send(messages).await;

    let redis = redis::Client::open(redis_url).expect("redis url");
    for (id, why) in &expected {
        let meta = result_of(&redis, id).await;
        assert_eq!(meta["status"], "FAILURE", "{id}: {meta}");
        let message = meta["result"]["exc_message"][0]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(why),
            "{id}: {message:?} should say {why:?}"
        );
    }
    let meta = result_of(&redis, &good_id).await;
    assert_eq!(meta["status"], "SUCCESS", "{meta}");
    assert_eq!(meta["result"], 5);

    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq() {
    let (Some(amqp), Some(redis)) = (
        service_url("WEIR_TEST_AMQP_URL"),
        service_url("WEIR_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let queue = unique("celery-bad");
    let connection = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    let channel = connection.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .expect("declare");
    let adapter = CeleryAmqpAdapter::open(&format!(
        "celery+{amqp}?queue={queue}&results={}",
        common::encoded(&redis)
    ))
    .await
    .expect("the adapter opens");
    let prefix = unique("amqp");
    let send = async |messages: Vec<Bad>| {
        for m in messages {
            let mut headers = FieldTable::default();
            for (k, v) in m.headers.as_object().expect("object") {
                let text = v.as_str().unwrap_or_default();
                headers.insert(
                    k.as_str().into(),
                    AMQPValue::LongString(LongString::from(text)),
                );
            }
            let properties = BasicProperties::default()
                .with_headers(headers)
                .with_content_type(m.content_type.into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(2);
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    properties,
                )
                .await
                .expect("publish");
        }
    };
    every_bad_message_is_answered_and_the_good_one_runs(Box::new(adapter), &redis, &prefix, send)
        .await;
    // Nothing left on the queue: every message was acked, none handed back.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let left = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await
        .expect("the queue is there");
    assert_eq!(left.message_count(), 0, "messages left on the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis() {
    let Some(redis) = service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let queue = unique("celery-bad");
    let host = redis.trim_start_matches("redis://");
    let adapter = CeleryRedisAdapter::open(&format!(
        "celery+redis://{host}?queue={queue}&results={}&lease=3s",
        common::encoded(&redis)
    ))
    .await
    .expect("the adapter opens");
    let client = redis::Client::open(redis.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&slow_replies())
        .await
        .expect("redis");
    let prefix = unique("redis");
    let send = async |messages: Vec<Bad>| {
        // Not even a kombu envelope: logged and dropped, and the consumer goes on.
        let _: i64 = redis::cmd("LPUSH")
            .arg(&queue)
            .arg("garbage, not an envelope")
            .query_async(&mut conn)
            .await
            .expect("LPUSH");
        for m in messages {
            let envelope = json!({
                "body": base64::engine::general_purpose::STANDARD.encode(&m.body),
                "content-encoding": "utf-8",
                "content-type": m.content_type,
                "headers": m.headers,
                "properties": {"body_encoding": "base64", "priority": 0,
                               "delivery_info": {"exchange": "", "routing_key": queue},
                               "delivery_tag": ulid::Ulid::new().to_string()},
            });
            let _: i64 = redis::cmd("LPUSH")
                .arg(&queue)
                .arg(envelope.to_string())
                .query_async(&mut conn)
                .await
                .expect("LPUSH");
        }
    };
    every_bad_message_is_answered_and_the_good_one_runs(Box::new(adapter), &redis, &prefix, send)
        .await;
    // Nothing left: the queue's list is empty and no consumer holds a message.
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&slow_replies())
        .await
        .expect("redis");
    let queued: i64 = redis::cmd("LLEN")
        .arg(&queue)
        .query_async(&mut conn)
        .await
        .expect("LLEN");
    assert_eq!(queued, 0, "messages left on the queue");
    let held: Vec<String> = redis::cmd("KEYS")
        .arg(format!("weir-celery:processing:{queue}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(held.is_empty(), "messages still held: {held:?}");
}

/// A Redis connection config that waits for a 10 MiB LPUSH on a loaded machine (the redis
/// crate's default gives up after 500 ms).
fn slow_replies() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)))
}
