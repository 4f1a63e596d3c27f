//! A Redis that restarts under a running broker: errors in between are retryable, the broker
//! reconnects by itself, and (with persistence) nothing is lost.
//!
//! These tests start a private `redis-server` on a free port (never the shared test server),
//! kill it with SIGKILL and start it again on the same port and data directory. They run when
//! `WEIR_TEST_REDIS_URL` is set (Redis is expected) and `redis-server` is on the `PATH`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, timeout};
use weir_broker_redis::RedisBroker;
use weir_core::broker::{Broker, Subscription};
use weir_core::testkit::unique;

/// A `redis-server` child process on `port`, data in `dir`; killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl Server {
    /// Starts one, or `None` when the test should be skipped.
    async fn start(persistent: bool) -> Option<Server> {
        weir_core::testkit::service_url("WEIR_TEST_REDIS_URL")?;
        let available = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            eprintln!("skipping: redis-server is not on the PATH");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = spawn(port, dir.path(), persistent);
        let server = Server {
            child,
            port,
            dir,
            persistent,
        };
        server.wait_ready().await;
        Some(server)
    }

    fn url(&self, params: &str) -> String {
        format!("redis://127.0.0.1:{}?{params}", self.port)
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url("").trim_end_matches('?')).expect("client");
        for _ in 0..100 {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// SIGKILL, then start again on the same port and directory.
    async fn crash_and_restart(&mut self) {
        self.child.kill().expect("kill redis-server");
        self.child.wait().expect("wait");
        self.child = spawn(self.port, self.dir.path(), self.persistent);
        self.wait_ready().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16, dir: &std::path::Path, persistent: bool) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--save")
        .arg("");
    if persistent {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

/// Publishes, retrying retryable errors (the broker reconnects by itself) for up to 20 s.
async fn publish_retrying(broker: &RedisBroker, topic: &str, payload: String) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut errors = 0;
    loop {
        match broker
            .publish(topic, "k", Bytes::from(payload.clone()))
            .await
        {
            Ok(()) => return errors,
            Err(e) => {
                assert!(e.is_retryable(), "a restart gave a permanent error: {e}");
                assert!(Instant::now() < deadline, "still failing after 20 s: {e}");
                errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Receives `n` distinct payloads, acking each; `next()` errors must be retryable.
async fn receive(sub: &mut Box<dyn Subscription>, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = BTreeSet::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "got only {got:?} of {n}");
        match timeout(Duration::from_secs(1), sub.next()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                assert!(
                    e.is_retryable(),
                    "next() after a restart: permanent error {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(d)) => {
                got.insert(String::from_utf8_lossy(&d.payload).into_owned());
                // An ack may fail while Redis is away; the entry then comes back.
                let _ = d.ack().await;
            }
        }
    }
    got
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// With `appendfsync always`, a Redis crash loses nothing: unread and unacked messages are
/// delivered after the restart, and the broker reconnects without being recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_redis_crash_loses_nothing() {
    let Some(mut server) = Server::start(true).await else {
        return;
    };
    let broker = RedisBroker::connect(&server.url("lease=2s&block=250ms&timeout=1s"))
        .await
        .expect("connect");
    let topic = unique("restart");
    let mut sub = broker.subscribe(&topic, "g").await.expect("subscribe");
    for i in 0..10 {
        publish_retrying(&broker, &topic, format!("a{i}")).await;
    }
    let before = receive(&mut sub, 5).await;

    server.crash_and_restart().await;

    let mut errors = 0;
    for i in 0..10 {
        errors += publish_retrying(&broker, &topic, format!("b{i}")).await;
    }
    let after = receive(&mut sub, 15).await;
    let all: BTreeSet<String> = before.union(&after).cloned().collect();
    let mut expected = names("a", 0..10);
    expected.extend(names("b", 0..10));
    assert_eq!(all, expected, "messages lost across the restart");
    eprintln!("publish errors retried across the restart: {errors}");
}

/// Without persistence the data set is gone after a restart; the broker recreates its
/// consumer groups and carries on with what is published afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_is_survived() {
    let Some(mut server) = Server::start(false).await else {
        return;
    };
    let broker = RedisBroker::connect(&server.url("lease=2s&block=250ms&timeout=1s"))
        .await
        .expect("connect");
    let topic = unique("restart-volatile");
    let mut sub = broker.subscribe(&topic, "g").await.expect("subscribe");
    publish_retrying(&broker, &topic, "before".into()).await;
    assert_eq!(
        receive(&mut sub, 1).await,
        names("before", 0..0)
            .into_iter()
            .chain(["before".to_owned()])
            .collect()
    );

    server.crash_and_restart().await;

    for i in 0..5 {
        publish_retrying(&broker, &topic, format!("after{i}")).await;
    }
    assert_eq!(receive(&mut sub, 5).await, names("after", 0..5));
}
