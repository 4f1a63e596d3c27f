//! `weir-bench celery`: Celery tasks through weir's Celery adapter beside a Celery worker doing
//! the same no-op task on the same broker, in the same run.
//!
//! Each side gets the same load: N `tasks.noop` messages published beforehand by the real
//! Celery producer (a Python with Celery) onto a queue of its own; then the side consumes them
//! and writes each task's result to the Redis result backend. The figure is tasks completed
//! per second, from the first result written to the N-th (counted with DBSIZE of the results
//! database, which must be empty). weir runs in this process (adapter, engine with every role,
//! a no-op `http` step served locally); the Celery worker is `celery worker --pool prefork -c C`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::json;
use weir_core::Error;
use weir_core::adapter::Shutdown;
use weir_core::engine::Roles;

use super::CeleryArgs;
use super::latency::TempDir;
use super::local::serve_local;

/// Publishes `argv[3]` `tasks.noop` tasks to queue `argv[2]` on broker `argv[1]` through one
/// producer; prints their ids as JSON.
const PUBLISH: &str = r#"
import json, sys
from celery import Celery
app = Celery("bench", broker=sys.argv[1])
ids = []
with app.producer_or_acquire() as producer:
    for _ in range(int(sys.argv[3])):
        ids.append(app.send_task("tasks.noop", (), queue=sys.argv[2], producer=producer).id)
print(json.dumps(ids))
"#;

/// The Celery worker's module: the same no-op task.
const WORKER_TASKS: &str = r#"
import os
from celery import Celery
app = Celery("bench", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])

@app.task(name="tasks.noop")
def noop():
    return None
"#;

/// One side's figure.
struct Figure {
    side: String,
    seconds: f64,
    tasks: u64,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.seconds.max(1e-9)
    }
}

/// Runs `weir-bench celery`.
pub(super) async fn celery(args: CeleryArgs) -> weir_core::Result<i32> {
    let results = redis::Client::open(args.results.as_str())
        .map_err(|e| Error::config("--results is not a Redis URL").with_source(e))?;
    let mut conn = results
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| Error::unavailable("cannot reach the results Redis").with_source(e))?;
    if dbsize(&mut conn).await? != 0 {
        return Err(Error::config(
            "the results database is not empty: give --results a Redis database of its own (e.g. redis://127.0.0.1:6379/9)",
        ));
    }
    out!(
        "weir-bench celery: {} no-op tasks per side on {} (results {})",
        args.tasks,
        weir::core::redact::redact_url(&args.broker),
        weir::core::redact::redact_url(&args.results)
    );
    let mut figures = Vec::new();
    figures.push(weir_side(&args, &mut conn).await?);
    if !args.no_worker {
        figures.push(worker_side(&args, &mut conn).await?);
    }
    out!(
        "{:<36} {:>8} {:>10} {:>10}",
        "side",
        "tasks",
        "seconds",
        "tasks/s"
    );
    for f in &figures {
        out!(
            "{:<36} {:>8} {:>10.2} {:>10.0}",
            f.side,
            f.tasks,
            f.seconds,
            f.rate()
        );
    }
    if let [weir, worker] = figures.as_slice() {
        out!("weir / Celery worker: {:.2}x", weir.rate() / worker.rate());
    }
    Ok(0)
}

