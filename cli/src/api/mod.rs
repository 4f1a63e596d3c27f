//! The HTTP API: `POST /e/{key}`, `GET /health`, `GET /metrics` (Prometheus), `GET
//! /openapi.json` (this API, described), and `/v1/…` for the CLI and dashboards.
//!
//! `/e/{key}` takes the event keys; `/v1/…` (runs, events with their users' data) and
//! `/metrics` take an API key as `Authorization: Bearer KEY` when its [`Keys`] are `Only`
//! some, as `weir serve` does when `api_keys` are configured.
//!
//! Errors are JSON: `{"error": "…", "status": 400}`. Bad input never leaves anything behind:
//! a body is validated completely before any event of it is stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::engine::Engine;
use weir_core::events::EventFilter;
use weir_core::run::{RunCursor, RunFilter, RunStatus};
use weir_core::{Error, ErrorKind};

mod dashboard;
mod schemas;
mod users;
mod versions;

/// The keys a part of the API takes: event keys for `/e/{key}`, API keys for `/v1`.
#[derive(Clone, Default)]
pub enum Keys {
    /// Any key, or none, is accepted (`weir dev`; `/v1` of `weir serve` without `api_keys`).
    #[default]
    Any,
    /// Only these keys are accepted; others get 401.
    Only(Arc<HashSet<String>>),
}

impl Keys {
    /// Whether `key` may pass.
    pub fn allows(&self, key: &str) -> bool {
        match self {
            Keys::Any => true,
            Keys::Only(keys) => keys.contains(key),
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::Any => write!(f, "Any"),
            Keys::Only(keys) => write!(f, "Only(<{} redacted keys>)", keys.len()),
        }
    }
}

/// Who may send events (`POST /e/{key}`).
pub type EventKeys = Keys;

/// Who may read the `/v1` API (`Authorization: Bearer KEY`).
pub type ApiKeys = Keys;

#[derive(Clone)]
struct AppState {
    engine: Engine,
    keys: EventKeys,
}

/// The API router over `engine`, its `/v1` API open to anyone (see [`secured_router`]).
pub fn router(engine: Engine, keys: EventKeys) -> Router {
    secured_router(engine, keys, Keys::Any)
}

/// The API router over `engine`, its `/v1` API behind `api_keys`.
pub fn secured_router(engine: Engine, keys: EventKeys, api_keys: ApiKeys) -> Router {
    let v1 = Router::new()
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/counts", get(count_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route("/v1/dead", get(list_dead))
        .route("/v1/dead/{id}", get(show_dead).delete(drop_dead))
        .route("/v1/dead/{id}/retry", post(retry_dead))
        .route("/v1/functions", get(list_functions))
        .route("/v1/functions/{id}", get(show_function))
        .route("/v1/functions/{id}/versions", get(versions::list))
        .route(
            "/v1/functions/{id}/versions/{number}/bundle",
            get(versions::bundle),
        )
        .route(
            "/v1/functions/{id}/events/{event}/runs",
            get(versions::runs_of_event),
        )
        .route("/v1/functions/{id}/promote", post(versions::promote))
        .route("/v1/functions/{id}/rollback", post(versions::rollback))
        .route("/v1/deploy", post(versions::deploy))
        .route("/v1/schemas", get(schemas::list))
        .route(
            "/v1/schemas/{name}/{version}",
            get(schemas::show).put(schemas::put).delete(schemas::delete),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(show_event))
        .route("/v1/users/{id}/timeline", get(users::timeline))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/workers/{wid}", post(order_worker))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            api_keys.clone(),
            require_api_key,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            api_keys,
            refuse_cross_site,
        ));
    Router::new()
        .route("/e/{key}", post(send_events))
        .merge(dashboard::routes())
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState { engine, keys })
}

