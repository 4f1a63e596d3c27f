//! One synchronous Invoke, and its answer as a [`StepResult`].

use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::config::retry::RetryConfig;
use aws_sdk_lambda::config::timeout::TimeoutConfig;
use aws_sdk_lambda::operation::invoke::InvokeOutput;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use weir_core::driver::output::{LogTail, OutputBuffer};
use weir_core::driver::{StepRequest, StepResult};
use weir_core::{Error, ErrorKind, Result};

use crate::error::lambda_error;
use crate::limit::{self, PayloadLimit};

/// Lambda's largest synchronous request and response payload: 6 MB.
pub const LAMBDA_MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// The `errorType` Lambda answers with when a function's response is over 6 MB.
const RESPONSE_TOO_LARGE: &str = "Function.ResponseSizeTooLarge";
/// Lambda's largest `ClientContext` (base64).
const MAX_CLIENT_CONTEXT: usize = 3583;
/// How long connecting to Lambda may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to invoke.
pub(crate) struct Call<'a> {
    /// Name or ARN, without qualifier.
    pub function: &'a str,
    /// Version or alias.
    pub qualifier: Option<&'a str>,
    /// How long the call may take (the SDK's operation timeout).
    pub timeout: Duration,
    /// How much of the log tail to keep.
    pub max_log: usize,
}

/// Invokes `call.function` with the step input as the payload and maps the answer.
pub(crate) async fn invoke(
    client: &Client,
    call: Call<'_>,
    request: &StepRequest,
) -> Result<StepResult> {
    let max_out = request.max_output_bytes;
    let mut builder = client
        .invoke()
        .function_name(call.function)
        .invocation_type(InvocationType::RequestResponse)
        .log_type(LogType::Tail)
        .payload(Blob::new(request.input.to_vec()));
    if let Some(qualifier) = call.qualifier {
        builder = builder.qualifier(qualifier);
    }
    if let Some(context) = client_context(request) {
        builder = builder.client_context(context);
    }
    let overrides = aws_sdk_lambda::Config::builder()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(call.timeout)
                .operation_attempt_timeout(call.timeout)
                .build(),
        )
        // weir retries attempts itself (with backoff, recorded in the run); the SDK does not.
        .retry_config(RetryConfig::disabled());
    let sent = builder
        .customize()
        .config_override(overrides)
        .interceptor(PayloadLimit { max: max_out })
        .send()
        .await;
    match sent {
        Ok(output) => into_result(output, max_out, call.max_log),
        Err(e) => {
            if let Some(found) = std::error::Error::source(&e).and_then(limit::find) {
                return Err(weir_core::driver::output::output_too_large(max_out)
                    .with_context("payload_bytes", found.len));
            }
            let error = lambda_error("invoke", e);
            Err(match error.kind() {
                ErrorKind::Timeout => Error::new(
                    ErrorKind::Timeout,
                    format!("step timed out after {:?}", request.timeout),
                )
                .with_source(error),
                _ => error,
            })
        }
    }
}

/// Turns Lambda's answer into a [`StepResult`]: the payload is the step's stdout, the decoded
/// log tail its log, and a `FunctionError` a failed attempt.
pub(crate) fn into_result(
    output: InvokeOutput,
    max_out: usize,
    max_log: usize,
) -> Result<StepResult> {
    let payload = output.payload.map(Blob::into_inner).unwrap_or_default();
    let mut log = LogTail::new(max_log);
    if let Some(tail) = output.log_result.as_deref() {
        match base64::engine::general_purpose::STANDARD.decode(tail.trim()) {
            Ok(bytes) => log.push(&bytes),
            Err(_) => log.push(tail.as_bytes()),
        }
    }
    let log = log.finish();
    if let Some(kind) = output.function_error {
        let error = parse_error_payload(&payload);
        if error.error_type.as_deref() == Some(RESPONSE_TOO_LARGE) {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "step output (the Lambda response payload) is larger than Lambda's 6 MB limit \
                     for synchronous invocations (max_output_bytes is {max_out} bytes)"
                ),
            )
            .permanent());
        }
        let mut stdout = OutputBuffer::new(max_out);
        stdout.push(&payload)?;
        return Ok(StepResult {
            success: false,
            stdout: stdout.into_bytes(),
            log,
            detail: Some(error.detail(&kind)),
            retryable: None,
        });
    }
    let mut stdout = OutputBuffer::new(max_out);
    stdout.push(&payload)?;
    Ok(StepResult {
        success: true,
        stdout: stdout.into_bytes(),
        log,
        detail: None,
        retryable: None,
    })
}

