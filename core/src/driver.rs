//! The runtime `Driver` trait: run one step attempt and report what it printed.
//!
//! A driver does the transport only (spawn a process, call a URL, invoke a Lambda); building the
//! input and turning stdout into an output or a failure is shared code in [`crate::protocol`].

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::Result;

pub mod output;

/// Default cap on a step's stdout (and on an HTTP step's response body): 4 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Default cap on the log (stderr) kept per attempt: 64 KiB, the tail is kept.
pub const DEFAULT_MAX_LOG_BYTES: usize = 64 * 1024;

/// One attempt of one step, as a driver receives it.
#[derive(Debug, Clone)]
pub struct StepRequest {
    /// The step input document (JSON), see [`crate::protocol::StepInput`].
    pub input: Bytes,
    /// The function's id.
    pub function_id: String,
    /// The function's directory (step paths are relative to it).
    pub function_dir: PathBuf,
    /// The run id.
    pub run_id: String,
    /// The step id.
    pub step_id: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The step's `path`, resolved against the function directory (`file://` stripped).
    pub path: Option<PathBuf>,
    /// The step's `runtime` object (its `type` and driver-specific settings).
    pub runtime: Map<String, Value>,
    /// How long the attempt may take; the driver kills the work when it is over.
    pub timeout: Duration,
    /// Stdout / response bodies larger than this fail the attempt.
    pub max_output_bytes: usize,
    /// Environment variables for the step: the function's `.env` file (see
    /// [`crate::function::parse_dotenv`]). Drivers that run code set them (process, Docker;
    /// Lambda and WASM as their docs say).
    pub env: std::sync::Arc<Vec<(String, String)>>,
}

/// A step as a driver sees it ahead of any attempt, for [`Driver::prepare`].
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The function's id.
    pub function_id: String,
    /// The function's directory (step paths are relative to it).
    pub function_dir: PathBuf,
    /// The step id.
    pub step_id: String,
    /// The step's `path`, resolved against the function directory (`file://` stripped).
    pub path: Option<PathBuf>,
    /// The step's `runtime` object.
    pub runtime: Map<String, Value>,
    /// The function's `.env` variables.
    pub env: std::sync::Arc<Vec<(String, String)>>,
    /// The step's timeout (per attempt), for drivers that configure the work ahead (a Lambda
    /// deployed with the same timeout stops when weir gives up on it).
    pub timeout: Duration,
}

impl StepRequest {
    /// The step this attempt belongs to.
    pub fn spec(&self) -> StepSpec {
        StepSpec {
            function_id: self.function_id.clone(),
            function_dir: self.function_dir.clone(),
            step_id: self.step_id.clone(),
            path: self.path.clone(),
            runtime: self.runtime.clone(),
            env: self.env.clone(),
            timeout: self.timeout,
        }
    }
}

/// What an attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Whether the attempt succeeded at the transport level (exit 0, HTTP 2xx).
    pub success: bool,
    /// What the step printed on stdout (or answered as a body).
    pub stdout: Bytes,
    /// The step's log (stderr), possibly truncated to its tail.
    pub log: String,
    /// What went wrong, when not `success` (e.g. `exited with code 3`, `HTTP 503`).
    pub detail: Option<String>,
    /// The driver's retry hint for a failure (`Some(false)` for an HTTP 4xx); `None` = default.
    pub retryable: Option<bool>,
}

/// A runtime driver: `process`, `docker`, `lambda`, `wasm`, `http`, or a third party's.
///
/// Contract (checked by the conformance suite, `testkit::driver`):
/// - `execute` runs one attempt and reports what the step did: a step that ran and failed
///   (non-zero exit, HTTP 5xx) is `Ok` with `success: false`, a `detail` saying why and its
///   log; it is retried by the engine unless the output or `retryable` says otherwise.
/// - An attempt that outlives `request.timeout` is stopped by the driver (nothing of it keeps
///   running) and reported as an [`ErrorKind::Timeout`] error (retryable).
/// - Output over `request.max_output_bytes` is an [`ErrorKind::TooLarge`] error (permanent);
///   the driver stops reading at the limit instead of buffering what the step prints. The log
///   keeps its tail ([`output`] has both helpers).
/// - Other errors are weir errors: retryable when trying again may work (the step's endpoint
///   unreachable, a container engine busy), permanent when it cannot (a missing executable).
/// - `execute` is called concurrently for many attempts, and may be cancelled (dropped) when
///   the engine stops: whatever it started must end with it.
///
/// [`ErrorKind::Timeout`]: crate::ErrorKind::Timeout
/// [`ErrorKind::TooLarge`]: crate::ErrorKind::TooLarge
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The `runtime.type` this driver serves.
    fn kind(&self) -> &str;

    /// Checks a step's `runtime` object (and its resolved `path`) when functions load; an
    /// error's message says what is wrong (shown with the file and JSON path, e.g.
    /// [`Error::config`](crate::Error::config)). The default accepts everything.
    fn check(&self, _runtime: &Map<String, Value>, _path: Option<&std::path::Path>) -> Result<()> {
        Ok(())
    }

    /// Gets a step ready ahead of its first attempt: build its image, compile its module,
    /// deploy its function. Called when functions load (`weir dev`, `weir serve`, `weir run`),
    /// so problems show up then; `execute` must still work without it (preparing lazily, once).
    /// The default does nothing.
    async fn prepare(&self, _step: &StepSpec) -> Result<()> {
        Ok(())
    }

    /// Runs one attempt. A timeout is an [`crate::ErrorKind::Timeout`] error; a step that
    /// ran and failed is `Ok` with `success: false`.
    async fn execute(&self, request: StepRequest) -> Result<StepResult>;
}

/// The runtime drivers available to an engine, by `runtime.type`.
#[derive(Clone, Default)]
pub struct DriverSet {
    drivers: std::collections::BTreeMap<String, std::sync::Arc<dyn Driver>>,
    /// Runtime types weir knows that this build lacks, with what brings each in.
    absent: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for DriverSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.drivers.keys()).finish()
    }
}

impl DriverSet {
    /// No drivers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the driver serving `driver.kind()`.
    pub fn with(mut self, driver: std::sync::Arc<dyn Driver>) -> Self {
        self.absent.remove(driver.kind());
        self.drivers.insert(driver.kind().to_string(), driver);
        self
    }

    /// Records a runtime type this build lacks and what brings it in (`the driver-docker Cargo
    /// feature of weir`): a function using it is told so when it loads.
    pub fn with_absent(mut self, kind: &str, how: &str) -> Self {
        if !self.drivers.contains_key(kind) {
            self.absent.insert(kind.to_string(), how.to_string());
        }
        self
    }

    /// The driver for a runtime type.
    pub fn get(&self, kind: &str) -> Option<&std::sync::Arc<dyn Driver>> {
        self.drivers.get(kind)
    }

    /// The available runtime types.
    pub fn kinds(&self) -> Vec<&str> {
        self.drivers.keys().map(String::as_str).collect()
    }
}

impl crate::function::RuntimeCatalog for DriverSet {
    fn check(
        &self,
        runtime_type: &str,
        runtime: &Map<String, Value>,
        path: Option<&std::path::Path>,
    ) -> Result<()> {
        if let Some(driver) = self.drivers.get(runtime_type) {
            return driver.check(runtime, path);
        }
        Err(crate::Error::config(match self.absent.get(runtime_type) {
            Some(how) => {
                format!("runtime {runtime_type:?} is not in this build of weir: it needs {how}")
            }
            None => format!(
                "unknown runtime type {runtime_type:?} (available: {})",
                self.kinds().join(", ")
            ),
        }))
    }
}
