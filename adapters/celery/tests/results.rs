//! Results as a real Celery 5.7 client reads them: `AsyncResult(id).get()` in Python returns
//! what the adapter stored in the Redis result backend, raises for a failure, and returns at
//! once when it was already waiting (the PUBLISH), not at its timeout.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a Python with Celery (`WEIR_TEST_CELERY_PYTHON`;
//! scripts/test.sh makes a venv with it). Under CI=true a missing one fails the test.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use weir_adapter_celery::results::{Claim, DEFAULT_RESULT_EXPIRES, RedisResults, TaskState};
use weir_core::testkit::service_url;

/// Reads the result of `task_id` with Celery's own client: prints `{"state", "value"}` or
/// `{"state", "raised", "message"}` as JSON.
const CLIENT: &str = r#"
import json, sys
from celery import Celery
from celery.result import AsyncResult
app = Celery("tasks", backend=sys.argv[1], broker="memory://")
result = AsyncResult(sys.argv[2], app=app)
try:
    value = result.get(timeout=float(sys.argv[3]))
    print(json.dumps({"state": result.state, "value": value}))
except Exception as e:
    print(json.dumps({"state": result.state, "raised": type(e).__name__, "message": str(e)}))
"#;

struct Env {
    redis: String,
    python: String,
}

fn env() -> Option<Env> {
    Some(Env {
        redis: service_url("WEIR_TEST_REDIS_URL")?,
        python: service_url("WEIR_TEST_CELERY_PYTHON")?,
    })
}

/// Starts the Celery client waiting up to `timeout` for `task_id`.
fn client(env: &Env, task_id: &str, timeout: Duration) -> tokio::process::Child {
    tokio::process::Command::new(&env.python)
        .args(["-c", CLIENT, &env.redis, task_id])
        .arg(timeout.as_secs_f64().to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts")
}

async fn answer(mut child: tokio::process::Child) -> Value {
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .await
        .expect("read");
    let status = child.wait().await.expect("wait");
    assert!(status.success(), "the client failed: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// Waits until a client subscribed to the result channel of `task_id` (it then waits on the
/// PUBLISH, having looked for a stored result first).
async fn wait_until_subscribed(redis_url: &str, task_id: &str) {
    let client = redis::Client::open(redis_url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = weir_adapter_celery::results::result_key(task_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        if subscribers > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the client never subscribed to {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn task_id() -> String {
    format!("weir-test-{}", ulid::Ulid::new())
}

#[tokio::test]
async fn a_stored_success_is_what_get_returns() {
    let Some(env) = env() else { return };
    let results = RedisResults::connect(&env.redis, DEFAULT_RESULT_EXPIRES)
        .await
        .expect("connect");
    let id = task_id();
    let value = json!({"sum": 5, "names": ["Zoë"]});
    assert!(
        results
            .store(&id, &TaskState::Success(value.clone()))
            .await
            .expect("store")
    );
    let got = answer(client(&env, &id, Duration::from_secs(10))).await;
    assert_eq!(got, json!({"state": "SUCCESS", "value": value}));
    // A SUCCESS is kept, as a Celery worker keeps it.
    let failure = TaskState::Failure {
        exc_type: "StepFailed".into(),
        exc_module: None,
        message: "late".into(),
    };
    assert!(!results.store(&id, &failure).await.expect("store"));
    let got = answer(client(&env, &id, Duration::from_secs(10))).await;
    assert_eq!(got["state"], "SUCCESS");
}

#[tokio::test]
async fn a_failure_raises_in_the_client_with_its_message() {
    let Some(env) = env() else { return };
    let results = RedisResults::connect(&env.redis, DEFAULT_RESULT_EXPIRES)
        .await
        .expect("connect");
    for (state, raised, message) in [
        (
            TaskState::Failure {
                exc_type: "StepFailed".into(),
                exc_module: None,
                message: "step send-sms failed: exited with code 3".into(),
            },
            "StepFailed",
            "step send-sms failed: exited with code 3",
        ),
        (
            TaskState::Failure {
                exc_type: "NotRegistered".into(),
                exc_module: Some("celery.exceptions".into()),
                message: "tasks.nope".into(),
            },
            "NotRegistered",
            "tasks.nope",
        ),
        (
            TaskState::Revoked {
                reason: "expired".into(),
            },
            "TaskRevokedError",
            "expired",
        ),
    ] {
        let id = task_id();
        results.store(&id, &state).await.expect("store");
        // A late progress report (a STARTED or RETRY written after the end) changes nothing.
        let late = results
            .store(&id, &TaskState::Started)
            .await
            .expect("store");
        assert!(!late, "a final state is never replaced by a progress state");
        let got = answer(client(&env, &id, Duration::from_secs(10))).await;
        assert_eq!(got["state"], state.status(), "{got}");
        assert_eq!(got["raised"], raised, "{got}");
        assert!(
            got["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{got}"
        );
    }
}

#[tokio::test]
async fn a_client_already_waiting_returns_on_the_publish_not_its_timeout() {
    let Some(env) = env() else { return };
    let results = RedisResults::connect(&env.redis, DEFAULT_RESULT_EXPIRES)
        .await
        .expect("connect");
    let id = task_id();
    // A RETRY first: the client sees a state that is not final and keeps waiting.
    let waiting = client(&env, &id, Duration::from_secs(30));
    wait_until_subscribed(&env.redis, &id).await;
    results
        .store(
            &id,
            &TaskState::Retry {
                why: "step failed, retrying".into(),
            },
        )
        .await
        .expect("store");
    let stored_at = Instant::now();
    results
        .store(&id, &TaskState::Success(json!(7)))
        .await
        .expect("store");
    let got = answer(waiting).await;
    assert_eq!(got, json!({"state": "SUCCESS", "value": 7}));
    assert!(
        stored_at.elapsed() < Duration::from_secs(10),
        "the waiting client returned {:?} after the result was stored",
        stored_at.elapsed()
    );
}

#[tokio::test]
async fn follow_ups_are_claimed_by_one_sender_and_sent_once() {
    let Some(env) = env() else { return };
    let results = RedisResults::connect(&env.redis, DEFAULT_RESULT_EXPIRES)
        .await
        .expect("connect");
    let id = task_id();
    let hold = Duration::from_millis(300);
    let won = Claim::Won {
        follow_ups_sent: false,
    };
    assert_eq!(
        results.claim_follow_ups(&id, hold).await.expect("claim"),
        won
    );
    assert_eq!(
        results.claim_follow_ups(&id, hold).await.expect("claim"),
        Claim::Held,
        "a second node does not send while the first holds the claim"
    );
    // The holder died: its claim lapses and another node sends.
    tokio::time::sleep(hold + Duration::from_millis(100)).await;
    assert_eq!(
        results.claim_follow_ups(&id, hold).await.expect("claim"),
        won
    );
    results.follow_ups_sent(&id).await.expect("sent");
    assert_eq!(
        results.claim_follow_ups(&id, hold).await.expect("claim"),
        Claim::Won {
            follow_ups_sent: true
        },
        "once sent, never again: only the result is owed"
    );
}
