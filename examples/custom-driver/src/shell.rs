//! The `shell` runtime: a step is a line of shell, run with `sh -c` in the function directory.
//!
//! ```json
//! "greet": { "id": "greet", "runtime": { "type": "shell", "command": "echo \"{\\\"hi\\\": 1}\"" } }
//! ```
//!
//! The step input document (compact JSON) arrives on stdin (and as `$1` when it fits in one
//! argument), the function's `.env` and `WEIR_RUN_ID`, `WEIR_STEP_ID`, `WEIR_ATTEMPT`,
//! `WEIR_FUNCTION_ID` in the environment; stdout is the output, stderr the log. The command
//! runs in a process group of its own, killed as a whole at the timeout, when the output
//! outgrows its limit, and when the command exits: nothing it started in the background
//! outlives the attempt, unless it leaves the group (`setsid`), which a shell line should not.
//!
//! It is built on weir-core alone: [`Driver`] for the trait, `weir_core::driver::output` to
//! bound what is read, `weir_core::protocol` for the argument rule.

use std::process::Stdio;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use weir_core::driver::output::{read_capped, read_tail};
use weir_core::driver::{DEFAULT_MAX_LOG_BYTES, Driver, StepRequest, StepResult};
use weir_core::registry::RuntimeType;
use weir_core::{Error, ErrorKind, Result};

/// The `runtime.type` this driver serves.
pub const KIND: &str = "shell";

/// The registry entry of the `shell` runtime, for `weir::App::builder().runtime(…)`.
pub fn runtime() -> RuntimeType {
    RuntimeType::new(KIND, |_settings| async { Ok(ShellDriver) })
        .about("a line of sh -c per step; an example of a third-party driver")
}

/// Runs a step's `runtime.command` with `sh -c`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellDriver;

/// The step's command, or a configuration error saying what is wrong with the `runtime`
/// object.
fn command(runtime: &Map<String, Value>) -> Result<&str> {
    command_line(runtime).map_err(Error::config)
}

fn command_line(runtime: &Map<String, Value>) -> std::result::Result<&str, String> {
    if let Some(key) = runtime
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "command"))
    {
        return Err(format!(
            "unknown key {key:?} of the shell runtime (known: command)"
        ));
    }
    match runtime.get("command") {
        Some(Value::String(c)) if !c.trim().is_empty() => Ok(c),
        Some(Value::String(_)) => Err("command: must not be empty".into()),
        Some(other) => Err(format!("command: must be a string, got {other}")),
        None => Err("command: required (the line of shell the step runs)".into()),
    }
}

#[async_trait]
impl Driver for ShellDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, runtime: &Map<String, Value>, _path: Option<&std::path::Path>) -> Result<()> {
        command(runtime).map(|_| ())
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let line = command(&request.runtime)?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(line).arg("weir-shell-step");
        if let Some(argument) = weir_core::protocol::input_argument(&request.input) {
            cmd.arg(argument);
        }
        if !request.function_dir.is_dir() {
            return Err(Error::config(format!(
                "the function directory {} does not exist",
                request.function_dir.display()
            )));
        }
        cmd.current_dir(&request.function_dir);
        cmd.envs(request.env.iter().map(|(k, v)| (k, v)))
            .env("WEIR_RUN_ID", &request.run_id)
            .env("WEIR_STEP_ID", &request.step_id)
            .env("WEIR_ATTEMPT", request.attempt.to_string())
            .env("WEIR_FUNCTION_ID", &request.function_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            // No /bin/sh will not fix itself; running out of processes or memory may.
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ErrorKind::Config
                }
                _ => ErrorKind::Unavailable,
            };
            Error::new(kind, "cannot start /bin/sh").with_source(e)
        })?;
        // Dropped on every way out (timeout, too much output, exit): kills the whole group.
        let mut group = ProcessGroup(child.id().and_then(|p| i32::try_from(p).ok()));
        let input = request.input.clone();
        let mut stdin = child.stdin.take();
        let feed = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A command that does not read its stdin closes it early: not an error.
                let _ = stdin.write_all(&input).await;
            }
            Ok::<(), Error>(())
        };
        let stdout = read_capped(child.stdout.take(), request.max_output_bytes);
        let stderr = read_tail(child.stderr.take(), DEFAULT_MAX_LOG_BYTES);
        let wait = async {
            let status = child.wait().await;
            // Background processes of the command would hold the pipes open.
            group.kill();
            status.map_err(|e| Error::internal("cannot wait for /bin/sh").with_source(e))
        };
        let attempt = async { tokio::try_join!(feed, stdout, stderr, wait) };
        let ((), stdout, log, status) = tokio::time::timeout(request.timeout, attempt)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("shell step timed out after {:?}", request.timeout),
                )
            })??;
        Ok(StepResult {
            success: status.success(),
            stdout,
            log,
            detail: (!status.success()).then(|| match status.code() {
                Some(code) => format!("exited with code {code}"),
                None => format!("ended by {status}"),
            }),
            retryable: None,
        })
    }
}

/// A process group, sent SIGKILL once on [`ProcessGroup::kill`] or drop.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn kill(&mut self) {
        // Never 0 or 1: kill(-0) would signal our own group, kill(-1) every process.
        if let Some(pgid) = self.0.take().filter(|p| *p > 1) {
            // SAFETY: kill(2) takes two integers and touches none of this process's memory.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn runtime(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn check_says_what_is_wrong_with_the_runtime_object() {
        let driver = ShellDriver;
        let ok = runtime(json!({"type": "shell", "command": "cat"}));
        driver.check(&ok, None).expect("valid");
        for (value, says) in [
            (json!({"type": "shell"}), "command: required"),
            (
                json!({"type": "shell", "command": " "}),
                "must not be empty",
            ),
            (json!({"type": "shell", "command": 3}), "must be a string"),
            (
                json!({"type": "shell", "command": "cat", "image": "x"}),
                "unknown key \"image\"",
            ),
        ] {
            let err = driver
                .check(&runtime(value.clone()), None)
                .expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(says), "{value}: {err}");
        }
    }
}
