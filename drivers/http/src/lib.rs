//! weir-driver-http: runs weir steps by POSTing the step input to a URL (the `http` runtime).
//!
//! The step input is the request body; a 2xx response body is the step's stdout. 5xx fails the
//! attempt (retryable), 4xx fails it for good (except 408 and 429), and 3xx is not followed.
//! With a signing key, every request carries an [`SIGNATURE_HEADER`] a step checks with [`verify`].

mod response;
mod sign;

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Map, Value};
use weir_core::driver::{Driver, StepRequest, StepResult};
use weir_core::{Error, ErrorKind, Result};

pub use sign::{DEFAULT_TOLERANCE, SIGNATURE_HEADER, sign, verify};

/// The `runtime.type` served by [`HttpDriver`].
pub const KIND: &str = "http";

/// How long connecting to a step URL may take (the step timeout still bounds the whole call).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the [`HttpDriver`]; `Debug` never shows the key.
#[derive(Clone, Default)]
pub struct HttpDriverConfig {
    /// Key for `X-Weir-Signature` (HMAC-SHA256); no signature header when `None`.
    pub signing_key: Option<String>,
}

impl fmt::Debug for HttpDriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.signing_key.as_ref().map(|_| "<redacted>");
        f.debug_struct("HttpDriverConfig")
            .field("signing_key", &key)
            .finish()
    }
}

/// POSTs the step input to `runtime.url`; one connection pool per driver.
#[derive(Debug, Clone)]
pub struct HttpDriver {
    client: reqwest::Client,
    config: HttpDriverConfig,
}

impl HttpDriver {
    /// A driver with its own HTTP client; fails only if the TLS backend cannot start.
    pub fn new(config: HttpDriverConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, "could not build the HTTP client").with_source(e)
            })?;
        Ok(HttpDriver { client, config })
    }
}

#[async_trait]
impl Driver for HttpDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, runtime: &Map<String, Value>, _path: Option<&Path>) -> Result<()> {
        step_url(runtime).map(|_| ()).map_err(Error::config)
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let url = step_url(&request.runtime).map_err(|m| Error::new(ErrorKind::Config, m))?;
        let shown = display_url(&url);
        let mut call = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Weir-Run-Id", &request.run_id)
            .header("X-Weir-Step-Id", &request.step_id)
            .header("X-Weir-Attempt", request.attempt.to_string())
            .header("X-Weir-Function-Id", &request.function_id);
        if let Some(key) = &self.config.signing_key {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            call = call.header(SIGNATURE_HEADER, sign(key, now, &request.input));
        }
        let call = call.body(request.input);
        let max = request.max_output_bytes;
        let attempt = async move {
            let response = call.send().await.map_err(response::send_error)?;
            response::into_result(response, max).await
        };
        match tokio::time::timeout(request.timeout, attempt).await {
            Ok(result) => result.map_err(|e| e.with_context("url", &shown)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("step timed out after {:?}", request.timeout),
            )
            .with_context("url", &shown)),
        }
    }
}

/// The step's `runtime.url`, which must be an absolute http(s) URL.
fn step_url(runtime: &Map<String, Value>) -> std::result::Result<Url, String> {
    let raw = match runtime.get("url") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err("an http step needs `runtime.url`".into()),
        Some(_) => return Err("`runtime.url` must be a string".into()),
    };
    let url =
        Url::parse(raw).map_err(|e| format!("`runtime.url` is not a valid URL ({e}): {raw}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!(
            "`runtime.url` must be an http:// or https:// URL: {raw}"
        ));
    }
    Ok(url)
}

/// The URL for messages: no credentials, no query string (either may hold secrets).
fn display_url(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtime(url: Value) -> Map<String, Value> {
        Map::from_iter([
            ("type".to_string(), json!("http")),
            ("url".to_string(), url),
        ])
    }

    #[test]
    fn urls_are_checked() {
        assert!(step_url(&runtime(json!("https://steps.example.com/sms"))).is_ok());
        assert!(
            step_url(&Map::new())
                .unwrap_err()
                .contains("needs `runtime.url`")
        );
        assert!(
            step_url(&runtime(json!(3)))
                .unwrap_err()
                .contains("must be a string")
        );
        assert!(
            step_url(&runtime(json!("not a url")))
                .unwrap_err()
                .contains("not a valid URL")
        );
        assert!(
            step_url(&runtime(json!("ftp://x/y")))
                .unwrap_err()
                .contains("http://")
        );
    }

    #[test]
    fn shown_urls_drop_secrets() {
        let url = Url::parse("https://user:pw@example.com:8443/hook?token=abc").unwrap();
        assert_eq!(display_url(&url), "https://example.com:8443/hook");
    }

    #[test]
    fn debug_redacts_the_key() {
        let config = HttpDriverConfig {
            signing_key: Some("s3cret".into()),
        };
        let driver = HttpDriver::new(config.clone()).unwrap();
        for shown in [format!("{config:?}"), format!("{driver:?}")] {
            assert!(
                !shown.contains("s3cret") && shown.contains("<redacted>"),
                "{shown}"
            );
        }
    }
}
