//! Connecting to the Docker engine and turning its errors into weir's.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use weir_core::{Error, ErrorKind, Result};

/// Where the engine is, for messages: the configured host, `DOCKER_HOST`, or the default socket.
pub(crate) fn describe_host(host: Option<&str>) -> String {
    match host {
        Some(h) => h.to_string(),
        None => match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => format!("{h} (DOCKER_HOST)"),
            _ => "unix:///var/run/docker.sock (the default; set DOCKER_HOST to change it)".into(),
        },
    }
}

/// Connects to `host` (`unix://`, `tcp://`, `http://`), else `DOCKER_HOST`, else the default
/// socket, and agrees on an API version the engine speaks. Every API call then waits at most
/// `api_timeout` (whole seconds, at least one) for the engine's answer.
pub(crate) async fn connect(host: Option<&str>, api_timeout: Duration) -> Result<Docker> {
    let where_ = describe_host(host);
    let docker = match host {
        Some(h) => Docker::connect_with_host(h),
        None => Docker::connect_with_defaults(),
    }
    .map_err(|e| {
        if let DockerError::SocketNotFoundError(path) = &e {
            return Error::unavailable(format!(
                "cannot reach the Docker engine at {where_}: no socket at {path} (is dockerd running?)"
            ))
            .with_source(e);
        }
        Error::new(
            ErrorKind::Config,
            format!("invalid Docker host {where_}: use unix:///path/to/docker.sock or tcp://host:port"),
        )
        .permanent()
        .with_source(e)
    })?;
    let docker = docker.with_timeout(api_timeout.max(Duration::from_secs(1)));
    docker.negotiate_version().await.map_err(|e| {
        if matches!(e, DockerError::RequestTimeoutError) {
            return docker_error("asking for its API version", e).with_context("host", where_);
        }
        Error::unavailable(format!(
            "cannot reach the Docker engine at {where_}: is dockerd running and is its socket readable?"
        ))
        .with_source(e)
    })
}

/// The HTTP status of an engine error, if it answered.
pub(crate) fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message, if it answered.
pub(crate) fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Maps an engine error during `what` (e.g. "creating the step's container"): a 4xx answer is a
/// permanent configuration problem, anything else (5xx, no answer, no answer in time) is
/// retryable.
pub(crate) fn docker_error(what: &str, e: DockerError) -> Error {
    if matches!(e, DockerError::RequestTimeoutError) {
        return Error::unavailable(format!(
            "the Docker engine did not answer within the driver's api_timeout while {what}"
        ))
        .with_source(e);
    }
    let message = format!("Docker engine error while {what}: {}", message_of(&e));
    let error = match status_of(&e) {
        Some(404) => Error::new(ErrorKind::NotFound, message).permanent(),
        Some(s) if (400..500).contains(&s) => Error::new(ErrorKind::Config, message).permanent(),
        Some(_) => Error::unavailable(message),
        None => Error::unavailable(format!(
            "lost the connection to the Docker engine while {what}: {e}"
        )),
    };
    error.with_source(e)
}
