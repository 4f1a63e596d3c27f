//! `weir-bench waits`: what event coordination costs. With `--pauses` runs waiting (each for
//! its user's `bench/go`), the time to find the pauses an incoming event matches — for an
//! event nobody waits for, and for one a user's every pause waits for — then, with those
//! still pending on the same event name, event accepted → resumed step started at a fixed
//! rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use weir_core::engine::{Engine, Roles};
use weir_core::{Error, Event};

use super::latency::TempDir;
use super::load::client;
use super::local::serve_local;
use super::paced::{Schedule, paced_posts};
use super::runs_setup::{build, redact, with_prefix};
use super::stats::{Percentiles, ms, nanos};
use super::{BENCH_KEY, WaitsArgs};

#[derive(Clone)]
struct StepServer {
    origin: Instant,
    first_steps: Arc<AtomicU64>,
    arrivals: mpsc::UnboundedSender<(u64, u64, u64)>,
}

/// Step `a` of both functions: counted, answers `{}`.
async fn step_a(State(s): State<StepServer>, body: Body) -> Response {
    s.first_steps.fetch_add(1, Ordering::Relaxed);
    if to_bytes(body, usize::MAX).await.is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(json!({})).into_response()
}

/// Step `b` of `bench-resume`: records when it arrived (before its body is read) against the
/// resuming event's `sent_at_ns`.
async fn step_b(State(s): State<StepServer>, body: Body) -> Response {
    let arrived_at_ns = nanos(s.origin.elapsed());
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let input: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let data = &input["async"]["data"];
    if let (Some(seq), Some(sent)) = (data["seq"].as_u64(), data["sent_at_ns"].as_u64()) {
        let _ = s.arrivals.send((seq, sent, arrived_at_ns));
    }
    axum::Json(json!({})).into_response()
}

/// The two bench functions: `bench-match` (its pauses are filed by user) and `bench-resume`
/// (by `data.seq`), each `a` then `b` after an `async` edge waiting for `bench/go`.
fn write_functions(addr: std::net::SocketAddr) -> weir_core::Result<TempDir> {
    let dir = TempDir::new()?;
    for (id, start, go, matcher) in [
        (
            "bench-match",
            "bench/match.start",
            "bench/go",
            "async.user.id == event.user.id",
        ),
        (
            "bench-resume",
            "bench/resume.start",
            "bench/go",
            "async.data.seq == event.data.seq",
        ),
    ] {
        let step = |path: &str| json!({"runtime": {"type": "http", "url": format!("http://{addr}/{path}")}, "timeout": "30s"});
        let mut b = step("b");
        b["after"] = json!([{"step": "a", "async": {"event": go, "match": matcher, "ttl": "1h"}}]);
        let def =
            json!({"id": id, "triggers": [{"event": start}], "steps": {"a": step("a"), "b": b}});
        let fdir = dir.0.join(id);
        std::fs::create_dir_all(&fdir)
            .and_then(|()| std::fs::write(fdir.join("weir.json"), def.to_string()))
            .map_err(|e| Error::internal("cannot write the bench functions").with_source(e))?;
    }
    Ok(dir)
}

fn event(v: Value) -> Event {
    Event::from_json(v, "").expect("a valid event")
}

/// Ingests `n` events made by `make(i)`, in batches of 500.
async fn ingest_all(engine: &Engine, n: u64, make: impl Fn(u64) -> Value) -> weir_core::Result<()> {
    let mut i = 0;
    while i < n {
        let batch: Vec<Event> = (i..(i + 500).min(n)).map(|k| event(make(k))).collect();
        i += batch.len() as u64;
        engine.ingest(batch).await?;
    }
    Ok(())
}

