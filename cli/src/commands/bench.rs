//! `weir bench`: a load generator that prints its figures.
//!
//! - `weir bench ingest` POSTs events to `/e/bench-key` with a fixed number of concurrent
//!   keep-alive HTTP/1.1 connections and prints throughput and request latency; `--baseline`
//!   runs the same load against a bare axum server that only parses the JSON body.
//! - `weir bench latency` measures event POSTed → first step started, in one process, with a
//!   local HTTP step server.
//! - `weir bench baseline-server` (hidden) serves the bare baseline as its own process.
//!
//! This is how the project measures performance: figures come from release builds of this
//! command, never from timed tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use weir_core::Error;
use weir_core::engine::{EngineHandle, Roles};
use weir_core::run::RunStatus;

use crate::api::EventKeys;
use crate::embedded::{EngineOptions, build_engine};

/// The event key every bench request is sent with.
const BENCH_KEY: &str = "bench-key";

/// ~200 bytes of padding per ingested event, so events have a realistic size.
const PAD: &str = "weir-bench-padding-0123456789abcdefghijklmnopqrstuvwxyz-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-\
                   weir-bench-padding-0123456789abcdefghijklmnopqrstuvwxyz-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-\
                   0123456789abcdef";

/// Arguments of `weir bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput: POST N events in requests of B events over C keep-alive connections;
    /// print events/s, requests/s and p50/p99/max request latency.
    Ingest(IngestArgs),
    /// End-to-end latency: event POSTed → its first step's HTTP request arrives, at a fixed rate,
    /// all in this process (engine, API and a local step server).
    Latency(LatencyArgs),
    /// Serve the bare baseline (parse the JSON body, answer `{"ids":[],"status":200}`) as its own
    /// process, for `weir bench ingest --baseline-url`.
    #[command(hide = true)]
    BaselineServer(BaselineServerArgs),
}

/// Arguments of `weir bench ingest`.
#[derive(Debug, Args)]
#[command(after_help = "\
Targets:
  --url URL           a server started separately (e.g. `weir dev --listen 127.0.0.1:8299 EMPTY_DIR`
                      from a release build). This is the fairer figure: the server and this load
                      generator are separate processes and each gets its own threads.
  (no --url)          an in-process `weir dev` equivalent (embedded engine, memory state and broker,
                      no functions) on 127.0.0.1:0, sharing this process's runtime with the load
                      generator.
  --baseline          also an in-process bare axum server that only parses the JSON body; the same
                      load is run against it and the ratio weir/baseline is printed.
  --baseline-url URL  a bare baseline served separately (`weir bench baseline-server --listen ADDR`).

CPU columns (Linux): `bench cores` is the CPU this process used during the measurement divided by
its duration (the load generator, plus the server when it is in-process); `srv cores` and
`srv us/ev` are the CPU of the server process given with --pid / --baseline-pid. When
`bench cores` + `srv cores` is close to the number of cores, the machine is saturated and the
figures are bounded by the load generator as much as by the server.

With 2 cores the load generator itself is often the bottleneck: `--client raw` spends much less CPU
per request than the default reqwest client, leaving more of the machine to the server.

Each target first gets a warm-up (--warmup-secs) whose figures are discarded. Every answer must be
200 with one id per event sent (the baseline answers no ids); anything else is counted as an error
and makes the exit code 1.")]
pub struct IngestArgs {
    /// Base URL of a running weir server (events go to URL/e/bench-key); in-process when absent.
    #[arg(long)]
    pub url: Option<String>,
    /// Number of events to send (after the warm-up).
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Events per request: 1 sends a single JSON object, more send a JSON array.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// Also run the same load against an in-process bare axum baseline and print the ratio.
    #[arg(long)]
    pub baseline: bool,
    /// Run the same load against a separately served baseline (`weir bench baseline-server`).
    #[arg(long)]
    pub baseline_url: Option<String>,
    /// Warm-up per target, in seconds (same load, figures discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// HTTP client of the load generator: `reqwest` (a shared keep-alive client) or `raw` (a
    /// minimal HTTP/1.1 client, one keep-alive connection per worker, far cheaper per request).
    #[arg(long, value_enum, default_value_t = ClientKind::Reqwest)]
    pub client: ClientKind,
    /// Process id of the --url server: also print its CPU use (Linux, from /proc).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Process id of the --baseline-url server: also print its CPU use (Linux, from /proc).
    #[arg(long)]
    pub baseline_pid: Option<u32>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The HTTP client `weir bench ingest` sends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// One shared `reqwest` client (HTTP/1.1, keep-alive, a pool of `--concurrency` connections).
    Reqwest,
    /// A minimal HTTP/1.1 client over one keep-alive TCP connection per worker: pre-formatted
    /// request head, `Content-Length` answers only. Uses a fraction of reqwest's CPU per request,
    /// which matters when the load generator and the server share 2 cores.
    Raw,
}

