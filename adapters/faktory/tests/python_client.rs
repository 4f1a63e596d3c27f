//! The real Python client (PyPI `faktory`) against weir: a job whose type a weir function
//! handles runs as a weir run, once per jid; the password check is Faktory's.
//!
//! Needs a Python with the `faktory` package (`WEIR_TEST_FAKTORY_PYTHON`; scripts/test.sh
//! makes a venv).

mod common;

use serde_json::{Value, json};
use weir_core::run::{RunStatus, StepStatus};
use weir_core::testkit::{service_url, unique};

/// Pushes jobs to argv[1] and prints what each `queue()` answered, as JSON: a handled job
/// (jid argv[2]) twice, a job with a future `at`, and a job no function handles.
const PUSH: &str = r#"
import json, sys
from datetime import datetime, timedelta, timezone
import faktory
url, jid, later = sys.argv[1:4]
at = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
with faktory.connection(url) as client:
    answers = [
        client.queue("send_email", args=(7, "hi"), jid=jid, custom={"tenant": "t1"}),
        client.queue("send_email", args=(7, "hi"), jid=jid),
        client.queue("send_email", args=(8, "later"), jid=later, at=at),
        client.queue("resize_image", args=(1,)),
    ]
print(json.dumps(answers))
"#;

/// Connects to argv[1] and prints `ok`, or the exception's type name.
const CONNECT: &str = r#"
import faktory
try:
    with faktory.connection(__import__("sys").argv[1]) as client:
        print("ok" if client.queue("send_email", args=(1, "x")) else "refused")
except Exception as e:
    print(type(e).__name__)
"#;

fn mailer(dir: &std::path::Path) {
    common::write_function(
        dir,
        "mailer",
        &json!({"id": "mailer", "triggers": [{"event": "faktory/send_email"}],
                "steps": {"send": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; d = json.load(sys.stdin)["event"]["data"]; print(json.dumps({"to": d["args"][0], "tenant": (d["custom"] or {}).get("tenant"), "queue": d["queue"]}))'"#,
    );
}

async fn python(python: &str, script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_job_runs_as_the_weir_function_of_its_type_once_per_jid() {
    let Some(py) = service_url("WEIR_TEST_FAKTORY_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    mailer(dir.path());
    let (engine, handle) = common::engine(dir.path(), &["mailer"]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let (jid, later) = (unique("jid-now"), unique("jid-later"));
    let pushed = std::time::Instant::now();
    let answers: Value =
        serde_json::from_str(&python(&py, PUSH, &[&running.url, &jid, &later]).await)
            .expect("json");
    assert_eq!(
        answers,
        json!([true, true, true, false]),
        "handled jobs are taken (twice the same jid too); a job no function handles is refused"
    );

    let runs = common::ended_runs_of(&engine, &jid).await;
    assert_eq!(runs.len(), 1, "one run for a jid pushed twice");
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].event.name, "faktory/send_email");
    let step = &runs[0].steps["send"];
    assert_eq!(step.status, StepStatus::Completed);
    assert_eq!(
        step.output,
        Some(json!({"to": 7, "tenant": "t1", "queue": "default"}))
    );

    let runs = common::ended_runs_of(&engine, &later).await;
    assert!(
        pushed.elapsed() >= std::time::Duration::from_millis(1500),
        "the job with `at` 2 s ahead ran after {:?}",
        pushed.elapsed()
    );
    assert_eq!(runs[0].steps["send"].output.as_ref().unwrap()["to"], 8);

    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_checked_as_faktory_checks_it() {
    let Some(py) = service_url("WEIR_TEST_FAKTORY_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    mailer(dir.path());
    let (engine, handle) = common::engine(dir.path(), &["mailer"]).await;
    let running = common::run_adapter(&engine, Some("s3cret"), "").await;
    let address = running.address().to_string();
    // The Python client hashes once and sends no "v": weir checks it with one round.
    assert_eq!(python(&py, CONNECT, &[&running.url]).await, "ok");
    assert_eq!(
        python(&py, CONNECT, &[&format!("tcp://:wrong@{address}")]).await,
        "FaktoryAuthenticationError"
    );
    assert_eq!(
        python(&py, CONNECT, &[&format!("tcp://{address}")]).await,
        "FaktoryAuthenticationError",
        "no password at all"
    );
    running.stop().await;
    handle.shutdown().await;
}
