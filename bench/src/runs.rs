//! `weir-bench runs`: runs completed per second through the whole engine, in this process (the
//! engine on the given state store and broker, a local HTTP step server, and the load), with the
//! round trips a Redis state store makes per step; at a fixed rate, event → first step started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use weir_core::Error;
use weir_core::engine::{Engine, Roles};
use weir_core::run::{RunFilter, RunStatus};

use super::RunsArgs;
use super::runs_setup::{
    BENCH_FUNCTION_ID, EVENT_NAME, StepTarget, build, redact, serve_steps, with_prefix,
    write_function,
};
use super::stats::{Percentiles, ms, nanos};

/// Runs that finished in this process, counted from the engine's broadcast.
#[derive(Default)]
struct Finished {
    completed: AtomicU64,
    failed: AtomicU64,
    /// Notifications lost to a lagging receiver (counted as finished, status unknown).
    missed: AtomicU64,
    /// When the last one finished (nanoseconds since the bench's origin).
    last_ns: AtomicU64,
}

impl Finished {
    fn spawn(engine: &Engine, origin: Instant) -> (Arc<Finished>, JoinHandle<()>) {
        use tokio::sync::broadcast::error::RecvError;
        let finished = Arc::new(Finished::default());
        let mut rx = engine.subscribe_finished();
        let f = finished.clone();
        let task = tokio::spawn(async move {
            loop {
                let counter = match rx.recv().await {
                    Ok(r) if r.status == RunStatus::Completed => &f.completed,
                    Ok(_) => &f.failed,
                    Err(RecvError::Lagged(n)) => {
                        f.missed.fetch_add(n, Ordering::Relaxed);
                        f.last_ns.store(nanos(origin.elapsed()), Ordering::Relaxed);
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                f.last_ns.store(nanos(origin.elapsed()), Ordering::Relaxed);
            }
        });
        (finished, task)
    }

    fn total(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.missed.load(Ordering::Relaxed)
    }
}

/// What sending the events did.
struct Sent {
    accepted: u64,
    errors: u64,
    first_errors: Vec<String>,
}

impl Sent {
    fn new() -> Sent {
        Sent {
            accepted: 0,
            errors: 0,
            first_errors: Vec::new(),
        }
    }

    fn record(&mut self, events: u64, result: weir_core::Result<Vec<String>>) {
        match result {
            Ok(ids) if ids.len() as u64 == events => self.accepted += events,
            Ok(ids) => self.error(events, format!("{events} events sent, {} ids", ids.len())),
            Err(e) => self.error(events, e.to_string()),
        }
    }

    fn error(&mut self, events: u64, e: String) {
        self.errors += events;
        if self.first_errors.len() < 5 {
            self.first_errors.push(e);
        }
    }
}

/// Ingests `events` events in batches of `batch`, one batch after another, as fast as they are
/// taken.
async fn send_batches(engine: &Engine, events: u64, batch: u64) -> Sent {
    let mut sent = Sent::new();
    let mut seq = 0;
    while seq < events {
        let n = batch.min(events - seq);
        let body: Vec<String> = (seq..seq + n)
            .map(|s| format!(r#"{{"name":"{EVENT_NAME}","data":{{"seq":{s}}}}}"#))
            .collect();
        let body = format!("[{}]", body.join(","));
        sent.record(n, engine.ingest_body(body.as_bytes()).await);
        seq += n;
    }
    sent
}

/// Ingests `total` single events at `rate` per second (a tokio interval with
/// `MissedTickBehavior::Delay`, each ingest in its own task); each carries `seq` and
/// `sent_at_ns`, taken just before its ingest starts.
async fn send_paced(engine: &Engine, rate: u64, total: u64, origin: Instant) -> Sent {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..total {
        interval.tick().await;
        let engine = engine.clone();
        let sent_at_ns = nanos(origin.elapsed());
        tasks.spawn(async move {
            let body = format!(
                r#"{{"name":"{EVENT_NAME}","data":{{"seq":{seq},"sent_at_ns":{sent_at_ns}}}}}"#
            );
            engine.ingest_body(body.as_bytes()).await
        });
    }
    let mut sent = Sent::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => sent.record(1, result),
            Err(e) => sent.error(1, format!("ingest task failed: {e}")),
        }
    }
    sent
}

/// The runtime of the bench function's steps.
fn runtime_name(args: &RunsArgs) -> &'static str {
    if args.wasm.is_some() { "wasm" } else { "http" }
}

pub(super) async fn runs(args: RunsArgs) -> weir_core::Result<i32> {
    let seconds = args.seconds.unwrap_or(10.0);
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(Error::invalid("--seconds must be a number > 0"));
    }
    if !args.warmup_secs.is_finite() || args.warmup_secs < 0.0 {
        return Err(Error::invalid("--warmup-secs must be a number ≥ 0"));
    }
    let origin = Instant::now();
    let prefix = format!("weirbench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let state_url = with_prefix(&args.state, &prefix);
    let broker_url = with_prefix(&args.broker, &prefix);

    let (arrivals_tx, mut arrivals_rx) = mpsc::unbounded_channel();
    let step_server = serve_steps(origin, args.rate.map(|_| arrivals_tx)).await?;
    let module = match &args.wasm {
        Some(path) => Some(std::fs::canonicalize(path).map_err(|e| {
            Error::new(
                weir_core::ErrorKind::Config,
                format!("bench: --wasm {}", path.display()),
            )
            .with_source(e)
        })?),
        None => None,
    };
    let target = match &module {
        Some(path) => StepTarget::Wasm(path),
        None => StepTarget::Http(step_server.addr),
    };
    let dir = write_function(args.steps, &target)?;
    let (engine, round_trips) = build(&state_url, &broker_url, &dir.0).await?;
    let handle = engine.start(Roles::ALL).await?;
    let (finished, counter) = Finished::spawn(&engine, origin);

    let (warm, total) = match args.rate {
        Some(rate) => {
            let warm = (args.warmup_secs * rate as f64).round() as u64;
            (warm, warm + ((seconds * rate as f64).round() as u64).max(1))
        }
        None => (0, args.events),
    };
    if !args.json {
        let load = match args.rate {
            Some(rate) => format!(
                "{rate} events/s, {warm} warm-up + {} measured",
                total - warm
            ),
            None => format!("{total} events in batches of {}", args.batch),
        };
        eprintln!(
            "weir-bench runs: {} {} step(s), {load}; key prefix {prefix}",
            args.steps,
            runtime_name(&args)
        );
    }
    let rt_start = round_trips.as_ref().map(|f| f());
    let requests_start = step_server.requests.load(Ordering::Relaxed);
    let start_ns = nanos(origin.elapsed());
    let sent = match args.rate {
        Some(rate) => send_paced(&engine, rate, total, origin).await,
        None => send_batches(&engine, total, args.batch).await,
    };
    let ingested_ns = nanos(origin.elapsed());

    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.timeout_secs);
    while finished.total() < sent.accepted && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rt = round_trips
        .as_ref()
        .map(|f| f())
        .zip(rt_start)
        .map(|(b, a)| b - a);
    let served = step_server.requests.load(Ordering::Relaxed) - requests_start;
    let end_ns = finished.last_ns.load(Ordering::Relaxed).max(start_ns);
    counter.abort();
    handle.shutdown().await;
    step_server.task.abort();
    drop(dir);

