//! FETCH and the connection's end, over raw TCP on the memory job store: a FETCH waiting when
//! a job is pushed gets it; a client that leaves while its FETCH waits is handed no job (it
//! stays queued, not reserved for nobody); at shutdown a worker's connection is still served
//! for its ACK, and FETCH hands out nothing.

mod common;

use std::time::Duration;

use common::Raw;
use serde_json::{Value, json};
use weir_core::jobs::JobStore;

/// The job store's counts, once `ready` says they are as awaited (up to 10 s).
async fn counts_when(
    jobs: &dyn JobStore,
    ready: impl Fn(&weir_core::jobs::JobCounts) -> bool,
) -> weir_core::jobs::JobCounts {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let counts = jobs.counts().await.expect("counts");
        if ready(&counts) {
            return counts;
        }
        assert!(tokio::time::Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn push(jid: &str) -> String {
    format!(
        "PUSH {}",
        json!({"jid": jid, "jobtype": "work", "args": [], "queue": "q"})
    )
}

async fn worker(address: &str, wid: &str) -> Raw {
    let (mut raw, _) = Raw::connect(address).await;
    let hello = format!(r#"HELLO {{"v":2,"wid":"{wid}"}}"#);
    assert_eq!(raw.send(hello.as_bytes()).await.as_deref(), Some("+OK"));
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_gets_a_job_pushed_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let mut fetcher = worker(running.address(), "w1").await;
    use tokio::io::AsyncWriteExt;
    fetcher
        .writer
        .write_all(b"FETCH q\r\n")
        .await
        .expect("writes");
    let mut producer = Raw::hello(running.address()).await;
    assert_eq!(
        producer
            .send(push("jid-00000001").as_bytes())
            .await
            .as_deref(),
        Some("+OK")
    );
    let reply = fetcher.reply().await.expect("a reply");
    let (_, job) = reply.split_once(' ').expect("a job, not null");
    let job: Value = serde_json::from_str(job).expect("json");
    assert_eq!(job["jid"], "jid-00000001");
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_fetch_is_handed_no_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let jobs = engine.state().jobs().expect("the memory store keeps jobs");
    let running = common::run_adapter(&engine, None, "").await;
    let mut leaver = worker(running.address(), "w2").await;
    use tokio::io::AsyncWriteExt;
    leaver
        .writer
        .write_all(b"FETCH q\r\n")
        .await
        .expect("writes");
    drop(leaver);
    let mut producer = Raw::hello(running.address()).await;
    assert_eq!(
        producer
            .send(push("jid-00000002").as_bytes())
            .await
            .as_deref(),
        Some("+OK")
    );
    // Once the leaver's connection is over, the job waits on its queue, reserved by nobody.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = producer.send(b"INFO").await.expect("info");
        let info: Value =
            serde_json::from_str(info.split_once(' ').expect("bulk").1).expect("json");
        if info["server"]["connections"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = jobs.counts().await.expect("counts");
    assert_eq!(counts.reserved, 0, "{counts:?}");
    assert_eq!(counts.queues.get("q"), Some(&1), "{counts:?}");
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_a_worker_can_still_ack_and_fetches_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let jobs = engine.state().jobs().expect("jobs");
    let running = common::run_adapter(&engine, None, "").await;
    let mut producer = Raw::hello(running.address()).await;
    for jid in ["jid-00000003", "jid-00000004"] {
        assert_eq!(
            producer.send(push(jid).as_bytes()).await.as_deref(),
            Some("+OK")
        );
    }
    let mut w = worker(running.address(), "w3").await;
    let fetched = w.send(b"FETCH q").await.expect("a job");
    assert!(fetched.contains("jid-00000003"), "{fetched}");
    running.raise();
    // The producer's connection ends at once; the worker's is still served.
    assert!(producer.closed().await, "a producer is let go at shutdown");
    assert_eq!(
        w.send(br#"ACK {"jid":"jid-00000003"}"#).await.as_deref(),
        Some("+OK")
    );
    assert_eq!(
        w.send(b"FETCH q").await.as_deref(),
        Some("$-1"),
        "nothing handed out"
    );
    let counts = counts_when(jobs.as_ref(), |c| c.processed == 1).await;
    assert_eq!(counts.reserved, 0);
    assert_eq!(
        counts.queues.get("q"),
        Some(&1),
        "the other job waits for a node that is up"
    );
    drop(w);
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_be_quiet_hears_it_at_its_beat_and_takes_no_job() {
    use weir_core::jobs::{WorkerOrder, order_worker};
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let mut producer = Raw::hello(running.address()).await;
    assert_eq!(
        producer
            .send(push("jid-00000005").as_bytes())
            .await
            .as_deref(),
        Some("+OK")
    );
    let mut w = worker(running.address(), "w-quiet").await;
    assert_eq!(
        w.send(br#"BEAT {"wid":"w-quiet"}"#).await.as_deref(),
        Some("+OK")
    );
    order_worker(engine.state().as_ref(), "w-quiet", WorkerOrder::Quiet)
        .await
        .expect("order");
    assert_eq!(
        w.send(br#"BEAT {"wid":"w-quiet"}"#).await.as_deref(),
        Some(r#"$17 {"state":"quiet"}"#)
    );
    assert_eq!(
        w.send(b"FETCH q").await.as_deref(),
        Some("$-1"),
        "a quiet worker takes no job"
    );
    // Another worker still gets it; the order only moves forward.
    let mut other = worker(running.address(), "w-other").await;
    assert!(
        other
            .send(b"FETCH q")
            .await
            .expect("a job")
            .contains("jid-00000005")
    );
    order_worker(engine.state().as_ref(), "w-quiet", WorkerOrder::Terminate)
        .await
        .expect("order");
    order_worker(engine.state().as_ref(), "w-quiet", WorkerOrder::Quiet)
        .await
        .expect("order");
    assert_eq!(
        w.send(br#"BEAT {"wid":"w-quiet"}"#).await.as_deref(),
        Some(r#"$21 {"state":"terminate"}"#)
    );
    running.stop().await;
    handle.shutdown().await;
}
