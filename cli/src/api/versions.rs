//! Deploying and routing function versions (docs/deploying.md): `POST /v1/deploy`,
//! `GET /v1/functions/{id}/versions`, `GET /v1/functions/{id}/versions/{n}/bundle`,
//! `POST /v1/functions/{id}/promote`, `POST /v1/functions/{id}/rollback`; and the runs a
//! function started for an event (`GET /v1/functions/{id}/events/{event}/runs`), which
//! `weir replay` compares against.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use weir_core::engine::DeployOptions;
use weir_core::function::decode_bundles;

use super::{AppState, BODY_READ_TIMEOUT, PathOf, QueryOf, error, from_error, read_body};

/// The largest deploy body: a few bundles of at most 32 MiB each.
const MAX_DEPLOY_BYTES: usize = 128 << 20;

/// The options of a deploy.
#[derive(Debug, Deserialize)]
pub(super) struct DeployQuery {
    /// Route this percentage of new runs to the new versions (0 to 100).
    canary: Option<u8>,
    /// Route the canary by the event's user key.
    #[serde(default)]
    sticky_user: bool,
}

/// Stores the bundles of the body (`weir deploy` sends them) as versions and routes to them.
pub(super) async fn deploy(
    State(app): State<AppState>,
    QueryOf(query): QueryOf<DeployQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if query.canary.is_some_and(|p| p > 100) {
        return error(
            StatusCode::BAD_REQUEST,
            "canary: a percentage from 0 to 100",
        );
    }
    // Not a type a browser sends across sites without asking first.
    if content_type.as_deref() != Some("application/octet-stream") {
        // Read first: answering while the client still sends shows it a broken pipe.
        super::drain(body.into_data_stream()).await;
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a deploy's body is application/octet-stream (what weir deploy sends)",
        );
    }
    let bytes = match read_body(body, MAX_DEPLOY_BYTES, BODY_READ_TIMEOUT).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let bundles = match decode_bundles(&bytes) {
        Ok(bundles) if bundles.is_empty() => {
            return error(StatusCode::BAD_REQUEST, "no function in the deploy");
        }
        Ok(bundles) => bundles,
        Err(e) => return from_error(&e),
    };
    let options = DeployOptions {
        canary: query.canary,
        sticky_user: query.sticky_user,
        source: "weir deploy".into(),
    };
    // In a task of its own: a client hanging up must not cut a deploy half-way.
    let engine = app.engine.clone();
    match tokio::spawn(async move { engine.deploy(bundles, &options).await }).await {
        Ok(Ok(deployed)) => Json(json!({"deployed": deployed})).into_response(),
        Ok(Err(e)) => from_error(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("deploy failed: {e}"),
        ),
    }
}

/// Every stored version of a function, with its status and counts.
pub(super) async fn list(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.version_report(&id).await {
        Ok((reports, note)) => {
            let items: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| {
                    let mut item = json!(r);
                    if r.status == "live"
                        && let Some(note) = &note
                    {
                        item["note"] = json!(note);
                    }
                    item
                })
                .collect();
            Json(items).into_response()
        }
        Err(e) => from_error(&e),
    }
}

/// Makes a function's canary its live version.
pub(super) async fn promote(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.promote(&id).await {
        Ok(routing) => Json(routing).into_response(),
        Err(e) => from_error(&e),
    }
}

/// The options of a rollback.
#[derive(Debug, Deserialize)]
pub(super) struct RollbackQuery {
    /// The version to make live (default: the one live before).
    to: Option<u64>,
}

/// Makes the previously live version (or `to`) live again and retires any canary.
pub(super) async fn rollback(
    State(app): State<AppState>,
    PathOf(id): PathOf<String>,
    QueryOf(query): QueryOf<RollbackQuery>,
) -> Response {
    match app.engine.rollback(&id, query.to, None).await {
        Ok(routing) => Json(routing).into_response(),
        Err(e) => from_error(&e),
    }
}

/// A stored version's bundle (what `weir replay` runs when no `--dir` is given).
pub(super) async fn bundle(
    State(app): State<AppState>,
    PathOf((id, number)): PathOf<(String, u64)>,
) -> Response {
    match app.engine.version_bundle(&id, number).await {
        Ok(Some(bytes)) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("function {id:?} has no stored version {number}"),
        ),
        Err(e) => from_error(&e),
    }
}

/// The runs function `id` started for an event, oldest first, as `GET /v1/runs/{id}` shows
/// each (with its steps' outputs).
pub(super) async fn runs_of_event(
    State(app): State<AppState>,
    PathOf((id, event_id)): PathOf<(String, String)>,
) -> Response {
    match app.engine.runs_of_event(&id, &event_id).await {
        Ok(runs) => Json(
            runs.iter()
                .map(|r| crate::view::run_json(r, false))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => from_error(&e),
    }
}
