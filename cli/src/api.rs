//! The HTTP API: `POST /e/{key}`, `GET /health`, and `/v1/…` for the CLI and dashboards.
//!
//! Errors are JSON: `{"error": "…", "status": 400}`. Bad input never leaves anything behind:
//! a body is validated completely before any event of it is stored.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::engine::Engine;
use weir_core::events::EventFilter;
use weir_core::run::{RunFilter, RunStatus};
use weir_core::{Error, ErrorKind};

/// Who may send events.
#[derive(Clone, Default)]
pub enum EventKeys {
    /// Any key is accepted (`weir dev`).
    #[default]
    Any,
    /// Only these keys are accepted; others get 401.
    Only(Arc<HashSet<String>>),
}

impl std::fmt::Debug for EventKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKeys::Any => write!(f, "Any"),
            EventKeys::Only(keys) => write!(f, "Only(<{} redacted keys>)", keys.len()),
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Engine,
    keys: EventKeys,
}

/// The API router over `engine`.
pub fn router(engine: Engine, keys: EventKeys) -> Router {
    Router::new()
        .route("/e/{key}", post(send_events))
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/functions", get(list_functions))
        .route("/v1/events", get(list_events))
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState { engine, keys })
}

/// An error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"error": message, "status": status.as_u16()})),
    )
        .into_response()
}

fn from_error(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unavailable | ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn send_events(State(app): State<AppState>, Path(key): Path<String>, body: Body) -> Response {
    if let EventKeys::Only(keys) = &app.keys
        && !keys.contains(&key)
    {
        return error(StatusCode::UNAUTHORIZED, "unknown event key");
    }
    let limit = app.engine.config().max_request_bytes;
    let Ok(bytes) = to_bytes(body, limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the limit of {limit} bytes"),
        );
    };
    match app.engine.ingest_body(&bytes).await {
        Ok(ids) => Json(json!({"ids": ids, "status": 200})).into_response(),
        Err(e) => from_error(&e),
    }
}

/// The dev dashboard: functions and runs, refreshed every 2 s, from the `/v1` API.
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("dashboard.html"))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    user: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(State(app): State<AppState>, Query(q): Query<RunsQuery>) -> Response {
    let status = match q.status.as_deref().map(|s| (s, RunStatus::parse(s))) {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((s, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown status {s:?} (running, completed, failed)"),
            );
        }
    };
    let filter = RunFilter {
        function_id: q.function,
        status,
        user: q.user,
        limit: q.limit,
    };
    match app.engine.state().list_runs(&filter).await {
        Ok(runs) => Json(json!(runs)).into_response(),
        Err(e) => from_error(&e),
    }
}

async fn show_run(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.engine.state().get_run(&id).await {
        Ok(Some(run)) => Json(crate::view::run_json(&run, true)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id:?}")),
        Err(e) => from_error(&e),
    }
}

async fn list_functions(State(app): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = app
        .engine
        .functions()
        .list()
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "name": f.name,
                "version": f.version,
                "dir": f.dir,
                "triggers": f.triggers.iter().map(|t| json!({"event": t.event, "expression": t.expression.as_ref().map(|e| e.source())}))
                    .chain(f.crons.iter().map(|c| json!({"cron": c.source()})))
                    .collect::<Vec<_>>(),
                "steps": f.steps.iter().map(|s| json!({"id": s.id, "name": s.name, "runtime": s.runtime_type})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!(list))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    name: Option<String>,
    user: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
}

async fn list_events(State(app): State<AppState>, Query(q): Query<EventsQuery>) -> Response {
    let filter = EventFilter {
        name: q.name,
        from_ms: q.from,
        to_ms: q.to,
        user: q.user,
        limit: q.limit,
    };
    match app.engine.events().scan(&filter).await {
        Ok(events) => Json(json!(events)).into_response(),
        Err(e) => from_error(&e),
    }
}
