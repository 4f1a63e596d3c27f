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
use crate::catalog::{Catalog, FunctionVersion, Routing, RunCount};
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::function::{Function, FunctionBundle, load_function};

/// What this node last stored for a function from its files: the content hash.
pub(crate) type Synced = HashMap<String, String>;

/// Runs that ended by function id, then version hash: (ended, failed), not yet sent. Nested,
/// so that counting a run looks up by `&str` and allocates nothing once its version is known.
pub(crate) type Tally = HashMap<String, HashMap<String, (u64, u64)>>;

impl Engine {
    /// The version `version` (content hash) of function `id`: loaded on this node, or, when
    /// this node serves the function (has it in its files), fetched from the catalog, written
    /// under `versions_dir` and loaded (its steps are prepared at their first attempt). `None`
    /// when neither has it, or this node does not serve the function (a node that does will).
    pub async fn function_version(&self, id: &str, version: &str) -> Result<Option<Arc<Function>>> {
        if let Some(f) = self.inner.functions.get(id, version) {
            return Ok(Some(f));
        }
        Ok(self.fetch_version(id, version).await?.map(|(f, _)| f))
    }

    /// [`function_version`](Self::function_version) for a version not loaded here: the
    /// function, and whether this call fetched it.
    async fn fetch_version(
        &self,
        id: &str,
        version: &str,
    ) -> Result<Option<(Arc<Function>, bool)>> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(None);
        };
        let local_env = {
            let local = self.inner.local_functions.lock();
            match local.iter().find(|f| f.id == id) {
                Some(f) => f.env.clone(),
                // Not served here: its steps may need what only other nodes have (secrets in
                // their `.env`, a runtime).
                None => return Ok(None),
            }
        };
        // One fetch at a time: a burst of messages for one missing version fetches it once.
        let _fetching = self.inner.version_fetch.lock().await;
        if let Some(f) = self.inner.functions.get(id, version) {
            return Ok(Some((f, false)));
        }
        let Some(bytes) = catalog.function_bundle(id, version).await? else {
            return Ok(None);
        };
        let mut function = self.materialize(id, version, &bytes).await?;
        // `.env` files are not bundled (secrets stay on the nodes): this node's own.
        function.env = local_env;
        info!(
            function = id,
            version, "loaded a stored version from the catalog"
        );
        Ok(Some((self.inner.functions.insert_version(function), true)))
    }

    /// Writes a bundle under `versions_dir/<function id>/` and loads the function from
    /// there. A directory left there that no longer loads as the version (a step wrote into
    /// it, a cleaner took files) is written again.
    async fn materialize(&self, id: &str, version: &str, bytes: &[u8]) -> Result<Function> {
        let bundle = FunctionBundle::decode(bytes)?;
        if bundle.version() != version {
            return Err(Error::internal(format!(
                "the catalog's bundle of {id} version {version} hashes as {}",
                bundle.version()
            )));
        }
        let root = self.inner.config.versions_dir.join(safe_dir_name(id));
        let mut rewritten = false;
        loop {
            let (bundle, root) = (bundle.clone(), root.clone());
            let dir = tokio::task::spawn_blocking(move || bundle.materialize(&root))
                .await
                .map_err(|e| {
                    Error::internal("materializing a version panicked").with_source(e)
                })??;
            let drivers = self.inner.drivers.clone();
            let at = dir.clone();
            let function = tokio::task::spawn_blocking(move || load_function(&at, &drivers))
                .await
                .map_err(|e| Error::internal("loading a version panicked").with_source(e))?
                .map_err(|e| Error::invalid(format!("a stored version does not load: {e}")));
            match function {
                Ok(f) if f.id == id && f.version == version => return Ok(f),
                _ if !rewritten => {
                    warn!(function = id, version, dir = %dir.display(), "a written version changed on disk; writing it again");
                    let _ = std::fs::remove_dir_all(&dir);
                    rewritten = true;
                }
                Ok(f) => {
                    return Err(Error::internal(format!(
                        "the catalog's bundle of {id} version {version} loads as {} version {}",
                        f.id, f.version
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gets every step of `function` ready on its driver; a retryable failure is left for the
    /// step's first attempt, a permanent one fails.
    pub(super) async fn prepare_steps(&self, function: &Function) -> Result<()> {
        for step in &function.steps {
            let Some(driver) = self.inner.drivers.get(&step.runtime_type) else {
                continue;
            };
            let spec = function.step_spec(step);
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
    /// a `weir serve` node) the functions it serves. With a catalog, each is stored as a
    /// version (if its content is new) and becomes live when it is new, when the function
    /// had no live version, or when its files changed since this node last stored them;
    /// otherwise the catalog's routing stands (a version deployed since is not undone by a
    /// node restarting with older files). Then the routing is applied to them. Functions that
    /// cannot be stored (too large a bundle) run from this node's files, with a warning.
    pub async fn load_functions(&self, functions: Vec<Function>, source: &str) -> Result<()> {
        let Some(catalog) = self.inner.state.catalog() else {
            self.inner.functions.replace(functions);
            return Ok(());
        };
        let mut local = Vec::new();
        let mut unroutable = std::collections::HashSet::new();
        let mut first_error = None;
        for function in functions {
            match self.store_loaded(catalog.as_ref(), &function, source).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    warn!(function = %function.id, error = %e, "not stored as a version: it runs from this node's files only");
                    unroutable.insert(function.id.clone());
                }
                // The catalog unreachable: the function runs from the files (or its routed
                // version, once the poll reads it); it is stored at the next load.
                Err(e) => {
                    warn!(function = %function.id, error = %e, "not stored as a version now");
                    first_error.get_or_insert(e);
                }
            }
            local.push(Arc::new(function));
        }
        *self.inner.unroutable.lock() = unroutable;
        *self.inner.local_functions.lock() = local.clone();
        // The routed set is built before it is swapped in: no run starts on a file version
        // the routing overrides while versions are fetched. What can be routed is, whatever
        // fails.
        let applied = self.apply_routing_over(Some(local)).await;
        if applied.is_err() {
            // Not recorded as applied: the next poll applies the routing again.
            self.forget_catalog_generation();
        }
        match first_error {
            Some(e) => Err(e),
            None => applied,
        }
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
        self.learn_numbers([&stored]);
        let changed_here = self
            .inner
            .synced
            .lock()
            .get(&function.id)
            .is_some_and(|before| *before != stored.version);
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
                self.synced(&function.id, &stored.version);
                return Ok(());
            }
            let mut previous = routing
                .as_ref()
                .map(|r| r.previous.clone())
                .unwrap_or_default();
            if let Some(r) = &routing {
                super::deploy::remember(&mut previous, r.live);
            }
            previous.retain(|p| *p != stored.number);
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
                self.synced(&function.id, &stored.version);
                return Ok(());
            }
            // Another node changed the routing meanwhile: decide again on what it did.
        }
    }

    /// Records that this node's files of `id` are stored as `version` and routed as they
    /// should be.
    fn synced(&self, id: &str, version: &str) {
        self.inner
            .synced
            .lock()
            .insert(id.to_owned(), version.to_owned());
    }

    /// Makes the catalog's live and canary versions of the functions this node serves what
    /// it starts runs on (fetched from the catalog, and prepared, when this node has not
    /// loaded them). Functions it does not serve, or could not store, are left alone. Fails
    /// when a routed version cannot be had, after applying the others (the caller tries
    /// again).
    pub(crate) async fn apply_routing(&self) -> Result<()> {
        self.apply_routing_over(None).await
    }

    /// [`apply_routing`](Self::apply_routing) over `base` (the functions live when not
    /// routed; default: those live now).
    async fn apply_routing_over(&self, base: Option<Vec<Arc<Function>>>) -> Result<()> {
        let fallback = base.clone();
        let mut swapped = false;
        let applied = self.apply_routing_inner(base, &mut swapped).await;
        if let (false, Some(base)) = (swapped, fallback)
            && applied.is_err()
        {
            // Failed before anything was swapped in: the files' versions, meanwhile.
            self.inner.functions.replace_shared(base);
        }
        applied
    }

    async fn apply_routing_inner(
        &self,
        base: Option<Vec<Arc<Function>>>,
        swapped: &mut bool,
    ) -> Result<()> {
        let Some(catalog) = self.inner.state.catalog() else {
            if let Some(base) = base {
                self.inner.functions.replace_shared(base);
            }
            return Ok(());
        };
        let _applying = self.inner.routing_apply.lock().await;
        let served: std::collections::HashSet<String> = {
            let unroutable = self.inner.unroutable.lock();
            self.inner
                .local_functions
                .lock()
                .iter()
                .map(|f| f.id.clone())
                .filter(|id| !unroutable.contains(id))
                .collect()
        };
        let mut live: Vec<Arc<Function>> = Vec::new();
        let mut canaries = HashMap::new();
        let mut routed = std::collections::HashSet::new();
        let mut failed: Option<Error> = None;
        for (id, routing, _) in catalog.routings().await? {
            if !served.contains(&id) {
                continue;
            }
            let versions = catalog.function_versions(&id).await?;
            self.learn_numbers(&versions);
            match self
                .routed_version(&id, &versions, routing.live, true)
                .await
            {
                Ok(function) => {
                    routed.insert(id.clone());
                    live.push(function);
                }
                Err(e) => {
                    warn!(function = %id, number = routing.live, error = %e, "cannot load the live version");
                    failed = Some(e);
                    continue;
                }
            }
            if let Some(canary) = routing.canary {
                // Not prepared: preparing deploys code for some runtimes (a Lambda's, under one
                // name per step), which would put the canary's code under every run.
                match self
                    .routed_version(&id, &versions, canary.number, false)
                    .await
                {
                    Ok(function) => {
                        canaries.insert(
                            id,
                            super::CanaryVersion {
                                function,
                                percent: canary.percent,
                                sticky_user: canary.sticky_user,
                            },
                        );
                    }
                    Err(e) => {
                        warn!(function = %id, number = canary.number, error = %e, "cannot load the canary");
                        failed = Some(e);
                    }
                }
            }
        }
        if !routed.is_empty() || base.is_some() {
            let base = base.unwrap_or_else(|| self.inner.functions.list());
            live.extend(base.into_iter().filter(|f| !routed.contains(&f.id)));
            self.inner.functions.replace_routed(live, canaries);
            *swapped = true;
        }
        failed.map_or(Ok(()), Err)
    }

    /// Version `number` of function `id` (of its stored `versions`), loaded, or fetched (and
    /// then its steps prepared when `prepare`: not for a canary, since preparing deploys code
    /// for some runtimes, a Lambda's under one name per step).
    async fn routed_version(
        &self,
        id: &str,
        versions: &[FunctionVersion],
        number: u64,
        prepare: bool,
    ) -> Result<Arc<Function>> {
        let stored = versions
            .iter()
            .find(|v| v.number == number)
            .ok_or_else(|| {
                Error::internal(format!(
                    "function {id}: routed version {number} is not stored"
                ))
            })?;
        if let Some(f) = self.inner.functions.get(id, &stored.version) {
            return Ok(f);
        }
        let (function, fetched) =
            self.fetch_version(id, &stored.version)
                .await?
                .ok_or_else(|| {
                    Error::internal(format!(
                        "function {id}: the bundle of routed version {number} is not stored"
                    ))
                })?;
        if fetched && prepare {
            self.prepare_steps(&function).await?;
        }
        Ok(function)
    }
}

impl Engine {
    /// The runs function `function_id` started for event `event_id`, one per version (stored
    /// in the catalog, or loaded here) that did: a run's id derives from its function, version
    /// and event, so each is one lookup.
    pub async fn runs_of_event(
        &self,
        function_id: &str,
        event_id: &str,
    ) -> Result<Vec<crate::run::Run>> {
        let mut hashes: Vec<String> = match self.inner.state.catalog() {
            Some(catalog) => catalog
                .function_versions(function_id)
                .await?
                .into_iter()
                .map(|v| v.version)
                .collect(),
            None => Vec::new(),
        };
        hashes.extend(self.inner.functions.loaded_versions(function_id));
        hashes.sort();
        hashes.dedup();
        let mut runs = Vec::new();
        for hash in hashes {
            let key = super::router::run_key_of(function_id, &hash, event_id);
            let id = crate::run::Run::id_for_key(&key, event_id);
            if let Some(run) = self.inner.state.get_run(&id).await? {
                runs.push(run);
            }
        }
        runs.sort_by_key(|r| r.created_at);
        Ok(runs)
    }

    /// The encoded bundle of version `number` of function `id`, if stored.
    pub async fn version_bundle(&self, id: &str, number: u64) -> Result<Option<bytes::Bytes>> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(None);
        };
        let versions = catalog.function_versions(id).await?;
        let Some(v) = versions.iter().find(|v| v.number == number) else {
            return Ok(None);
        };
        catalog.function_bundle(id, &v.version).await
    }

    /// The number of version `version` (content hash) of function `id`, when known here (a
    /// version this node stored or routed).
    pub(crate) fn version_number(&self, id: &str, version: &str) -> Option<u64> {
        self.inner.numbers.read().get(id)?.get(version).copied()
    }

    /// Remembers the numbers of stored versions.
    pub(super) fn learn_numbers<'a>(
        &self,
        versions: impl IntoIterator<Item = &'a FunctionVersion>,
    ) {
        let mut numbers = self.inner.numbers.write();
        for v in versions {
            numbers
                .entry(v.function_id.clone())
                .or_default()
                .insert(v.version.clone(), v.number);
        }
    }

    /// Counts a run of `function_id` version `version` that ended (`failed` or completed),
    /// for the version's lifetime counts (sent to the catalog every second).
    pub(crate) fn tally_run(&self, function_id: &str, version: &str, failed: bool) {
        if self.inner.state.catalog().is_none() {
            return;
        }
        let mut tally = self.inner.tally.lock();
        let versions = match tally.get_mut(function_id) {
            Some(versions) => versions,
            None => tally.entry(function_id.to_owned()).or_default(),
        };
        let entry = match versions.get_mut(version) {
            Some(entry) => entry,
            None => versions.entry(version.to_owned()).or_default(),
        };
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }

    /// Sends the counts tallied since the last call to the catalog; on failure they are
    /// kept for the next.
    pub(crate) async fn flush_tally(&self) -> Result<()> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(());
        };
        let taken = std::mem::take(&mut *self.inner.tally.lock());
        if taken.is_empty() {
            return Ok(());
        }
        let counts: Vec<RunCount> = taken
            .into_iter()
            .flat_map(|(function_id, versions)| {
                versions
                    .into_iter()
                    .map(move |(version, (runs, failed))| RunCount {
                        function_id: function_id.clone(),
                        version,
                        runs,
                        failed,
                    })
            })
            .collect();
        if let Err(e) = catalog.add_run_counts(&counts).await {
            let mut tally = self.inner.tally.lock();
            for c in counts {
                let entry = tally
                    .entry(c.function_id)
                    .or_default()
                    .entry(c.version)
                    .or_default();
                entry.0 += c.runs;
                entry.1 += c.failed;
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Runs read to estimate each version's median duration.
const DURATION_SAMPLE: usize = 1_000;

/// What `weir versions` shows of one version of a function.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VersionReport {
    /// Its number.
    pub version: u64,
    /// `live`, `canary` or `retired` (every other stored version).
    pub status: &'static str,
    /// Its content hash (runs' `function_version`).
    pub hash: String,
    /// Runs of it that ended, over its lifetime.
    pub runs: u64,
    /// Of them, those that failed.
    pub failed: u64,
    /// `failed / runs` (0 without runs).
    pub failure_rate: f64,
    /// The median duration of its recent ended runs (among the function's newest 1,000), in
    /// milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<i64>,
    /// The share of new runs it takes, for a canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// When it was stored (epoch ms).
    pub stored_at: i64,
    /// Who stored it.
    pub source: String,
}

impl Engine {
    /// Every stored version of function `id`, by number, with its status and counts; the
    /// routing's note on its last change. `NotFound` when the function has no stored version.
    pub async fn version_report(&self, id: &str) -> Result<(Vec<VersionReport>, Option<String>)> {
        let catalog = self.inner.state.catalog().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "this state store keeps no catalog: versions are not stored",
            )
        })?;
        let stored = catalog.function_versions(id).await?;
        if stored.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("function {id:?} has no stored version"),
            ));
        }
        let counts = catalog.run_counts(id).await?;
        let routing = catalog
            .routings()
            .await?
            .into_iter()
            .find(|(f, _, _)| f == id)
            .map(|(_, r, _)| r);
        let recent = self
            .inner
            .state
            .list_runs(&crate::run::RunFilter {
                function_id: Some(id.to_owned()),
                limit: Some(DURATION_SAMPLE),
                ..Default::default()
            })
            .await?;
        let reports = stored
            .into_iter()
            .map(|v| {
                let (runs, failed) = counts
                    .iter()
                    .find(|c| c.version == v.version)
                    .map_or((0, 0), |c| (c.runs, c.failed));
                let canary = routing
                    .as_ref()
                    .and_then(|r| r.canary)
                    .filter(|c| c.number == v.number);
                let status = match &routing {
                    Some(r) if r.live == v.number => "live",
                    _ if canary.is_some() => "canary",
                    _ => "retired",
                };
                let mut durations: Vec<i64> = recent
                    .iter()
                    .filter(|r| r.function_version == v.version)
                    .filter_map(|r| Some(r.ended_at? - r.created_at))
                    .collect();
                durations.sort_unstable();
                VersionReport {
                    version: v.number,
                    status,
                    runs,
                    failed,
                    failure_rate: if runs == 0 {
                        0.0
                    } else {
                        failed as f64 / runs as f64
                    },
                    p50_ms: durations.get(durations.len() / 2).copied(),
                    percent: canary.map(|c| c.percent),
                    hash: v.version,
                    stored_at: v.stored_at,
                    source: v.source,
                }
            })
            .collect();
        Ok((reports, routing.map(|r| r.note)))
    }
}

/// Sends the tallied run counts to the catalog every second (and once more when stopped),
/// then rolls back the canaries that fail too often ([`Engine::judge_canaries`]).
pub(crate) async fn tally_loop(engine: Engine, mut stop: super::StopSignal) {
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            _ = super::stopped(&mut stop) => true,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
        };
        let flushed = engine.flush_tally().await;
        if flushed.is_ok()
            && let Err(e) = engine
                .judge_canaries(engine.inner.config.canary_policy)
                .await
        {
            warn!(error = %e, "cannot judge the canaries");
        }
        match flushed {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "cannot add run counts to the catalog; kept for the next try");
            }
            Err(_) => {}
        }
        if stopping {
            return;
        }
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
