//! Conformance suite for runtime drivers ([`Driver`]).
//!
//! A driver crate's test implements [`DriverHarness`]: a [`Factory<dyn Driver>`](Factory)
//! that hands out the driver (the same instance every time, or a new one), and builds a
//! [`StepRequest`] that runs each [`Fixture`] (a tiny step program with a known behaviour) on
//! it. Then it calls [`run_all`], or the individual test functions. Each test panics with a
//! message naming what the driver did wrong.
//!
//! A harness for a driver that runs executables, every fixture a script of its own:
//!
//! ```no_run
//! use std::path::PathBuf;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
//! use weir_core::testkit::Factory;
//! use weir_core::testkit::driver::{DriverHarness, Fixture, run_all};
//!
//! struct Harness {
//!     driver: Arc<dyn Driver>,
//!     /// Holds a script per fixture: `Echo` is `exec cat`, `Text` is `echo hello weir`, …
//!     dir: PathBuf,
//! }
//!
//! #[async_trait::async_trait]
//! impl Factory<dyn Driver> for Harness {
//!     async fn make(&self) -> Arc<dyn Driver> {
//!         self.driver.clone()
//!     }
//! }
//!
//! impl DriverHarness for Harness {
//!     fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
//!         StepRequest {
//!             input,
//!             function_id: "conformance".into(),
//!             function_dir: self.dir.clone(),
//!             run_id: "run-1".into(),
//!             step_id: format!("{fixture:?}"),
//!             attempt: 1,
//!             path: Some(self.dir.join(format!("{fixture:?}"))),
//!             runtime: serde_json::Map::new(),
//!             timeout,
//!             max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
//!             env: Default::default(),
//!         }
//!     }
//!
//!     fn supports_argv(&self) -> bool {
//!         true
//!     }
//! }
//!
//! async fn conformance(driver: Arc<dyn Driver>, dir: PathBuf) {
//!     run_all(&Harness { driver, dir }).await;
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::Factory;
use crate::driver::{Driver, StepRequest, StepResult};
use crate::error::{ErrorKind, Result};
use crate::event::{Event, now_ms};
use crate::protocol::{Outcome, StepContext, StepInput, classify};

/// Timeout the suite gives attempts that should finish quickly.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout the suite gives the [`Fixture::Sleep`] step.
pub const SLEEP_TIMEOUT: Duration = Duration::from_secs(1);
/// How much later than its timeout a timed-out attempt may return.
pub const TIMEOUT_SLACK: Duration = Duration::from_secs(2);
/// Size of the input used by [`large_input_round_trips`]: 1 MiB, over any argv limit.
pub const LARGE_INPUT_BYTES: usize = 1024 * 1024;
/// How much [`Fixture::Flood`] writes to stdout: 10 MiB.
pub const FLOOD_BYTES: usize = 10 * 1024 * 1024;

/// A step program with a known behaviour that a harness can run on its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// Answers with its input document (stdin / request body), unchanged, as its JSON output.
    Echo,
    /// Answers with its first argument, parsed as JSON (only asked of argv-capable drivers).
    EchoArg,
    /// Prints the non-JSON text `hello weir` and succeeds.
    Text,
    /// Writes `boom` to its log (stderr, or the body of an HTTP 500) and fails.
    FailWithLog,
    /// Sleeps 30 seconds; the driver must cut it at the timeout.
    Sleep,
    /// Fails in a way that must not be retried: HTTP 4xx, or prints `{"status":422}` and exits 0.
    ClientError,
    /// Writes [`FLOOD_BYTES`] (10 MiB) of anything to stdout (or as the body) and succeeds.
    Flood,
}

impl Fixture {
    /// Every fixture, for harnesses that prepare them all up front.
    pub const ALL: [Fixture; 7] = [
        Fixture::Echo,
        Fixture::EchoArg,
        Fixture::Text,
        Fixture::FailWithLog,
        Fixture::Sleep,
        Fixture::ClientError,
        Fixture::Flood,
    ];
}

/// What a driver's test provides to run the suite: the driver under test ([`Factory::make`];
/// the same instance may be returned every time) and the request for each fixture.
pub trait DriverHarness: Factory<dyn Driver> {
    /// A request that runs `fixture` with `input` as the step input document and `timeout`.
    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest;

    /// Whether the driver passes the input as the first argument too; when `false` the suite
    /// never asks for [`Fixture::EchoArg`].
    fn supports_argv(&self) -> bool;
}

