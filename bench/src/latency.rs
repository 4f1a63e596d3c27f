//! `weir-bench latency`: event POSTed → first step started, all in this process (the engine, the
//! API, a local HTTP step server that records arrivals, and the paced load).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use weir_core::Error;
use weir_core::run::RunStatus;

use super::baseline::baseline_router;
use super::load::client;
use super::local::{LocalWeir, serve_local};
use super::paced::{Schedule, paced_posts};
use super::stats::{Percentiles, ms, nanos};
use super::{BENCH_KEY, LatencyArgs};

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

/// A temporary function directory, removed on drop (also used by `weir-bench runs`).
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> weir_core::Result<TempDir> {
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

pub(super) async fn latency(args: LatencyArgs) -> weir_core::Result<i32> {
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
        "name": "weir-bench latency",
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
            "weir-bench latency: {} events/s, {warm} warm-up + {measured} measured events",
            args.rate
        );
    }
    let schedule = Schedule {
        rate: args.rate,
        total,
        warm,
        name: "bench/latency",
    };
    let paced = paced_posts(&client, &url, &schedule, origin, 1).await;
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
        let paced = paced_posts(&client, &url, &schedule, origin, 0).await;
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
            "weir-bench latency: {} events/s target ({achieved:.1}/s achieved; tokio interval, \
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
