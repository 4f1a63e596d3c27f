//! The adapters a server runs (`--adapter URL`): opened before the server starts, run beside
//! the engine, stopped at shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use weir_core::Result;
use weir_core::adapter::{Adapter, Shutdown, ShutdownTrigger};
use weir_core::engine::Engine;
use weir_core::redact::redact_url;
use weir_core::registry::Registry;

/// The `--adapter` flag of `weir serve` and `weir dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdapterArgs {
    /// An adapter to run, by URL (repeatable; WEIR_ADAPTERS is space-separated, as URLs may
    /// hold commas): another queue's jobs become events. `weir --help` lists the adapters of
    /// this build.
    #[arg(
        long = "adapter",
        env = "WEIR_ADAPTERS",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    pub adapter: Vec<String>,
}

impl AdapterArgs {
    /// The URLs given, without the empty one an empty variable gives.
    pub fn urls(&self) -> Vec<String> {
        self.adapter
            .iter()
            .filter(|u| !u.is_empty())
            .cloned()
            .collect()
    }
}

/// Adapters opened from their URLs, not yet running.
pub struct OpenAdapters {
    adapters: Vec<Arc<dyn Adapter>>,
}

impl std::fmt::Debug for OpenAdapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.adapters.iter().map(|a| a.name()))
            .finish()
    }
}

/// Adapters running beside an engine.
#[derive(Debug)]
pub struct RunningAdapters {
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
}

impl OpenAdapters {
    /// Opens the adapter of every URL: a bad URL, a port in use or an unreachable source fails
    /// here, before anything runs. The error names the adapter's URL, redacted.
    pub async fn open(registry: &Registry, urls: &[String]) -> Result<Self> {
        let mut adapters = Vec::with_capacity(urls.len());
        for url in urls {
            let shown = if url.contains("://") {
                redact_url(url)
            } else {
                "(not a URL)".to_string()
            };
            let adapter = registry
                .open_adapter(url)
                .await
                .map_err(|e| e.with_context("adapter", shown))?;
            adapters.push(adapter);
        }
        Ok(OpenAdapters { adapters })
    }

    /// Runs each adapter with `engine` until [`RunningAdapters::stop`].
    pub fn run(self, engine: &Engine) -> RunningAdapters {
        let (trigger, shutdown) = Shutdown::new();
        let (report, failed) = tokio::sync::watch::channel(None);
        let mut tasks = JoinSet::new();
        for adapter in self.adapters {
            let (engine, shutdown, report) = (engine.clone(), shutdown.clone(), report.clone());
            tasks.spawn(async move {
                let name = adapter.name().to_string();
                let result = AssertUnwindSafe(adapter.run(engine, shutdown.clone()))
                    .catch_unwind()
                    .await;
                if shutdown.is_raised() {
                    if let Ok(Err(e)) = result {
                        tracing::warn!(adapter = name, error = %e, "adapter stopped with an error");
                    }
                    return;
                }
                let why = match result {
                    Ok(Ok(())) => format!("adapter {name} stopped before shutdown"),
                    Ok(Err(e)) => format!("adapter {name} failed: {e}"),
                    Err(_) => format!("adapter {name} panicked"),
                };
                tracing::error!("{why}");
                // The first failure is the one reported.
                report.send_if_modified(|first| {
                    first.is_none() && {
                        *first = Some(why);
                        true
                    }
                });
            });
        }
        RunningAdapters {
            trigger,
            tasks,
            failed,
        }
    }
}

impl RunningAdapters {
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
