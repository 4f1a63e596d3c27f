//! `weir-bench dashboard`: what the dashboard costs the server with many runs stored. It
//! stores `--runs` runs of a three-step function (80% completed, 10% failed, 10% running) in
//! the state store, serves the API on loopback, and loads the runs page `--loads` times: the
//! page and its files, then the calls its script makes (functions, the first page of runs,
//! the counts per status, the counters). Each request is timed on loopback, one at a time
//! (the browser sends several at once: the sum is an upper bound of a page load's server
//! time). Then the calls of other views: a page deep in the listing by cursor, a filtered
//! listing, the counts of one function and one user, and one run's detail.

use std::time::Instant;

use serde_json::{Value, json};
use weir_core::Error;
use weir_core::event::Event;
use weir_core::run::{Run, RunStatus, StepState, StepStatus};

use super::DashboardArgs;
use super::latency::TempDir;
use super::runs_setup::{build, redact, with_prefix};
use super::stats::{Percentiles, ms, nanos};

const FUNCTION_ID: &str = "bench-dashboard";

/// The three-step function the runs belong to.
fn write_function() -> weir_core::Result<TempDir> {
    let dir = TempDir::new()?;
    let definition = json!({
        "id": FUNCTION_ID,
        "triggers": [{"event": "bench/dashboard"}],
        "steps": {
            "a": {"runtime": {"type": "http", "url": "http://127.0.0.1:9/a"}},
            "b": {"runtime": {"type": "http", "url": "http://127.0.0.1:9/b"}, "after": [{"step": "a"}]},
            "c": {"runtime": {"type": "http", "url": "http://127.0.0.1:9/c"}, "after": [{"step": "a"}]}
        }
    });
    let file = dir.0.join("weir.json");
    std::fs::write(&file, definition.to_string())
        .map_err(|e| Error::internal(format!("cannot write {}", file.display())).with_source(e))?;
    Ok(dir)
}

/// Run `i` of `total`, created `total - i` × 10 ms ago, for user `u(i % 100)`.
fn run(i: u64, total: u64, now_ms: i64) -> weir_core::Result<Run> {
    let event = Event::from_json(
        json!({"name": "bench/dashboard", "user": {"id": format!("u{}", i % 100)}, "data": {"i": i}}),
        "",
    )?;
    let mut steps = std::collections::BTreeMap::new();
    for (id, status) in [
        ("a", StepStatus::Queued),
        ("b", StepStatus::Pending),
        ("c", StepStatus::Pending),
    ] {
        let mut step = StepState::pending();
        step.status = status;
        steps.insert(id.to_string(), step);
    }
    let key = format!("{FUNCTION_ID}:v1:{}", event.id);
    Ok(Run {
        id: Run::id_for_key(&key, &event.id),
        key,
        function_id: FUNCTION_ID.into(),
        function_version: "v1".into(),
        fn_version: None,
        event,
        status: RunStatus::Running,
        steps,
        created_at: now_ms - i64::try_from((total - i) * 10).unwrap_or(i64::MAX),
        ended_at: None,
        history: Vec::new(),
        pauses: Default::default(),
    })
}