/// A [`DriverHarness`] made of a driver and a function building each fixture's request: what
/// most driver crates need.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use weir_core::testkit::driver::{Fixture, Harness, run_all, sample_request};
/// # async fn conformance(driver: Arc<dyn weir_core::driver::Driver>) {
/// let harness = Harness::new(driver, |fixture, input, timeout| {
///     let program = match fixture {
///         Fixture::Echo => "cat",
///         // … one program per fixture
///         _ => "false",
///     };
///     sample_request(serde_json::json!({"type": "mine", "program": program}), input, timeout)
/// });
/// run_all(&harness.with_argv(true)).await;
/// # }
/// ```
pub struct Harness<F> {
    driver: Arc<dyn Driver>,
    request: F,
    argv: bool,
}

impl<F> Harness<F>
where
    F: Fn(Fixture, Bytes, Duration) -> StepRequest + Send + Sync,
{
    /// `driver`, with `request` building the request of each fixture; the input is not passed
    /// as an argument unless [`with_argv`](Harness::with_argv) says so.
    pub fn new(driver: Arc<dyn Driver>, request: F) -> Self {
        Harness {
            driver,
            request,
            argv: false,
        }
    }

    /// Whether the driver passes the input as the first argument too.
    pub fn with_argv(mut self, argv: bool) -> Self {
        self.argv = argv;
        self
    }
}

#[async_trait::async_trait]
impl<F> Factory<dyn Driver> for Harness<F>
where
    F: Fn(Fixture, Bytes, Duration) -> StepRequest + Send + Sync,
{
    async fn make(&self) -> Arc<dyn Driver> {
        self.driver.clone()
    }
}

impl<F> DriverHarness for Harness<F>
where
    F: Fn(Fixture, Bytes, Duration) -> StepRequest + Send + Sync,
{
    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
        (self.request)(fixture, input, timeout)
    }

    fn supports_argv(&self) -> bool {
        self.argv
    }
}

/// Runs every test of the suite, one after the other.
pub async fn run_all(h: &dyn DriverHarness) {
    echo_returns_input(h).await;
    echo_arg_returns_input(h).await;
    text_output_becomes_body(h).await;
    failure_is_retryable_and_keeps_log(h).await;
    client_error_is_not_retryable(h).await;
    timeout_is_an_error(h).await;
    large_input_round_trips(h).await;
    output_over_limit_fails(h).await;
    output_flood_is_bounded(h).await;
    concurrent_attempts_are_independent(h).await;
}

/// A realistic event, as ingest would have accepted it.
pub fn sample_event() -> Event {
    Event {
        name: "user/signed.up".into(),
        data: json!({
            "plan": "pro",
            "phone": "+15555550100",
            "note": "ünïcødé ✓, 'single' \"double\" $HOME `cmd` \\ back\nslash",
        }),
        user: json!({ "id": "u_123", "email": "ada@example.com" }),
        id: ulid::Ulid::new().to_string(),
        ts: now_ms(),
        v: Some("1".into()),
    }
}

/// Encodes a step input document for `event`, as the executor builds it.
pub fn step_input(event: &Event, attempt: u32) -> Bytes {
    let mut steps = Map::new();
    steps.insert("step-1".into(), json!({ "ok": true, "sent": 1 }));
    StepInput {
        event,
        steps: &steps,
        async_event: None,
        ctx: StepContext {
            fn_id: "conformance",
            fn_version: "1",
            run_id: "01J0000000000000000000RUN1",
            step_id: "step-2",
            attempt,
            async_index: None,
        },
    }
    .encode()
}

/// A request for one attempt of a step whose `runtime` object is `runtime`: function
/// `conformance` in the system's temporary directory, run `run-1`, step `step-1`, attempt 1,
/// no `path`, the default `max_output_bytes`, no `.env`. A harness changes what its driver
/// needs (`StepRequest { path: Some(…), ..sample_request(…) }`).
pub fn sample_request(runtime: Value, input: Bytes, timeout: Duration) -> StepRequest {
    StepRequest {
        input,
        function_id: "conformance".into(),
        function_dir: std::env::temp_dir(),
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        attempt: 1,
        path: None,
        runtime: match runtime {
            Value::Object(map) => map,
            other => panic!("sample_request: a runtime object is a JSON object, got {other}"),
        },
        timeout,
        max_output_bytes: crate::driver::DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    }
}

/// A small step input document.
pub fn sample_input() -> Bytes {
    step_input(&sample_event(), 1)
}

