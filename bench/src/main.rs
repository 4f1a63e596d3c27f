//! `weir-bench`: weir's load generator, which prints its figures.
//!
//! - `weir-bench ingest` POSTs events to `/e/bench-key` with a fixed number of concurrent
//!   keep-alive HTTP/1.1 connections and prints throughput and request latency; `--baseline`
//!   runs the same load against a bare axum server that only parses the JSON body.
//! - `weir-bench latency` measures event POSTed → first step started, in one process, with a
//!   local HTTP step server.
//! - `weir-bench runs` measures runs completed per second through the whole engine, in one
//!   process, on any state store and broker (and, on Redis, the state round trips per step).
//! - `weir-bench brokers` measures publish + consume + ack throughput of each broker given,
//!   as a table.
//! - `weir-bench runtimes` measures the per-attempt overhead of each runtime driver beside the
//!   bare cost of the same work.
//! - `weir-bench dashboard` times the dashboard's page loads and API calls with many runs
//!   stored.
//! - `weir-bench baseline-server` (hidden) serves the bare baseline as its own process.
//!
//! This is how the project measures performance: figures come from release builds of this
//! binary, never from timed tests. The engine is the `weir` library's, with the drivers of the
//! Cargo features this crate is built with (the same names as `weir`'s, forwarded to it).

/// `println!` that ignores a closed stdout (`weir-bench … | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

#[cfg(feature = "driver-lambda")]
mod bare_lambda;
#[cfg(feature = "driver-wasm")]
mod bare_wasm;
mod baseline;
mod brokers;
#[cfg(feature = "adapter-celery")]
mod celery;
mod dashboard;
#[cfg(feature = "adapter-faktory")]
mod faktory;
mod ingest;
mod latency;
mod load;
mod local;
mod paced;
mod raw_client;
mod runs;
mod runs_setup;
mod runtimes;
mod stats;
mod waits;

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

/// The event key every bench request is sent with.
const BENCH_KEY: &str = "bench-key";

/// mimalloc, as in the `weir` binary: the engine's hot path allocates small JSON values per
/// event, and the in-process figures must be those of the allocator `weir` runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir's load generator: ingest throughput, event → step latency, runs, brokers, runtimes.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, about, long_about = None)]
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
    /// Runs completed per second: N events, each triggering a chain of 1–10 `http` steps,
    /// through the engine on the given state store and broker, all in this process; with
    /// --rate, event → first step started at a fixed rate.
    Runs(RunsArgs),
    /// Broker throughput: publish N messages of S bytes in batches while a consumer group acks
    /// them; one table row per --broker URL.
    Brokers(BrokersArgs),
    /// Runtime overhead: sequential attempts of a no-op step through each runtime driver, beside
    /// the bare cost of the same work without weir.
    Runtimes(RuntimesArgs),
    /// Celery tasks through weir's Celery adapter beside a Celery worker on the same broker:
    /// N no-op tasks per side published by the real Celery producer, tasks completed per
    /// second (results written to the Redis backend).
    #[cfg(feature = "adapter-celery")]
    Celery(CeleryArgs),
    /// Faktory's protocol against weir's Faktory adapter: PUSH, PUSHB of 100 and FETCH + ACK
    /// of jobs kept for workers, and jobs a weir function handles until their runs finished.
    #[cfg(feature = "adapter-faktory")]
    Faktory(FaktoryArgs),
    /// Event coordination: the cost of finding the pauses an event resumes with many pending,
    /// and event → resumed step latency at a fixed rate.
    Waits(WaitsArgs),
    /// The dashboard's server time with many runs stored: a load of the runs page (the page,
    /// its files and its API calls) and the calls of other views, each timed.
    Dashboard(DashboardArgs),
    /// Serve the bare baseline (parse the JSON body, answer `{"ids":[],"status":200}`) as its own
    /// process, for `weir-bench ingest --baseline-url`.
    #[command(hide = true)]
    BaselineServer(BaselineServerArgs),
}

/// Arguments of `weir-bench ingest`.
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
  --baseline-url URL  a bare baseline served separately (`weir-bench baseline-server --listen ADDR`).

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
    /// Run the same load against a separately served baseline (`weir-bench baseline-server`).
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

/// The HTTP client `weir-bench ingest` sends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// One shared `reqwest` client (HTTP/1.1, keep-alive, a pool of `--concurrency` connections).
    Reqwest,
    /// A minimal HTTP/1.1 client over one keep-alive TCP connection per worker: pre-formatted
    /// request head, `Content-Length` answers only. Uses a fraction of reqwest's CPU per request,
    /// which matters when the load generator and the server share 2 cores.
    Raw,
}