    let mut first_arrival = std::collections::HashMap::new();
    while let Ok(a) = arrivals_rx.try_recv() {
        first_arrival
            .entry(a.seq)
            .or_insert(a.arrived_at_ns.saturating_sub(a.sent_at_ns));
    }
    let mut e2e: Vec<u64> = first_arrival
        .iter()
        .filter(|(seq, _)| **seq >= warm)
        .map(|(_, &ns)| ns)
        .collect();
    let e2e = args.rate.map(|_| Percentiles::of(&mut e2e));

    let mut completed = finished.completed.load(Ordering::Relaxed);
    let mut failed = finished.failed.load(Ordering::Relaxed);
    let mut missed = finished.missed.load(Ordering::Relaxed);
    if missed > 0 {
        // The broadcast receiver lagged (tens of thousands of runs a second): those runs
        // finished, but their statuses were lost. The state store knows which failed.
        let filter = RunFilter {
            function_id: Some(BENCH_FUNCTION_ID.to_string()),
            status: Some(RunStatus::Failed),
            user: None,
            limit: Some(usize::try_from(failed + missed + 1).unwrap_or(usize::MAX)),
            ..RunFilter::default()
        };
        if let Ok(runs) = engine.state().list_runs(&filter).await {
            let failed_in_state = runs.len() as u64;
            let lost_failures = failed_in_state.saturating_sub(failed).min(missed);
            failed += lost_failures;
            completed += missed - lost_failures;
            missed = 0;
        }
    }
    let secs = (end_ns - start_ns) as f64 / 1e9;
    let ingest_secs = (ingested_ns - start_ns) as f64 / 1e9;
    let runs_done = completed + failed + missed;
    // wasm steps are not seen by the step server: every finished run counts all its steps.
    let steps_run = match &module {
        Some(_) => runs_done * args.steps,
        None => served,
    };
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let per = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    let rt_per_step = rt.and_then(|rt| per(rt, steps_run));
    let rt_per_run = rt.and_then(|rt| per(rt, runs_done));

