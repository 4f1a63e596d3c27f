//! The image a step runs: `runtime.image` as is (pulled when missing, if allowed), or built from
//! the step's Dockerfile once per content hash and cached for the life of the driver.

use std::collections::HashMap;
use std::sync::Arc;

use bollard::Docker;
use bollard::body_full;
use bollard::models::ImageInspect;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use futures::StreamExt;
use weir_core::driver::output::LogTail;
use weir_core::{Error, ErrorKind, Result};

use crate::client::{docker_error, message_of, status_of};
use crate::context::{self, BuildSource, Fingerprint};
use crate::labels;

/// How much of a failed build's output its error shows.
const BUILD_LOG_BYTES: usize = 4096;

/// An image ready to run, and the program its containers start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageInfo {
    /// What containers are created from: a `weir-step/…:<hash>` tag or `runtime.image`.
    pub reference: String,
    /// The image's ENTRYPOINT, or its CMD when it has no ENTRYPOINT; the input is appended.
    pub program: Vec<String>,
}

/// Where a step's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ImageSource {
    /// `runtime.image`.
    Named(String),
    /// A Dockerfile in the step's path, built as `weir-step/<function>-<step>:<hash>`.
    Build {
        /// The context and Dockerfile.
        source: BuildSource,
        /// `<function>-<step>`, as a Docker repository name.
        repository: String,
        /// The step, for labels and messages.
        step_id: String,
        /// The function, for labels.
        function_id: String,
    },
}

type Slot = Arc<tokio::sync::Mutex<Option<(Fingerprint, Arc<ImageInfo>)>>>;

/// Built images by step, so an unchanged step is never rebuilt (nor re-hashed) in this process.
#[derive(Debug, Default)]
pub(crate) struct Images {
    built: std::sync::Mutex<HashMap<ImageSource, Slot>>,
}

impl Images {
    /// The image for `source`, building or pulling it when needed.
    pub async fn ensure(
        &self,
        docker: &Docker,
        source: &ImageSource,
        pull_missing: bool,
    ) -> Result<Arc<ImageInfo>> {
        match source {
            ImageSource::Named(name) => named(docker, name, pull_missing).await.map(Arc::new),
            ImageSource::Build { .. } => self.built(docker, source).await,
        }
    }

    /// Forgets what was built for `source` (its image was removed behind the driver's back).
    pub fn forget(&self, source: &ImageSource) {
        self.slots().remove(source);
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<ImageSource, Slot>> {
        self.built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn built(&self, docker: &Docker, image: &ImageSource) -> Result<Arc<ImageInfo>> {
        let ImageSource::Build {
            source,
            repository,
            step_id,
            function_id,
        } = image
        else {
            return Err(Error::internal("not a built image source"));
        };
        let slot = self.slots().entry(image.clone()).or_default().clone();
        // One build per step at a time: concurrent first attempts wait for it.
        let mut cached = slot.lock().await;
        let walk_source = source.clone();
        let fp = blocking(move || context::fingerprint(&walk_source)).await?;
        if let Some((seen, info)) = cached.as_ref()
            && *seen == fp
        {
            return Ok(info.clone());
        }
        let (pack_source, pack_fp) = (source.clone(), fp.clone());
        let packed = blocking(move || context::pack(&pack_source, &pack_fp)).await?;
        let tag = format!("weir-step/{repository}:{}", &packed.hash[..16]);
        let inspect = match docker.inspect_image(&tag).await {
            Ok(inspect) => inspect,
            Err(e) if status_of(&e) == Some(404) => {
                let labels = HashMap::from([
                    (labels::FUNCTION_ID, function_id.as_str()),
                    (labels::STEP_ID, step_id.as_str()),
                ]);
                build(docker, source, &tag, &labels, packed.tar, step_id).await?;
                docker
                    .inspect_image(&tag)
                    .await
                    .map_err(|e| docker_error("inspecting the image just built", e))?
            }
            Err(e) => return Err(docker_error("inspecting the step's image", e)),
        };
        let info = Arc::new(image_info(tag, &inspect)?);
        *cached = Some((fp, info.clone()));
        Ok(info)
    }
}

/// `runtime.image`: used as is; pulled once when missing and `pull_missing` allows it.
async fn named(docker: &Docker, name: &str, pull_missing: bool) -> Result<ImageInfo> {
    let inspect = match docker.inspect_image(name).await {
        Ok(inspect) => inspect,
        Err(e) if status_of(&e) == Some(404) && !pull_missing => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "image {name:?} (runtime.image) not found locally; pulling is disabled (DockerDriverConfig::pull_missing): build or load it on this Docker engine first"
                ),
            )
            .permanent());
        }
        Err(e) if status_of(&e) == Some(404) => {
            pull(docker, name).await?;
            docker
                .inspect_image(name)
                .await
                .map_err(|e| docker_error(&format!("inspecting image {name:?}"), e))?
        }
        Err(e) => return Err(docker_error(&format!("inspecting image {name:?}"), e)),
    };
    image_info(name.to_string(), &inspect)
}

