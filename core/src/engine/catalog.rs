//! The engine's side of the catalog (`crate::catalog`): the event schemas in use are this
//! node's schema files merged with those pushed to the state store's catalog, read again
//! whenever the catalog's generation moves (checked every
//! [`catalog_poll`](super::EngineConfig::catalog_poll)); and pushing a schema checks it
//! against recently stored events before it is stored.

use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use super::{Engine, StopSignal, stopped};
use crate::catalog::{SchemaPut, StoredSchema, canonical_json};
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::events::EventFilter;
use crate::function::Problem;
use crate::schema::{EventSchemas, MAX_VIOLATIONS, SchemaDocument};

/// Stored events a push checks by default (`?check=`, `--check`).
pub const DEFAULT_SCHEMA_CHECK: usize = 100;

/// The most stored events a push may check.
pub const MAX_SCHEMA_CHECK: usize = 10_000;

/// Violations reported per broken event.
const BREAKAGES_PER_EVENT: usize = 3;

/// How to push a schema ([`Engine::put_schema`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutSchemaOptions {
    /// Store it even when stored events break it.
    pub force: bool,
    /// Replace another schema stored under its version (else that is a conflict).
    pub replace: bool,
    /// How many of the newest stored events of its name to check it against (at most
    /// [`MAX_SCHEMA_CHECK`]; 0: none).
    pub check: usize,
}

impl Default for PutSchemaOptions {
    fn default() -> Self {
        PutSchemaOptions {
            force: false,
            replace: false,
            check: DEFAULT_SCHEMA_CHECK,
        }
    }
}

/// A stored event that a pushed schema refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breakage {
    /// The event's id.
    pub event_id: String,
    /// JSON pointer into the event.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// What a push decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutSchemaOutcome {
    /// Stored (created or replaced), or the same schema was there already.
    Stored(SchemaPut),
    /// Not valid JSON Schema (or a bad name or version): nothing stored.
    Invalid(Vec<Problem>),
    /// Another schema is stored under that version (push with `replace` to replace it):
    /// nothing stored.
    Conflict,
    /// Stored events break it (push with `force` to store it anyway): nothing stored.
    Breaks,
}

/// What [`Engine::put_schema`] did, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSchemaReport {
    /// The decision.
    pub outcome: PutSchemaOutcome,
    /// Stored events checked against the schema.
    pub checked: usize,
    /// How many of them it refuses.
    pub broken: usize,
    /// Their violations (a few per event, at most [`MAX_VIOLATIONS`] in all).
    pub breakages: Vec<Breakage>,
}

/// The stored schemas this node merged, and the catalog generation they were read at.
#[derive(Debug, Default)]
pub(crate) struct CatalogView {
    /// `None` until the catalog was first read.
    generation: Option<u64>,
    stored: Arc<Vec<StoredSchema>>,
}

impl Engine {
    /// Replaces this node's schema files (`schemas/`; see [`crate::schema`]); the schemas in
    /// use are them merged with the pushed ones. Requests already being parsed keep the
    /// schemas they started with.
    pub fn set_event_schemas(&self, files: EventSchemas) {
        *self.inner.file_schemas.write() = Arc::new(files);
        self.merge_schemas();
    }

    /// The event schemas ingest checks events against: files and pushed ones.
    pub fn event_schemas(&self) -> Arc<EventSchemas> {
        self.inner.schemas.read().clone()
    }

    /// Rebuilds the schemas in use from the files and the stored schemas last read.
    fn merge_schemas(&self) {
        // One rebuild at a time: a slower one must not write older inputs over newer ones.
        let _rebuilding = self.inner.schemas_rebuild.lock();
        let files = self.inner.file_schemas.read().clone();
        let stored = self.inner.catalog_view.lock().stored.clone();
        let (merged, warnings) = files.merged_with(&stored);
        for w in warnings {
            warn!("event schemas: {w}");
        }
        *self.inner.schemas.write() = Arc::new(merged.with_strict(self.inner.config.strict_events));
    }

    /// Forgets the catalog generation last read, so that the next refresh reads it again.
    pub(crate) fn forget_catalog_generation(&self) {
        self.inner.catalog_view.lock().generation = None;
    }

