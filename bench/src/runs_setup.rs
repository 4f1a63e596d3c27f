//! What `weir-bench runs` sets up: a local HTTP step server that counts step requests (and
//! records first-step arrivals at a fixed rate), a chained bench function in a temporary
//! directory, and the engine, with a counter of round trips to a Redis state store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_core::Error;
use weir_core::engine::Engine;

use super::latency::TempDir;
use super::local::serve_local;
use super::stats::nanos;

/// The event name the bench function is triggered by.
pub(super) const EVENT_NAME: &str = "bench/runs";
/// The bench function's id.
pub(super) const BENCH_FUNCTION_ID: &str = "bench-runs";

/// A first-step request seen by the step server.
pub(super) struct Arrival {
    pub(super) seq: u64,
    pub(super) sent_at_ns: u64,
    pub(super) arrived_at_ns: u64,
}

#[derive(Clone)]
struct StepServer {
    origin: Instant,
    requests: Arc<AtomicU64>,
    /// Set at a fixed rate: first-step arrivals are parsed and sent here.
    arrivals: Option<mpsc::UnboundedSender<Arrival>>,
}

/// Answers `{}` to a step that is not the first.
async fn next_step(State(s): State<StepServer>, body: Body) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    if to_bytes(body, usize::MAX).await.is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(json!({})).into_response()
}

/// Answers `{}` to the first step; at a fixed rate, records when its request arrived (before
/// its body is read).
async fn first_step(State(s): State<StepServer>, body: Body) -> Response {
    let arrived_at_ns = nanos(s.origin.elapsed());
    s.requests.fetch_add(1, Ordering::Relaxed);
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if let Some(arrivals) = &s.arrivals {
        let input: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let data = &input["event"]["data"];
        if let (Some(seq), Some(sent_at_ns)) = (data["seq"].as_u64(), data["sent_at_ns"].as_u64()) {
            let _ = arrivals.send(Arrival {
                seq,
                sent_at_ns,
                arrived_at_ns,
            });
        }
    }
    axum::Json(json!({})).into_response()
}

/// The local step server: `/first` for the first step, `/next` for the others.
pub(super) struct Steps {
    pub(super) addr: std::net::SocketAddr,
    /// Step requests received (every step, every attempt).
    pub(super) requests: Arc<AtomicU64>,
    pub(super) task: JoinHandle<()>,
}

/// Serves the step server on 127.0.0.1:0.
pub(super) async fn serve_steps(
    origin: Instant,
    arrivals: Option<mpsc::UnboundedSender<Arrival>>,
) -> weir_core::Result<Steps> {
    let requests = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/first", post(first_step))
        .route("/next", post(next_step))
        .with_state(StepServer {
            origin,
            requests: requests.clone(),
            arrivals,
        });
    let (addr, task) = serve_local(app).await?;
    Ok(Steps {
        addr,
        requests,
        task,
    })
}

/// What the bench function's steps run.
pub(super) enum StepTarget<'a> {
    /// `http` steps to the local step server.
    Http(std::net::SocketAddr),
    /// `wasm` steps running this module (an absolute path).
    Wasm(&'a std::path::Path),
}

/// Writes the bench function (`s1 → s2 → … → sN`, each an `http` step to the step server or a
/// `wasm` step) into a temporary directory.
pub(super) fn write_function(steps: u64, target: &StepTarget<'_>) -> weir_core::Result<TempDir> {
    let dir = TempDir::new()?;
    let mut defs = serde_json::Map::new();
    for i in 1..=steps {
        let mut step = json!({
            "id": format!("s{i}"),
            "name": format!("Step {i}"),
            "timeout": "30s"
        });
        match target {
            StepTarget::Http(addr) => {
                let path = if i == 1 { "first" } else { "next" };
                step["runtime"] = json!({"type": "http", "url": format!("http://{addr}/{path}")});
            }
            StepTarget::Wasm(module) => {
                step["runtime"] = json!({"type": "wasm"});
                step["path"] = json!(module.display().to_string());
            }
        }
        if i > 1 {
            step["after"] = json!([{"step": format!("s{}", i - 1)}]);
        }
        defs.insert(format!("s{i}"), step);
    }
    let definition = json!({
        "id": BENCH_FUNCTION_ID,
        "name": "weir-bench runs",
        "triggers": [{"event": EVENT_NAME}],
        "steps": defs,
    });
    let file = dir.0.join("weir.json");
    std::fs::write(&file, definition.to_string())
        .map_err(|e| Error::internal(format!("cannot write {}", file.display())).with_source(e))?;
    Ok(dir)
}

