//! How a [`crate::DockerDriver`] reaches the engine and what it may do there.

use weir_core::driver::DEFAULT_MAX_LOG_BYTES;

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
}

impl Default for DockerDriverConfig {
    fn default() -> Self {
        DockerDriverConfig {
            host: None,
            pull_missing: true,
            remove_orphans: true,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
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
