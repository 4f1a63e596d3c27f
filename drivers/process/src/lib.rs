//! weir-driver-process: runs weir steps as local executables (the `process` runtime).
//!
//! The step input document is given as the first argument when it fits in one argument
//! (under [`MAX_ARG_BYTES`]) and always on stdin. stdout is the output, stderr the log. Each
//! step runs in its own process group, which is killed on timeout and when the step exits.

mod exec;
mod group;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Map, Value};
use weir_core::driver::{DEFAULT_MAX_LOG_BYTES, Driver, StepRequest, StepResult};
use weir_core::{Error, ErrorKind, Result};

/// The `runtime.type` served by [`ProcessDriver`].
pub const KIND: &str = "process";

pub use weir_core::protocol::MAX_ARG_BYTES;

/// Runs the executable at the step's `path` (or `<dir>/main`, `<dir>/run` for a directory).
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    max_log_bytes: usize,
}

impl ProcessDriver {
    /// A driver keeping the last [`DEFAULT_MAX_LOG_BYTES`] of each attempt's stderr.
    pub fn new() -> Self {
        ProcessDriver {
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }

    /// Keeps the last `bytes` of stderr per attempt instead.
    pub fn with_max_log_bytes(mut self, bytes: usize) -> Self {
        self.max_log_bytes = bytes;
        self
    }
}

impl Default for ProcessDriver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, _runtime: &Map<String, Value>, path: Option<&Path>) -> Result<()> {
        let exe = resolve(path, Path::new(""))?;
        if !exec::is_executable(&exe) {
            return Err(Error::config(format!(
                "step executable is not executable (chmod +x it): {}",
                exe.display()
            )));
        }
        Ok(())
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let exe = resolve(request.path.as_deref(), &request.function_dir)?;
        exec::run(&exe, request, self.max_log_bytes).await
    }
}

/// The executable a step runs: `path` (relative to `dir`), or `main` / `run` inside it.
fn resolve(path: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let path = path.ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "a process step needs a `path` to an executable",
        )
    })?;
    let path = std::path::absolute(dir.join(path)).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("invalid step path {:?}", path.display()),
        )
        .with_source(e)
    })?;
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("step executable not found: {}", path.display()),
        )
        .with_source(e)
    })?;
    if !meta.is_dir() {
        return Ok(path);
    }
    ["main", "run"]
        .iter()
        .map(|name| path.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "step directory has no `main` or `run` executable: {}",
                    path.display()
                ),
            )
        })
}