/// Arguments of `weir bench latency`.
#[derive(Debug, Args)]
#[command(after_help = "\
Everything runs in this process: the embedded engine (memory state and broker) with one function
triggered by `bench/latency` whose only step is an HTTP step pointing at a local step server; the
API on 127.0.0.1:0; and the load. Events are POSTed over HTTP at a fixed rate driven by a tokio
interval with MissedTickBehavior::Delay (a late tick pushes the schedule back instead of bursting
to catch up; the achieved rate is printed). Each POST runs in its own task, so a slow answer does
not hold back the next event.

Printed: p50/p90/p99/max of (step request arrival at the step server − POST start), the same
figures for the POST /e round trip alone, how many steps started and how many runs completed.
With --baseline, the same POSTs are then sent at the same rate to a bare axum server that only
parses the JSON: the round-trip floor of this machine (HTTP, the client, thread wake-ups).")]
pub struct LatencyArgs {
    /// Events per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of warm-up at the same rate before measuring (figures discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Afterwards, POST the same events at the same rate to an in-process bare baseline server
    /// (parses the JSON, stores nothing) and print its round trip: this machine's floor.
    #[arg(long)]
    pub baseline: bool,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weir bench baseline-server`.
#[derive(Debug, Args)]
pub struct BaselineServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8298")]
    pub listen: SocketAddr,
}

pub(super) async fn bench(args: BenchArgs) -> weir_core::Result<i32> {
    match args.command {
        BenchCommand::Ingest(a) => ingest(a).await,
        BenchCommand::Latency(a) => latency(a).await,
        BenchCommand::BaselineServer(a) => baseline_server(a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Latency percentiles of a set of samples (nanoseconds).
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    count: usize,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: u64,
}

impl Percentiles {
    /// Sorts `samples` and computes nearest-rank percentiles.
    fn of(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let n = samples.len();
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[i]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Percentiles {
            count: samples.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
            mean: (sum / samples.len() as u128) as u64,
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50": ms(self.p50),
            "p90": ms(self.p90),
            "p99": ms(self.p99),
            "max": ms(self.max),
            "mean": ms(self.mean),
        })
    }
}

/// Nanoseconds as milliseconds, rounded to the microsecond.
fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A keep-alive HTTP/1.1 client with room for `connections` idle connections.
fn client(connections: usize) -> weir_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))
}

async fn bind(addr: SocketAddr) -> weir_core::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {addr}")).with_source(e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::internal("no local address").with_source(e))?;
    Ok((listener, local))
}

/// Serves `app` on 127.0.0.1:0 in a task; returns its address and the task.
async fn serve_local(app: Router) -> weir_core::Result<(SocketAddr, JoinHandle<()>)> {
    let (listener, addr) = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench: local server failed: {e}");
        }
    });
    Ok((addr, task))
}

/// An in-process `weir dev` equivalent: the embedded engine with every role and the API.
struct LocalWeir {
    url: String,
    engine: weir_core::engine::Engine,
    handle: EngineHandle,
    server: JoinHandle<()>,
}

impl LocalWeir {
    /// Starts the engine (with `functions` loaded, if any) and serves the API on 127.0.0.1:0.
    async fn start(functions: Option<&std::path::Path>) -> weir_core::Result<LocalWeir> {
        let engine = build_engine(&EngineOptions::default()).await?;
        if let Some(dir) = functions {
            let loaded = crate::functions::load_all(dir, engine.drivers());
            if let Some(e) = loaded.errors.first() {
                return Err(Error::internal(format!(
                    "the bench function did not load: {e}"
                )));
            }
            engine.functions().replace(loaded.functions);
        }
        let handle = engine.start(Roles::ALL).await?;
        let app = crate::api::router(engine.clone(), EventKeys::Any);
        let (addr, server) = serve_local(app).await?;
        Ok(LocalWeir {
            url: format!("http://{addr}"),
            engine,
            handle,
            server,
        })
    }

    async fn stop(self) {
        self.server.abort();
        self.handle.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline
// ---------------------------------------------------------------------------------------------

/// The bare baseline: parse the body as JSON and answer like weir does, storing nothing.
fn baseline_router() -> Router {
    Router::new()
        .route("/e/{key}", post(baseline_events))
        .layer(DefaultBodyLimit::disable())
}

async fn baseline_events(body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(_) => axum::Json(json!({"ids": [], "status": 200})).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string(), "status": 400})),
        )
            .into_response(),
    }
}

async fn baseline_server(args: BaselineServerArgs) -> weir_core::Result<i32> {
    let (listener, addr) = bind(args.listen).await?;
    eprintln!("weir bench baseline-server listening on http://{addr} (POST /e/<any-key>)");
    axum::serve(listener, baseline_router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::internal("server failed").with_source(e))?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// weir bench ingest
// ---------------------------------------------------------------------------------------------

/// The part of an answer the load generator checks.
#[derive(Deserialize)]
struct Answer {
    ids: Vec<IgnoredAny>,
}

/// When a load stops.
#[derive(Clone, Copy)]
enum Until {
    /// After this many events.
    Events(u64),
    /// At this instant (warm-up).
    Deadline(Instant),
}

/// One load against one target.
#[derive(Clone)]
struct Load {
    url: String,
    batch: u64,
    concurrency: u64,
    /// Whether answers must hold one id per event (weir) or just an `ids` array (baseline).
    expect_ids: bool,
    /// The HTTP client to send with.
    client: ClientKind,
}

/// What one load measured.
struct LoadResult {
    events: u64,
    requests: u64,
    elapsed: Duration,
    latency: Percentiles,
    errors: u64,
    first_errors: Vec<String>,
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat` (Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 in the Linux user-space ABI.
    Some((utime + stime) / 100.0)
}

/// CPU used during one measurement, in CPU seconds.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// This process (the load generator, and the server when in-process).
    this: Option<f64>,
    /// The server process given with `--pid` / `--baseline-pid`.
    server: Option<f64>,
}

