//! The step protocol shared by every runtime driver (see docs/functions.md, *Step input and
//! output*).
//!
//! Input: `{"event", "steps", "async", "ctx": {"fn_id", "fn_version", "run_id", "step_id",
//! "attempt"}}`. Output: stdout parsed as JSON; non-JSON stdout becomes `{"body": "<text>"}`;
//! empty stdout is `null`. A failed attempt is retried unless the output carries a `"status"`
//! 4xx or `"retry": false`. An output with a `"status"` of 400 or more fails the attempt even
//! when the step exited 0 (5xx retryable, 4xx not).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::driver::StepResult;
use crate::event::Event;

/// The `ctx` of a step input.
#[derive(Debug, Clone, Serialize)]
pub struct StepContext<'a> {
    /// Function id.
    pub fn_id: &'a str,
    /// Function version.
    pub fn_version: &'a str,
    /// Run id.
    pub run_id: &'a str,
    /// Step id.
    pub step_id: &'a str,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// With an `async` edge of `any` specs: which spec the matched event (`async`) matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_index: Option<usize>,
}

/// The document a step receives.
#[derive(Debug, Clone, Serialize)]
pub struct StepInput<'a> {
    /// The triggering event.
    pub event: &'a Event,
    /// Outputs of the completed steps, by id.
    pub steps: &'a Map<String, Value>,
    /// The event that resolved an `async` edge, or null.
    #[serde(rename = "async")]
    pub async_event: Option<&'a Value>,
    /// Identifiers of the attempt.
    pub ctx: StepContext<'a>,
}

impl StepInput<'_> {
    /// Serializes the input.
    pub fn encode(&self) -> Bytes {
        // Serializing borrowed JSON values and strings cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Inputs at least this long are not passed as an argument (Linux `MAX_ARG_STRLEN` is 128 KiB),
/// only on stdin (or as the payload).
pub const MAX_ARG_BYTES: usize = 128 * 1024;

/// The input document as a first argument, for runtimes that pass one (process, Docker, WASM):
/// `None` when it is [`MAX_ARG_BYTES`] or longer, or is not text without NUL bytes. The input is
/// always given on stdin (or as the payload) too.
pub fn input_argument(input: &[u8]) -> Option<&str> {
    if input.len() >= MAX_ARG_BYTES || input.contains(&0) {
        return None;
    }
    std::str::from_utf8(input).ok()
}

/// Parses a step's stdout: JSON as is, other text as `{"body": text}`, nothing as `null`.
pub fn parse_output(stdout: &[u8]) -> Value {
    let trimmed = stdout.trim_ascii();
    if trimmed.is_empty() {
        return Value::Null;
    }
    match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(_) => {
            let mut obj = Map::new();
            obj.insert(
                "body".into(),
                Value::String(String::from_utf8_lossy(stdout).into_owned()),
            );
            Value::Object(obj)
        }
    }
}

/// How an attempt ended, once the protocol's rules are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step completed with this output.
    Completed(Value),
    /// The attempt failed.
    Failed {
        /// Why, for people.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
        /// The output the attempt printed, if any.
        output: Option<Value>,
    },
}

/// Applies the protocol's rules to what a driver reported.
pub fn classify(result: &StepResult) -> Outcome {
    let output = parse_output(&result.stdout);
    let status = output.get("status").and_then(Value::as_u64);
    let retry_false = output.get("retry") == Some(&Value::Bool(false));
    let status_failure = status.is_some_and(|s| s >= 400);
    if result.success && !status_failure {
        return Outcome::Completed(output);
    }
    let mut error = match (&result.detail, status) {
        (Some(d), _) if !result.success => d.clone(),
        (_, Some(s)) => format!("step output has status {s}"),
        _ => "step failed".to_string(),
    };
    if let Some(msg) = output.get("error").and_then(Value::as_str) {
        error = format!("{error}: {msg}");
    }
    let client_error = status.is_some_and(|s| (400..500).contains(&s));
    let retryable = !retry_false && !client_error && result.retryable != Some(false);
    let output = if output.is_null() { None } else { Some(output) };
    Outcome::Failed {
        error,
        retryable,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(success: bool, stdout: &str) -> StepResult {
        StepResult {
            success,
            stdout: Bytes::from(stdout.to_string()),
            log: String::new(),
            detail: (!success).then(|| "exited with code 1".to_string()),
            retryable: None,
        }
    }

    #[test]
    fn input_is_an_argument_only_below_the_limit() {
        assert_eq!(input_argument(b"{\"a\":1}"), Some("{\"a\":1}"));
        assert_eq!(
            input_argument(&vec![b'x'; MAX_ARG_BYTES - 1]).map(str::len),
            Some(MAX_ARG_BYTES - 1)
        );
        assert_eq!(input_argument(&vec![b'x'; MAX_ARG_BYTES]), None);
        assert_eq!(input_argument(b"a\0b"), None);
        assert_eq!(input_argument(b"\xff"), None);
    }

    #[test]
    fn json_stdout_is_the_output() {
        assert_eq!(
            classify(&result(true, "{\"a\":1}\n")),
            Outcome::Completed(json!({"a": 1}))
        );
    }

    #[test]
    fn text_stdout_becomes_body_and_empty_is_null() {
        assert_eq!(
            classify(&result(true, "hello\n")),
            Outcome::Completed(json!({"body": "hello\n"}))
        );
        assert_eq!(classify(&result(true, "")), Outcome::Completed(Value::Null));
    }

    #[test]
    fn non_zero_exit_is_retryable_unless_told_otherwise() {
        let Outcome::Failed {
            retryable, error, ..
        } = classify(&result(false, ""))
        else {
            panic!("expected failure")
        };
        assert!(retryable);
        assert_eq!(error, "exited with code 1");
        let Outcome::Failed { retryable, .. } = classify(&result(false, "{\"retry\":false}"))
        else {
            panic!("expected failure")
        };
        assert!(!retryable);
    }

    #[test]
    fn status_4xx_fails_without_retry_even_on_exit_0() {
        let Outcome::Failed {
            retryable,
            error,
            output,
        } = classify(&result(true, "{\"status\":422,\"error\":\"bad phone\"}"))
        else {
            panic!("expected failure")
        };
        assert!(!retryable);
        assert_eq!(error, "step output has status 422: bad phone");
        assert_eq!(output, Some(json!({"status": 422, "error": "bad phone"})));
    }

    #[test]
    fn status_5xx_is_retryable_and_2xx_is_success() {
        assert!(matches!(
            classify(&result(true, "{\"status\":503}")),
            Outcome::Failed {
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&result(true, "{\"status\":200}")),
            Outcome::Completed(_)
        ));
    }

    #[test]
    fn driver_hint_makes_failure_permanent() {
        let mut r = result(false, "");
        r.retryable = Some(false);
        assert!(matches!(
            classify(&r),
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
    }
}
