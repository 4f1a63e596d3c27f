//! One attempt in one fresh container: create, attach, start, feed stdin, demultiplex stdout /
//! stderr, wait for the exit code. Removing the container is the caller's (see `guard`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use weir_core::driver::output::{LogTail, OutputBuffer};
use weir_core::driver::{StepRequest, StepResult};
use weir_core::protocol::input_argument;
use weir_core::{Error, Result};

use crate::client::docker_error;
use crate::image::ImageInfo;
use crate::settings::Settings;
use crate::{labels, orphans};

/// A unique container name for an attempt of `step_id`: `weir-<step>-<12 hex>`. Known before the
/// container exists, so a guard can remove it whatever happens during creation.
pub(crate) fn container_name(step_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = Sha256::new();
    hasher.update(orphans::this_process().as_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(now.as_nanos().to_be_bytes());
    let step: String = step_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("weir-{step}-{}", &hex::encode(hasher.finalize())[..12])
}

/// Creates the attempt's container `name` (not started).
pub(crate) async fn create(
    docker: &Docker,
    name: &str,
    image: &ImageInfo,
    settings: &Settings,
    request: &StepRequest,
) -> Result<()> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let body = create_body(image, settings, request);
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| docker_error("creating the step's container", e))?;
    for warning in created.warnings {
        tracing::warn!(container = name, %warning, "Docker warning");
    }
    Ok(())
}