/// What one worker measured.
#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u64>,
    events: u64,
    errors: u64,
    first_errors: Vec<String>,
}

/// A request body of `n` events numbered from `first`.
fn ingest_body(first: u64, n: u64) -> Bytes {
    let one = |i: u64| format!(r#"{{"name":"bench/ingested","data":{{"i":{i},"pad":"{PAD}"}}}}"#);
    if n == 1 {
        return Bytes::from(one(first));
    }
    let mut s = String::with_capacity(n as usize * (PAD.len() + 64) + 2);
    s.push('[');
    for i in first..first + n {
        if i > first {
            s.push(',');
        }
        s.push_str(&one(i));
    }
    s.push(']');
    Bytes::from(s)
}

/// Runs `load` until `until`; event numbers start at `first_event`.
async fn run_load(
    client: &reqwest::Client,
    load: &Load,
    until: Until,
    first_event: u64,
) -> LoadResult {
    let url: Arc<str> = format!("{}/e/{BENCH_KEY}", load.url.trim_end_matches('/')).into();
    let raw = match load.client {
        ClientKind::Reqwest => None,
        ClientKind::Raw => match RawTarget::parse(&url) {
            Ok(t) => Some(Arc::new(t)),
            Err(message) => {
                return LoadResult {
                    events: 0,
                    requests: 0,
                    elapsed: Duration::ZERO,
                    latency: Percentiles::default(),
                    errors: 1,
                    first_errors: vec![message],
                };
            }
        },
    };
    let next_request = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(load.concurrency as usize);
    for _ in 0..load.concurrency {
        let mut sender = match &raw {
            None => Sender::Reqwest {
                client: client.clone(),
                url: url.clone(),
            },
            Some(target) => Sender::Raw(RawConn::new(target.clone())),
        };
        let next_request = next_request.clone();
        let (batch, expect_ids) = (load.batch, load.expect_ids);
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult::default();
            loop {
                let req = next_request.fetch_add(1, Ordering::Relaxed);
                let first = req * batch;
                let n = match until {
                    Until::Events(total) => {
                        if first >= total {
                            break;
                        }
                        batch.min(total - first)
                    }
                    Until::Deadline(at) => {
                        if Instant::now() >= at {
                            break;
                        }
                        batch
                    }
                };
                let body = ingest_body(first_event + first, n);
                let t0 = Instant::now();
                let outcome = sender.post(body).await.and_then(|(status, answer)| {
                    check_answer(status, &answer, if expect_ids { n } else { 0 })
                });
                r.latencies.push(nanos(t0.elapsed()));
                match outcome {
                    Ok(()) => r.events += n,
                    Err(message) => {
                        r.errors += 1;
                        if r.first_errors.len() < 3 {
                            r.first_errors.push(message);
                        }
                    }
                }
            }
            r
        }));
    }
    let mut latencies = Vec::new();
    let mut result = LoadResult {
        events: 0,
        requests: 0,
        elapsed: Duration::ZERO,
        latency: Percentiles::default(),
        errors: 0,
        first_errors: Vec::new(),
    };
    for w in workers {
        match w.await {
            Ok(r) => {
                latencies.extend_from_slice(&r.latencies);
                result.events += r.events;
                result.errors += r.errors;
                for e in r.first_errors {
                    if result.first_errors.len() < 5 {
                        result.first_errors.push(e);
                    }
                }
            }
            Err(e) => {
                result.errors += 1;
                result.first_errors.push(format!("worker failed: {e}"));
            }
        }
    }
    result.elapsed = started.elapsed();
    result.requests = latencies.len() as u64;
    result.latency = Percentiles::of(&mut latencies);
    result
}