/// One timed GET: its duration (ns) and its answer, which must be 200.
async fn get(client: &reqwest::Client, url: &str) -> weir_core::Result<(u64, bytes::Bytes)> {
    let started = Instant::now();
    let answer = client
        .get(url)
        .send()
        .await
        .map_err(|e| Error::internal(format!("GET {url}")).with_source(e))?;
    let status = answer.status();
    let body = answer
        .bytes()
        .await
        .map_err(|e| Error::internal(format!("GET {url}")).with_source(e))?;
    let took = nanos(started.elapsed());
    if !status.is_success() {
        return Err(Error::internal(format!(
            "GET {url}: {status} {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok((took, body))
}

pub(super) async fn dashboard(args: DashboardArgs) -> weir_core::Result<i32> {
    let state_url = with_prefix(&args.state, &format!("bench-dash-{}", ulid::Ulid::new()));
    let function = write_function()?;
    let (engine, _) = build(&state_url, "memory://", &function.0).await?;
    let now = weir_core::event::now_ms();
    let state = engine.state();
    let mut ids = Vec::with_capacity(args.runs as usize);
    let stored_at = Instant::now();
    for chunk in (0..args.runs).collect::<Vec<_>>().chunks(200) {
        let runs: Vec<Run> = chunk
            .iter()
            .map(|&i| run(i, args.runs, now))
            .collect::<weir_core::Result<_>>()?;
        futures::future::try_join_all(runs.iter().map(|r| state.create_run(r))).await?;
        let finishing = chunk.iter().zip(&runs).filter_map(|(&i, r)| match i % 10 {
            0 => Some((r.id.as_str(), RunStatus::Failed)),
            1 => None,
            _ => Some((r.id.as_str(), RunStatus::Completed)),
        });
        futures::future::try_join_all(finishing.map(|(id, status)| state.finish_run(id, status)))
            .await?;
        ids.extend(runs.into_iter().map(|r| r.id));
    }
    let store_secs = stored_at.elapsed().as_secs_f64();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::internal("bind").with_source(e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal("addr").with_source(e))?;
    let app = weir::api::router(engine.clone(), weir::api::Keys::Any);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    // One page load of the runs view: what the browser asks for, in order.
    let page_load: Vec<(&str, String)> = vec![
        ("page", format!("{base}/runs")),
        ("style.css", format!("{base}/ui/style.css")),
        ("app.js", format!("{base}/ui/app.js")),
        ("views.js", format!("{base}/ui/views.js")),
        ("/v1/functions", format!("{base}/v1/functions")),
        ("/v1/runs?limit=50", format!("{base}/v1/runs?limit=50")),
        ("/v1/runs/counts", format!("{base}/v1/runs/counts")),
        ("/metrics", format!("{base}/metrics")),
    ];
    // The cursor of the run half-way down the listing (created `runs / 2` × 10 ms ago): the
    // newest run created before then.
    let half = args.runs / 2;
    let middle: Vec<Value> = serde_json::from_slice(
        &get(
            &client,
            &format!("{base}/v1/runs?limit=1&to={}", now - (half as i64) * 10 + 1),
        )
        .await?
        .1,
    )?;
    let cursor = middle
        .last()
        .map(|r| format!("{}:{}", r["created_at"], r["id"].as_str().unwrap_or("")))
        .unwrap_or_default();
    let others: Vec<(&str, String)> = vec![
        (
            "/v1/runs?before=(half way)&limit=50",
            format!("{base}/v1/runs?limit=50&before={cursor}"),
        ),
        (
            "/v1/runs?status=failed&limit=50",
            format!("{base}/v1/runs?status=failed&limit=50"),
        ),
        (
            "/v1/runs?user=u7&limit=50",
            format!("{base}/v1/runs?user=u7&limit=50"),
        ),
        (
            "/v1/runs/counts?function=F",
            format!("{base}/v1/runs/counts?function={FUNCTION_ID}"),
        ),
        (
            "/v1/runs/counts?user=u7",
            format!("{base}/v1/runs/counts?user=u7"),
        ),
        (
            "/v1/runs/{id}",
            format!("{base}/v1/runs/{}", ids[ids.len() / 2]),
        ),
    ];
    // Warm-up: every request once.
    for (_, url) in page_load.iter().chain(&others) {
        get(&client, url).await?;
    }
    let mut per_request: Vec<Vec<u64>> = vec![Vec::new(); page_load.len() + others.len()];
    let mut loads = Vec::with_capacity(args.loads as usize);
    for _ in 0..args.loads {
        let mut total = 0;
        for (i, (_, url)) in page_load.iter().enumerate() {
            let (took, _) = get(&client, url).await?;
            per_request[i].push(took);
            total += took;
        }
        loads.push(total);
        for (j, (_, url)) in others.iter().enumerate() {
            let (took, _) = get(&client, url).await?;
            per_request[page_load.len() + j].push(took);
        }
    }
    let load = Percentiles::of(&mut loads);
    let names: Vec<&str> = page_load.iter().chain(&others).map(|(n, _)| *n).collect();
    let figures: Vec<(&str, Percentiles)> = names
        .iter()
        .zip(per_request.iter_mut())
        .map(|(n, samples)| (*n, Percentiles::of(samples)))
        .collect();
    if args.json {
        out!(
            "{}",
            json!({
                "state": redact(&args.state),
                "runs": args.runs,
                "loads": args.loads,
                "store_secs": store_secs,
                "page_load_ms": load.json(),
                "requests": figures.iter().map(|(n, p)| json!({"request": n, "ms": p.json()})).collect::<Vec<_>>(),
            })
        );
    } else {
        out!(
            "dashboard: {} runs on {} (stored in {store_secs:.1} s), {} page loads",
            args.runs,
            redact(&args.state),
            args.loads
        );
        out!(
            "runs page load (its {} requests one after another): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            page_load.len(),
            ms(load.p50),
            ms(load.p99),
            ms(load.max)
        );
        out!(
            "{:<40} {:>10} {:>10} {:>10}",
            "request",
            "p50 ms",
            "p99 ms",
            "max ms"
        );
        for (name, p) in &figures {
            out!(
                "{name:<40} {:>10.3} {:>10.3} {:>10.3}",
                ms(p.p50),
                ms(p.p99),
                ms(p.max)
            );
        }
    }
    Ok(0)
}
