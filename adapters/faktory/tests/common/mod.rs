//! What the adapter's tests share: an engine on the embedded drivers with functions written to
//! a directory, and the adapter running beside it on a port the system picks.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_adapter_faktory::FaktoryAdapter;
use weir_core::adapter::{Adapter, Shutdown, ShutdownTrigger};
use weir_core::driver::DriverSet;
use weir_core::engine::{Engine, EngineConfig, EngineHandle, EngineParts, Roles};
use weir_core::run::{Run, RunFilter};

/// Writes the function `name` into `dir`: its `weir.json` and one executable `step` script.
pub fn write_function(dir: &Path, name: &str, definition: &Value, script: &str) {
    let fn_dir = dir.join(name);
    std::fs::create_dir_all(&fn_dir).expect("mkdir");
    std::fs::write(fn_dir.join("weir.json"), definition.to_string()).expect("weir.json");
    let step = fn_dir.join("step");
    std::fs::write(&step, format!("#!/bin/sh\n{script}\n")).expect("step");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Writes the function `mailer` into `dir`: triggered by `faktory/send_email`, its step
/// `send` prints `{"to": <the job's first arg>}`.
pub fn mailer(dir: &Path) {
    write_function(
        dir,
        "mailer",
        &serde_json::json!({"id": "mailer", "triggers": [{"event": "faktory/send_email"}],
                "steps": {"send": {"path": "file://./step", "runtime": {"type": "process"}}}}),
        r#"exec python3 -c 'import json, sys; d = json.load(sys.stdin)["event"]["data"]; print(json.dumps({"to": d["args"][0]}))'"#,
    );
}

/// Runs the Node `script` with `args` (the `faktory-worker` package found in `node_path`) and
/// returns what it printed; panics with its output when it fails.
pub async fn node(node_path: &str, script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .args(args)
        .env("NODE_PATH", node_path)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An engine on memory state and broker with the process runtime, running every role, with
/// the functions `names` of `dir` loaded.
pub async fn engine(dir: &Path, names: &[&str]) -> (Engine, EngineHandle) {
    let drivers = DriverSet::new().with(Arc::new(weir_driver_process::ProcessDriver::new()));
    let engine = Engine::new(EngineParts {
        state: Arc::new(weir_state_memory::MemoryStateStore::new()),
        events: Arc::new(weir_state_memory::MemoryEventStore::new()),
        broker: Arc::new(weir_broker_memory::MemoryBroker::new()),
        drivers,
        config: EngineConfig::default(),
    });
    let mut loaded = Vec::new();
    for name in names {
        loaded.push(
            weir_core::function::load_function(&dir.join(name), engine.drivers())
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    engine.functions().replace(loaded);
    let handle = engine.start(Roles::ALL).await.expect("start");
    (engine, handle)
}

/// The adapter, running beside an engine, for a test.
pub struct Running {
    /// Where Faktory clients connect: `tcp://[:PASSWORD@]127.0.0.1:PORT`.
    pub url: String,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<weir_core::Result<()>>,
}

/// Opens the adapter on a free loopback port (`password` when given) and runs it for
/// `engine` until [`Running::stop`].
pub async fn run_adapter(engine: &Engine, password: Option<&str>, query: &str) -> Running {
    let credentials = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let adapter = FaktoryAdapter::open(&format!("faktory://{credentials}127.0.0.1:0{query}"))
        .await
        .expect("opens");
    let port = adapter.local_addr().expect("bound").port();
    let (trigger, shutdown) = Shutdown::new();
    let engine = engine.clone();
    let task = tokio::spawn(async move { adapter.run(engine, shutdown).await });
    Running {
        url: format!("tcp://{credentials}127.0.0.1:{port}"),
        trigger,
        task,
    }
}

impl Running {
    /// The `host:port` it listens on.
    pub fn address(&self) -> &str {
        self.url.rsplit_once('@').map_or(&self.url[6..], |(_, a)| a)
    }

    /// Raises shutdown (the adapter keeps serving workers' connections for its drain).
    pub fn raise(&self) {
        self.trigger.raise();
    }

    /// Raises shutdown and checks that the adapter returns without an error within 10 s.
    pub async fn stop(self) {
        self.trigger.raise();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the adapter stops at shutdown")
            .expect("joins")
            .expect("no error");
    }
}

/// The runs of the event `event_id`, once at least one has ended (waits up to 30 s).
pub async fn ended_runs_of(engine: &Engine, event_id: &str) -> Vec<Run> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let summaries = engine
            .state()
            .list_runs(&RunFilter::default())
            .await
            .expect("list");
        let mine: Vec<_> = summaries
            .into_iter()
            .filter(|r| r.event_id == event_id)
            .collect();
        if !mine.is_empty() && mine.iter().all(|r| r.ended_at.is_some()) {
            let mut runs = Vec::new();
            for summary in mine {
                runs.push(
                    engine
                        .state()
                        .get_run(&summary.id)
                        .await
                        .expect("get")
                        .expect("run"),
                );
            }
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ended run of event {event_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw Faktory connection.
pub struct Raw {
    /// The reading half.
    pub reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    /// The writing half.
    pub writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    /// Connects and reads the greeting.
    pub async fn connect(address: &str) -> (Raw, String) {
        let stream = TcpStream::connect(address).await.expect("connects");
        let (reader, writer) = stream.into_split();
        let mut raw = Raw {
            reader: BufReader::new(reader),
            writer,
        };
        let hi = raw.reply().await.expect("a greeting");
        (raw, hi)
    }

    /// Connects and says HELLO.
    pub async fn hello(address: &str) -> Raw {
        let (mut raw, hi) = Raw::connect(address).await;
        assert_eq!(hi, r#"+HI {"v":2}"#);
        assert_eq!(raw.send(br#"HELLO {"v":2}"#).await.as_deref(), Some("+OK"));
        raw
    }

    /// Sends one line and reads the reply.
    pub async fn send(&mut self, line: &[u8]) -> Option<String> {
        self.writer.write_all(line).await.ok()?;
        self.writer.write_all(b"\r\n").await.ok()?;
        self.reply().await
    }

    /// One reply (a bulk string's line and body joined by a space); `None` once closed.
    pub async fn reply(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches("\r\n").to_string();
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) {
            let mut body = vec![0; len + 2];
            self.reader.read_exact(&mut body).await.ok()?;
            body.truncate(len);
            return Some(format!("{line} {}", String::from_utf8_lossy(&body)));
        }
        Some(line)
    }

    /// Whether the server closed the connection (reads EOF within 5 s).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}