/// `url` with `prefix=PREFIX` appended when it is a Redis URL (a fresh key space per bench run).
pub(super) fn with_prefix(url: &str, prefix: &str) -> String {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}prefix={prefix}")
}

/// `url` with its secrets replaced by `***`.
pub(super) fn redact(url: &str) -> String {
    weir::core::redact::redact_url(url)
}

/// Round trips made to the state store so far (a Redis state store only).
pub(super) type RoundTrips = Box<dyn Fn() -> u64 + Send + Sync>;

/// Builds the engine (not started) with the bench function loaded; with a Redis state store,
/// also returns its round-trip counter (shared by the state and event stores).
pub(super) async fn build(
    state_url: &str,
    broker_url: &str,
    functions: &std::path::Path,
) -> weir_core::Result<(Engine, Option<RoundTrips>)> {
    let (engine, round_trips) = build_engine(state_url, broker_url).await?;
    let mut loaded = weir::functions::load_all(functions, engine.drivers());
    // Compiles a wasm module now rather than in the first timed attempt.
    weir::functions::prepare(engine.drivers(), &mut loaded).await;
    if let Some(e) = loaded.errors.first() {
        return Err(Error::internal(format!(
            "the bench function did not load: {e}"
        )));
    }
    engine.functions().replace(loaded.functions);
    Ok((engine, round_trips))
}

#[cfg(feature = "state-redis")]
async fn build_engine(
    state_url: &str,
    broker_url: &str,
) -> weir_core::Result<(Engine, Option<RoundTrips>)> {
    use weir_core::engine::{EngineConfig, EngineParts};
    use weir_core::registry::RuntimeSettings;
    if !(state_url.starts_with("redis://") || state_url.starts_with("rediss://")) {
        return plain_engine(state_url, broker_url).await;
    }
    let (state, events) = weir_state_redis::open(state_url).await?;
    let conn = state.conn().clone();
    let app = weir::App::default();
    let engine = Engine::new(EngineParts {
        state: Arc::new(state),
        events: Arc::new(events),
        broker: app.registry().open_broker(broker_url).await?,
        drivers: app.drivers(&RuntimeSettings::default()).await?,
        config: EngineConfig::default(),
    });
    Ok((engine, Some(Box::new(move || conn.round_trips()))))
}

#[cfg(not(feature = "state-redis"))]
async fn build_engine(
    state_url: &str,
    broker_url: &str,
) -> weir_core::Result<(Engine, Option<RoundTrips>)> {
    plain_engine(state_url, broker_url).await
}

/// The engine `weir dev` would build (no round-trip counter).
async fn plain_engine(
    state_url: &str,
    broker_url: &str,
) -> weir_core::Result<(Engine, Option<RoundTrips>)> {
    let options = weir::embedded::EngineOptions {
        state_url: state_url.to_string(),
        broker_url: broker_url.to_string(),
        ..Default::default()
    };
    Ok((weir::App::default().build_engine(&options).await?, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_get_the_prefix_and_lose_the_password() {
        assert_eq!(with_prefix("memory://", "p"), "memory://");
        assert_eq!(with_prefix("redis://h:1", "p"), "redis://h:1?prefix=p");
        assert_eq!(
            with_prefix("redis://h:1/2?count=4", "p"),
            "redis://h:1/2?count=4&prefix=p"
        );
        assert_eq!(redact("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("memory://"), "memory://");
    }
}
