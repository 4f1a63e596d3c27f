//! weir-driver-docker: runs each attempt of a weir step in a fresh Docker container (the
//! `docker` runtime), through the engine's API ([`bollard`]).
//!
//! The image is `runtime.image`, or built from the Dockerfile in the step's `path` (once per
//! content hash, cached, rebuilt when the directory changes). The step input document is the
//! container's argument when it is under [`MAX_ARG_BYTES`] and always its stdin; stdout is the
//! output, stderr the log. Every container is labelled (see [`labels`]) and removed however the
//! attempt ends; containers orphaned by a weir process that died mid-step are removed when a
//! driver connects. See the crate's README for the runtime keys and limits.

mod attempt;
mod client;
mod config;
mod context;
mod guard;
mod ignore;
mod image;
pub mod labels;
mod orphans;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use weir_core::driver::{Driver, StepRequest, StepResult, StepSpec};
use weir_core::{Error, ErrorKind, Result};

pub use config::DockerDriverConfig;
pub use settings::RUNTIME_KEYS;
pub use weir_core::protocol::MAX_ARG_BYTES;

use crate::context::BuildSource;
use crate::guard::ContainerGuard;
use crate::image::ImageInfo;
use crate::image::{ImageSource, Images};
use crate::settings::Settings;

/// The `runtime.type` served by [`DockerDriver`].
pub const KIND: &str = "docker";

/// Runs steps in Docker containers. Cheap to share (`Arc`); one engine connection per driver.
#[derive(Debug)]
pub struct DockerDriver {
    config: DockerDriverConfig,
    docker: OnceCell<Docker>,
    images: Images,
}

impl DockerDriver {
    /// A driver that connects to the engine on first use (sweeping orphans then). Fails only
    /// on an invalid configuration.
    pub fn new(config: DockerDriverConfig) -> Self {
        DockerDriver {
            config,
            docker: OnceCell::new(),
            images: Images::default(),
        }
    }

    /// A driver connected now: reaches the engine, agrees on an API version and removes
    /// orphaned step containers (when [`DockerDriverConfig::remove_orphans`] is set).
    pub async fn connect(config: DockerDriverConfig) -> Result<Self> {
        let driver = Self::new(config);
        driver.client().await?;
        Ok(driver)
    }

    /// The configuration.
    pub fn config(&self) -> &DockerDriverConfig {
        &self.config
    }

    /// Removes weir's orphaned containers: those whose weir process died (on this host) or
    /// that outlived their deadline by a minute (any host); never this process's own. Returns
    /// the ids removed.
    pub async fn remove_orphans(&self) -> Result<Vec<String>> {
        orphans::sweep(self.client().await?).await
    }

    /// The image reference a step runs (`runtime.image`, or its `weir-step/…:<hash>` tag),
    /// building or pulling it first when needed.
    pub async fn image_for(&self, step: &StepSpec) -> Result<String> {
        let source = self.source_of(step)?;
        let docker = self.client().await?;
        let info = self.ensure_image(docker, &source).await?;
        Ok(info.reference.clone())
    }

    /// The image of `source`, built or pulled when needed, within
    /// [`DockerDriverConfig::image_timeout`].
    async fn ensure_image(&self, docker: &Docker, source: &ImageSource) -> Result<Arc<ImageInfo>> {
        let limit = self.config.image_timeout;
        // The engine answers a build only once it has read the whole context, and a pull's
        // answer can wait on the registry: these calls get `image_timeout`, not `api_timeout`.
        let docker = docker
            .clone()
            .with_timeout(limit.max(std::time::Duration::from_secs(1)));
        let ensure = self
            .images
            .ensure(&docker, source, self.config.pull_missing);
        match tokio::time::timeout(limit, ensure).await {
            Ok(result) => result,
            Err(_) => Err(Error::unavailable(format!(
                "building or pulling the step's image took longer than {limit:?} (DockerDriverConfig::image_timeout); the next attempt tries again"
            ))),
        }
    }