/// Sends one request; checks the status and the number of ids (`ids` = 0: any array).
async fn send_one(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    ids: u64,
) -> Result<(), String> {
    let (status, bytes) = reqwest_post(client, url, body).await?;
    check_answer(status, &bytes, ids)
}

/// Checks an answer: 200 and an `ids` array, of `ids` elements unless `ids` is 0.
fn check_answer(status: u16, bytes: &[u8], ids: u64) -> Result<(), String> {
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(format!("status {status}: {text}"));
    }
    let answer: Answer =
        serde_json::from_slice(bytes).map_err(|e| format!("unexpected answer: {e}"))?;
    if ids > 0 && answer.ids.len() as u64 != ids {
        return Err(format!("expected {ids} ids, got {}", answer.ids.len()));
    }
    Ok(())
}

/// POSTs `body` as JSON with reqwest; returns the status and the answer's body.
async fn reqwest_post(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = answer.status();
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| format!("reading the answer failed: {}", chain(&e)))?;
    Ok((status.as_u16(), bytes))
}

/// One worker's way of sending requests.
enum Sender {
    /// The shared reqwest client.
    Reqwest {
        client: reqwest::Client,
        url: Arc<str>,
    },
    /// The worker's own raw connection.
    Raw(RawConn),
}

impl Sender {
    /// POSTs `body`; returns the status and the answer's body.
    async fn post(&mut self, body: Bytes) -> Result<(u16, Bytes), String> {
        match self {
            Sender::Reqwest { client, url } => reqwest_post(client, url, body).await,
            Sender::Raw(conn) => conn.post(&body).await,
        }
    }
}

/// Where the raw client connects and what it sends before each body.
struct RawTarget {
    /// `host:port` to connect to.
    authority: String,
    /// The request head up to the `Content-Length` value.
    head: String,
}

impl RawTarget {
    /// Parses an `http://host:port/path` URL.
    fn parse(url: &str) -> Result<RawTarget, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("--client raw speaks plain http:// only: {url}"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("no host in {url}"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: ",
            parsed.path()
        );
        Ok(RawTarget { authority, head })
    }
}

/// A minimal HTTP/1.1 keep-alive connection: sends a pre-formatted head and the body, reads a
/// `Content-Length` answer. Reconnects after an error or a `Connection: close`.
struct RawConn {
    target: Arc<RawTarget>,
    stream: Option<tokio::net::TcpStream>,
    /// Bytes read and not consumed yet.
    input: Vec<u8>,
    /// The request being sent.
    output: Vec<u8>,
}

impl RawConn {
    fn new(target: Arc<RawTarget>) -> RawConn {
        RawConn {
            target,
            stream: None,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(4096),
        }
    }

    async fn post(&mut self, body: &[u8]) -> Result<(u16, Bytes), String> {
        use std::io::Write as _;
        self.output.clear();
        self.output.extend_from_slice(self.target.head.as_bytes());
        let _ = write!(self.output, "{}\r\n\r\n", body.len());
        self.output.extend_from_slice(body);
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.target.authority)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.target.authority))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.input.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("not connected".into());
        };
        match exchange(stream, &self.output, &mut self.input).await {
            Ok((status, answer, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok((status, answer))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Writes `request` and reads one answer; returns its status, body and whether the connection
/// stays open.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    input: &mut Vec<u8>,
) -> Result<(u16, Bytes, bool), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut scanned = 0;
    let head_end = loop {
        if let Some(p) = input[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scanned + p + 4;
        }
        scanned = input.len().saturating_sub(3);
        if input.len() > 64 * 1024 {
            return Err("answer head over 64 KiB".into());
        }
        input.reserve(8192);
        let n = stream
            .read_buf(input)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
    };
    let head = std::str::from_utf8(&input[..head_end]).map_err(|_| "answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut length = None;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("--client raw cannot read chunked answers".into());
        }
    }
    let length = length.ok_or("answer without Content-Length")?;
    while input.len() < head_end + length {
        input.reserve(head_end + length - input.len());
        let n = stream
            .read_buf(input)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection mid-answer".into());
        }
    }
    let body = Bytes::copy_from_slice(&input[head_end..head_end + length]);
    input.drain(..head_end + length);
    Ok((status, body, keep_alive))
}