/// Waits until `count()` reaches `want` (polled every 200 ms), at most `timeout`.
async fn wait_until<F, Fut>(
    what: &str,
    want: u64,
    timeout: Duration,
    count: F,
) -> weir_core::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = weir_core::Result<u64>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let got = count().await?;
        if got >= want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::internal(format!(
                "{what}: {got} of {want} after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Times `matching_pauses` over `events`; checks each finds `expect` pauses. Per-call
/// nanoseconds.
async fn time_matching(
    engine: &Engine,
    events: &[Event],
    expect: usize,
) -> weir_core::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(events.len());
    for e in events {
        let began = Instant::now();
        let found = engine.matching_pauses(e).await?;
        samples.push(nanos(began.elapsed()));
        if found.len() != expect {
            return Err(Error::internal(format!(
                "event for {} matched {} pauses, expected {expect}",
                e.user,
                found.len()
            )));
        }
    }
    Ok(samples)
}

pub(super) async fn waits(args: WaitsArgs) -> weir_core::Result<i32> {
    if args.users == 0 || !args.pauses.is_multiple_of(args.users) {
        return Err(Error::invalid(
            "--pauses must be a multiple of --users (> 0)",
        ));
    }
    let origin = Instant::now();
    let timeout = Duration::from_secs_f64(args.timeout_secs);
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let first_steps = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/a", post(step_a))
        .route("/b", post(step_b))
        .with_state(StepServer {
            origin,
            first_steps: first_steps.clone(),
            arrivals: tx,
        });
    let (addr, step_server) = serve_local(app).await?;
    let dir = write_functions(addr)?;
    let prefix = format!("weirbench-{}", ulid::Ulid::new());
    let state_url = with_prefix(&args.state, &prefix);
    let (engine, _) = build(&state_url, "memory://", &dir.0).await?;
    let handle = engine.start(Roles::ALL).await?;
    let api = weir::api::router(engine.clone(), weir::api::EventKeys::Any);
    let (api_addr, api_server) = serve_local(api).await?;
    let per_user = args.pauses / args.users;
    eprintln!(
        "weir-bench waits: state {}, {} pauses on {} users ({per_user} each)",
        redact(&state_url),
        args.pauses,
        args.users
    );

    // The pending pauses: runs of bench-match, each waiting for its user's bench/go.
    let began = Instant::now();
    let users = args.users;
    ingest_all(
        &engine,
        args.pauses,
        |i| json!({"name": "bench/match.start", "user": {"id": format!("u{}", i % users)}}),
    )
    .await?;
    let go = |user: &str| event(json!({"name": "bench/go", "user": {"id": user}}));
    let probes: Vec<Event> = (0..users).map(|u| go(&format!("u{u}"))).collect();
    wait_until("pauses registered", args.pauses, timeout, || async {
        let mut n = 0;
        for e in &probes {
            n += engine.matching_pauses(e).await?.len() as u64;
        }
        Ok(n)
    })
    .await?;
    let setup = began.elapsed();

    // Matching: events nobody waits for, and events each of whose users has `per_user` pauses.
    let misses: Vec<Event> = (0..args.lookups)
        .map(|k| go(&format!("nobody-{k}")))
        .collect();
    let mut miss = time_matching(&engine, &misses, 0).await?;
    let hit_events: Vec<Event> = (0..args.lookups / 10)
        .map(|k| go(&format!("u{}", k % users)))
        .collect();
    let mut hit = time_matching(&engine, &hit_events, per_user as usize).await?;
    let miss = Percentiles::of(&mut miss);
    let hit = Percentiles::of(&mut hit);

    // Resume latency: runs of bench-resume, each waiting for its own bench/go (by seq).
    let warm = (args.warmup_secs * args.rate as f64).round() as u64;
    let measured = ((args.seconds * args.rate as f64).round() as u64).max(1);
    let total = warm + measured;
    ingest_all(
        &engine,
        total,
        |i| json!({"name": "bench/resume.start", "data": {"seq": i}}),
    )
    .await?;
    wait_until(
        "resume runs started",
        args.pauses + total,
        timeout,
        || async { Ok(first_steps.load(Ordering::Relaxed)) },
    )
    .await?;
    let resume_probe = |seq: u64| event(json!({"name": "bench/go", "data": {"seq": seq}}));
    wait_until("resume pauses registered", total, timeout, || async {
        let mut n = 0;
        for seq in 0..total {
            n += engine.matching_pauses(&resume_probe(seq)).await?.len() as u64;
        }
        Ok(n)
    })
    .await?;
    let url: Arc<str> = format!("http://{api_addr}/e/{BENCH_KEY}").into();
    let schedule = Schedule {
        rate: args.rate,
        total,
        warm,
        name: "bench/go",
    };
    let paced = paced_posts(&client(64)?, &url, &schedule, origin, 1).await;
    let mut latencies = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (latencies.len() as u64) < total - paced.errors && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), arrivals.recv()).await {
            Ok(Some((seq, sent, arrived))) => {
                latencies.entry(seq).or_insert(arrived.saturating_sub(sent));
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let mut resumed: Vec<u64> = latencies
        .iter()
        .filter(|(seq, _)| **seq >= warm)
        .map(|(_, ns)| *ns)
        .collect();
    let resumed_count = resumed.len();
    let resume = Percentiles::of(&mut resumed);
    api_server.abort();
    step_server.abort();
    handle.shutdown().await;
    drop(dir);

    let us = |ns: u64| ns as f64 / 1000.0;
    if args.json {
        out!(
            "{}",
            json!({
                "benchmark": "waits",
                "state": redact(&state_url),
                "pauses": args.pauses,
                "users": args.users,
                "setup_seconds": setup.as_secs_f64(),
                "match_miss_us": {"mean": us(miss.mean), "p50": us(miss.p50), "p99": us(miss.p99), "count": miss.count},
                "match_hit_us": {"mean": us(hit.mean), "p50": us(hit.p50), "p99": us(hit.p99), "count": hit.count, "pauses_found": per_user},
                "rate": args.rate,
                "achieved_rate": paced.achieved_rate,
                "post_errors": paced.errors,
                "resumed": resumed_count,
                "measured": measured,
                "event_to_resumed_step_ms": resume.json(),
            })
        );
    } else {
        out!(
            "weir-bench waits: {} ({} pauses pending on {} users; set up in {:.1} s)",
            redact(&state_url),
            args.pauses,
            args.users,
            setup.as_secs_f64()
        );
        out!(
            "{:<44} {:>9} {:>9} {:>9}",
            "matching per incoming event",
            "mean µs",
            "p50 µs",
            "p99 µs"
        );
        out!(
            "{:<44} {:>9.1} {:>9.1} {:>9.1}",
            "no pause matches",
            us(miss.mean),
            us(miss.p50),
            us(miss.p99)
        );
        out!(
            "{:<44} {:>9.1} {:>9.1} {:>9.1}",
            format!("{per_user} pauses match"),
            us(hit.mean),
            us(hit.p50),
            us(hit.p99)
        );
        out!(
            "resume: {} events/s target ({:.1}/s achieved), {resumed_count}/{measured} resumed steps started, POST errors {}",
            args.rate,
            paced.achieved_rate,
            paced.errors
        );
        out!(
            "event POSTed → resumed step started: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            ms(resume.p50),
            ms(resume.p90),
            ms(resume.p99),
            ms(resume.max)
        );
    }
    Ok(if resumed_count as u64 == measured && paced.errors == 0 {
        0
    } else {
        1
    })
}