    async fn client(&self) -> Result<&Docker> {
        self.docker
            .get_or_try_init(|| async {
                let docker =
                    client::connect(self.config.host.as_deref(), self.config.api_timeout).await?;
                if self.config.remove_orphans {
                    let removed = orphans::sweep(&docker).await?;
                    if !removed.is_empty() {
                        tracing::info!(count = removed.len(), "removed orphaned step containers");
                    }
                }
                Ok(docker)
            })
            .await
    }

    fn source_of(&self, step: &StepSpec) -> Result<ImageSource> {
        let settings = Settings::parse(&step.runtime).map_err(|m| config_error(step, m))?;
        image_source(&settings, step).map_err(|m| config_error(step, m))
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, runtime: &Map<String, Value>, path: Option<&Path>) -> Result<()> {
        let settings = Settings::parse(runtime).map_err(Error::config)?;
        match (&settings.image, path) {
            (Some(_), Some(_)) => Err(Error::config(both_error())),
            (Some(_), None) => Ok(()),
            (None, Some(path)) => BuildSource::from_path(path)
                .map(|_| ())
                .map_err(Error::config),
            (None, None) => Err(Error::config(neither_error())),
        }
    }

    async fn prepare(&self, step: &StepSpec) -> Result<()> {
        self.image_for(step).await.map(|_| ())
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let spec = request.spec();
        let settings = Settings::parse(&request.runtime).map_err(|m| config_error(&spec, m))?;
        let source = image_source(&settings, &spec).map_err(|m| config_error(&spec, m))?;
        let docker = self.client().await?;
        // Building the image is preparation: it does not count against the step's timeout.
        let mut image = self.ensure_image(docker, &source).await?;
        let name = attempt::container_name(&request.step_id);
        let guard = ContainerGuard::new(docker.clone(), name.clone());
        let deadline = tokio::time::Instant::now() + request.timeout;
        let work = async {
            let created = attempt::create(docker, &name, &image, &settings, &request).await;
            if let Err(e) = created {
                if e.kind() != ErrorKind::NotFound || matches!(source, ImageSource::Named(_)) {
                    return Err(e);
                }
                // The built image was removed behind our back: build it again, once.
                self.images.forget(&source);
                image = self.ensure_image(docker, &source).await?;
                attempt::create(docker, &name, &image, &settings, &request).await?;
            }
            let memory = settings.memory_display();
            attempt::run(docker, &name, &request, memory, self.config.max_log_bytes).await
        };
        let outcome = tokio::time::timeout_at(deadline, work).await;
        guard.remove().await;
        match outcome {
            Ok(result) => result.map_err(|e| e.with_context("step", &request.step_id)),
            Err(_) => {
                Err(attempt::timed_out(request.timeout).with_context("step", &request.step_id))
            }
        }
    }
}

/// Where a step's image comes from: `runtime.image`, or the Dockerfile in its path.
fn image_source(settings: &Settings, step: &StepSpec) -> std::result::Result<ImageSource, String> {
    match (&settings.image, &step.path) {
        (Some(_), Some(_)) => Err(both_error()),
        (Some(image), None) => Ok(ImageSource::Named(image.clone())),
        (None, Some(path)) => {
            let path: PathBuf = step.function_dir.join(path);
            Ok(ImageSource::Build {
                source: BuildSource::from_path(&path)?,
                repository: image::repository(&step.function_id, &step.step_id),
                step_id: step.step_id.clone(),
                function_id: step.function_id.clone(),
            })
        }
        (None, None) => Err(neither_error()),
    }
}

fn both_error() -> String {
    "a docker step takes either `runtime.image` (an existing image) or a `path` to a directory holding a Dockerfile, not both".into()
}

fn neither_error() -> String {
    "a docker step needs `runtime.image` (an existing image) or a `path` to a directory holding a Dockerfile".into()
}

fn config_error(step: &StepSpec, message: String) -> Error {
    Error::new(ErrorKind::Config, message)
        .permanent()
        .with_context("step", &step.step_id)
}
