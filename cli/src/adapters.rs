//! The adapters a server runs (`--adapter URL`): opened at start, run beside the engine,
//! stopped at shutdown.

use std::time::Duration;

use tokio::task::JoinSet;
use weir_core::adapter::{Shutdown, ShutdownTrigger};
use weir_core::engine::Engine;
use weir_core::registry::Registry;
use weir_core::{Error, Result};

/// Adapters running beside an engine.
#[derive(Debug)]
pub struct RunningAdapters {
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
}

impl RunningAdapters {
    /// Opens the adapter of every URL (all before any runs: a bad URL, a port in use or an
    /// unreachable service fails here), then runs each with `engine`.
    pub async fn start(registry: &Registry, engine: &Engine, urls: &[String]) -> Result<Self> {
        let mut opened = Vec::with_capacity(urls.len());
        for url in urls {
            let adapter = registry.open_adapter(url).await.map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("adapter {}: {e}", weir_core::redact::redact_url(url)),
                )
            })?;
            opened.push(adapter);
        }
        let (trigger, shutdown) = Shutdown::new();
        let (report, failed) = tokio::sync::watch::channel(None);
        let mut tasks = JoinSet::new();
        for adapter in opened {
            let (engine, shutdown, report) = (engine.clone(), shutdown.clone(), report.clone());
            tasks.spawn(async move {
                let result = adapter.run(engine, shutdown.clone()).await;
                if shutdown.is_raised() {
                    if let Err(e) = result {
                        tracing::warn!(adapter = adapter.name(), error = %e, "adapter stopped with an error");
                    }
                    return;
                }
                let why = match result {
                    Ok(()) => format!("adapter {} stopped before shutdown", adapter.name()),
                    Err(e) => format!("adapter {} failed: {e}", adapter.name()),
                };
                tracing::error!("{why}");
                report.send_replace(Some(why));
            });
        }
        Ok(RunningAdapters {
            trigger,
            tasks,
            failed,
        })
    }

    /// Resolves with what happened when an adapter stops before shutdown (a failure of the
    /// server); never resolves while they all run. Independent of `self`.
    pub fn failure(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failed = self.failed.clone();
        async move {
            let why = match failed.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                Err(_) => None,
            };
            match why {
                Some(why) => why,
                // Every adapter task is gone without a failure: nothing will fail now.
                None => std::future::pending().await,
            }
        }
    }

    /// Whether an adapter has failed, and how.
    pub fn failed(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Raises shutdown and waits up to `grace` for every adapter to return; returns whether
    /// they all did (the rest are aborted).
    pub async fn stop(mut self, grace: Duration) -> bool {
        self.trigger.raise();
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        drained
    }
}
