//! Real server answers, classified (needs `WEIR_TEST_REDIS_URL`; skipped without it).

use redis::AsyncCommands;
use weir_core::ErrorKind;
use weir_support_redis::{classify, client, has_code, is_noscript};

/// A SHA1 no server has a script for.
const UNKNOWN_SHA: &str = "ffffffffffffffffffffffffffffffffffffffff";

#[tokio::test]
async fn answers_of_a_real_server_are_classified() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let mut con = client(&url, None)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("weir-support-redis-test:{}", std::process::id());
    let _: () = con.set(&key, "not a number").await.expect("SET");

    // NOSCRIPT after another error in a pipeline: still found (the state store loads the
    // script and runs the pipeline again on it), and retryable.
    let mut pipe = redis::pipe();
    pipe.cmd("INCR").arg(&key);
    pipe.cmd("EVALSHA").arg(UNKNOWN_SHA).arg(0);
    let err = pipe
        .query_async::<()>(&mut con)
        .await
        .expect_err("two errors");
    assert!(is_noscript(&err), "{err:?}");
    assert_eq!(classify(&err), ErrorKind::Unavailable, "{err:?}");

    // A command against a key of the wrong type: a bug, not retryable.
    let err = con
        .lpush::<_, _, ()>(&key, "x")
        .await
        .expect_err("WRONGTYPE");
    assert!(has_code(&err, "WRONGTYPE"), "{err:?}");
    assert_eq!(classify(&err), ErrorKind::Internal, "{err:?}");

    // Credentials the server refuses: configuration.
    let err = redis::cmd("AUTH")
        .arg("weir-no-such-user")
        .arg("wrong")
        .query_async::<()>(&mut con)
        .await
        .expect_err("WRONGPASS");
    assert_eq!(classify(&err), ErrorKind::Config, "{err:?}");

    let _: () = con.del(&key).await.expect("DEL");
}
