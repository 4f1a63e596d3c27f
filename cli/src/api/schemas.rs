//! `/v1/schemas`: the event schemas in use (docs/event-schemas.md), and pushing one to the
//! state store's catalog, where every node finds it. An event name holds `/`, so it comes
//! percent-encoded in a path (`user%2Fsigned.up`).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_core::catalog::SchemaPut;
use weir_core::engine::{
    DEFAULT_SCHEMA_CHECK, MAX_SCHEMA_CHECK, PutSchemaOptions, PutSchemaOutcome, PutSchemaReport,
};
use weir_core::function::Problem;
use weir_core::schema::SchemaDocument;

use super::{AppState, BODY_READ_TIMEOUT, PathOf, QueryOf, error, from_error, read_body};

/// The largest schema document a push takes.
const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Every schema in use, by name then version, with where each comes from.
pub(super) async fn list(State(app): State<AppState>) -> Json<Value> {
    let schemas = app.engine.event_schemas();
    Json(json!({"strict": app.engine.config().strict_events, "schemas": schemas.list()}))
}

/// One schema in use, as written.
pub(super) async fn show(
    State(app): State<AppState>,
    PathOf((name, version)): PathOf<(String, String)>,
) -> Response {
    match app.engine.event_schemas().schema(&name, &version) {
        Some(schema) => {
            Json(json!({"name": name, "version": version, "schema": schema})).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no schema version {version:?} of event {name:?}"),
        ),
    }
}

/// The options of a push.
#[derive(Debug, Deserialize)]
pub(super) struct PutQuery {
    /// Store even when stored events break it.
    #[serde(default)]
    force: bool,
    /// Replace another schema stored under its version.
    #[serde(default)]
    replace: bool,
    /// How many of the newest stored events of the name to check it against.
    check: Option<usize>,
}

/// Pushes a schema document (`{"name", "version", "schema"}`; name and version may be left
/// out, and must match the path when given). 201 when stored anew; 200 when replaced or
/// unchanged; 409 when another schema has its version or stored events break it; 400 when
/// it is not valid JSON Schema.
pub(super) async fn put(
    State(app): State<AppState>,
    PathOf((name, version)): PathOf<(String, String)>,
    QueryOf(query): QueryOf<PutQuery>,
    body: Body,
) -> Response {
    let check = query.check.unwrap_or(DEFAULT_SCHEMA_CHECK);
    if check > MAX_SCHEMA_CHECK {
        return error(
            StatusCode::BAD_REQUEST,
            format!("check: at most {MAX_SCHEMA_CHECK} events"),
        );
    }
    let bytes = match read_body(body, MAX_SCHEMA_BYTES, BODY_READ_TIMEOUT).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let document = match document_for(&bytes, &name, &version) {
        Ok(document) => document,
        Err(answer) => return *answer,
    };
    let options = PutSchemaOptions {
        force: query.force,
        replace: query.replace,
        check,
    };
    match app.engine.put_schema(&document, options).await {
        Ok(report) => answer(&document, &report),
        Err(e) => from_error(&e),
    }
}

/// The document of a push to `/v1/schemas/{name}/{version}`: the body, with the path's name
/// and version filled in where it leaves them out.
fn document_for(bytes: &[u8], name: &str, version: &str) -> Result<SchemaDocument, Box<Response>> {
    let invalid = |problems: Vec<Problem>| Box::new(problems_answer(&problems));
    let mut body: Value = serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        ))
    })?;
    if let Value::Object(map) = &mut body {
        map.entry("name").or_insert_with(|| json!(name));
        map.entry("version").or_insert_with(|| json!(version));
    }
    let document = SchemaDocument::from_value(&body).map_err(invalid)?;
    if document.name != name || document.version != version {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "the document is version {:?} of {:?}, the path version {version:?} of {name:?}",
                document.version, document.name
            ),
        )));
    }
    Ok(document)
}

/// The answer to a push.
fn answer(document: &SchemaDocument, report: &PutSchemaReport) -> Response {
    let (status, stored, message) = match &report.outcome {
        PutSchemaOutcome::Stored(SchemaPut::Created) => {
            (StatusCode::CREATED, Some("created"), None)
        }
        PutSchemaOutcome::Stored(SchemaPut::Replaced) => (StatusCode::OK, Some("replaced"), None),
        PutSchemaOutcome::Stored(SchemaPut::Unchanged) => (StatusCode::OK, Some("unchanged"), None),
        PutSchemaOutcome::Invalid(problems) => return problems_answer(problems),
        PutSchemaOutcome::Conflict | PutSchemaOutcome::Stored(SchemaPut::Conflict) => (
            StatusCode::CONFLICT,
            None,
            Some(format!(
                "version {:?} of {:?} is stored with another schema; nothing stored (replace replaces it)",
                document.version, document.name
            )),
        ),
        PutSchemaOutcome::Breaks => (
            StatusCode::CONFLICT,
            None,
            Some(format!(
                "{} of the {} stored events checked break this schema; nothing stored (force stores it anyway)",
                report.broken, report.checked
            )),
        ),
    };
    let mut body = json!({
        "name": document.name,
        "version": document.version,
        "status": status.as_u16(),
        "checked": report.checked,
        "broken": report.broken,
        "breakages": report.breakages,
    });
    if let Some(stored) = stored {
        body["stored"] = json!(stored);
    }
    if let Some(message) = message {
        body["error"] = json!(message);
    }
    (status, Json(body)).into_response()
}

/// The 400 of a document that is not a valid schema document: its problems, each at its path.
fn problems_answer(problems: &[Problem]) -> Response {
    let status = StatusCode::BAD_REQUEST;
    let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
    (
        status,
        Json(json!({
            "error": format!("not a valid schema document: {}", listed.join("; ")),
            "status": status.as_u16(),
            "problems": problems,
        })),
    )
        .into_response()
}

/// Deletes a pushed schema (schema files stay: they are a node's own). 200, or 404 when no
/// such version was pushed.
pub(super) async fn delete(
    State(app): State<AppState>,
    PathOf((name, version)): PathOf<(String, String)>,
) -> Response {
    match app.engine.delete_schema(&name, &version).await {
        Ok(true) => {
            Json(json!({"name": name, "version": version, "deleted": true})).into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no pushed schema version {version:?} of event {name:?}"),
        ),
        Err(e) => from_error(&e),
    }
}
