//! Deploying versions and changing which one is live (docs/deploying.md): `weir deploy` with
//! or without a canary, `weir promote`, `weir rollback`, and the automatic rollback of a
//! canary that fails more than its live version.
//!
//! Every change is a compare-and-set of the function's routing in the catalog, tried again
//! on a concurrent change; the node making it applies it before answering, the others within
//! `catalog_poll`.

use serde::Serialize;
use tracing::{info, warn};

use super::Engine;
use crate::catalog::{Canary, Catalog, CountBaseline, FunctionVersion, Routing};
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::function::{FunctionBundle, load_function};

/// How to deploy ([`Engine::deploy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeployOptions {
    /// Route this percentage of new runs to the new versions as canaries (0: a blue-green
    /// standby that takes none until promoted); `None`: make them live.
    pub canary: Option<u8>,
    /// Route a canary by the event's user key rather than by the event.
    pub sticky_user: bool,
    /// Who deploys, as the versions record it.
    pub source: String,
}

/// What a deploy did to one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployed {
    /// The function.
    pub function_id: String,
    /// The version's number.
    pub version: u64,
    /// Whether the version was new (else its files were stored before).
    pub new: bool,
    /// `live`, `canary`, or `unchanged` (it was live already).
    pub status: &'static str,
    /// Whether the node that took the deploy serves the function (has it in its files): a
    /// node runs only the functions it serves, so a function no node has runs nowhere.
    pub served: bool,
}

/// When a canary is rolled back automatically.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryPolicy {
    /// Canary runs that must have ended before it is judged.
    pub min_runs: u64,
    /// By how much (0 to 1) its failure rate may exceed the live version's.
    pub margin: f64,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            min_runs: 20,
            margin: 0.20,
        }
    }
}

fn no_catalog() -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "this state store keeps no catalog: versions cannot be deployed",
    )
}

