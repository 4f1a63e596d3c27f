//! Building an engine from URLs and options: what `weir dev`, `weir run` and tests use.

use std::sync::Arc;

use weir_core::Result;
use weir_core::driver::DriverSet;
use weir_core::engine::{Engine, EngineConfig, EngineParts};

/// Options for [`build_engine`].
#[derive(Clone)]
pub struct EngineOptions {
    /// State store URL (`memory://`).
    pub state_url: String,
    /// Broker URL (`memory://`).
    pub broker_url: String,
    /// Key signing HTTP step requests (`X-Weir-Signature`); none = unsigned.
    pub signing_key: Option<String>,
    /// Engine tunables.
    pub config: EngineConfig,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("state_url", &self.state_url)
            .field("broker_url", &self.broker_url)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            state_url: "memory://".into(),
            broker_url: "memory://".into(),
            signing_key: None,
            config: EngineConfig::default(),
        }
    }
}

/// The runtime drivers compiled into this build.
///
/// Docker: talks to `DOCKER_HOST` or the default socket, connecting on first use; containers a
/// dead weir left behind are removed now (in the background: a machine without a Docker engine
/// starts as fast as ever). Lambda: region, endpoint and credentials from the AWS chain
/// (`AWS_REGION`, `AWS_ENDPOINT_URL`, …); nothing is sent to AWS until a lambda step loads.
/// WASM: modules compiled once and cached on disk (`$WEIR_WASM_CACHE_DIR`, else
/// `~/.cache/weir/wasm`).
pub async fn default_drivers(signing_key: Option<String>) -> Result<DriverSet> {
    let http =
        weir_driver_http::HttpDriver::new(weir_driver_http::HttpDriverConfig { signing_key })?;
    let drivers = DriverSet::new()
        .with(Arc::new(weir_driver_process::ProcessDriver::new()))
        .with(Arc::new(http));
    #[cfg(feature = "driver-docker")]
    let drivers = {
        let docker = Arc::new(weir_driver_docker::DockerDriver::new(
            weir_driver_docker::DockerDriverConfig::default(),
        ));
        let sweeper = docker.clone();
        tokio::spawn(async move {
            match sweeper.remove_orphans().await {
                Ok(removed) if !removed.is_empty() => tracing::warn!(
                    containers = removed.len(),
                    "removed step containers a stopped weir left behind"
                ),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "no Docker engine to sweep for orphans"),
            }
        });
        drivers.with(docker)
    };
    #[cfg(feature = "driver-wasm")]
    let drivers = drivers.with(Arc::new(weir_driver_wasm::WasmDriver::new(
        weir_driver_wasm::WasmDriverConfig::default(),
    )?));
    #[cfg(feature = "driver-lambda")]
    let drivers = drivers.with(Arc::new(
        weir_driver_lambda::LambdaDriver::connect(weir_driver_lambda::LambdaDriverConfig::new())
            .await?,
    ));
    Ok(drivers)
}

/// Opens the drivers named by `options` and builds an engine (not yet started).
pub async fn build_engine(options: &EngineOptions) -> Result<Engine> {
    let (state, events) = crate::registry::open_state(&options.state_url).await?;
    let broker = crate::registry::open_broker(&options.broker_url).await?;
    Ok(Engine::new(EngineParts {
        state,
        events,
        broker,
        drivers: default_drivers(options.signing_key.clone()).await?,
        config: options.config.clone(),
    }))
}