    if args.json {
        out!(
            "{}",
            json!({
                "benchmark": "runs",
                "state": redact(&args.state),
                "broker": redact(&args.broker),
                "key_prefix": prefix,
                "steps_per_run": args.steps,
                "step_runtime": runtime_name(&args),
                "events": total,
                "batch": args.rate.is_none().then_some(args.batch),
                "rate": args.rate,
                "warmup_events": warm,
                "ingest_errors": sent.errors,
                "first_errors": sent.first_errors,
                "runs_completed": completed,
                "runs_failed": failed,
                "runs_unknown": missed,
                "seconds": secs,
                "ingest_seconds": ingest_secs,
                "runs_per_sec": per_sec(runs_done),
                "steps_per_sec": per_sec(steps_run),
                "steps_executed": steps_run,
                "state_round_trips": rt,
                "state_round_trips_per_step": rt_per_step,
                "state_round_trips_per_run": rt_per_run,
                "event_to_step_start_ms": e2e.map(|p| p.json()),
            })
        );
    } else {
        out!(
            "weir-bench runs: {} {} step(s) per run, state {}, broker {}",
            args.steps,
            runtime_name(&args),
            redact(&args.state),
            redact(&args.broker)
        );
        out!(
            "events {total} (ingested in {ingest_secs:.3} s, errors {}), runs completed \
             {completed}/{total}, failed {failed}, unknown {missed}",
            sent.errors
        );
        out!(
            "{:.0} runs/s, {:.0} steps/s ({steps_run} steps in {secs:.3} s, first ingest → last \
             run finished)",
            per_sec(runs_done),
            per_sec(steps_run)
        );
        match (rt, rt_per_step, rt_per_run) {
            (Some(rt), Some(step), Some(run)) => out!(
                "state round trips {rt}: {step:.2} per step, {run:.2} per run \
                 (incl. event appends and run creation)"
            ),
            _ => out!("state round trips: not counted (only a redis:// state store counts them)"),
        }
        if let Some(p) = e2e {
            out!(
                "event ingest → first step start ({} measured): p50 {:.3} ms, p90 {:.3} ms, \
                 p99 {:.3} ms, max {:.3} ms",
                p.count,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            );
        }
        for e in &sent.first_errors {
            out!("error: {e}");
        }
    }
    let measured = total - warm;
    let latency_ok = e2e.is_none_or(|p| p.count as u64 == measured);
    let ok = sent.errors == 0 && completed == total && latency_ok;
    Ok(if ok { 0 } else { 1 })
}
