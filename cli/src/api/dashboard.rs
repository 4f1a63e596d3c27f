//! The dashboard: one page of HTML, CSS and JavaScript embedded in the binary (no build step,
//! no Node), which reads everything it shows from the `/v1` API. Every view has its own
//! address (`/runs/{id}`, `/events/{id}`, `/functions/{id}`, `/users/{id}`), all answered with
//! the same page; its script draws the view the address names.
//!
//! The page and its files are public (they hold no data); the API calls they make carry the
//! API key the user enters once, kept in the browser's session storage. A strict Content
//! Security Policy allows only these files' scripts and styles: a producer-set string that
//! slipped past the page's escaping still could not run.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The dashboard's addresses: the page at `/` and at each view's address, and its files
/// under `/ui/`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/ui/{file}", get(asset));
    for path in [
        "/",
        "/runs",
        "/runs/{id}",
        "/events",
        "/events/{id}",
        "/functions",
        "/functions/{id}",
        "/users",
        "/users/{id}",
    ] {
        router = router.route(path, get(page));
    }
    router
}

/// The page every dashboard address answers with.
const INDEX: &str = include_str!("../dashboard/index.html");

/// The dashboard's files, by name: `(name, content type, content)`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/dom.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/api.js"),
    ),
    (
        "dag.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/dag.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/views.js"),
    ),
];

/// Only the dashboard's own files may run or style the page; it talks to this server only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Adds the headers every dashboard answer carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /`, `/runs/…`, `/events/…`, `/functions/…`, `/users/…`: the page.
async fn page() -> Response {
    secured(
        (
            [(header::CACHE_CONTROL, "no-cache")],
            axum::response::Html(INDEX),
        )
            .into_response(),
    )
}

/// `GET /ui/{file}`: one of the page's files.
async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => secured(
            (
                [
                    (header::CONTENT_TYPE, *content_type),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
        ),
        None => super::error(StatusCode::NOT_FOUND, format!("no dashboard file {name:?}")),
    }
}
