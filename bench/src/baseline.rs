//! The bare baseline: an axum server that only parses the JSON body and answers like weir does,
//! storing nothing; in-process or as `weir-bench baseline-server`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use weir_core::Error;

use super::BaselineServerArgs;
use super::local::bind;

/// The bare baseline: parse the body as JSON and answer like weir does, storing nothing.
pub(super) fn baseline_router() -> Router {
    Router::new()
        .route("/e/{key}", post(baseline_events))
        .layer(DefaultBodyLimit::disable())
}

async fn baseline_events(body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(_) => axum::Json(json!({"ids": [], "status": 200})).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string(), "status": 400})),
        )
            .into_response(),
    }
}

pub(super) async fn baseline_server(args: BaselineServerArgs) -> weir_core::Result<i32> {
    let (listener, addr) = bind(args.listen).await?;
    eprintln!("weir-bench baseline-server listening on http://{addr} (POST /e/<any-key>)");
    axum::serve(listener, baseline_router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::internal("server failed").with_source(e))?;
    Ok(0)
}
