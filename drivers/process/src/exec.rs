//! Spawning and supervising one step attempt.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use weir_core::driver::{StepRequest, StepResult};
use weir_core::{Error, ErrorKind, Result};

use weir_core::driver::output::{read_capped, read_tail};
use weir_core::protocol::input_argument;

use crate::group::ProcessGroup;

/// Whether `path` is a file with an execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `exe` for `request`: spawn, feed stdin, collect stdout / stderr, enforce the timeout.
pub(crate) async fn run(exe: &Path, request: StepRequest, max_log: usize) -> Result<StepResult> {
    let dir = &request.function_dir;
    let mut cmd = Command::new(exe);
    let input = &request.input;
    if let Some(argument) = input_argument(input) {
        cmd.arg(argument);
    }
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
    if !dir.as_os_str().is_empty() {
        if !dir.is_dir() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("function directory does not exist: {}", dir.display()),
            ));
        }
        cmd.current_dir(dir);
    }
    let child = spawn(&mut cmd, exe).await?;
    let timeout = request.timeout;
    let attempt = supervise(child, request.input, request.max_output_bytes, max_log);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result.map_err(|e| e.with_context("path", exe.display())),
        // Dropping the attempt killed the process group.
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("step timed out after {timeout:?}"),
        )
        .with_context("path", exe.display())),
    }
}

/// Spawns, retrying briefly on ETXTBSY (the executable was just written by a racing fork).
async fn spawn(cmd: &mut Command, exe: &Path) -> Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * tries)).await;
            }
            Err(e) => return Err(spawn_error(e, exe)),
        }
    }
}

fn spawn_error(e: std::io::Error, exe: &Path) -> Error {
    let exe = exe.display();
    let (kind, message) = match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::NotFound, _) => (
            ErrorKind::NotFound,
            format!("step executable (or its #! interpreter) not found: {exe}"),
        ),
        (std::io::ErrorKind::PermissionDenied, _) => (
            ErrorKind::Config,
            format!("step executable is not executable (permission denied; chmod +x it): {exe}"),
        ),
        (_, Some(libc::ENOEXEC)) => (
            ErrorKind::Config,
            format!("step executable has an unknown format (a script needs a #! line): {exe}"),
        ),
        _ => {
            let message = format!("could not start step executable: {exe}");
            return Error::new(ErrorKind::Unavailable, message).with_source(e);
        }
    };
    Error::new(kind, message).permanent().with_source(e)
}

/// Feeds stdin while reading stdout and stderr, so no pipe can fill up and deadlock.
async fn supervise(
    mut child: Child,
    input: Bytes,
    max_out: usize,
    max_log: usize,
) -> Result<StepResult> {
    // Killed on every way out: timeout and cancellation (drop), too-large output, exit.
    let mut group = ProcessGroup::new(child.id());
    let stdin = child.stdin.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A step that does not read its stdin closes it early (EPIPE): not an error.
            if let Err(e) = stdin.write_all(&input).await {
                tracing::trace!(error = %e, "step did not read all of its stdin");
            }
        }
        Ok::<(), Error>(())
    };
    let stdout = read_capped(child.stdout.take(), max_out);
    let stderr = read_tail(child.stderr.take(), max_log);
    let wait = async {
        let status = child.wait().await;
        // Background processes the step left behind would hold the pipes open.
        group.kill();
        status.map_err(|e| Error::internal("could not wait for the step process").with_source(e))
    };
    let ((), stdout, log, status) = tokio::try_join!(write, stdout, stderr, wait)?;
    Ok(StepResult {
        success: status.success(),
        stdout,
        log,
        detail: exit_detail(status),
        retryable: None,
    })
}

fn exit_detail(status: ExitStatus) -> Option<String> {
    if status.success() {
        return None;
    }
    Some(match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("exited with {status}"),
    })
}