/// A step input document of at least `min_bytes` bytes (an event carrying many line items).
pub fn large_input(min_bytes: usize) -> Bytes {
    let mut event = sample_event();
    let mut items = Vec::new();
    let mut size = 0;
    while size < min_bytes {
        let item = json!({ "i": items.len(), "sku": format!("sku-{:06}", items.len()),
                           "note": "a line item padded to make the document large" });
        size += item.to_string().len() + 1;
        items.push(item);
    }
    event.data["items"] = Value::Array(items);
    step_input(&event, 1)
}

/// Echo: the output equals the input document.
pub async fn echo_returns_input(h: &dyn DriverHarness) {
    let input = sample_input();
    let result = run_ok(h, Fixture::Echo, input.clone()).await;
    assert_completed_with(&result, &input, "Echo");
}

/// EchoArg: the first argument is the input document (skipped without argv support).
pub async fn echo_arg_returns_input(h: &dyn DriverHarness) {
    if !h.supports_argv() {
        return;
    }
    let input = sample_input();
    let result = run_ok(h, Fixture::EchoArg, input.clone()).await;
    assert_completed_with(&result, &input, "EchoArg");
}

/// Text: non-JSON stdout becomes `{"body": text}`.
pub async fn text_output_becomes_body(h: &dyn DriverHarness) {
    let result = run_ok(h, Fixture::Text, sample_input()).await;
    match classify(&result) {
        Outcome::Completed(Value::Object(obj)) if obj.len() == 1 => {
            let body = obj.get("body").and_then(Value::as_str).unwrap_or_default();
            assert_eq!(
                body.trim(),
                "hello weir",
                "Text: wrong body; {}",
                describe(&result)
            );
        }
        other => panic!(
            "Text: expected {{\"body\": \"hello weir\"}}, got {other:?}; {}",
            describe(&result)
        ),
    }
}

/// FailWithLog: `success: false` with a detail, retryable, and the log holds `boom`.
pub async fn failure_is_retryable_and_keeps_log(h: &dyn DriverHarness) {
    let result = run_ok(h, Fixture::FailWithLog, sample_input()).await;
    let d = describe(&result);
    assert!(!result.success, "FailWithLog: expected success: false; {d}");
    assert!(
        result.detail.is_some(),
        "FailWithLog: a failure needs a detail; {d}"
    );
    assert!(
        result.log.contains("boom"),
        "FailWithLog: the log should contain `boom`; {d}"
    );
    match classify(&result) {
        Outcome::Failed {
            retryable: true, ..
        } => {}
        other => panic!("FailWithLog: expected a retryable failure, got {other:?}; {d}"),
    }
}

/// ClientError: classified as a failure that must not be retried.
pub async fn client_error_is_not_retryable(h: &dyn DriverHarness) {
    let result = run_ok(h, Fixture::ClientError, sample_input()).await;
    match classify(&result) {
        Outcome::Failed {
            retryable: false, ..
        } => {}
        other => panic!(
            "ClientError: expected a non-retryable failure, got {other:?}; {}",
            describe(&result)
        ),
    }
}

/// Sleep: an [`ErrorKind::Timeout`] error (retryable) soon after the timeout, not after 30 s.
pub async fn timeout_is_an_error(h: &dyn DriverHarness) {
    let start = Instant::now();
    let outcome = run(h, Fixture::Sleep, sample_input(), SLEEP_TIMEOUT).await;
    let elapsed = start.elapsed();
    match outcome {
        Err(e) if e.kind() == ErrorKind::Timeout => {
            assert!(
                e.is_retryable(),
                "Sleep: a timeout should be retryable: {e}"
            );
        }
        Err(e) => panic!(
            "Sleep: expected a timeout error, got {:?} error: {e}",
            e.kind()
        ),
        Ok(r) => panic!(
            "Sleep: expected a timeout error, got a result; {}",
            describe(&r)
        ),
    }
    assert!(
        elapsed + Duration::from_millis(100) >= SLEEP_TIMEOUT,
        "Sleep: timed out after {elapsed:?}, before the {SLEEP_TIMEOUT:?} timeout"
    );
}

/// Echo with a 1 MiB input: the whole document comes back.
pub async fn large_input_round_trips(h: &dyn DriverHarness) {
    let input = large_input(LARGE_INPUT_BYTES);
    let result = run_ok(h, Fixture::Echo, input.clone()).await;
    assert_completed_with(&result, &input, "Echo (1 MiB)");
}

