//! Function versions in the catalog (`crate::catalog`): what a node loads from its files is
//! stored as a numbered version with its bundle of files; the catalog's routing says which
//! version is live; and a run pinned to a version this node has not loaded is finished from
//! the version's bundle, fetched from the catalog, so any node can finish any run.
//!
//! Without a catalog (a third-party state store that keeps none) a node knows only the
//! versions it loaded itself, as before.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::Engine;
use crate::catalog::{Catalog, FunctionVersion, Routing};
use crate::driver::StepSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::function::{Function, FunctionBundle, load_function};

/// What this node last stored for a function from its files: the content hash.
pub(crate) type Synced = HashMap<String, String>;

impl Engine {
    /// The version `version` (content hash) of function `id`: loaded on this node, or
    /// fetched from the catalog, written under `versions_dir`, loaded and its steps prepared.
    /// `None` when neither has it.
    pub async fn function_version(&self, id: &str, version: &str) -> Result<Option<Arc<Function>>> {
        if let Some(f) = self.inner.functions.get(id, version) {
            return Ok(Some(f));
        }
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(None);
        };
        // One fetch at a time: a burst of messages for one missing version fetches it once.
        let _fetching = self.inner.version_fetch.lock().await;
        if let Some(f) = self.inner.functions.get(id, version) {
            return Ok(Some(f));
        }
        let Some(bytes) = catalog.function_bundle(id, version).await? else {
            return Ok(None);
        };
        let function = self.materialize(id, &bytes).await?;
        if function.id != id || function.version != version {
            return Err(Error::internal(format!(
                "the catalog's bundle of {id} version {version} loads as {} version {}",
                function.id, function.version
            )));
        }
        info!(
            function = id,
            version, "loaded a stored version from the catalog"
        );
        Ok(Some(self.inner.functions.insert_version(function)))
    }

    /// Writes a bundle under `versions_dir/<function id>/`, loads the function from there
    /// and prepares its steps (an image built, a module compiled).
    async fn materialize(&self, id: &str, bytes: &[u8]) -> Result<Function> {
        let bundle = FunctionBundle::decode(bytes)?;
        let root = self.inner.config.versions_dir.join(safe_dir_name(id));
        let dir = tokio::task::spawn_blocking(move || bundle.materialize(&root))
            .await
            .map_err(|e| Error::internal("materializing a version panicked").with_source(e))??;
        let drivers = self.inner.drivers.clone();
        let mut function = tokio::task::spawn_blocking(move || load_function(&dir, &drivers))
            .await
            .map_err(|e| Error::internal("loading a version panicked").with_source(e))?
            .map_err(|e| Error::invalid(format!("a stored version does not load: {e}")))?;
        // `.env` files are not bundled (secrets stay on the nodes): this node's own, when it
        // has the function on disk.
        if let Some(local) = self
            .inner
            .local_functions
            .lock()
            .iter()
            .find(|f| f.id == function.id)
        {
            function.env = local.env.clone();
        }
        self.prepare_steps(&function).await?;
        Ok(function)
    }

    /// Gets every step of `function` ready on its driver; a retryable failure is left for the
    /// step's first attempt, a permanent one fails.
    async fn prepare_steps(&self, function: &Function) -> Result<()> {
        for step in &function.steps {
            let Some(driver) = self.inner.drivers.get(&step.runtime_type) else {
                continue;
            };
            let spec = StepSpec {
                function_id: function.id.clone(),
                function_dir: function.dir.clone(),
                step_id: step.id.clone(),
                path: step.path.clone(),
                runtime: step.runtime.clone(),
                env: function.env.clone(),
                timeout: step.timeout,
            };
            match driver.prepare(&spec).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    warn!(function = %function.id, step = %step.id, error = %e, "step not prepared now; it will be at its first attempt");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the functions this node loaded from its files (`source` names it: `weir dev`,
    /// a `weir serve` node) what it runs. With a catalog, each is stored as a version (if
    /// its content is new) and becomes live when it is new, when the function had no live
    /// version, or when its files changed since this node last stored them; otherwise the
    /// catalog's routing stands (a version deployed since is not undone by a node
    /// restarting with older files). Then the routing is applied. Functions that cannot be
    /// stored (too large a bundle) run from this node's files, with a warning.
    pub async fn load_functions(&self, functions: Vec<Function>, source: &str) -> Result<()> {
        let Some(catalog) = self.inner.state.catalog() else {
            self.inner.functions.replace(functions);
            return Ok(());
        };
        let mut local = Vec::new();
        for function in functions {
            match self.store_loaded(catalog.as_ref(), &function, source).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    warn!(function = %function.id, error = %e, "not stored as a version: it runs from this node's files only");
                }
                Err(e) => return Err(e),
            }
            local.push(Arc::new(function));
        }
        self.inner.functions.replace_shared(local.clone());
        *self.inner.local_functions.lock() = local;
        self.apply_routing().await
    }

    /// Stores one function loaded from files, and routes to it when it should be live (see
    /// [`load_functions`](Self::load_functions)).
    async fn store_loaded(
        &self,
        catalog: &dyn Catalog,
        function: &Function,
        source: &str,
    ) -> Result<()> {
        let bundle = {
            let function = function.clone();
            tokio::task::spawn_blocking(move || FunctionBundle::of(&function))
                .await
                .map_err(|e| Error::internal("bundling panicked").with_source(e))??
        };
        let (stored, new) = catalog
            .put_function_version(
                &FunctionVersion {
                    function_id: function.id.clone(),
                    number: 0,
                    version: bundle.version(),
                    stored_at: now_ms(),
                    source: source.to_owned(),
                },
                bundle.encode().into(),
            )
            .await?;
        let changed_here = {
            let mut synced = self.inner.synced.lock();
            let before = synced.insert(function.id.clone(), stored.version.clone());
            before.is_some_and(|b| b != stored.version)
        };
        loop {
            let current = catalog
                .routings()
                .await?
                .into_iter()
                .find(|(id, _, _)| *id == function.id);
            let (routing, revision) = match current {
                None => (None, 0),
                Some((_, routing, revision)) => (Some(routing), revision),
            };
            let make_live = new || changed_here || routing.is_none();
            if !make_live || routing.as_ref().is_some_and(|r| r.live == stored.number) {
                return Ok(());
            }
            let mut previous = routing
                .as_ref()
                .map(|r| r.previous.clone())
                .unwrap_or_default();
            if let Some(r) = &routing {
                previous.push(r.live);
            }
            let next = Routing {
                live: stored.number,
                canary: None,
                previous,
                note: format!("version {} loaded by {source}", stored.number),
                changed_at: now_ms(),
            };
            if catalog
                .set_routing(&function.id, &next, revision)
                .await?
                .is_some()
            {
                info!(function = %function.id, number = stored.number, "version live");
                return Ok(());
            }
            // Another node changed the routing meanwhile: decide again on what it did.
        }
    }

    /// Makes the catalog's live versions what this node runs: each routed function's live
    /// version (fetched from the catalog when this node has not loaded it) replaces what is
    /// live for it here; functions without a routing stay as they are.
    pub(crate) async fn apply_routing(&self) -> Result<()> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(());
        };
        let _applying = self.inner.routing_apply.lock().await;
        let mut live: Vec<Arc<Function>> = Vec::new();
        let mut routed = std::collections::HashSet::new();
        for (id, routing, _) in catalog.routings().await? {
            let versions = catalog.function_versions(&id).await?;
            let Some(hash) = versions
                .iter()
                .find(|v| v.number == routing.live)
                .map(|v| v.version.clone())
            else {
                warn!(function = %id, number = routing.live, "the live version is not stored");
                continue;
            };
            match self.function_version(&id, &hash).await {
                Ok(Some(f)) => {
                    routed.insert(id);
                    live.push(f);
                }
                Ok(None) => {
                    warn!(function = %id, number = routing.live, "the live version's bundle is not stored");
                }
                Err(e) => {
                    warn!(function = %id, number = routing.live, error = %e, "cannot load the live version");
                }
            }
        }
        if routed.is_empty() {
            return Ok(());
        }
        live.extend(
            self.inner
                .functions
                .list()
                .into_iter()
                .filter(|f| !routed.contains(&f.id)),
        );
        self.inner.functions.replace_shared(live);
        Ok(())
    }
}

/// A directory name for a function id (ids are slugs; anything else is replaced).
fn safe_dir_name(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        format!("_{name}")
    } else {
        name
    }
}