impl Engine {
    /// Stores each bundle as a version of its function (checked first: each must load, and
    /// for a canary have a live version) and routes to it: live, or as a canary. This node
    /// applies the routing before answering (its poll tries again if that fails); other
    /// nodes follow within `catalog_poll`.
    pub async fn deploy(
        &self,
        bundles: Vec<FunctionBundle>,
        options: &DeployOptions,
    ) -> Result<Vec<Deployed>> {
        let catalog = self.inner.state.catalog().ok_or_else(no_catalog)?;
        if options.canary.is_some_and(|p| p > 100) {
            return Err(Error::invalid("canary: a percentage from 0 to 100"));
        }
        // Every bundle is checked before any is stored: a deploy of several functions with
        // one bad one changes nothing.
        let mut checked = Vec::with_capacity(bundles.len());
        for bundle in bundles {
            let function = self.check_bundle(&bundle).await?;
            checked.push((function.id.clone(), bundle));
        }
        if options.canary.is_some() {
            let routed: Vec<String> = catalog
                .routings()
                .await?
                .into_iter()
                .map(|(id, _, _)| id)
                .collect();
            if let Some((id, _)) = checked.iter().find(|(id, _)| !routed.contains(id)) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "function {id:?} has no live version for a canary to run beside: deploy it without --canary first (nothing was deployed)"
                    ),
                ));
            }
        }
        let mut done = Vec::with_capacity(checked.len());
        for (id, bundle) in checked {
            let (stored, new) = catalog
                .put_function_version(
                    &FunctionVersion {
                        function_id: id.clone(),
                        number: 0,
                        version: bundle.version(),
                        stored_at: now_ms(),
                        source: options.source.clone(),
                    },
                    bundle.encode().into(),
                )
                .await?;
            let number = stored.number;
            self.learn_numbers([&stored]);
            let counts = catalog.run_counts(&id).await?;
            let mut status = "live";
            self.change_routing(catalog.as_ref(), &id, |current, versions| {
                let count_of = |n: u64| {
                    let hash = versions.iter().find(|v| v.number == n).map(|v| &v.version);
                    counts
                        .iter()
                        .find(|c| Some(&c.version) == hash)
                        .map_or((0, 0), |c| (c.runs, c.failed))
                };
                let routing = match (current, options.canary) {
                    (Some(r), _) if r.live == number => {
                        status = "unchanged";
                        return Ok(None);
                    }
                    (None, Some(_)) => {
                        return Err(Error::new(
                            ErrorKind::AlreadyExists,
                            format!(
                                "function {id:?} has no live version for a canary to run beside: deploy it without --canary first"
                            ),
                        ));
                    }
                    (Some(r), Some(percent)) => {
                        status = "canary";
                        let ((canary_runs, canary_failed), (live_runs, live_failed)) =
                            (count_of(number), count_of(r.live));
                        // The same canary again (a new share): its runs so far still count.
                        let kept = r.canary.filter(|c| c.number == number).map(|c| c.baseline);
                        Routing {
                            canary: Some(Canary {
                                number,
                                percent,
                                sticky_user: options.sticky_user,
                                baseline: kept.unwrap_or(CountBaseline {
                                    canary_runs,
                                    canary_failed,
                                    live_runs,
                                    live_failed,
                                }),
                            }),
                            note: format!("version {number} deployed as a canary at {percent}%"),
                            changed_at: now_ms(),
                            ..r.clone()
                        }
                    }
                    (current, None) => {
                        status = "live";
                        let mut previous = current.map(|r| r.previous.clone()).unwrap_or_default();
                        if let Some(r) = current {
                            remember(&mut previous, r.live);
                        }
                        previous.retain(|p| *p != number);
                        Routing {
                            live: number,
                            canary: None,
                            previous,
                            note: format!("version {number} deployed"),
                            changed_at: now_ms(),
                        }
                    }
                };
                Ok(Some(routing))
            })
            .await?;
            info!(function = %id, version = number, status, "deployed");
            done.push(Deployed {
                function_id: id,
                version: number,
                new,
                status,
                served: false,
            });
        }
        // Routed: a failed read now is the poll's to catch up on, not the deploy's error.
        if let Err(e) = self.refresh_catalog().await {
            warn!(error = %e, "deployed; applying the routing here failed (the next poll tries again)");
        }
        let local = self.inner.local_functions.lock();
        for d in &mut done {
            d.served = local.iter().any(|f| f.id == d.function_id);
        }
        Ok(done)
    }

    /// Loads a bundle from a scratch copy: the deploy's check. Its steps are not prepared
    /// here: preparing deploys code for some runtimes (a Lambda's, under one name per step),
    /// which must not happen before the version is routed.
    async fn check_bundle(&self, bundle: &FunctionBundle) -> Result<crate::function::Function> {
        let scratch = self.inner.config.versions_dir.join(".deploys");
        let bundle = bundle.clone();
        let dir = tokio::task::spawn_blocking(move || bundle.materialize(&scratch))
            .await
            .map_err(|e| Error::internal("materializing panicked").with_source(e))??;
        let drivers = self.inner.drivers.clone();
        let function = tokio::task::spawn_blocking(move || load_function(&dir, &drivers))
            .await
            .map_err(|e| Error::internal("loading panicked").with_source(e))?
            .map_err(|e| Error::invalid(format!("{e}")))?;
        Ok(function)
    }

    /// Makes function `id`'s canary its live version (the live one goes to `previous`).
    pub async fn promote(&self, id: &str) -> Result<Routing> {
        let catalog = self.inner.state.catalog().ok_or_else(no_catalog)?;
        let routing = self
            .change_routing(catalog.as_ref(), id, |current, _| {
                let r = current.ok_or_else(|| not_deployed(id))?;
                let canary = r.canary.ok_or_else(|| {
                    Error::new(
                        ErrorKind::AlreadyExists,
                        format!("function {id:?} has no canary to promote"),
                    )
                })?;
                let mut previous = r.previous.clone();
                remember(&mut previous, r.live);
                previous.retain(|p| *p != canary.number);
                Ok(Some(Routing {
                    live: canary.number,
                    canary: None,
                    previous,
                    note: format!("version {} promoted", canary.number),
                    changed_at: now_ms(),
                }))
            })
            .await?;
        self.refresh_catalog().await?;
        Ok(routing)
    }

    /// Function `id`'s previously live version (or version `to`) live again, and any canary
    /// retired. `note` says why (a person's rollback, or the automatic one's reason).
    pub async fn rollback(
        &self,
        id: &str,
        to: Option<u64>,
        note: Option<String>,
    ) -> Result<Routing> {
        let catalog = self.inner.state.catalog().ok_or_else(no_catalog)?;
        let routing = self
            .change_routing(catalog.as_ref(), id, |current, versions| {
                let r = current.ok_or_else(|| not_deployed(id))?;
                let mut previous = r.previous.clone();
                let live = match to {
                    Some(n) if !versions.iter().any(|v| v.number == n) => {
                        return Err(Error::invalid(format!(
                            "function {id:?} has no version {n} (stored: 1 to {})",
                            versions.len()
                        )));
                    }
                    Some(n) => {
                        // The version rolled back from stays in the history.
                        remember(&mut previous, r.live);
                        previous.retain(|p| *p != n);
                        n
                    }
                    None => previous.pop().ok_or_else(|| {
                        Error::new(
                            ErrorKind::AlreadyExists,
                            format!(
                                "function {id:?} has had no other live version: nothing to roll back to"
                            ),
                        )
                    })?,
                };
                Ok(Some(Routing {
                    live,
                    canary: None,
                    previous,
                    note: note
                        .clone()
                        .unwrap_or_else(|| format!("rolled back to version {live}")),
                    changed_at: now_ms(),
                }))
            })
            .await?;
        self.refresh_catalog().await?;
        Ok(routing)
    }

    /// Sets function `id`'s routing to what `change` makes of the current one and the stored
    /// versions (`None`: no change), compare-and-set, deciding again on a concurrent change.
    async fn change_routing(
        &self,
        catalog: &dyn Catalog,
        id: &str,
        mut change: impl FnMut(Option<&Routing>, &[FunctionVersion]) -> Result<Option<Routing>>,
    ) -> Result<Routing> {
        loop {
            let versions = catalog.function_versions(id).await?;
            if versions.is_empty() {
                return Err(not_deployed(id));
            }
            let current = catalog
                .routings()
                .await?
                .into_iter()
                .find(|(f, _, _)| f == id);
            let (routing, revision) = match &current {
                Some((_, r, revision)) => (Some(r), *revision),
                None => (None, 0),
            };
            let Some(next) = change(routing, &versions)? else {
                return routing.cloned().ok_or_else(|| not_deployed(id));
            };
            if catalog.set_routing(id, &next, revision).await?.is_some() {
                return Ok(next);
            }
        }
    }

    /// Rolls back every canary whose failure rate exceeds its live version's by more than
    /// the policy's margin over at least its minimum runs. Answers the functions rolled back.
    pub async fn judge_canaries(&self, policy: CanaryPolicy) -> Result<Vec<String>> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(Vec::new());
        };
        let mut rolled_back = Vec::new();
        for (id, routing, _) in catalog.routings().await? {
            let Some(canary) = routing.canary else {
                continue;
            };
            let versions = catalog.function_versions(&id).await?;
            let hash_of = |n: u64| versions.iter().find(|v| v.number == n).map(|v| &v.version);
            let counts = catalog.run_counts(&id).await?;
            let count_of = |n: u64| {
                hash_of(n)
                    .and_then(|h| counts.iter().find(|c| c.version == *h))
                    .map_or((0, 0), |c| (c.runs, c.failed))
            };
            // Since the canary started: a version deployed again carries its old counts, and
            // the live version's history is not this canary's comparison.
            let base = canary.baseline;
            let (canary_runs, canary_failed) = count_of(canary.number);
            let (canary_runs, canary_failed) = (
                canary_runs.saturating_sub(base.canary_runs),
                canary_failed.saturating_sub(base.canary_failed),
            );
            if canary_runs < policy.min_runs {
                continue;
            }
            let (live_runs, live_failed) = count_of(routing.live);
            let (live_runs, live_failed) = (
                live_runs.saturating_sub(base.live_runs),
                live_failed.saturating_sub(base.live_failed),
            );
            let rate = |failed: u64, runs: u64| {
                if runs == 0 {
                    0.0
                } else {
                    failed as f64 / runs as f64
                }
            };
            let (canary_rate, live_rate) = (
                rate(canary_failed, canary_runs),
                rate(live_failed, live_runs),
            );
            if canary_rate - live_rate <= policy.margin {
                continue;
            }
            let note = format!(
                "canary version {} rolled back automatically: {:.0}% of its {canary_runs} runs failed, against {:.0}% of live version {}'s {live_runs} since the canary started",
                canary.number,
                canary_rate * 100.0,
                live_rate * 100.0,
                routing.live
            );
            let expected = canary.number;
            let outcome = self
                .change_routing(catalog.as_ref(), &id, |current, _| {
                    // Only the canary judged: a newer one, or none, is left alone.
                    match current {
                        Some(r) if r.canary.is_some_and(|c| c.number == expected) => {
                            Ok(Some(Routing {
                                canary: None,
                                note: note.clone(),
                                changed_at: now_ms(),
                                ..r.clone()
                            }))
                        }
                        _ => Ok(None),
                    }
                })
                .await;
            match outcome {
                Ok(r) if r.canary.is_none() && r.note == note => {
                    warn!(function = %id, "{note}");
                    rolled_back.push(id);
                }
                Ok(_) => {}
                Err(e) => warn!(function = %id, error = %e, "cannot roll back a failing canary"),
            }
        }
        if !rolled_back.is_empty() {
            self.refresh_catalog().await?;
        }
        Ok(rolled_back)
    }
}

/// The most versions a routing remembers as live before.
const MAX_PREVIOUS: usize = 20;

/// Adds `number` as the newest version live before, once, keeping the newest
/// [`MAX_PREVIOUS`].
pub(super) fn remember(previous: &mut Vec<u64>, number: u64) {
    previous.retain(|p| *p != number);
    previous.push(number);
    if previous.len() > MAX_PREVIOUS {
        previous.drain(..previous.len() - MAX_PREVIOUS);
    }
}

fn not_deployed(id: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("function {id:?} has no stored version"),
    )
}