    /// Reads the catalog again when its generation moved since it was last read; true when
    /// it did (the schemas in use rebuilt, the routing of functions applied). Nothing to do
    /// without a catalog.
    pub async fn refresh_catalog(&self) -> Result<bool> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(false);
        };
        // One refresh at a time, so that the last to finish read last. The generation is
        // compared for equality only: a store restored from a backup can go back.
        let _refreshing = self.inner.catalog_refresh.lock().await;
        let generation = catalog.generation().await?;
        if self.inner.catalog_view.lock().generation == Some(generation) {
            return Ok(false);
        }
        // Read after the generation: what is read is at least that new.
        let stored = Arc::new(catalog.list_schemas().await?);
        // Routing first: when it fails, the generation is not recorded, and the next poll
        // tries again.
        self.apply_routing().await?;
        *self.inner.catalog_view.lock() = CatalogView {
            generation: Some(generation),
            stored,
        };
        self.merge_schemas();
        Ok(true)
    }

    /// Pushes a schema to the catalog, where every node finds it: unless `replace`, only when
    /// no other schema is stored under its version; unless `force`, only when no event among
    /// the newest `check` stored events of its name that it would judge breaks it. It judges
    /// the events that would meet it once stored (their `v` is its version, or they have
    /// none and it becomes the newest), and, when it is the name's first schema, those whose
    /// `v` would name no version. This node uses it at once; other nodes within
    /// `catalog_poll`.
    pub async fn put_schema(
        &self,
        document: &SchemaDocument,
        options: PutSchemaOptions,
    ) -> Result<PutSchemaReport> {
        let catalog = self.catalog()?;
        let mut report = PutSchemaReport {
            outcome: PutSchemaOutcome::Stored(SchemaPut::Unchanged),
            checked: 0,
            broken: 0,
            breakages: Vec::new(),
        };
        if let Err(problems) = document.compile() {
            report.outcome = PutSchemaOutcome::Invalid(problems);
            return Ok(report);
        }
        let canonical = canonical_json(&document.schema);
        let stored = catalog.list_schemas().await?;
        let same_version = stored
            .iter()
            .find(|s| s.name == document.name && s.version == document.version);
        match same_version {
            Some(s) if canonical_json(&s.schema) == canonical => return Ok(report),
            Some(_) if !options.replace => {
                report.outcome = PutSchemaOutcome::Conflict;
                return Ok(report);
            }
            _ => {}
        }
        // The schemas this node would use once it is stored: judged on fresh inputs.
        let mut after: Vec<StoredSchema> = stored
            .into_iter()
            .filter(|s| !(s.name == document.name && s.version == document.version))
            .collect();
        after.push(StoredSchema {
            name: document.name.clone(),
            version: document.version.clone(),
            schema: document.schema.clone(),
            stored_at: now_ms(),
        });
        let files = self.inner.file_schemas.read().clone();
        let (after, _) = files.merged_with(&after);
        // Events whose `v` names no version matter only on a name's first schema: once it has
        // one, ingest refuses them already.
        let first_schema = !self.event_schemas().covers(&document.name);
        self.check_stored_events(document, &after, first_schema, options.check, &mut report)
            .await?;
        if report.broken > 0 && !options.force {
            report.outcome = PutSchemaOutcome::Breaks;
            return Ok(report);
        }
        let put = catalog
            .put_schema(
                &StoredSchema {
                    name: document.name.clone(),
                    version: document.version.clone(),
                    schema: document.schema.clone(),
                    stored_at: now_ms(),
                },
                options.replace,
            )
            .await?;
        report.outcome = match put {
            SchemaPut::Conflict => PutSchemaOutcome::Conflict,
            done => PutSchemaOutcome::Stored(done),
        };
        // Stored: a failed read now is the poll's to catch up on, not the pusher's error.
        if let Err(e) = self.refresh_catalog().await {
            warn!(error = %e, "a schema was pushed; reading the catalog again failed");
        }
        Ok(report)
    }

    /// Deletes a pushed schema from the catalog (schema files are left alone); true when it
    /// was stored. This node stops using it at once; other nodes within `catalog_poll`.
    pub async fn delete_schema(&self, name: &str, version: &str) -> Result<bool> {
        let catalog = self.catalog()?;
        let deleted = catalog.delete_schema(name, version).await?;
        if let Err(e) = self.refresh_catalog().await {
            warn!(error = %e, "a schema was deleted; reading the catalog again failed");
        }
        Ok(deleted)
    }

    /// The state store's catalog, or the error of a store that keeps none.
    fn catalog(&self) -> Result<Arc<dyn crate::catalog::Catalog>> {
        self.inner.state.catalog().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "this state store keeps no catalog: schemas can only be files in schemas/",
            )
        })
    }

    /// Checks the newest `limit` stored events of the document's name against `after` (the
    /// schemas once it is stored), as ingest would check them; only those it judges (see
    /// [`put_schema`](Self::put_schema)) count.
    async fn check_stored_events(
        &self,
        document: &SchemaDocument,
        after: &EventSchemas,
        first_schema: bool,
        limit: usize,
        report: &mut PutSchemaReport,
    ) -> Result<()> {
        let limit = limit.min(MAX_SCHEMA_CHECK);
        if limit == 0 {
            return Ok(());
        }
        let events = self
            .inner
            .events
            .scan(&EventFilter {
                name: Some(document.name.clone()),
                limit: Some(limit),
                newest_first: true,
                ..EventFilter::default()
            })
            .await?;
        for event in events {
            let judged = match after.selected(&event.name, event.v.as_deref()) {
                Some(Ok(version)) => version == document.version,
                Some(Err(())) => first_schema,
                None => false,
            };
            if !judged {
                continue;
            }
            report.checked += 1;
            let value = serde_json::to_value(&event)?;
            let found = after.check_at_most(0, &value, BREAKAGES_PER_EVENT);
            if found.is_empty() {
                continue;
            }
            report.broken += 1;
            let room = MAX_VIOLATIONS.saturating_sub(report.breakages.len());
            report
                .breakages
                .extend(found.into_iter().take(room).map(|v| Breakage {
                    event_id: event.id.clone(),
                    pointer: v.pointer,
                    message: v.message,
                }));
        }
        Ok(())
    }
}

/// Reads the catalog again whenever its generation moves, until stopped.
pub(crate) async fn run_loop(engine: Engine, mut stop: StopSignal) {
    let every = engine.inner.config.catalog_poll;
    let mut failing = false;
    loop {
        match engine.refresh_catalog().await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "cannot read the catalog (pushed event schemas); trying again every {every:?}");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