/// Arguments of `weir-bench latency`.
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

/// Arguments of `weir-bench runs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Everything runs in this process: the engine with every role on --state and --broker, one function
triggered by `bench/runs` whose steps s1 → s2 → … are `http` steps to a local step server answering
`{}` (or, with --wasm MODULE, `wasm` steps running that WASI module), and the load. No API: events go straight to the engine's ingest. Redis URLs get
`prefix=weirbench-<ulid>` appended, so each bench run has its own keys (left in Redis afterwards;
the prefix is printed).

Without --rate: --events events are ingested in batches of --batch, one batch after another, as
fast as they are taken; printed are runs finished per second and steps per second, from the first
ingest to the last run finished. With --rate: single events at a fixed rate (tokio interval,
MissedTickBehavior::Delay) for --seconds after a warm-up, and the p50/p90/p99/max of (first step's
request arrival at the step server − ingest start).

With a redis:// state store (the `state-redis` feature), the round trips the state and event stores
made to Redis during the load are counted and printed per step executed and per run. They include
the event appends (1 per ingest call) and the run creations.

With --wasm MODULE (the `driver-wasm` feature), every step runs MODULE on the wasm runtime, in this
process; steps per second are then runs finished × steps per run (no step server counts them), and
--rate is not available (the first-step arrival is timed by the step server). A no-op module:
`cargo build --release --target wasm32-wasip1 --manifest-path drivers/wasm/test-modules/Cargo.toml
--target-dir target/wasm-test-modules` gives target/wasm-test-modules/wasm32-wasip1/release/noop.wasm.")]
pub struct RunsArgs {
    /// State store URL (memory://, redis://…).
    #[arg(long, default_value = "memory://")]
    pub state: String,
    /// Broker URL (memory://, redis://…).
    #[arg(long, default_value = "memory://")]
    pub broker: String,
    /// Number of events (one run each) without --rate.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Steps per run, chained (1 and 3 are the figures the project tracks).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10))]
    pub steps: u64,
    /// Events per ingest call without --rate.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// Send single events at this many per second and measure event → first step started.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: Option<u64>,
    /// With --rate: seconds of measured load (default 10).
    #[arg(long, requires = "rate")]
    pub seconds: Option<f64>,
    /// With --rate: seconds of warm-up at the same rate (figures discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Give up waiting for runs to finish after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_secs: f64,
    /// Steps are `wasm` steps running this WASI command module instead of `http` steps (needs
    /// the `driver-wasm` feature).
    #[arg(long, value_name = "MODULE", conflicts_with = "rate")]
    pub wasm: Option<std::path::PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weir-bench celery`.
#[cfg(feature = "adapter-celery")]
#[derive(Debug, Args)]
pub struct CeleryArgs {
    /// The Celery broker both sides use: `amqp://USER:PASS@HOST:PORT/VHOST` or
    /// `redis://HOST:PORT/DB`.
    #[arg(long)]
    pub broker: String,
    /// The Redis result backend both sides write to: a database of its own, empty (results are
    /// counted with DBSIZE, and deleted after each side).
    #[arg(long)]
    pub results: String,
    /// A Python with Celery (the producer and the worker).
    #[arg(long, env = "WEIR_TEST_CELERY_PYTHON", default_value = "python3")]
    pub python: String,
    /// Tasks per side.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: u64,
    /// weir's state store (memory:// or redis://…).
    #[arg(long, default_value = "memory://")]
    pub state: String,
    /// The Celery worker's processes (`-c`).
    #[arg(long, default_value_t = 2)]
    pub worker_concurrency: u32,
    /// Measure weir alone.
    #[arg(long)]
    pub no_worker: bool,
}

/// Arguments of `weir-bench faktory`.
#[cfg(feature = "adapter-faktory")]
#[derive(Debug, Args)]
pub struct FaktoryArgs {
    /// Jobs per phase.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Client connections, each one command at a time.
    #[arg(long, default_value_t = 8)]
    pub connections: u64,
    /// weir's state store, which keeps the jobs (memory:// or redis://…).
    #[arg(long, default_value = "memory://")]
    pub state: String,
}

/// Arguments of `weir-bench waits`.
#[derive(Debug, Args)]
#[command(after_help = "\
Everything runs in this process: the engine with every role on --state (memory broker), the API on
127.0.0.1:0 and a local step server, on a memory broker. Two functions, each `a` then `b` after
an async edge waiting for `bench/go`: `bench-match` with `async.user.id == event.user.id`,
`bench-resume` with `async.data.seq == event.data.seq`.

