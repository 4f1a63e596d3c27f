//! The real Rust client (crates.io `faktory` 0.13) against weir, with a password: it pushes a
//! handled job (a weir run) and a batch for workers, reads INFO (which it parses strictly:
//! `faktory_version` must be a version, `server_utc_time` `HH:MM:SS UTC`), pauses and resumes
//! a queue, and its worker runs the batch: acknowledged jobs, and a FAIL it must get `+OK`
//! for (the Rust worker stops on any error reply to ACK or FAIL).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use faktory::{Client, Job, Worker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_and_worker_work_against_weir() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::mailer(dir.path());
    let (engine, handle) = common::engine(dir.path(), &["mailer"]).await;
    let running = common::run_adapter(&engine, Some("rust-pw"), "").await;

    let mut client = Client::connect_to(&running.url).await.expect("connects");
    let handled = Job::new("send_email", vec![9]);
    let jid = handled.id().to_string();
    client.enqueue(handled).await.expect("PUSH");
    let batch = vec![
        Job::new("record", vec![1]),
        Job::new("record", vec![2]),
        Job::new("flaky", vec![3]),
    ];
    let (queued, refused) = client.enqueue_many(batch).await.expect("PUSHB");
    assert_eq!((queued, refused), (3, None));
    let info = client.current_info().await.expect("INFO parses");
    assert_eq!(info.data.queues.get("default"), Some(&3));
    client.queue_pause(&["default"]).await.expect("pause");
    client.queue_resume(&["default"]).await.expect("resume");

    let acked = Arc::new(AtomicUsize::new(0));
    let mut worker = Worker::builder()
        .register_fn("record", {
            let acked = acked.clone();
            move |_job| {
                let acked = acked.clone();
                async move {
                    acked.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .register_fn("flaky", |_job| async move {
            Err(std::io::Error::other("flaky says no"))
        })
        .connect_to(&running.url)
        .await
        .expect("the worker connects");
    for _ in 0..3 {
        assert!(
            worker.run_one(0, &["default"]).await.expect("runs a job"),
            "a job was there"
        );
    }
    assert_eq!(acked.load(Ordering::SeqCst), 2);
    let info = client.current_info().await.expect("INFO");
    assert_eq!(info.data.total_processed, 3);
    assert_eq!(info.data.total_failures, 1);

    let runs = common::ended_runs_of(&engine, &jid).await;
    assert_eq!(runs[0].steps["send"].output, Some(json!({"to": 9})));
    drop(worker);
    drop(client);
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_worker_stops_when_told_to_terminate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let wid = "rust-worker-to-stop";
    let mut worker = Worker::builder()
        .wid(faktory::WorkerId::new(wid))
        .register_fn("record", |_job| async move { Ok::<(), std::io::Error>(()) })
        .connect_to(&running.url)
        .await
        .expect("the worker connects");
    let run = tokio::spawn(async move { worker.run(&["default"]).await });
    weir_core::jobs::order_worker(
        engine.state().as_ref(),
        wid,
        weir_core::jobs::WorkerOrder::Terminate,
    )
    .await
    .expect("order");
    // It BEATs every 5 s; on the order it stops.
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("the worker stops within a few beats")
        .expect("joins")
        .expect("runs");
    assert_eq!(stopped.reason, faktory::StopReason::ServerInstruction);
    running.stop().await;
    handle.shutdown().await;
}
