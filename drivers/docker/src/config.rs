//! How a [`crate::DockerDriver`] reaches the engine and what it may do there.

use std::time::Duration;

use weir_core::driver::DEFAULT_MAX_LOG_BYTES;

/// The default [`DockerDriverConfig::api_timeout`].
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(60);

/// The default [`DockerDriverConfig::image_timeout`].
pub const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Driver-wide settings (per-step settings are `runtime` keys, see [`crate::RUNTIME_KEYS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerDriverConfig {
    /// The engine: `unix:///var/run/docker.sock`, `tcp://host:2375`, `http://…`. `None` uses
    /// `DOCKER_HOST`, else the default socket.
    pub host: Option<String>,
    /// Pull a `runtime.image` that is not on the engine (as `docker run` does). Default `true`.
    pub pull_missing: bool,
    /// Remove orphaned step containers when the driver connects. Default `true`.
    pub remove_orphans: bool,
    /// How much of each attempt's stderr is kept (its tail). Default 64 KiB.
    pub max_log_bytes: usize,
    /// How long the engine may take to answer each API call (whole seconds, at least 1 s;
    /// default 60 s). A call without an answer fails with a retryable error naming it.
    /// Streams (a step's output, a build's progress) are bounded by the step's timeout and
    /// [`image_timeout`](Self::image_timeout) instead.
    pub api_timeout: Duration,
    /// How long building or pulling a step's image may take in all (default 30 minutes): a
    /// build that hangs fails with a retryable error, and the next attempt builds again.
    pub image_timeout: Duration,
}

impl Default for DockerDriverConfig {
    fn default() -> Self {
        DockerDriverConfig {
            host: None,
            pull_missing: true,
            remove_orphans: true,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            api_timeout: DEFAULT_API_TIMEOUT,
            image_timeout: DEFAULT_IMAGE_TIMEOUT,
        }
    }
}

impl DockerDriverConfig {
    /// The default configuration with an explicit engine address.
    pub fn with_host(host: impl Into<String>) -> Self {
        DockerDriverConfig {
            host: Some(host.into()),
            ..Self::default()
        }
    }
}