/// weir's side: the adapter and the engine in this process.
async fn weir_side(
    args: &CeleryArgs,
    conn: &mut redis::aio::MultiplexedConnection,
) -> weir_core::Result<Figure> {
    let queue = format!("weir-bench-celery-{}", ulid::Ulid::new());
    let ids = publish(args, &queue).await?;
    // The no-op step: an `http` step answering {} from this process.
    let app = Router::new().route("/noop", post(|| async { axum::Json(json!({})) }));
    let (addr, server) = serve_local(app).await?;
    let dir = TempDir::new()?;
    let fn_dir = dir.0.join("noop");
    let definition = json!({
        "id": "noop",
        "triggers": [{"event": "celery/tasks.noop"}],
        "steps": {"noop": {"runtime": {"type": "http", "url": format!("http://{addr}/noop")}}},
    });
    std::fs::create_dir_all(&fn_dir)
        .and_then(|()| std::fs::write(fn_dir.join("weir.json"), definition.to_string()))
        .map_err(|e| Error::internal("cannot write the bench function").with_source(e))?;
    let (engine, _) = super::runs_setup::build(&args.state, "memory://", &dir.0).await?;
    let handle = engine.start(Roles::ALL).await?;
    let results = args
        .results
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('@', "%40");
    let url = format!(
        "celery+{}{}queue={queue}&results={results}",
        args.broker,
        if args.broker.contains('?') { '&' } else { '?' }
    );
    let adapter = weir::App::default().registry().open_adapter(&url).await?;
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { adapter.run(engine, shutdown).await }
    });
    let seconds = measure(conn, ids.len() as u64).await;
    trigger.raise();
    let _ = running.await;
    handle.shutdown().await;
    server.abort();
    forget(conn, &ids).await?;
    Ok(Figure {
        side: format!("weir (adapter, http step, {})", state_name(&args.state)),
        seconds: seconds?,
        tasks: ids.len() as u64,
    })
}

/// The Celery worker's side: `celery worker --pool prefork -c C` on a queue of its own.
async fn worker_side(
    args: &CeleryArgs,
    conn: &mut redis::aio::MultiplexedConnection,
) -> weir_core::Result<Figure> {
    let queue = format!("weir-bench-celery-worker-{}", ulid::Ulid::new());
    let ids = publish(args, &queue).await?;
    let dir = TempDir::new()?;
    std::fs::write(dir.0.join("benchtasks.py"), WORKER_TASKS)
        .map_err(|e| Error::internal("cannot write the worker's module").with_source(e))?;
    let mut worker = tokio::process::Command::new(&args.python)
        .args(["-m", "celery", "-A", "benchtasks", "worker", "-Q", &queue])
        .args([
            "--pool",
            "prefork",
            "-c",
            &args.worker_concurrency.to_string(),
        ])
        .args([
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ])
        .args(["--loglevel", "warning"])
        .current_dir(&dir.0)
        .env("BROKER", &args.broker)
        .env("BACKEND", &args.results)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::config("cannot start the Celery worker").with_source(e))?;
    let seconds = measure(conn, ids.len() as u64).await;
    let _ = worker.kill().await;
    forget(conn, &ids).await?;
    Ok(Figure {
        side: format!("Celery worker (prefork -c {})", args.worker_concurrency),
        seconds: seconds?,
        tasks: ids.len() as u64,
    })
}

fn state_name(url: &str) -> &str {
    url.split("://").next().unwrap_or(url)
}

/// Publishes the side's tasks with the real Celery producer; returns their ids.
async fn publish(args: &CeleryArgs, queue: &str) -> weir_core::Result<Vec<String>> {
    let started = Instant::now();
    let out = tokio::process::Command::new(&args.python)
        .args(["-c", PUBLISH, &args.broker, queue, &args.tasks.to_string()])
        .output()
        .await
        .map_err(|e| Error::config(format!("cannot run {}", args.python)).with_source(e))?;
    if !out.status.success() {
        return Err(Error::config(format!(
            "the Celery producer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let ids: Vec<String> = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::internal("the producer printed no ids").with_source(e))?;
    out!(
        "  published {} tasks to {queue} in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Seconds from the first result stored to the `n`-th.
async fn measure(conn: &mut redis::aio::MultiplexedConnection, n: u64) -> weir_core::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    loop {
        let stored = dbsize(conn).await?;
        if stored > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if stored >= n {
            return Ok(first.map_or(0.0, |t| t.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            return Err(Error::unavailable(format!(
                "only {stored} of {n} results after 10 minutes"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> weir_core::Result<u64> {
    redis::cmd("DBSIZE")
        .query_async(conn)
        .await
        .map_err(|e| Error::unavailable("DBSIZE failed").with_source(e))
}

/// Deletes the results of `ids`, leaving the database as it was found.
async fn forget(
    conn: &mut redis::aio::MultiplexedConnection,
    ids: &[String],
) -> weir_core::Result<()> {
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|id| format!("celery-task-meta-{id}"))
            .collect();
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(conn)
            .await
            .map_err(|e| Error::unavailable("DEL failed").with_source(e))?;
    }
    Ok(())
}
