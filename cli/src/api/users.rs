//! `/v1/users/{id}/timeline`: one user's events and runs on one timeline
//! (`weir_core::timeline`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use weir_core::timeline::{MAX_TIMELINE_ITEMS, user_timeline};

use super::{AppState, PathOf, QueryOf, error, from_error};

/// The options of a timeline.
#[derive(Debug, Deserialize)]
pub(super) struct TimelineQuery {
    /// At most this many items (default 100).
    limit: Option<usize>,
}

/// The newest items of the user's timeline.
pub(super) async fn timeline(
    State(app): State<AppState>,
    PathOf(user): PathOf<String>,
    QueryOf(query): QueryOf<TimelineQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_TIMELINE_ITEMS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit: from 1 to {MAX_TIMELINE_ITEMS}"),
        );
    }
    let engine = &app.engine;
    match user_timeline(
        engine.state().as_ref(),
        engine.events().as_ref(),
        &user,
        limit,
    )
    .await
    {
        Ok(timeline) => Json(timeline).into_response(),
        Err(e) => from_error(&e),
    }
}
