//! HTTP specifics of [`HttpDriver`] beyond the conformance suite: signing and identifying
//! headers, status codes, redirects, refused connections, `check`, bodies cut off or too large.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{KEY, Seen};
use serde_json::{Map, Value, json};
use weir_core::ErrorKind;
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
use weir_core::protocol::{Outcome, classify};
use weir_core::testkit::driver as suite;
use weir_driver_http::{DEFAULT_TOLERANCE, HttpDriver, HttpDriverConfig, SIGNATURE_HEADER, verify};

/// A driver and the fixture server (`tests/common/mod.rs`).
struct Harness {
    base: String,
    seen: Seen,
    driver: Arc<HttpDriver>,
}

impl Harness {
    async fn new(signing_key: Option<&str>) -> Self {
        let (base, seen) = common::serve().await;
        let config = HttpDriverConfig {
            signing_key: signing_key.map(str::to_string),
        };
        let driver = Arc::new(HttpDriver::new(config).expect("driver"));
        Harness { base, seen, driver }
    }

    fn request_to(&self, url: &str, input: Bytes, timeout: Duration) -> StepRequest {
        StepRequest {
            input,
            function_id: "fn-http".into(),
            function_dir: std::env::temp_dir(),
            run_id: "run-1".into(),
            step_id: "step-1".into(),
            attempt: 3,
            path: None,
            runtime: Map::from_iter([("type".into(), json!("http")), ("url".into(), json!(url))]),
            timeout,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            env: Default::default(),
        }
    }

    fn route(&self, route: &str) -> StepRequest {
        self.request_to(
            &format!("{}/{route}", self.base),
            suite::sample_input(),
            suite::QUICK_TIMEOUT,
        )
    }
}

#[tokio::test]
async fn requests_are_signed_and_identified() {
    let h = Harness::new(Some(KEY)).await;
    let result = h.driver.execute(h.route("seen")).await.unwrap();
    assert!(result.success);
    let (headers, body) = h
        .seen
        .lock()
        .unwrap()
        .take()
        .expect("a request reached /seen");
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(get("content-type"), "application/json");
    assert_eq!(get("x-weir-run-id"), "run-1");
    assert_eq!(get("x-weir-step-id"), "step-1");
    assert_eq!(get("x-weir-attempt"), "3");
    assert_eq!(get("x-weir-function-id"), "fn-http");
    let signature = get(SIGNATURE_HEADER);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        verify(KEY, &signature, &body, now, DEFAULT_TOLERANCE),
        "{signature}"
    );
    let mut tampered = body.to_vec();
    tampered[0] = b' ';
    assert!(!verify(KEY, &signature, &tampered, now, DEFAULT_TOLERANCE));
    assert!(!verify(
        "another key",
        &signature,
        &body,
        now,
        DEFAULT_TOLERANCE
    ));
}

#[tokio::test]
async fn no_key_no_signature() {
    let h = Harness::new(None).await;
    h.driver.execute(h.route("seen")).await.unwrap();
    let (headers, _) = h.seen.lock().unwrap().take().unwrap();
    assert!(headers.get(SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn client_errors_are_permanent_but_429_is_retried() {
    let h = Harness::new(None).await;
    let result = h.driver.execute(h.route("ClientError")).await.unwrap();
    assert_eq!(
        result.detail.as_deref(),
        Some("HTTP 422 Unprocessable Entity")
    );
    assert_eq!(result.retryable, Some(false));
    match classify(&result) {
        Outcome::Failed {
            error,
            retryable: false,
            ..
        } => assert!(error.ends_with("bad phone"), "{error}"),
        other => panic!("{other:?}"),
    }
    let result = h.driver.execute(h.route("TooMany")).await.unwrap();
    assert!(
        matches!(
            classify(&result),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let h = Harness::new(None).await;
    let result = h.driver.execute(h.route("Moved")).await.unwrap();
    assert!(!result.success);
    assert!(
        result
            .detail
            .unwrap()
            .starts_with("HTTP 302 Found (redirects are not followed")
    );
    assert_eq!(result.retryable, Some(false));
}

#[tokio::test]
async fn refused_connections_are_unavailable_and_retryable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/step?token=secret",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let h = Harness::new(None).await;
    let err = h
        .driver
        .execute(h.request_to(&url, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn check_requires_an_http_url() {
    let h = Harness::new(None).await;
    let runtime = |url: Value| Map::from_iter([("url".to_string(), url)]);
    assert!(
        h.driver
            .check(&runtime(json!("http://localhost:3000/step")), None)
            .is_ok()
    );
    assert!(h.driver.check(&Map::new(), None).is_err());
    assert!(
        h.driver
            .check(&runtime(json!("file:///bin/sh")), None)
            .is_err()
    );
    let mut request = h.route("Echo");
    request.runtime.remove("url");
    assert_eq!(
        h.driver.execute(request).await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

/// Serves one connection with `response` written as is, then closes it.
async fn raw_server(response: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/raw", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = vec![0; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let _ = socket.write_all(&response).await;
    });
    url
}

#[tokio::test]
async fn chunked_bodies_are_capped_while_streaming() {
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..100 {
        response.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let url = raw_server(response).await;
    let h = Harness::new(None).await;
    let mut request = h.request_to(&url, suite::sample_input(), suite::QUICK_TIMEOUT);
    request.max_output_bytes = 10 * 1024;
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
}

#[tokio::test]
async fn a_cut_off_body_is_unavailable() {
    let url = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec()).await;
    let h = Harness::new(None).await;
    let request = h.request_to(&url, suite::sample_input(), suite::QUICK_TIMEOUT);
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}