/// Echo with `max_output_bytes` below the input size: an [`ErrorKind::TooLarge`] error.
pub async fn output_over_limit_fails(h: &dyn DriverHarness) {
    let input = large_input(LARGE_INPUT_BYTES);
    let mut request = h.request(Fixture::Echo, input, QUICK_TIMEOUT);
    request.max_output_bytes = 64 * 1024;
    match execute(h, request).await {
        Err(e) if e.kind() == ErrorKind::TooLarge => {}
        Err(e) => panic!(
            "output over limit: expected a too_large error, got {:?}: {e}",
            e.kind()
        ),
        Ok(r) => panic!(
            "output over limit: expected a too_large error; {}",
            describe(&r)
        ),
    }
}

/// Flood (10 MiB on stdout) with the default 4 MiB `max_output_bytes`: an
/// [`ErrorKind::TooLarge`] error that says so, not retryable, well before the timeout (the
/// driver stops reading at the limit and stops the step; it never buffers the 10 MiB).
pub async fn output_flood_is_bounded(h: &dyn DriverHarness) {
    let request = h.request(Fixture::Flood, sample_input(), QUICK_TIMEOUT);
    let max = request.max_output_bytes;
    assert!(
        max < FLOOD_BYTES,
        "Flood: the harness must keep the default max_output_bytes (got {max})"
    );
    match execute(h, request).await {
        Err(e) if e.kind() == ErrorKind::TooLarge => {
            assert!(
                !e.is_retryable(),
                "Flood: too_large must not be retried: {e}"
            );
            assert!(
                e.to_string().contains("max_output_bytes"),
                "Flood: the error should name the limit: {e}"
            );
        }
        Err(e) => panic!("Flood: expected a too_large error, got {:?}: {e}", e.kind()),
        Ok(r) => panic!("Flood: expected a too_large error; {}", describe(&r)),
    }
}

/// Four Echo attempts at once each get their own output back.
pub async fn concurrent_attempts_are_independent(h: &dyn DriverHarness) {
    let inputs: Vec<Bytes> = (1..=4)
        .map(|attempt| step_input(&sample_event(), attempt))
        .collect();
    let runs = inputs
        .iter()
        .map(|input| run_ok(h, Fixture::Echo, input.clone()));
    let results = futures::future::join_all(runs).await;
    for (input, result) in inputs.iter().zip(&results) {
        assert_completed_with(result, input, "concurrent Echo");
    }
}

async fn run(
    h: &dyn DriverHarness,
    fixture: Fixture,
    input: Bytes,
    timeout: Duration,
) -> Result<StepResult> {
    execute(h, h.request(fixture, input, timeout)).await
}

/// Executes with a guard, so a driver that ignores its timeout fails instead of hanging.
async fn execute(h: &dyn DriverHarness, request: StepRequest) -> Result<StepResult> {
    let limit = request.timeout + TIMEOUT_SLACK;
    let driver = h.make().await;
    match tokio::time::timeout(limit, driver.execute(request)).await {
        Ok(result) => result,
        Err(_) => {
            panic!("the driver did not return within its timeout + {TIMEOUT_SLACK:?} ({limit:?})")
        }
    }
}

async fn run_ok(h: &dyn DriverHarness, fixture: Fixture, input: Bytes) -> StepResult {
    match run(h, fixture, input, QUICK_TIMEOUT).await {
        Ok(result) => result,
        Err(e) => panic!(
            "{fixture:?}: the driver returned an error ({:?}): {e}",
            e.kind()
        ),
    }
}

fn assert_completed_with(result: &StepResult, input: &[u8], what: &str) {
    let expected: Value = match serde_json::from_slice(input) {
        Ok(v) => v,
        Err(e) => panic!("{what}: the suite built invalid JSON: {e}"),
    };
    match classify(result) {
        Outcome::Completed(output) => assert!(
            output == expected,
            "{what}: the output differs from the input ({} bytes in); {}",
            input.len(),
            describe(result)
        ),
        other => panic!(
            "{what}: expected success, got {}; {}",
            short(&format!("{other:?}")),
            describe(result)
        ),
    }
}

/// A short description of a result for failure messages.
fn describe(r: &StepResult) -> String {
    format!(
        "result: success={}, detail={:?}, retryable={:?}, stdout ({} bytes)={:?}, log={:?}",
        r.success,
        r.detail,
        r.retryable,
        r.stdout.len(),
        short(&String::from_utf8_lossy(&r.stdout)),
        short(&r.log),
    )
}

fn short(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
