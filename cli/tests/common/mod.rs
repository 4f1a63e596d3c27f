//! Helpers shared by the integration tests: function directories in a tempdir, an engine on
//! the embedded default, and waiting for runs.

#![allow(dead_code)]

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use weir::core::engine::{Engine, EngineConfig, Roles};
use weir::core::run::{Run, RunFilter};
use weir::embedded::EngineOptions;

/// A function directory under a tempdir.
pub struct FnDir {
    /// Keeps the tempdir alive.
    pub tmp: tempfile::TempDir,
    /// The function directory.
    pub dir: PathBuf,
}

/// Writes `weir.json` and executable step scripts (name → sh body).
pub fn function_dir(definition: &Value, scripts: &[(&str, &str)]) -> FnDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fn");
    std::fs::create_dir_all(dir.join("steps")).expect("mkdir");
    std::fs::write(
        dir.join("weir.json"),
        serde_json::to_vec_pretty(definition).expect("json"),
    )
    .expect("write");
    for (name, body) in scripts {
        let path = dir.join("steps").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    FnDir { tmp, dir }
}

/// An engine on memory state and broker with fast retries, its loops started, the function
/// loaded.
pub async fn engine_with(dir: &Path) -> (Engine, weir::core::engine::EngineHandle) {
    engine_on(dir, "memory://").await
}

/// [`engine_with`] on the state store at `state_url`.
pub async fn engine_on(dir: &Path, state_url: &str) -> (Engine, weir::core::engine::EngineHandle) {
    engine_on_broker(dir, state_url, "memory://").await
}

/// [`engine_with`] on the state store at `state_url` and the broker at `broker_url`.
pub async fn engine_on_broker(
    dir: &Path,
    state_url: &str,
    broker_url: &str,
) -> (Engine, weir::core::engine::EngineHandle) {
    engine_configured(dir, state_url, broker_url, fast_config()).await
}

/// The engine configuration of these helpers: fast retries and timers.
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        scheduler_tick: Duration::from_millis(5),
        ..EngineConfig::default()
    }
}

/// [`engine_on_broker`] with `config`.
pub async fn engine_configured(
    dir: &Path,
    state_url: &str,
    broker_url: &str,
    config: EngineConfig,
) -> (Engine, weir::core::engine::EngineHandle) {
    let engine = weir::App::default()
        .build_engine(&EngineOptions {
            config,
            state_url: state_url.to_string(),
            broker_url: broker_url.to_string(),
            ..EngineOptions::default()
        })
        .await
        .expect("engine");
    let loaded = weir::functions::load_all(dir, engine.drivers());
    assert!(
        loaded.errors.is_empty(),
        "function must load: {:?}",
        loaded.errors
    );
    engine.functions().replace(loaded.functions);
    let handle = engine.start(Roles::ALL).await.expect("start");
    (engine, handle)
}

/// Serves the HTTP API over `engine` on a free loopback port (event keys and API keys as
/// given); the base URL.
pub async fn serve_api(
    engine: Engine,
    event_keys: weir::api::Keys,
    api_keys: weir::api::Keys,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = weir::api::secured_router(engine, event_keys, api_keys);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Sends `event` through ingest and waits for the one run it triggers.
pub async fn run_event(engine: &Engine, function_id: &str, event: &Value) -> Run {
    let ids = engine
        .ingest_body(event.to_string().as_bytes())
        .await
        .expect("ingest");
    assert_eq!(ids.len(), 1);
    let filter = RunFilter {
        function_id: Some(function_id.to_string()),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = engine.state().list_runs(&filter).await.expect("list");
        if let Some(r) = runs.iter().find(|r| r.event_id == ids[0]) {
            return engine
                .wait_for_run(&r.id, Duration::from_secs(20))
                .await
                .expect("run finishes");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run was created for event {}",
            ids[0]
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A Redis state URL with a fresh key prefix, when the tests have a Redis
/// (`WEIR_TEST_REDIS_URL`; under CI=true its absence fails the test).
pub fn redis_state_url() -> Option<String> {
    let url = weir::core::testkit::service_url("WEIR_TEST_REDIS_URL")?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}prefix=weirtest-{}", ulid::Ulid::new()))
}

/// Runs an `async fn scenario(state_url: &str)` once on memory state and, with the
/// `state-redis` feature, once on Redis state.
#[macro_export]
macro_rules! on_every_state {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$scenario("memory://").await;
                }

                #[cfg(feature = "state-redis")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    if let Some(url) = super::common::redis_state_url() {
                        super::$scenario(&url).await;
                    }
                }
            }
        )*
    };
}

/// Kills the process when dropped.
pub struct Node(pub Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `weir serve` on `state` and `broker` listening on `port` (event key `crash-key`,
/// 2 s step lease), its log in `log`, with `extra` arguments; waits until it listens.
pub fn start_node_with(
    functions: &Path,
    state: &str,
    broker: &str,
    port: u16,
    log: &Path,
    extra: &[&str],
) -> Node {
    let log = std::fs::File::create(log).expect("log file");
    let node = Node(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--functions"])
            .arg(functions)
            .args([
                "--state",
                state,
                "--broker",
                broker,
                "--event-key",
                "crash-key",
            ])
            .args(extra)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--step-lease",
                "2s",
                "--executor-concurrency",
                "32",
            ])
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("weir serve"),
    );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return node;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("node on {port} did not start");
}

/// [`start_node_with`] without extra arguments.
pub fn start_node(functions: &Path, state: &str, broker: &str, port: u16, log: &Path) -> Node {
    start_node_with(functions, state, broker, port, log, &[])
}

/// `text` percent-encoded as a query parameter's value or a path segment
/// (`results=redis%3A%2F%2F…`): every byte but the unreserved ones escaped.
pub fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POSTs `body` (an event or an array of them) to `{base}/e/{key}`; the ids answered.
pub async fn send_events(base: &str, key: &str, body: &Value) -> Vec<String> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/e/{key}"))
        .json(body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    answer["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {answer}"))
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}