fn create_body(
    image: &ImageInfo,
    settings: &Settings,
    request: &StepRequest,
) -> ContainerCreateBody {
    // The image's program, then the input document as its one argument when it fits.
    let cmd = input_argument(&request.input)
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    let deadline = SystemTime::now()
        .checked_add(request.timeout)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| d.as_secs() + 1);
    let labels = HashMap::from([
        (labels::RUN_ID.to_string(), request.run_id.clone()),
        (labels::STEP_ID.to_string(), request.step_id.clone()),
        (labels::FUNCTION_ID.to_string(), request.function_id.clone()),
        (labels::ATTEMPT.to_string(), request.attempt.to_string()),
        (
            labels::OWNER.to_string(),
            orphans::this_process().to_string(),
        ),
        (labels::DEADLINE.to_string(), deadline.to_string()),
    ]);
    let memory = settings.memory.and_then(|m| i64::try_from(m).ok());
    ContainerCreateBody {
        image: Some(image.reference.clone()),
        entrypoint: Some(image.program.clone()),
        cmd: Some(cmd),
        env: Some(environment(request)),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(HostConfig {
            memory,
            // Swap = memory: the limit is a hard one, over it the kernel OOM-kills.
            memory_swap: memory,
            nano_cpus: settings.cpus.map(|c| (c * 1e9).round() as i64),
            network_mode: settings.network.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The function's `.env`, then weir's own variables (which win over a `.env` of the same name).
fn environment(request: &StepRequest) -> Vec<String> {
    let ours = [
        ("WEIR_RUN_ID", request.run_id.clone()),
        ("WEIR_STEP_ID", request.step_id.clone()),
        ("WEIR_ATTEMPT", request.attempt.to_string()),
        ("WEIR_FUNCTION_ID", request.function_id.clone()),
    ];
    request
        .env
        .iter()
        .filter(|(k, _)| !ours.iter().any(|(o, _)| o == k))
        .map(|(k, v)| format!("{k}={v}"))
        .chain(ours.iter().map(|(k, v)| format!("{k}={v}")))
        .collect()
}

/// Attaches to, starts and waits for the container `name`; `memory` is `runtime.memory` for
/// the out-of-memory message.
pub(crate) async fn run(
    docker: &Docker,
    name: &str,
    request: &StepRequest,
    memory: Option<String>,
    max_log: usize,
) -> Result<StepResult> {
    let options = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let AttachContainerResults { output, input } = docker
        .attach_container(name, Some(options))
        .await
        .map_err(|e| docker_error("attaching to the step's container", e))?;
    docker
        .start_container(name, None)
        .await
        .map_err(|e| docker_error("starting the step's container", e))?;
    let (stdout, log) = exchange(
        input,
        output,
        &request.input,
        request.max_output_bytes,
        max_log,
    )
    .await?;
    let code = wait(docker, name).await?;
    // Asked after every attempt, exit 0 too: a process of the step killed for memory (a
    // child; the main process carrying on) leaves an exit code of 0 and a result that may be
    // missing what that process should have done.
    let oom = oom_killed(docker, name, code).await;
    let detail = (code != 0 || oom).then(|| failure_detail(code, oom, memory));
    Ok(StepResult {
        success: code == 0 && !oom,
        stdout,
        log,
        detail,
        retryable: None,
    })
}

/// Writes the input to stdin (then closes it) while demultiplexing stdout (capped) and stderr
/// (its tail), until the container's output ends.
async fn exchange(
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    mut output: std::pin::Pin<
        Box<dyn futures::Stream<Item = std::result::Result<LogOutput, DockerError>> + Send>,
    >,
    data: &[u8],
    max_out: usize,
    max_log: usize,
) -> Result<(bytes::Bytes, String)> {
    let write = async {
        // A step that does not read its stdin may exit before taking it all: not an error.
        if let Err(e) = input.write_all(data).await {
            tracing::trace!(error = %e, "step did not read all of its stdin");
        }
        if let Err(e) = input.shutdown().await {
            tracing::trace!(error = %e, "could not close the step's stdin");
        }
    };
    let read = async {
        let mut stdout = OutputBuffer::new(max_out);
        let mut log = LogTail::new(max_log);
        while let Some(frame) = output.next().await {
            match frame {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    stdout.push(&message)?;
                }
                Ok(LogOutput::StdErr { message }) => log.push(&message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => return Err(docker_error("reading the step's output", e)),
            }
        }
        Ok((stdout.into_bytes(), log.finish()))
    };
    tokio::pin!(write, read);
    let mut written = false;
    loop {
        tokio::select! {
            () = &mut write, if !written => written = true,
            result = &mut read => return result,
        }
    }
}

/// The container's exit code, once it has stopped.
async fn wait(docker: &Docker, name: &str) -> Result<i64> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    match docker.wait_container(name, Some(options)).next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(docker_error("waiting for the step's container", e)),
        None => Err(Error::unavailable(
            "the Docker engine closed the wait for the step's container without an exit code",
        )),
    }
}

/// Exit code of a process killed by SIGKILL (what the OOM killer sends).
const SIGKILL_EXIT: i64 = 128 + 9;
/// How often, and how far apart, an attempt ended by SIGKILL asks whether it was for memory.
const OOM_CHECKS: u32 = 40;
const OOM_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Whether the kernel killed a process of the container `name` (which exited with `code`)
/// for memory. Docker records the kill from an event of its own, which can come after the
/// exit (by more than half a second on a loaded machine, seen in CI): a SIGKILL exit asks
/// again for up to two seconds before it is taken as some other kill. (An exit 0 asks once: a child killed moments before the step exits can go
/// unnoticed.)
async fn oom_killed(docker: &Docker, name: &str, code: i64) -> bool {
    let checks = if code == SIGKILL_EXIT { OOM_CHECKS } else { 1 };
    for check in 1..=checks {
        match docker.inspect_container(name, None).await {
            Ok(inspect) if inspect.state.as_ref().and_then(|s| s.oom_killed) == Some(true) => {
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(container = name, error = %e, "could not ask the Docker engine whether the step's container ran out of memory");
                return false;
            }
        }
        if check < checks {
            tokio::time::sleep(OOM_CHECK_EVERY).await;
        }
    }
    false
}

/// `exited with code N`, or the out-of-memory kill that explains it (or that failed the
/// attempt although the step exited 0).
fn failure_detail(code: i64, oom: bool, memory: Option<String>) -> String {
    let limit = match &memory {
        Some(memory) => format!("runtime.memory = {memory}"),
        None => "no runtime.memory set: the host ran out".to_owned(),
    };
    match (oom, code) {
        (true, 0) => format!(
            "killed: out of memory ({limit}): a process of the step was killed, so its result is not used although the step exited 0"
        ),
        (true, _) => format!("killed: out of memory ({limit})"),
        (false, code) => format!("exited with code {code}"),
    }
}

/// The error of an attempt that ran past `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> Error {
    Error::new(
        weir_core::ErrorKind::Timeout,
        format!("step timed out after {timeout:?}; its container was killed and removed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn names_are_unique_and_valid() {
        let a = container_name("Send SMS/ü");
        let b = container_name("Send SMS/ü");
        assert_ne!(a, b);
        assert!(a.starts_with("weir-Send-SMS--"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{a}"
        );
    }

    #[test]
    fn weirs_variables_win_over_the_functions_env() {
        let request = StepRequest {
            input: bytes::Bytes::new(),
            function_id: "f".into(),
            function_dir: Default::default(),
            run_id: "r".into(),
            step_id: "s".into(),
            attempt: 3,
            path: None,
            runtime: Default::default(),
            timeout: Duration::from_secs(1),
            max_output_bytes: 1,
            env: Arc::new(vec![
                ("A".into(), "1=2".into()),
                ("WEIR_RUN_ID".into(), "spoofed".into()),
            ]),
        };
        assert_eq!(
            environment(&request),
            [
                "A=1=2",
                "WEIR_RUN_ID=r",
                "WEIR_STEP_ID=s",
                "WEIR_ATTEMPT=3",
                "WEIR_FUNCTION_ID=f"
            ]
        );
    }
}
