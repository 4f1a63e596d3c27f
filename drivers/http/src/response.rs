//! Turning an HTTP response (or a failed request) into a step result.

use bytes::Bytes;
use reqwest::{Response, StatusCode};
use weir_core::driver::output::{LogTail, OutputBuffer, output_too_large};
use weir_core::driver::{DEFAULT_MAX_LOG_BYTES, StepResult};
use weir_core::{Error, ErrorKind, Result};

/// Maps a request that got no response: timeouts, refused connections, other transport errors.
pub(crate) fn send_error(e: reqwest::Error) -> Error {
    let (kind, message) = if e.is_timeout() {
        (ErrorKind::Timeout, "timed out connecting to the step URL")
    } else if e.is_connect() {
        (ErrorKind::Unavailable, "could not connect to the step URL")
    } else if e.is_builder() {
        (
            ErrorKind::Config,
            "could not build the request to the step URL",
        )
    } else {
        (ErrorKind::Unavailable, "the request to the step URL failed")
    };
    Error::new(kind, message).with_source(e.without_url())
}

/// 2xx: success. 5xx, 408, 429: retryable failure. Other 4xx and 3xx: permanent failure.
pub(crate) async fn into_result(response: Response, max: usize) -> Result<StepResult> {
    let status = response.status();
    let body = read_body(response, max).await?;
    if status.is_success() {
        return Ok(StepResult {
            success: true,
            stdout: body,
            log: String::new(),
            detail: None,
            retryable: None,
        });
    }
    let mut detail = format!("HTTP {status}");
    if status.is_redirection() {
        detail.push_str(" (redirects are not followed; point runtime.url at the final URL)");
    }
    let retryable = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    ) || status.is_server_error();
    Ok(StepResult {
        success: false,
        log: log_tail(&body),
        stdout: body,
        detail: Some(detail),
        retryable: (!retryable).then_some(false),
    })
}

/// Streams the body, failing with [`ErrorKind::TooLarge`] past `max` bytes.
async fn read_body(mut response: Response, max: usize) -> Result<Bytes> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(output_too_large(max));
    }
    let mut body = OutputBuffer::new(max);
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Error::unavailable("the step response was cut off").with_source(e.without_url())
    })? {
        body.push(&chunk)?;
    }
    Ok(body.into_bytes())
}

/// The body of a failed response as the attempt's log (its tail, as text).
fn log_tail(body: &[u8]) -> String {
    let mut log = LogTail::new(DEFAULT_MAX_LOG_BYTES);
    log.push(body);
    log.finish()
}