async fn pull(docker: &Docker, name: &str) -> Result<()> {
    let last = name.rsplit('/').next().unwrap_or(name);
    // Without a tag the engine would pull every tag of the repository.
    let reference = if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    tracing::info!(image = %reference, "image not found locally; pulling it");
    let options = CreateImageOptionsBuilder::default()
        .from_image(&reference)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let failure = match item {
            Ok(info) => match info.error_detail.and_then(|d| d.message) {
                Some(message) => (None, message),
                None => continue,
            },
            Err(e) => (status_of(&e), message_of(&e)),
        };
        let message = format!(
            "image {name:?} (runtime.image) not found locally, and pulling it failed: {}. Build or load the image on this Docker engine, or check its name",
            failure.1
        );
        return Err(match failure.0 {
            Some(404) | Some(401) | Some(403) => {
                Error::new(ErrorKind::NotFound, message).permanent()
            }
            _ => Error::unavailable(message),
        });
    }
    Ok(())
}

async fn build(
    docker: &Docker,
    source: &BuildSource,
    tag: &str,
    labels: &HashMap<&str, &str>,
    tar: Vec<u8>,
    step_id: &str,
) -> Result<()> {
    tracing::info!(step = step_id, dir = %source.dir.display(), image = tag, "building the step's image");
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&source.dockerfile)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(body_full(tar.into())));
    let mut log = LogTail::new(BUILD_LOG_BYTES);
    while let Some(item) = stream.next().await {
        let message = match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    log.push(text.as_bytes());
                }
                match info.error_detail.and_then(|d| d.message) {
                    Some(message) => message,
                    None => continue,
                }
            }
            Err(e)
                if status_of(&e).is_none()
                    && !matches!(e, bollard::errors::Error::DockerStreamError { .. }) =>
            {
                return Err(docker_error("building the step's image", e));
            }
            Err(e) => message_of(&e),
        };
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "building the Docker image of step {step_id:?} from {} failed: {message}\n{}",
                source.dir.join(&source.dockerfile).display(),
                log.finish().trim_end()
            ),
        )
        .permanent());
    }
    Ok(())
}

fn image_info(reference: String, inspect: &ImageInspect) -> Result<ImageInfo> {
    let config = inspect.config.as_ref();
    let entrypoint = config
        .and_then(|c| c.entrypoint.clone())
        .unwrap_or_default();
    let cmd = config.and_then(|c| c.cmd.clone()).unwrap_or_default();
    let program = if entrypoint.is_empty() {
        cmd
    } else {
        entrypoint
    };
    if program.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "image {reference:?} has no ENTRYPOINT or CMD: add `ENTRYPOINT [\"/path/to/step\"]` to its Dockerfile"
            ),
        )
        .permanent());
    }
    Ok(ImageInfo { reference, program })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("reading the step's build context panicked").with_source(e))?
}

/// A Docker repository name component for `<function>-<step>`: lowercase letters, digits and
/// single dashes.
pub(crate) fn repository(function_id: &str, step_id: &str) -> String {
    let mut out = String::new();
    for c in format!("{function_id}-{step_id}").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(100);
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "step".into()
    } else {
        out.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_valid_docker_names() {
        assert_eq!(repository("prompt-deer", "step-1"), "prompt-deer-step-1");
        assert_eq!(repository("My_Fn", "Send SMS!"), "my-fn-send-sms");
        assert_eq!(repository("--", "__"), "step");
        assert!(repository(&"x".repeat(300), "s").len() <= 100);
    }

    #[test]
    fn the_program_is_the_entrypoint_else_the_cmd() {
        let inspect = |entrypoint: Option<Vec<&str>>, cmd: Option<Vec<&str>>| ImageInspect {
            config: Some(bollard::models::ImageConfig {
                entrypoint: entrypoint.map(|v| v.into_iter().map(String::from).collect()),
                cmd: cmd.map(|v| v.into_iter().map(String::from).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = image_info("a".into(), &inspect(Some(vec!["/e"]), Some(vec!["serve"]))).unwrap();
        assert_eq!(info.program, ["/e"]);
        let info = image_info("a".into(), &inspect(None, Some(vec!["/app", "x"]))).unwrap();
        assert_eq!(info.program, ["/app", "x"]);
        let err = image_info("a".into(), &inspect(Some(vec![]), None)).unwrap_err();
        assert!(err.to_string().contains("no ENTRYPOINT or CMD"), "{err}");
    }
}
