//! Adapter URLs that cannot work are refused before anything connects, with what is wrong.

use weir_adapter_celery::{CeleryAmqpAdapter, CeleryRedisAdapter};

async fn redis_error(url: &str) -> String {
    CeleryRedisAdapter::open(url)
        .await
        .expect_err("refused")
        .to_string()
}

async fn amqp_error(url: &str) -> String {
    CeleryAmqpAdapter::open(url)
        .await
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_reason() {
    // Nothing listens on port 1: each error comes from the URL itself.
    let base = "celery+redis://127.0.0.1:1/0";
    for (url, says) in [
        (format!("{base}?results=none"), "queue is required"),
        (format!("{base}?queue=q"), "results is required"),
        (
            format!("{base}?queue=q&results=rpc"),
            "results=rpc needs RabbitMQ",
        ),
        (format!("{base}?queue=q&results=none&lease=1s"), "lease"),
        (
            format!("{base}?queue=q&results=none&unhandled=drop"),
            "requeue:<queue>",
        ),
        (
            format!("{base}?queue=q&results=none&routes=tasks.a"),
            "task:queue",
        ),
        (format!("{base}?queue=q&results=none&colour=red"), "colour"),
    ] {
        let error = redis_error(&url).await;
        assert!(error.contains(says), "{url}: {error}");
    }
    let base = "celery+amqp://guest:secret@127.0.0.1:1/%2f";
    for (url, says) in [
        (format!("{base}?results=none"), "queue is required"),
        (format!("{base}?queue=q"), "results is required"),
        (
            format!("{base}?queue=q&results=none&prefetch=0"),
            "prefetch",
        ),
        (
            format!("{base}?queue=q&results=none&delayed_delivery=maybe"),
            "delayed_delivery",
        ),
    ] {
        let error = amqp_error(&url).await;
        assert!(error.contains(says), "{url}: {error}");
        assert!(!error.contains("secret"), "the password shows: {error}");
    }
    // Well formed, but nothing answers: a retryable error naming the broker, password hidden.
    let error = amqp_error(&format!("{base}?queue=q&results=none")).await;
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(!error.contains("secret"), "the password shows: {error}");
}