/// The `errorType` and `errorMessage` of a function error's payload.
struct ErrorPayload {
    error_type: Option<String>,
    error_message: Option<String>,
}

impl ErrorPayload {
    /// `lambda function error: <errorType>: <errorMessage>` (what of it there is).
    fn detail(&self, kind: &str) -> String {
        match (&self.error_type, &self.error_message) {
            (Some(t), Some(m)) => format!("lambda function error: {t}: {m}"),
            (Some(t), None) => format!("lambda function error: {t}"),
            (None, Some(m)) => format!("lambda function error: {m}"),
            (None, None) => format!("lambda function error ({kind})"),
        }
    }
}

fn parse_error_payload(payload: &[u8]) -> ErrorPayload {
    const MAX_MESSAGE_CHARS: usize = 1000;
    let value: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let field = |name: &str| {
        value.get(name).and_then(Value::as_str).map(|s| {
            let mut s = s.to_owned();
            if let Some((cut, _)) = s.char_indices().nth(MAX_MESSAGE_CHARS) {
                s.truncate(cut);
                s.push('…');
            }
            s
        })
    };
    ErrorPayload {
        error_type: field("errorType"),
        error_message: field("errorMessage"),
    }
}

/// The attempt's identifiers as Lambda's `ClientContext` (`context.client_context.custom` in
/// the function), when they fit.
fn client_context(request: &StepRequest) -> Option<String> {
    let context = json!({ "custom": {
        "weir_function_id": request.function_id,
        "weir_run_id": request.run_id,
        "weir_step_id": request.step_id,
        "weir_attempt": request.attempt.to_string(),
    }});
    let encoded = base64::engine::general_purpose::STANDARD.encode(context.to_string());
    (encoded.len() <= MAX_CLIENT_CONTEXT).then_some(encoded)
}

/// `input` as a Lambda payload; Lambda's synchronous request limit is 6 MB.
pub(crate) fn check_input(input: &Bytes) -> Result<()> {
    if input.len() > LAMBDA_MAX_PAYLOAD_BYTES {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "step input ({} bytes) is over Lambda's 6 MB limit for a synchronous invocation",
                input.len()
            ),
        )
        .permanent());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(function_error: Option<&str>, payload: &str, log: Option<&str>) -> InvokeOutput {
        let mut b = InvokeOutput::builder()
            .status_code(200)
            .payload(Blob::new(payload.as_bytes().to_vec()));
        if let Some(kind) = function_error {
            b = b.function_error(kind);
        }
        if let Some(log) = log {
            b = b.log_result(base64::engine::general_purpose::STANDARD.encode(log));
        }
        b.build()
    }

    #[test]
    fn payload_is_stdout_and_log_tail_is_decoded() {
        let r = into_result(
            output(None, "{\"a\":1}", Some("START\nhello\nEND\n")),
            100,
            100,
        )
        .unwrap();
        assert!(r.success);
        assert_eq!(r.stdout, Bytes::from("{\"a\":1}"));
        assert_eq!(r.log, "START\nhello\nEND\n");
        let r = into_result(output(None, "", Some("0123456789")), 100, 4).unwrap();
        assert!(r.log.ends_with("\n6789"), "{}", r.log);
    }

    #[test]
    fn function_errors_fail_the_attempt_with_a_detail() {
        let payload = r#"{"errorType":"ValueError","errorMessage":"bad phone","stackTrace":[]}"#;
        let r = into_result(output(Some("Unhandled"), payload, Some("boom")), 1000, 100).unwrap();
        assert!(!r.success);
        assert_eq!(
            r.detail.as_deref(),
            Some("lambda function error: ValueError: bad phone")
        );
        assert_eq!(r.stdout, Bytes::from(payload));
        assert_eq!(r.log, "boom");
        assert_eq!(r.retryable, None);
        let r = into_result(output(Some("Handled"), "not json", None), 1000, 100).unwrap();
        assert_eq!(r.detail.as_deref(), Some("lambda function error (Handled)"));
    }

    #[test]
    fn oversized_answers_are_too_large() {
        let err = into_result(output(None, "12345", None), 4, 100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        let payload = r#"{"errorMessage":"Response payload size exceeded maximum allowed payload size (6291556 bytes).","errorType":"Function.ResponseSizeTooLarge"}"#;
        let err = into_result(output(Some("Unhandled"), payload, None), 4096, 100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("max_output_bytes"), "{err}");
        let err = check_input(&Bytes::from(vec![b' '; LAMBDA_MAX_PAYLOAD_BYTES + 1])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TooLarge);
    }
}