1. --pauses runs of bench-match are started (user u0 … u(--users − 1) in turn) and left waiting.
2. Matching: `Engine::matching_pauses` (the router's lookup: match keys, one store call, the match
   where the key does not decide it; no resume) is timed for --lookups events of users nobody
   waits for, and --lookups/10 events of waiting users (each finds --pauses/--users pauses).
3. Resume latency: runs of bench-resume are started and left waiting (one per event to come,
   warm-up included), then `bench/go` events (with `data.seq`, no user) are POSTed at --rate for --seconds after a warm-up; printed is
   (b's request arriving at the step server − the POST starting), with the bench-match pauses
   still pending. Redis URLs get `prefix=weirbench-<ulid>`.")]
pub struct WaitsArgs {
    /// State store URL (memory://, redis://…).
    #[arg(long, default_value = "memory://")]
    pub state: String,
    /// Pauses left pending (runs of bench-match).
    #[arg(long, default_value_t = 100_000)]
    pub pauses: u64,
    /// Users the pending pauses are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
    /// Events timed for the matching cost of an event nobody waits for.
    #[arg(long, default_value_t = 20_000)]
    pub lookups: u64,
    /// Resuming events per second.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Seconds of measured resuming load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of warm-up at the same rate (figures discarded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Give up waiting for the runs to start or wait after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout_secs: f64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weir-bench brokers`.
#[derive(Debug, Args)]
pub struct BrokersArgs {
    /// A broker URL (memory://, redis://…, amqp://…, kafka://…, kafka+mock:// for an in-process
    /// Kafka mock cluster, sqs://…); repeat for a table of several.
    #[arg(long, default_value = "memory://")]
    pub broker: Vec<String>,
    /// Messages per broker.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per `publish_batch` call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch: u16,
    /// Batches outstanding at once.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Competing consumers in the group.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Deliveries each consumer handles at once: 1 acks each before taking the next; more
    /// hands each to a task of its own (as the engine's router and executor do), at most this
    /// many unacked per consumer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub handlers: u32,
    /// Give up waiting for acks after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_secs: f64,
}

/// Arguments of `weir-bench runtimes`.
#[derive(Debug, Args)]
pub struct RuntimesArgs {
    /// Timed attempts per runtime.
    #[arg(long, default_value_t = 2000)]
    pub attempts: u32,
    /// Untimed attempts first.
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    /// Measure the process runtime (a static no-op executable).
    #[arg(long)]
    pub process: bool,
    /// Measure the wasm runtime with this no-op WASI module (needs the `driver-wasm` feature).
    #[arg(long)]
    pub wasm: Option<std::path::PathBuf>,
    /// Measure the docker runtime with this no-op image (needs the `driver-docker` feature).
    #[arg(long)]
    pub docker_image: Option<String>,
    /// Measure the lambda runtime by invoking this existing function (name or ARN; region,
    /// credentials and `AWS_ENDPOINT_URL` from the AWS chain; needs the `driver-lambda` feature).
    #[arg(long, value_name = "FUNCTION")]
    pub lambda_function: Option<String>,
}

/// Arguments of `weir-bench dashboard`.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The state store the runs are stored in (memory:// or redis://…; a fresh key prefix).
    #[arg(long, default_value = "memory://")]
    pub state: String,
    /// Runs stored before the page loads.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub runs: u64,
    /// Page loads timed (after one warm-up).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub loads: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `weir-bench baseline-server`.
#[derive(Debug, Args)]
pub struct BaselineServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8298")]
    pub listen: SocketAddr,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = BenchArgs::parse();
    let result = match args.command {
        BenchCommand::Ingest(a) => ingest::ingest(a).await,
        BenchCommand::Latency(a) => latency::latency(a).await,
        BenchCommand::Runs(a) => runs::runs(a).await,
        BenchCommand::Brokers(a) => brokers::brokers(a).await,
        BenchCommand::Runtimes(a) => runtimes::runtimes(a).await,
        #[cfg(feature = "adapter-celery")]
        BenchCommand::Celery(a) => celery::celery(a).await,
        #[cfg(feature = "adapter-faktory")]
        BenchCommand::Faktory(a) => faktory::faktory(a).await,
        BenchCommand::Waits(a) => waits::waits(a).await,
        BenchCommand::Dashboard(a) => dashboard::dashboard(a).await,
        BenchCommand::BaselineServer(a) => baseline::baseline_server(a).await,
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    };
    // As `weir` did: exit now, without waiting for tasks still running (servers, consumers).
    std::process::exit(code);
}
