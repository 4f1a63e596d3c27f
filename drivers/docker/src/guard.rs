//! Removes an attempt's container on every way out: awaited on the normal paths, spawned from
//! `Drop` when the attempt is cancelled (its future dropped) or panics.

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;

use crate::client::status_of;

/// Owns a container until it is removed.
pub(crate) struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    /// Guards the container `id` (its id or name; it may not exist yet).
    pub fn new(docker: Docker, id: String) -> Self {
        ContainerGuard {
            docker,
            id: Some(id),
        }
    }

    /// Kills (if running) and removes the container, and waits for it to be gone.
    pub async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.docker, &id).await;
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { remove(&docker, &id).await });
            }
            // No runtime to remove it on: the next driver start sweeps it as an orphan.
            Err(_) => tracing::warn!(container = %id, "could not remove a step container"),
        }
    }
}

async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if status_of(&e) == Some(404) => {}
        // Removal already in progress (e.g. a concurrent orphan sweep).
        Err(e) if status_of(&e) == Some(409) => {}
        Err(e) => tracing::warn!(container = %id, error = %e,
            "could not remove a step container; the next driver start removes it"),
    }
}
