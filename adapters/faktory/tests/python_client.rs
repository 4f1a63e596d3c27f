//! The real Python client (PyPI `faktory`) against weir: a job whose type a weir function
//! handles runs as a weir run, once per jid; the other jobs go to the client's own worker,
//! which acknowledges or fails them; the password check is Faktory's.
//!
//! Needs a Python with the `faktory` package (`WEIR_TEST_FAKTORY_PYTHON`; scripts/test.sh
//! makes a venv).

mod common;

use serde_json::{Value, json};
use weir_core::run::{RunStatus, StepStatus};
use weir_core::testkit::{service_url, unique};

/// Pushes jobs to argv[1] and prints what each `queue()` answered, as JSON: a handled job
/// (jid argv[2]) twice, a job with a future `at`, and a job no function handles (kept for
/// Faktory workers).
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
        json!([true, true, true, true]),
        "every job is taken (the same jid twice too)"
    );

    let runs = common::ended_runs_of(&engine, &later).await;
    assert!(
        pushed.elapsed() >= std::time::Duration::from_millis(1500),
        "the job with `at` 2 s ahead ran after {:?}",
        pushed.elapsed()
    );
    assert_eq!(runs[0].steps["send"].output.as_ref().unwrap()["to"], 8);

    // By now a second run of the jid pushed twice would have shown up.
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

/// A Faktory worker on queues argv[2…] of argv[1]: `tasks.record` appends its args to
/// `$LOG`; `tasks.flaky` appends them and raises.
const WORKER: &str = r#"
import json, os, sys
import faktory
def record(*args):
    with open(os.environ["LOG"], "a") as log:
        log.write("record " + json.dumps(args) + "\n")
def flaky(*args):
    with open(os.environ["LOG"], "a") as log:
        log.write("flaky " + json.dumps(args) + "\n")
    raise ValueError("flaky says no")
w = faktory.Worker(faktory=sys.argv[1], queues=sys.argv[2:], concurrency=1, use_threads=True)
w.register("record", record)
w.register("flaky", flaky)
w.run()
"#;

/// Pushes argv[2] `record` jobs to the queues `low` and `high` and one `flaky` job (retry 1,
/// jid argv[3]) of argv[1].
const PUSH_FOR_WORKERS: &str = r#"
import json, sys
import faktory
url, n, flaky = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with faktory.connection(url) as client:
    ok = [client.queue("record", args=(i,), queue="low" if i % 2 else "high") for i in range(n)]
    ok.append(client.queue("flaky", args=("x",), jid=flaky, retry=1))
print(json.dumps(all(ok)))
"#;

/// Sends one command line to a weir Faktory port and returns the first reply line.
async fn command(address: &str, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut reply = String::new();
    reader.read_line(&mut reply).await.expect("greeting");
    writer
        .write_all(b"HELLO {\"v\":2}\r\n")
        .await
        .expect("hello");
    reply.clear();
    reader.read_line(&mut reply).await.expect("ok");
    writer
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .expect("command");
    reply.clear();
    reader.read_line(&mut reply).await.expect("reply");
    if let Some(len) = reply
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
    {
        let mut body = vec![0; len + 2];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut body)
            .await
            .expect("body");
        return String::from_utf8_lossy(&body[..len]).to_string();
    }
    reply.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_no_function_handles_go_to_the_clients_own_worker() {
    let Some(py) = service_url("WEIR_TEST_FAKTORY_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let address = running.address().to_string();
    let flaky = unique("flaky");
    let pushed = python(&py, PUSH_FOR_WORKERS, &[&running.url, "20", &flaky]).await;
    assert_eq!(pushed, "true");
    let info: Value = serde_json::from_str(&command(&address, "INFO").await).expect("info");
    assert_eq!(
        info["faktory"]["queues"],
        json!({"default": 1, "high": 10, "low": 10})
    );

    let log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(&py)
        .args(["-c", WORKER, &running.url, "high", "low", "default"])
        .env("LOG", &log)
        .kill_on_drop(true)
        .spawn()
        .expect("the worker starts");
    // Every record job runs once; the flaky one fails and waits in the retries.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let info = loop {
        let info: Value = serde_json::from_str(&command(&address, "INFO").await).expect("info");
        if info["faktory"]["total_processed"] == 21 {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all processed: {info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(info["faktory"]["total_failures"], 1, "{info}");
    assert_eq!(info["faktory"]["tasks"]["Retries"]["size"], 1, "{info}");
    assert_eq!(info["faktory"]["total_enqueued"], 0, "{info}");
    let ran = std::fs::read_to_string(&log).expect("log");
    let records: Vec<&str> = ran.lines().filter(|l| l.starts_with("record")).collect();
    assert_eq!(records.len(), 20, "{ran}");
    // High before low: the worker lists high first, and both were full when it started.
    let first_low = records.iter().position(|l| {
        let n: i64 = l[8..l.len() - 1].parse().unwrap_or(-1);
        n % 2 == 1
    });
    assert_eq!(first_low, Some(10), "{ran}");

    // Requeued from the retries (the API the Node client's UI uses), it fails again: with
    // retry 1 it is dead.
    let requeue =
        format!(r#"MUTATE {{"cmd":"requeue","target":"retries","filter":{{"jids":["{flaky}"]}}}}"#);
    assert_eq!(command(&address, &requeue).await, "+OK");
    let info = loop {
        let info: Value = serde_json::from_str(&command(&address, "INFO").await).expect("info");
        if info["faktory"]["tasks"]["Dead"]["size"] == 1 {
            break info;
        }
        assert!(tokio::time::Instant::now() < deadline, "not dead: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(info["faktory"]["total_failures"], 2, "{info}");
    assert_eq!(info["faktory"]["tasks"]["Retries"]["size"], 0, "{info}");
    let flaky_runs = std::fs::read_to_string(&log)
        .expect("log")
        .matches("flaky")
        .count();
    assert_eq!(flaky_runs, 2, "ran twice, then dead");

    let metrics = engine.metrics().encode();
    for (outcome, n) in [
        ("pushed", 21),
        ("fetched", 22),
        ("acked", 20),
        ("failed", 2),
        ("dead", 1),
    ] {
        let series =
            format!("weir_adapter_jobs_total{{adapter=\"faktory\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }

    let _ = worker.kill().await;
    running.stop().await;
    handle.shutdown().await;
}
