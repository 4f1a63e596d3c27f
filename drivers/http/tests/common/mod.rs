//! The conformance fixtures: a local axum server with a route per fixture (`/Echo`, `/Text`,
//! …), plus `/TooMany`, `/Moved` and `/seen` (which records the request it got) for the
//! driver's own tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use weir_core::testkit::driver::FLOOD_BYTES;

/// The signing key of the tests that sign.
pub const KEY: &str = "whsec_conformance";

/// The last request `/seen` received.
pub type Seen = Arc<Mutex<Option<(HeaderMap, Bytes)>>>;

/// Starts the server on a free port: its base URL (`http://127.0.0.1:port`) and what `/seen`
/// received.
pub async fn serve() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/Echo", post(|body: Bytes| async move { body }))
        .route("/Text", post(|| async { "hello weir" }))
        .route(
            "/FailWithLog",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/Sleep", post(sleep))
        .route(
            "/ClientError",
            post(|| async { (StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":"bad phone"}"#) }),
        )
        .route("/Flood", post(|| async { vec![b'x'; FLOOD_BYTES] }))
        .route("/TooMany", post(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/Moved",
            post(|| async { (StatusCode::FOUND, [(header::LOCATION, "/Echo")]) }),
        )
        .route("/seen", post(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (base, seen)
}

async fn sleep() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

async fn record(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    *seen.lock().expect("lock") = Some((headers, body.clone()));
    body
}