/// An error and its sources, `: `-separated (reqwest hides the cause otherwise).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One printed row of `weir bench ingest`.
struct Row {
    target: String,
    url: String,
    result: LoadResult,
    cpu: Cpu,
}

impl Row {
    fn events_per_s(&self) -> f64 {
        self.result.events as f64 / self.result.elapsed.as_secs_f64().max(1e-9)
    }

    fn requests_per_s(&self) -> f64 {
        self.result.requests as f64 / self.result.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU seconds per wall second (cores in use) of this process and of the server.
    fn cores(&self) -> (Option<f64>, Option<f64>) {
        let secs = self.result.elapsed.as_secs_f64().max(1e-9);
        (
            self.cpu.this.map(|c| c / secs),
            self.cpu.server.map(|c| c / secs),
        )
    }

    /// Server CPU microseconds per event.
    fn server_us_per_event(&self) -> Option<f64> {
        let events = self.result.events.max(1) as f64;
        self.cpu.server.map(|c| c * 1e6 / events)
    }

    fn json(&self) -> Value {
        let r = &self.result;
        let (this_cores, server_cores) = self.cores();
        json!({
            "bench_cores": this_cores,
            "server_cores": server_cores,
            "server_cpu_us_per_event": self.server_us_per_event(),
            "target": self.target,
            "url": self.url,
            "events": r.events,
            "requests": r.requests,
            "seconds": r.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_s().round(),
            "requests_per_s": self.requests_per_s().round(),
            "latency_ms": r.latency.json(),
            "errors": r.errors,
            "first_errors": r.first_errors,
        })
    }
}

/// Warms `load` up, then measures it (and the CPU of this process and of `server_pid`).
async fn measure(
    client: &reqwest::Client,
    load: &Load,
    args: &IngestArgs,
    server_pid: Option<u32>,
    target: &str,
) -> (LoadResult, Cpu) {
    let quiet = args.json;
    if args.warmup_secs > 0.0 {
        if !quiet {
            eprintln!("{target}: warming up for {} s", args.warmup_secs);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
        // Warm-up events are numbered far above the measured ones.
        run_load(client, load, Until::Deadline(deadline), 1 << 40).await;
    }
    if !quiet {
        eprintln!("{target}: sending {} events", args.events);
    }
    let server = server_pid.map(|p| p.to_string());
    let this0 = cpu_secs("self");
    let server0 = server.as_deref().and_then(cpu_secs);
    let result = run_load(client, load, Until::Events(args.events), 0).await;
    let cpu = Cpu {
        this: this0.zip(cpu_secs("self")).map(|(a, b)| b - a),
        server: server0
            .zip(server.as_deref().and_then(cpu_secs))
            .map(|(a, b)| b - a),
    };
    (result, cpu)
}

async fn ingest(args: IngestArgs) -> weir_core::Result<i32> {
    if !args.warmup_secs.is_finite() || args.warmup_secs < 0.0 {
        return Err(Error::invalid("--warmup-secs must be a number ≥ 0"));
    }
    let client = client(args.concurrency as usize)?;
    let mut rows = Vec::new();

    // weir: a separate server, or an in-process one.
    let (local, weir_url, weir_target) = match &args.url {
        Some(url) => (None, url.clone(), "weir".to_string()),
        None => {
            let local = LocalWeir::start(None).await?;
            let url = local.url.clone();
            (Some(local), url, "weir (in-process)".to_string())
        }
    };
    let load = Load {
        url: weir_url.clone(),
        batch: args.batch,
        concurrency: args.concurrency,
        expect_ids: true,
        client: args.client,
    };
    let (result, cpu) = measure(&client, &load, &args, args.pid, &weir_target).await;
    if let Some(local) = local {
        local.stop().await;
    }
    rows.push(Row {
        target: weir_target,
        url: weir_url,
        result,
        cpu,
    });

    // Baselines: in-process and/or separate.
    // `None`: an in-process baseline, started for its run only.
    let mut baselines: Vec<(&str, Option<String>, Option<u32>)> = Vec::new();
    if args.baseline {
        baselines.push(("baseline (in-process)", None, None));
    }
    if let Some(url) = &args.baseline_url {
        baselines.push(("baseline", Some(url.clone()), args.baseline_pid));
    }
    for (target, url, pid) in baselines {
        let (url, task) = match url {
            Some(url) => (url, None),
            None => {
                let (addr, task) = serve_local(baseline_router()).await?;
                (format!("http://{addr}"), Some(task))
            }
        };
        let load = Load {
            url: url.clone(),
            expect_ids: false,
            ..load.clone()
        };
        let (result, cpu) = measure(&client, &load, &args, pid, target).await;
        if let Some(task) = task {
            task.abort();
        }
        rows.push(Row {
            target: target.to_string(),
            url,
            result,
            cpu,
        });
    }

    let weir_rate = rows[0].events_per_s();
    let ratios: Vec<(String, f64)> = rows[1..]
        .iter()
        .map(|b| (b.target.clone(), weir_rate / b.events_per_s().max(1e-9)))
        .collect();
    let errors: u64 = rows.iter().map(|r| r.result.errors).sum();

    if args.json {
        out!(
            "{}",
            json!({
                "benchmark": "ingest",
                "events": args.events,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "client": format!("{:?}", args.client).to_lowercase(),
                "warmup_secs": args.warmup_secs,
                "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
                "ratios": ratios.iter().map(|(t, r)| json!({"baseline": t, "weir_over_baseline": r})).collect::<Vec<_>>(),
                "errors": errors,
            })
        );
    } else {
        out!(
            "weir bench ingest: {} events, batch {}, concurrency {}, client {:?}, warm-up {} s per target",
            args.events,
            args.batch,
            args.concurrency,
            args.client,
            args.warmup_secs
        );
        out!(
            "{:<22} {:>8} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>6} {:>6} {:>9}",
            "target",
            "events",
            "requests",
            "secs",
            "events/s",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "bench",
            "srv",
            "srv us/ev"
        );
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(v) => format!("{v:.prec$}"),
            None => "-".to_string(),
        };
        for row in &rows {
            let r = &row.result;
            let (this_cores, server_cores) = row.cores();
            out!(
                "{:<22} {:>8} {:>8} {:>6.2} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>8.3} {:>6} {:>6} {:>6} {:>9}",
                row.target,
                r.events,
                r.requests,
                r.elapsed.as_secs_f64(),
                row.events_per_s(),
                row.requests_per_s(),
                ms(r.latency.p50),
                ms(r.latency.p99),
                ms(r.latency.max),
                r.errors,
                opt(this_cores, 2),
                opt(server_cores, 2),
                opt(row.server_us_per_event(), 1)
            );
        }
        out!(
            "(bench / srv: cores used during the measurement by this process / by the --pid server)"
        );
        for (target, ratio) in &ratios {
            out!(
                "weir/{target}: {:.3} ({:.1}% of the baseline's events/s)",
                ratio,
                ratio * 100.0
            );
        }
        for row in &rows {
            for e in &row.result.first_errors {
                out!("error ({}): {e}", row.target);
            }
        }
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

// ---------------------------------------------------------------------------------------------
// weir bench latency
// ---------------------------------------------------------------------------------------------

/// A step request seen by the step server.
struct Arrival {
    seq: u64,
    sent_at_ns: u64,
    arrived_at_ns: u64,
}

#[derive(Clone)]
struct StepServer {
    origin: Instant,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

/// Records when a step request arrives (before its body is read) and answers `{}`.
async fn step_arrived(State(s): State<StepServer>, body: Body) -> Response {
    let arrived_at_ns = nanos(s.origin.elapsed());
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let input: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let data = &input["event"]["data"];
    if let (Some(seq), Some(sent_at_ns)) = (data["seq"].as_u64(), data["sent_at_ns"].as_u64()) {
        let _ = s.arrivals.send(Arrival {
            seq,
            sent_at_ns,
            arrived_at_ns,
        });
    }
    axum::Json(json!({})).into_response()
}

/// A temporary function directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> weir_core::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "weir-bench-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::internal(format!("cannot create {}", dir.display())).with_source(e)
        })?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a paced series of POSTs measured.
struct Paced {
    /// Round trips of the measured (not warm-up) POSTs that succeeded, in nanoseconds.
    latencies: Vec<u64>,
    /// Failed POSTs (warm-up included).
    errors: u64,
    /// The first few failures.
    first_errors: Vec<String>,
    /// Achieved rate of the measured POSTs (starts per second).
    achieved_rate: f64,
}

/// POSTs `total` events to `url` at `rate` per second (a tokio interval with
/// `MissedTickBehavior::Delay`; each POST in its own task), the first `warm` of them a warm-up.
/// Each event carries `seq` and `sent_at_ns` (nanoseconds since `origin`, taken just before
/// its POST starts); answers must hold `ids` ids (0: any `ids` array).
async fn paced_posts(
    client: &reqwest::Client,
    url: &Arc<str>,
    rate: u64,
    total: u64,
    warm: u64,
    origin: Instant,
    ids: u64,
) -> Paced {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut posts = tokio::task::JoinSet::new();
    let mut first_measured_ns = 0;
    let mut last_measured_ns = 0;
    for seq in 0..total {
        interval.tick().await;
        let client = client.clone();
        let url = url.clone();
        let sent_at_ns = nanos(origin.elapsed());
        if seq == warm {
            first_measured_ns = sent_at_ns;
        }
        last_measured_ns = sent_at_ns;
        posts.spawn(async move {
            let body = format!(
                r#"{{"name":"bench/latency","data":{{"seq":{seq},"sent_at_ns":{sent_at_ns}}}}}"#
            );
            let error = send_one(&client, &url, Bytes::from(body), ids).await.err();
            Posted {
                seq,
                post_ns: nanos(origin.elapsed()).saturating_sub(sent_at_ns),
                error,
            }
        });
    }
    let mut paced = Paced {
        latencies: Vec::with_capacity(total.saturating_sub(warm) as usize),
        errors: 0,
        first_errors: Vec::new(),
        achieved_rate: 0.0,
    };
    while let Some(joined) = posts.join_next().await {
        match joined {
            Ok(p) => {
                if let Some(e) = p.error {
                    paced.errors += 1;
                    if paced.first_errors.len() < 5 {
                        paced.first_errors.push(e);
                    }
                } else if p.seq >= warm {
                    paced.latencies.push(p.post_ns);
                }
            }
            Err(e) => {
                paced.errors += 1;
                paced.first_errors.push(format!("POST task failed: {e}"));
            }
        }
    }
    let measured = total.saturating_sub(warm);
    let span = last_measured_ns.saturating_sub(first_measured_ns) as f64 / 1e9;
    if measured > 1 && span > 0.0 {
        paced.achieved_rate = (measured - 1) as f64 / span;
    }
    paced
}

/// What one latency POST measured.
struct Posted {
    seq: u64,
    post_ns: u64,
    error: Option<String>,
}

async fn latency(args: LatencyArgs) -> weir_core::Result<i32> {
    if !args.seconds.is_finite() || args.seconds <= 0.0 {
        return Err(Error::invalid("--seconds must be a number > 0"));
    }
    if !args.warmup_secs.is_finite() || args.warmup_secs < 0.0 {
        return Err(Error::invalid("--warmup-secs must be a number ≥ 0"));
    }
    let origin = Instant::now();
    let quiet = args.json;

    // The step server.
    let (tx, mut arrivals_rx) = mpsc::unbounded_channel();
    let step_app = Router::new()
        .route("/step", post(step_arrived))
        .with_state(StepServer {
            origin,
            arrivals: tx,
        });
    let (step_addr, step_server) = serve_local(step_app).await?;

    // The function.
    let dir = TempDir::new()?;
    let definition = json!({
        "id": "bench-latency",
        "name": "weir bench latency",
        "triggers": [{"event": "bench/latency"}],
        "steps": {
            "step": {
                "id": "step",
                "name": "Record arrival",
                "runtime": {"type": "http", "url": format!("http://{step_addr}/step")},
                "timeout": "30s"
            }
        }
    });
    let file = dir.0.join("weir.json");
    std::fs::write(&file, definition.to_string())
        .map_err(|e| Error::internal(format!("cannot write {}", file.display())).with_source(e))?;

    // The engine and API.
    let weir = LocalWeir::start(Some(&dir.0)).await?;
    let completed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let counter = {
        let mut rx = weir.engine.subscribe_finished();
        let (completed, failed) = (completed.clone(), failed.clone());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(f) if f.status == RunStatus::Completed => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(n)) => {
                        eprintln!("bench: missed {n} run-finished notifications");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };

    // The load.
    let client = client(64)?;
    let url: Arc<str> = format!("{}/e/{BENCH_KEY}", weir.url).into();
    let warm = (args.warmup_secs * args.rate as f64).round() as u64;
    let measured = ((args.seconds * args.rate as f64).round() as u64).max(1);
    let total = warm + measured;
    if !quiet {
        eprintln!(
            "weir bench latency: {} events/s, {warm} warm-up + {measured} measured events",
            args.rate
        );
    }
    let paced = paced_posts(&client, &url, args.rate, total, warm, origin, 1).await;
    let (mut post_latencies, post_errors, first_errors) =
        (paced.latencies, paced.errors, paced.first_errors);
    let accepted = total - post_errors;

    // Wait for the steps to start and the runs to finish (at most 10 s).
    let mut first_arrival = std::collections::HashMap::with_capacity(total as usize);
    let mut duplicates = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Ok(a) = arrivals_rx.try_recv() {
            if first_arrival
                .insert(a.seq, a.arrived_at_ns.saturating_sub(a.sent_at_ns))
                .is_some()
            {
                duplicates += 1;
            }
        }
        let finished = completed.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if (first_arrival.len() as u64 >= accepted && finished as u64 >= accepted)
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    counter.abort();
    step_server.abort();
    weir.stop().await;
    drop(dir);

    // The floor: the same POSTs to a bare server.
    let baseline = if args.baseline {
        if !quiet {
            eprintln!("baseline: the same events at the same rate to a bare axum server");
        }
        let (addr, server) = serve_local(baseline_router()).await?;
        let url: Arc<str> = format!("http://{addr}/e/{BENCH_KEY}").into();
        let paced = paced_posts(&client, &url, args.rate, total, warm, origin, 0).await;
        server.abort();
        Some(paced)
    } else {
        None
    };
    let baseline_errors = baseline.as_ref().map_or(0, |b| b.errors);
    let baseline_post = baseline.map(|mut b| Percentiles::of(&mut b.latencies));

    let mut e2e: Vec<u64> = first_arrival
        .iter()
        .filter(|(seq, _)| **seq >= warm)
        .map(|(_, &ns)| ns)
        .collect();
    let steps_started = e2e.len();
    let e2e = Percentiles::of(&mut e2e);
    let post = Percentiles::of(&mut post_latencies);
    let achieved = paced.achieved_rate;
    let completed = completed.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);

    if args.json {
        out!(
            "{}",
            json!({
                "benchmark": "latency",
                "rate": args.rate,
                "achieved_rate": achieved,
                "seconds": args.seconds,
                "warmup_events": warm,
                "measured_events": measured,
                "missed_tick_behavior": "Delay",
                "post_errors": post_errors,
                "first_errors": first_errors,
                "steps_started": steps_started,
                "duplicate_step_requests": duplicates,
                "runs_completed": completed,
                "runs_failed": failed,
                "runs_expected": total,
                "event_to_step_start_ms": e2e.json(),
                "ingest_post_ms": post.json(),
                "baseline_post_ms": baseline_post.map(|p| p.json()),
                "baseline_post_errors": baseline_errors,
            })
        );
    } else {
        out!(
            "weir bench latency: {} events/s target ({achieved:.1}/s achieved; tokio interval, \
             MissedTickBehavior::Delay) for {} s after {warm} warm-up events",
            args.rate,
            args.seconds
        );
        out!(
            "measured events {measured}, POST errors {post_errors}, steps started \
             {steps_started}/{measured}, duplicate step requests {duplicates}"
        );
        out!("runs completed {completed}/{total} (incl. warm-up), runs failed {failed}");
        out!(
            "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "figure",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "mean ms"
        );
        let mut figures = vec![
            ("event POST → step start", e2e),
            ("POST /e round trip (ingest)", post),
        ];
        if let Some(p) = baseline_post {
            figures.push(("POST round trip, bare baseline", p));
        }
        for (name, p) in figures {
            out!(
                "{:<32} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                name,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max),
                ms(p.mean)
            );
        }
        for e in &first_errors {
            out!("error: {e}");
        }
    }
    let ok =
        post_errors == 0 && baseline_errors == 0 && steps_started as u64 == measured && failed == 0;
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50, 90, 99, 100, 100)
        );
        assert_eq!(Percentiles::of(&mut []).count, 0);
    }

    #[tokio::test]
    async fn raw_client_keeps_the_connection_and_checks_answers() {
        let (addr, server) = serve_local(baseline_router()).await.unwrap();
        let target = RawTarget::parse(&format!("http://{addr}/e/{BENCH_KEY}")).unwrap();
        let mut conn = RawConn::new(Arc::new(target));
        for i in 0..3 {
            let (status, answer) = conn.post(&ingest_body(i, 2)).await.unwrap();
            assert_eq!(status, 200);
            check_answer(status, &answer, 0).unwrap();
            assert!(check_answer(status, &answer, 2).is_err());
        }
        let (status, answer) = conn.post(b"{not json").await.unwrap();
        assert_eq!(status, 400);
        assert!(check_answer(status, &answer, 0).is_err());
        assert!(RawTarget::parse("https://example.com/e/x").is_err());
        server.abort();
    }

    #[test]
    fn bodies_are_valid_json() {
        let one: Value = serde_json::from_slice(&ingest_body(7, 1)).unwrap();
        assert_eq!(one["data"]["i"], 7);
        assert!(one["data"]["pad"].as_str().unwrap().len() >= 200);
        let many: Value = serde_json::from_slice(&ingest_body(10, 3)).unwrap();
        assert_eq!(many.as_array().unwrap().len(), 3);
        assert_eq!(many[2]["data"]["i"], 12);
    }
}
