//! Adapters registered through the builder: opened by URL scheme, fed into the engine, stopped
//! at shutdown; an adapter that fails stops the server; an unknown scheme fails the start.
//!
//! The adapter here is a small real one: it takes events as JSON lines over TCP (each line is
//! ingested and answered `ok <id>` or `error <message>`).

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::function_dir;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use weir::adapters::OpenAdapters;
use weir::config::ServeConfig;
use weir::core::adapter::{Adapter, Shutdown};
use weir::core::engine::{Engine, Roles};
use weir::core::registry::AdapterScheme;
use weir::core::run::RunStatus;
use weir::core::{Error, ErrorKind, Result};

/// Events as JSON lines over TCP, on the address of its URL (`lines://127.0.0.1:PORT`).
struct Lines {
    listener: std::sync::Mutex<Option<TcpListener>>,
}

fn lines() -> AdapterScheme {
    AdapterScheme::new(&["lines"], |url| async move {
        let addr = url.trim_start_matches("lines://").to_string();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::unavailable(format!("cannot bind {addr}")).with_source(e))?;
        Ok(Lines {
            listener: std::sync::Mutex::new(Some(listener)),
        })
    })
}

#[async_trait]
impl Adapter for Lines {
    fn name(&self) -> &str {
        "lines"
    }

    async fn run(&self, engine: Engine, mut shutdown: Shutdown) -> Result<()> {
        let listener = self
            .listener
            .lock()
            .map_err(|_| Error::internal("poisoned"))?
            .take()
            .ok_or_else(|| Error::internal("run twice"))?;
        // The connections it serves end with it.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (conn, _) = tokio::select! {
                _ = shutdown.raised() => return Ok(()),
                accepted = listener.accept() => accepted
                    .map_err(|e| Error::unavailable("accept failed").with_source(e))?,
            };
            let engine = engine.clone();
            connections.spawn(async move {
                let (read, mut write) = conn.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match engine.ingest_body(line.as_bytes()).await {
                        Ok(ids) => format!("ok {}\n", ids.join(",")),
                        Err(e) => format!("error {e}\n"),
                    };
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// An adapter whose run fails at once (`broken://`) or panics (`broken+panic://`).
struct Broken {
    panics: bool,
}

#[async_trait]
impl Adapter for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    async fn run(&self, _engine: Engine, _shutdown: Shutdown) -> Result<()> {
        if self.panics {
            panic!("the adapter's bug");
        }
        Err(Error::new(ErrorKind::Unavailable, "lost its source"))
    }
}

fn app() -> weir::App {
    weir::App::builder()
        .adapter_scheme(lines())
        .adapter_scheme(AdapterScheme::new(
            &["broken", "broken+panic"],
            |url| async move {
                Ok(Broken {
                    panics: url.starts_with("broken+panic:"),
                })
            },
        ))
        .build()
}

/// A loopback address nothing listens on now.
async fn free_address() -> String {
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    probe.local_addr().expect("addr").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_feeds_events_into_runs_and_stops_at_shutdown() {
    let def = json!({"id": "fed", "triggers": [{"event": "t/fed"}],
                     "steps": {"a": {"path": "file://./steps/a", "runtime": {"type": "process"}}}});
    let f = function_dir(&def, &[("a", r#"echo '{"fed": true}'"#)]);
    let app = app();
    let engine = app.build_engine(&Default::default()).await.expect("engine");
    let loaded = weir::functions::load_all(&f.dir, engine.drivers());
    engine.functions().replace(loaded.functions);
    let handle = engine.start(Roles::ALL).await.expect("start");
    let addr = free_address().await;
    let adapters = OpenAdapters::open(app.registry(), &[format!("lines://{addr}")])
        .await
        .expect("the adapter opens")
        .run(&engine);

    let conn = TcpStream::connect(&addr)
        .await
        .expect("the adapter listens");
    let (read, mut write) = conn.into_split();
    let mut answers = BufReader::new(read).lines();
    write
        .write_all(b"{\"name\": \"t/fed\", \"id\": \"job-1\"}\n{\"nope\n")
        .await
        .expect("send");
    let ok = answers.next_line().await.expect("read").expect("an answer");
    assert_eq!(ok, "ok job-1");
    let refused = answers.next_line().await.expect("read").expect("an answer");
    assert!(
        refused.starts_with("error ") && refused.contains("JSON"),
        "{refused}"
    );

    // "ok" means the event is stored; its run is created by the router a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let run = loop {
        let runs = engine
            .state()
            .list_runs(&Default::default())
            .await
            .expect("list");
        if let Some(run) = runs.into_iter().find(|r| r.event_id == "job-1") {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job-1 started no run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let run = engine
        .wait_for_run(&run.id, Duration::from_secs(20))
        .await
        .expect("finishes");
    assert_eq!(run.status, RunStatus::Completed, "{run:#?}");
    assert_eq!(run.steps["a"].output, Some(json!({"fed": true})));

    assert!(adapters.failed().is_none());
    assert!(
        adapters.stop(Duration::from_secs(5)).await,
        "the adapter returned at shutdown"
    );
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "the listener is closed once the adapter stopped"
    );
    handle.shutdown().await;
}

fn serve_config(adapters: &[&str], functions: &std::path::Path) -> ServeConfig {
    ServeConfig {
        functions: Some(functions.to_path_buf()),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        event_keys: vec!["k".into()],
        adapters: adapters.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_adapter_stops_the_server_with_exit_1() {
    let empty = tempfile::tempdir().expect("tempdir");
    let app = app();
    for url in ["broken://anything", "broken+panic://anything"] {
        let served = tokio::time::timeout(
            Duration::from_secs(20),
            app.serve(serve_config(&[url], empty.path())),
        )
        .await
        .expect("the server stops by itself");
        assert_eq!(served.expect("no start error"), 1, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_adapter_is_reported_as_a_failure() {
    let app = app();
    let engine = app.build_engine(&Default::default()).await.expect("engine");
    let adapters = OpenAdapters::open(app.registry(), &["broken+panic://x".to_string()])
        .await
        .expect("opens")
        .run(&engine);
    let why = tokio::time::timeout(Duration::from_secs(10), adapters.failure())
        .await
        .expect("the panic is reported");
    assert_eq!(why, "adapter broken panicked");
    assert_eq!(
        adapters.failed().as_deref(),
        Some("adapter broken panicked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_scheme_this_build_lacks_fails_the_start() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = app()
        .serve(serve_config(
            &["nosuch+amqp://guest:secret@h/"],
            empty.path(),
        ))
        .await
        .expect_err("unknown scheme");
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(
        text.contains("unknown adapter scheme \"nosuch+amqp\"")
            && text.contains("lines://, broken://, broken+panic://"),
        "{text}"
    );
    assert!(!text.contains("secret"), "the URL is redacted: {text}");
    let err = app()
        .serve(serve_config(&["guest:secret@h"], empty.path()))
        .await
        .expect_err("not a URL");
    assert!(
        err.to_string().contains("not a URL") && !err.to_string().contains("secret"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_the_start_before_any_adapter_runs() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let empty = tempfile::tempdir().expect("tempdir");
    let adapter_addr = free_address().await;
    let mut config = serve_config(&[&format!("lines://{adapter_addr}")], empty.path());
    config.listen = Some(taken.local_addr().expect("addr"));
    let err = app().serve(config).await.expect_err("the port is taken");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    assert!(
        TcpStream::connect(&adapter_addr).await.is_err(),
        "the adapter's listener is gone with the failed start"
    );
}