/// Refuses a `/v1` request that changes something (deploys code, pushes a schema, cancels a
/// run) when a browser says it comes from another site (`Origin` naming another host, or
/// `Sec-Fetch-Site: cross-site`): on an open API (`weir dev`) a page the developer visits
/// could otherwise deploy code to the local server.
async fn refuse_cross_site(
    State(api_keys): State<ApiKeys>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes {
        let headers = request.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("host").unwrap_or("");
        let from_elsewhere = header("origin").is_some_and(|origin| {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            origin_host != host
        }) || header("sec-fetch-site") == Some("cross-site");
        if from_elsewhere {
            return error(
                StatusCode::FORBIDDEN,
                "a request from another site cannot change this server",
            );
        }
        // DNS rebinding: a page whose name was pointed at this server is "same-site" to the
        // browser. On an open API, a browser's request must name the server by an address.
        let from_browser = header("origin").is_some() || header("sec-fetch-site").is_some();
        if matches!(api_keys, Keys::Any) && from_browser && !addressed_directly(host) {
            return error(
                StatusCode::FORBIDDEN,
                "on an API without keys, a browser may change this server only at localhost or an IP address",
            );
        }
    }
    next.run(request).await
}

/// Whether a `Host` header names the server by an IP address or `localhost` (with or without
/// a port), not by a name that could have been pointed at it.
fn addressed_directly(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8288`
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Lets a `/v1` request through when the API is open or it carries a configured key.
async fn require_api_key(
    State(api_keys): State<ApiKeys>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Keys::Only(_) = &api_keys {
        let presented = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        match presented {
            Some(key) if api_keys.allows(key) => {}
            Some(_) => return error(StatusCode::UNAUTHORIZED, "unknown API key"),
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "this API needs an API key: send `Authorization: Bearer KEY` (weir runs / weir events: --api-key or WEIR_API_KEY)",
                );
            }
        }
    }
    next.run(request).await
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
    if let Some(violations) = weir_core::schema::violations_of(e) {
        let status = StatusCode::BAD_REQUEST;
        return (
            status,
            Json(json!({"error": e.to_string(), "status": status.as_u16(), "violations": violations})),
        )
            .into_response();
    }
    let status = match e.kind() {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::Unavailable | ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// How long a request body may go without sending a byte; a body that stalls longer is answered
/// 408 and dropped, so a client cannot hold a connection for good.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// 404 for a path no route serves, as JSON like every other error.
async fn no_route(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

/// 405 for a method a route does not take, as JSON.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A query string read as `T`; one that cannot be (`limit=abc`) is a JSON error.
struct QueryOf<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryOf<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(QueryOf(q)),
            Err(r) => Err(error(r.status(), r.body_text())),
        }
    }
}

/// A path parameter; one that cannot be read (bad UTF-8) is a JSON error.
struct PathOf<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(PathOf(p)),
            Err(r) => Err(error(r.status(), r.body_text())),
        }
    }
}

/// How much of a body over its limit is read and dropped before the 413 is answered.
const DRAINED_AT_MOST: usize = 16 << 20;

/// How long a refused body is drained at most, in all.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops what is left of a refused body (up to [`DRAINED_AT_MOST`], for
/// [`DRAIN_TIME`] at most): a server that answers while the client still sends makes the
/// client see a broken pipe instead of the answer.
async fn drain(mut stream: axum::body::BodyDataStream) {
    let mut left = DRAINED_AT_MOST;
    let draining = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let Some(after) = left.checked_sub(chunk.len()) else {
                return;
            };
            left = after;
        }
    };
    // In all: a client trickling its refused body does not hold the connection.
    let _ = tokio::time::timeout(DRAIN_TIME, draining).await;
}

/// Reads a request body of at most `limit` bytes, each part arriving within `timeout` of the
/// previous one ([`BODY_READ_TIMEOUT`]): 413 once it passes the limit, 400 when it breaks off,
/// 408 when it stalls. (A body over the limit is still read, and dropped, up to 16 MiB past
/// it: answering before the client has sent its body makes many clients report a broken pipe
/// instead of the 413.)
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over the limit of {limit} bytes"),
        )
    };
    let stalled = || {
        error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body sent nothing for {}",
                humantime::format_duration(timeout)
            ),
        )
    };
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut len = 0usize;
    loop {
        let next = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| stalled())?;
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("the request body broke off after {len} bytes: {e}"),
            )
        })?;
        len += chunk.len();
        if len > limit {
            drain(stream).await;
            return Err(too_large());
        }
        // One chunk (the usual case) is kept as it came; more are joined.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(head) => {
                rest.reserve(len);
                rest.extend_from_slice(&head);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}

async fn send_events(
    State(app): State<AppState>,
    PathOf(key): PathOf<String>,
    body: Body,
) -> Response {
    let metrics = app.engine.metrics();
    if !app.keys.allows(&key) {
        metrics.events_refused("unknown_key");
        return error(StatusCode::UNAUTHORIZED, "unknown event key");
    }
    let limit = app.engine.config().max_request_bytes;
    let bytes = match read_body(body, limit, BODY_READ_TIMEOUT).await {
        Ok(bytes) => bytes,
        Err(answer) => {
            metrics.events_rejected(match answer.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::TooLarge,
                StatusCode::REQUEST_TIMEOUT => ErrorKind::Timeout,
                _ => ErrorKind::InvalidInput,
            });
            return answer;
        }
    };
    // In a task of its own: a producer that hangs up must not cancel an ingest half-way
    // (events stored, not yet published or taken back).
    let engine = app.engine.clone();
    let ingested = tokio::spawn(async move { engine.ingest_body(&bytes).await }).await;
    match ingested {
        Ok(Ok(ids)) => Json(json!({"ids": ids, "status": 200})).into_response(),
        Ok(Err(e)) => from_error(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest failed: {e}"),
        ),
    }
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The OpenAPI document of this API (`cli/src/openapi.json`; a test checks it against the
/// routes and their answers).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// What this process counted, for Prometheus to scrape.
async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            weir_core::metrics::CONTENT_TYPE,
        )],
        app.engine.metrics().encode(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    user: Option<String>,
    limit: Option<usize>,
    from: Option<i64>,
    to: Option<i64>,
    before: Option<String>,
}

impl RunsQuery {
    /// The filter the query asks for, or what cannot be read in it.
    fn filter(self) -> Result<RunFilter, String> {
        let status = match self.status.as_deref().map(|s| (s, RunStatus::parse(s))) {
            None => None,
            Some((_, Some(s))) => Some(s),
            Some((s, None)) => {
                return Err(format!(
                    "unknown status {s:?} (running, waiting, completed, failed, cancelled)"
                ));
            }
        };
        let before = match self.before.as_deref().map(|b| (b, RunCursor::parse(b))) {
            None => None,
            Some((_, Some(cursor))) => Some(cursor),
            Some((b, None)) => {
                return Err(format!(
                    "before={b:?} is not a cursor: it is CREATED_AT:ID of the last run listed"
                ));
            }
        };
        Ok(RunFilter {
            function_id: self.function,
            status,
            user: self.user,
            limit: self.limit,
            from_ms: self.from,
            to_ms: self.to,
            before,
        })
    }
}

/// The largest `limit` a listing takes: a larger one would make the store read (and the
/// server hold) that many records for one request.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// A 400 when `limit` is over [`MAX_LIST_LIMIT`].
fn check_limit(limit: Option<usize>) -> Option<Response> {
    limit.filter(|l| *l > MAX_LIST_LIMIT).map(|l| {
        error(
            StatusCode::BAD_REQUEST,
            format!("limit {l} is over the maximum of {MAX_LIST_LIMIT}; narrow the range instead"),
        )
    })
}

/// `GET /v1/runs`: runs, newest first. A full page says where the next one starts in the
/// `x-next-before` header (a cursor for `?before=`).
async fn list_runs(State(app): State<AppState>, QueryOf(q): QueryOf<RunsQuery>) -> Response {
    if let Some(refused) = check_limit(q.limit) {
        return refused;
    }
    let filter = match q.filter() {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match app.engine.state().list_runs(&filter).await {
        Ok(runs) => {
            let next = (runs.len() == filter.limit())
                .then(|| runs.last().map(|r| RunCursor::of(r).to_string()))
                .flatten();
            let mut answer = Json(json!(runs)).into_response();
            if let Some(next) = next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
                answer.headers_mut().insert("x-next-before", next);
            }
            answer
        }
        Err(e) => from_error(&e),
    }
}

/// `GET /v1/runs/counts`: how many runs there are by status, for a function, a user and a
/// time range.
async fn count_runs(State(app): State<AppState>, QueryOf(q): QueryOf<RunsQuery>) -> Response {
    let filter = match q.filter() {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match app.engine.state().count_runs(&filter).await {
        Ok(counts) => Json(json!(counts)).into_response(),
        Err(e) => from_error(&e),
    }
}

async fn show_run(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.state().get_run(&id).await {
        Ok(Some(run)) => {
            let mut shown = crate::view::run_json(&run, true);
            // The DAG of the run's own version, when this node has it loaded.
            if let Some(f) = app
                .engine
                .functions()
                .get(&run.function_id, &run.function_version)
            {
                shown["graph"] = crate::view::graph_json(&f);
            }
            Json(shown).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id:?}")),
        Err(e) if e.is_retryable() => from_error(&e),
        // A run whose stored state does not decode: what can be read of it, and why the rest
        // cannot (the executor fails it, with a dead letter, when it next handles it).
        Err(e) => match app.engine.state().get_run_outline(&id).await {
            Ok(Some(outline)) => Json(json!({
                "run_id": id,
                "status": outline.status.map_or("unknown", |s| s.as_str()),
                "created_at": outline.created_at,
                "ended_at": outline.ended_at,
                "timeline": outline.history,
                "error": format!("the run's stored state cannot be decoded: {e}"),
            }))
            .into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id:?}")),
            Err(_) => from_error(&e),
        },
    }
}

#[derive(Debug, Deserialize)]
struct DeadQuery {
    before: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/dead`: dead letters, newest first, a page at a time (`next` → `?before=`).
async fn list_dead(State(app): State<AppState>, QueryOf(q): QueryOf<DeadQuery>) -> Response {
    if let Some(refused) = check_limit(q.limit) {
        return refused;
    }
    let limit = q.limit.unwrap_or(100);
    match app
        .engine
        .state()
        .list_dead_letters(q.before.as_deref(), limit)
        .await
    {
        Ok(page) => Json(json!(page)).into_response(),
        Err(e) => from_error(&e),
    }
}

async fn show_dead(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.state().get_dead_letter(&id).await {
        Ok(Some(dead)) => Json(json!(dead)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {id:?}")),
        Err(e) => from_error(&e),
    }
}

/// `DELETE /v1/dead/{id}`: forgets a dead letter (its message is not sent again).
async fn drop_dead(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.state().delete_dead_letter(&id).await {
        Ok(true) => Json(json!({"dropped": id})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no dead letter {id:?}")),
        Err(e) => from_error(&e),
    }
}

/// `POST /v1/dead/{id}/retry`: sends the message again (reopening the run the dead letter
/// failed) and forgets the dead letter; answers it.
async fn retry_dead(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.retry_dead_letter(&id).await {
        Ok(dead) => Json(json!(dead)).into_response(),
        Err(e) => from_error(&e),
    }
}

/// `POST /v1/runs/{id}/cancel`: cancels a running run (see `Engine::cancel_run`); answers the
/// run. A run cancelled before answers the same; one that ended otherwise is a 409.
async fn cancel_run(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    let detail = format!("cancelled by POST /v1/runs/{id}/cancel");
    let answer = match app.engine.cancel_run(&id, &detail).await {
        Ok(a) => a,
        Err(e) => return from_error(&e),
    };
    match answer.status {
        None => return error(StatusCode::NOT_FOUND, format!("no run {id:?}")),
        Some(RunStatus::Cancelled) => {}
        Some(other) => {
            return error(
                StatusCode::CONFLICT,
                format!("run {id} has already ended: {}", other.as_str()),
            );
        }
    }
    show_run(State(app), PathOf(id)).await
}

/// A live function as `GET /v1/functions` lists it: its triggers, steps and DAG.
fn function_json(f: &weir_core::function::Function) -> Value {
    let graph = crate::view::graph_json(f);
    json!({
        "id": f.id,
        "name": f.name,
        "version": f.version,
        "dir": f.dir.to_string_lossy(),
        "triggers": f.triggers.iter().map(|t| json!({"event": t.event, "expression": t.expression.as_ref().map(|e| e.source())}))
            .chain(f.crons.iter().map(|c| json!({"cron": c.source()})))
            .collect::<Vec<_>>(),
        "steps": graph["steps"],
        "edges": graph["edges"],
    })
}

async fn list_functions(State(app): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = app
        .engine
        .functions()
        .list()
        .iter()
        .map(|f| function_json(f))
        .collect();
    Json(json!(list))
}

/// `GET /v1/functions/{id}`: one live function.
async fn show_function(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.functions().live(&id) {
        Some(f) => Json(function_json(&f)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no function {id:?}")),
    }
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    name: Option<String>,
    user: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
    order: Option<String>,
}

#[derive(Deserialize)]
struct JobsQuery {
    state: Option<String>,
    queue: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/jobs`: the jobs the state store keeps for outside workers (see [`crate::jobs`]).
async fn list_jobs(State(app): State<AppState>, QueryOf(q): QueryOf<JobsQuery>) -> Response {
    if let Some(refused) = check_limit(q.limit) {
        return refused;
    }
    if let Some(state) = q.state.as_deref()
        && !crate::jobs::STATES.contains(&state)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown state {state:?} ({})",
                crate::jobs::STATES.join(", ")
            ),
        );
    }
    let Some(store) = app.engine.state().jobs() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "this state store keeps no jobs for outside workers",
        );
    };
    let limit = q.limit.unwrap_or(100);
    match crate::jobs::list(
        store.as_ref(),
        q.state.as_deref(),
        q.queue.as_deref(),
        limit,
    )
    .await
    {
        Ok(jobs) => Json(json!(jobs)).into_response(),
        Err(e) => from_error(&e),
    }
}

/// The longest worker id `POST /v1/workers/{wid}` takes.
const MAX_WID: usize = 256;

/// `POST /v1/workers/{wid}` `{"state": "quiet" | "terminate" | "running"}`: an order to an
/// outside worker (a Faktory worker hears it at its next BEAT, from any node); `running`
/// takes an order back. Answers the order in force.
async fn order_worker(
    State(app): State<AppState>,
    PathOf(wid): PathOf<String>,
    body: Body,
) -> Response {
    #[derive(Deserialize)]
    struct Order {
        state: String,
    }
    if wid.is_empty() || wid.len() > MAX_WID {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a worker id is 1 to {MAX_WID} bytes"),
        );
    }
    let bytes = match read_body(body, 4_096, BODY_READ_TIMEOUT).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let order = match serde_json::from_slice::<Order>(&bytes) {
        Ok(o) => o,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is {{\"state\": \"quiet\" | \"terminate\" | \"running\"}}: {e}"),
            );
        }
    };
    let state = app.engine.state();
    let done = match order.state.as_str() {
        "running" => weir_core::jobs::clear_worker_order(state.as_ref(), &wid).await,
        other => match weir_core::jobs::WorkerOrder::parse(other) {
            Some(order) => weir_core::jobs::order_worker(state.as_ref(), &wid, order).await,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown state {other:?} (quiet, terminate, running)"),
                );
            }
        },
    };
    if let Err(e) = done {
        return from_error(&e);
    }
    match weir_core::jobs::worker_order(state.as_ref(), &wid).await {
        Ok(order) => {
            let state = order.map_or("running", |o| o.as_str());
            tracing::info!(wid, state, "an outside worker was given an order");
            Json(json!({"wid": wid, "state": state})).into_response()
        }
        Err(e) => from_error(&e),
    }
}

async fn list_events(State(app): State<AppState>, QueryOf(q): QueryOf<EventsQuery>) -> Response {
    if let Some(refused) = check_limit(q.limit) {
        return refused;
    }
    let newest_first = match q.order.as_deref() {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown order {other:?} (newest, oldest)"),
            );
        }
    };
    let filter = EventFilter {
        name: q.name,
        from_ms: q.from,
        to_ms: q.to,
        user: q.user,
        limit: q.limit,
        newest_first,
    };
    match app.engine.events().scan(&filter).await {
        Ok(events) => Json(json!(events)).into_response(),
        Err(e) => from_error(&e),
    }
}

/// `GET /v1/events/{id}`: one stored event.
async fn show_event(State(app): State<AppState>, PathOf(id): PathOf<String>) -> Response {
    match app.engine.events().get(&id).await {
        Ok(Some(event)) => Json(json!(event)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no stored event {id:?}")),
        Err(e) => from_error(&e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_named_by_address_are_told_apart_from_names() {
        for host in [
            "localhost",
            "localhost:8288",
            "127.0.0.1:8288",
            "10.1.2.3",
            "[::1]:8288",
            "[::1]",
        ] {
            assert!(super::addressed_directly(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8288",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!super::addressed_directly(host), "{host}");
        }
    }

    use super::*;

    async fn answer(r: Result<Bytes, Response>) -> (u16, String) {
        match r {
            Ok(bytes) => (200, String::from_utf8_lossy(&bytes).into_owned()),
            Err(response) => {
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("error body");
                let json: Value = serde_json::from_slice(&body).expect("errors are JSON");
                (
                    status,
                    json["error"].as_str().unwrap_or_default().to_string(),
                )
            }
        }
    }

    fn chunks(parts: Vec<std::result::Result<&'static str, std::io::Error>>) -> Body {
        Body::from_stream(
            futures::stream::iter(parts).map(|p| p.map(|s| Bytes::from_static(s.as_bytes()))),
        )
    }

    #[tokio::test]
    async fn bodies_in_chunks_are_joined_and_limited() {
        let body = chunks(vec![Ok("{\"na"), Ok("me\":"), Ok("\"a\"}")]);
        assert_eq!(
            answer(read_body(body, 100, BODY_READ_TIMEOUT).await).await,
            (200, r#"{"name":"a"}"#.into())
        );
        let body = chunks(vec![Ok("12345"), Ok("67890"), Ok("x")]);
        let (status, text) = answer(read_body(body, 10, BODY_READ_TIMEOUT).await).await;
        assert_eq!(
            (status, text.contains("over the limit of 10 bytes")),
            (413, true)
        );
        // One chunk over the limit.
        let (status, _) =
            answer(read_body(Body::from("x".repeat(11)), 10, BODY_READ_TIMEOUT).await).await;
        assert_eq!(status, 413);
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_a_bad_request_not_too_large() {
        let body = chunks(vec![
            Ok("{\"name\""),
            Err(std::io::Error::other("connection reset")),
        ]);
        let (status, text) = answer(read_body(body, 1000, BODY_READ_TIMEOUT).await).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("broke off after 7 bytes"), "{text}");
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_dropped_after_the_read_timeout() {
        let stalled =
            futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{")) })
                .chain(futures::stream::pending());
        let (status, text) =
            answer(read_body(Body::from_stream(stalled), 1000, Duration::from_millis(50)).await)
                .await;
        assert_eq!(status, 408, "{text}");
        assert!(text.contains("sent nothing for 50ms"), "{text}");
    }
}
