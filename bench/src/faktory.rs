//! `weir-bench faktory`: weir's Faktory adapter under load from Faktory's wire protocol.
//!
//! weir runs in this process (the adapter on a loopback port, the engine with every role on
//! the chosen state store). C connections, each a client that sends one command and waits for
//! its reply (as every Faktory client does), measure four figures:
//! - PUSH: N jobs for Faktory workers, one PUSH each;
//! - PUSHB: N jobs in batches of 100;
//! - FETCH + ACK: the jobs of the two phases above taken and acknowledged;
//! - jobs → runs: N jobs whose type a weir function handles (a no-op `http` step served
//!   here), from the first PUSH to the N-th finished run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::engine::Roles;
use weir_core::{Error, Result};

use super::FaktoryArgs;
use super::latency::TempDir;
use super::local::serve_local;

/// A connection speaking Faktory's protocol: one command, one reply.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(address: std::net::SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| Error::unavailable("cannot connect to the adapter").with_source(e))?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(reader),
            writer,
            line: String::new(),
        };
        conn.reply().await?;
        conn.command(br#"HELLO {"v":2}"#).await?;
        Ok(conn)
    }

    /// Sends `line` and reads its reply: `None` for the null reply, else the text or body.
    async fn command(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        self.writer.write_all(&out).await.map_err(io)?;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<Option<Vec<u8>>> {
        self.line.clear();
        self.reader.read_line(&mut self.line).await.map_err(io)?;
        let line = self.line.trim_end();
        if let Some(error) = line.strip_prefix('-') {
            return Err(Error::internal(format!("the adapter answered {error}")));
        }
        match line.strip_prefix('$') {
            Some("-1") => Ok(None),
            Some(len) => {
                let len: usize = len
                    .parse()
                    .map_err(|_| Error::internal(format!("bad reply {line}")))?;
                let mut body = vec![0; len + 2];
                self.reader.read_exact(&mut body).await.map_err(io)?;
                body.truncate(len);
                Ok(Some(body))
            }
            None => Ok(Some(line.as_bytes().to_vec())),
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::unavailable("the adapter's connection failed").with_source(e)
}

/// A job's PUSH payload.
fn job(jobtype: &str, jid: u64, phase: &str) -> serde_json::Value {
    json!({"jid": format!("bench-{phase}-{jid:012}"), "jobtype": jobtype, "args": [jid], "queue": "bench"})
}

/// Runs `work(connection, index)` on `connections` connections at once; the items of each
/// are `index, index + connections, …` below `total`. Returns the seconds it took.
async fn on_connections<F, Fut>(
    address: std::net::SocketAddr,
    connections: u64,
    total: u64,
    work: F,
) -> Result<f64>
where
    F: Fn(Conn, Vec<u64>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(Conn::open(address).await?);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let items: Vec<u64> = (i as u64..total).step_by(connections as usize).collect();
        let work = work.clone();
        tasks.spawn(async move { work(conn, items).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::internal(format!("a bench connection panicked: {e}")))??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `weir-bench faktory`.
pub(super) async fn faktory(args: FaktoryArgs) -> Result<i32> {
    let app = Router::new().route("/noop", post(|| async { axum::Json(json!({})) }));
    let (step_addr, _server) = serve_local(app).await?;
    let dir = TempDir::new()?;
    let fn_dir = dir.0.join("noop");
    let definition = json!({
        "id": "noop",
        "triggers": [{"event": "faktory/weir_noop"}],
        "steps": {"noop": {"runtime": {"type": "http", "url": format!("http://{step_addr}/noop")}}},
    });
    std::fs::create_dir_all(&fn_dir)
        .and_then(|()| std::fs::write(fn_dir.join("weir.json"), definition.to_string()))
        .map_err(|e| Error::internal("cannot write the bench function").with_source(e))?;
    let (engine, _) = super::runs_setup::build(&args.state, "memory://", &dir.0).await?;
    let handle = engine.start(Roles::ALL).await?;
    let adapter = weir_adapter_faktory::FaktoryAdapter::open("faktory://127.0.0.1:0").await?;
    let address = adapter
        .local_addr()
        .ok_or_else(|| Error::internal("the adapter has no address"))?;
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { adapter.run(engine, shutdown).await }
    });
    out!(
        "weir-bench faktory: {} jobs per phase over {} connections, state {}",
        args.jobs,
        args.connections,
        weir::core::redact::redact_url(&args.state)
    );
    let (n, c) = (args.jobs, args.connections);
    let mut rows = Vec::new();

    let push = on_connections(address, c, n, |mut conn, items| async move {
        for i in items {
            let line = format!("PUSH {}", job("legacy_noop", i, "push"));
            conn.command(line.as_bytes()).await?;
        }
        Ok(())
    })
    .await?;
    rows.push(("PUSH (jobs for workers)", n, push));

    let batches = n.div_ceil(100);
    let pushb = on_connections(address, c, batches, move |mut conn, items| async move {
        for b in items {
            let jobs: Vec<_> = (b * 100..((b + 1) * 100).min(n))
                .map(|i| job("legacy_noop", i, "pushb"))
                .collect();
            let reply = conn
                .command(format!("PUSHB {}", serde_json::Value::from(jobs)).as_bytes())
                .await?;
            if reply.as_deref() != Some(b"{}") {
                return Err(Error::internal("PUSHB refused jobs"));
            }
        }
        Ok(())
    })
    .await?;
    rows.push(("PUSHB of 100", n, pushb));

    // Timed to the last ACK: once the jobs are gone, the other connections' FETCHes wait 2 s
    // for nothing.
    let left = Arc::new(AtomicU64::new(2 * n));
    let last_ack = Arc::new(std::sync::Mutex::new(Instant::now()));
    let fetch_started = Instant::now();
    on_connections(address, c, c, {
        let (left, last_ack) = (left.clone(), last_ack.clone());
        move |mut conn, _| {
            let (left, last_ack) = (left.clone(), last_ack.clone());
            async move {
                while left.load(Ordering::Relaxed) > 0 {
                    let Some(job) = conn.command(b"FETCH bench").await? else {
                        continue;
                    };
                    let job: serde_json::Value = serde_json::from_slice(&job)
                        .map_err(|e| Error::internal("a fetched job is not JSON").with_source(e))?;
                    let ack = format!(r#"ACK {{"jid":"{}"}}"#, job["jid"].as_str().unwrap_or(""));
                    conn.command(ack.as_bytes()).await?;
                    if left.fetch_sub(1, Ordering::Relaxed) == 1
                        && let Ok(mut last) = last_ack.lock()
                    {
                        *last = Instant::now();
                    }
                }
                Ok(())
            }
        }
    })
    .await?;
    let fetch = last_ack
        .lock()
        .map(|last| last.saturating_duration_since(fetch_started).as_secs_f64())
        .unwrap_or(f64::NAN);
    rows.push(("FETCH + ACK", 2 * n, fetch));

    let mut finished = engine.subscribe_finished();
    let counter = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            match finished.recv().await {
                Ok(_) => seen += 1,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => seen += k,
                Err(_) => break,
            }
        }
        Instant::now()
    });
    let started = Instant::now();
    on_connections(address, c, n, |mut conn, items| async move {
        for i in items {
            let line = format!("PUSH {}", job("weir_noop", i, "runs"));
            conn.command(line.as_bytes()).await?;
        }
        Ok(())
    })
    .await?;
    let done = tokio::time::timeout(Duration::from_secs(600), counter)
        .await
        .map_err(|_| Error::internal("the runs did not finish in 10 minutes"))?
        .map_err(|e| Error::internal(format!("the run counter failed: {e}")))?;
    rows.push(("jobs -> completed runs", n, (done - started).as_secs_f64()));

    out!(
        "{:<28} {:>8} {:>10} {:>10}",
        "phase",
        "jobs",
        "seconds",
        "jobs/s"
    );
    for (phase, jobs, seconds) in rows {
        out!(
            "{:<28} {:>8} {:>10.2} {:>10.0}",
            phase,
            jobs,
            seconds,
            jobs as f64 / seconds.max(1e-9)
        );
    }
    trigger.raise();
    let _ = running.await;
    handle.shutdown().await;
    Ok(0)
}
