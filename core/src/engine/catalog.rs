//! The engine's side of the catalog (`crate::catalog`): the event schemas in use are this
//! node's schema files merged with those pushed to the state store's catalog, read again
//! whenever the catalog's generation moves (checked every
//! [`catalog_poll`](super::EngineConfig::catalog_poll)); and pushing a schema checks it
//! against recently stored events before it is stored.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use super::{Engine, StopSignal, stopped};
use crate::catalog::{SchemaPut, StoredSchema, canonical_json};
use crate::error::{Error, ErrorKind, Result};
use crate::event::now_ms;
use crate::events::EventFilter;
use crate::function::Problem;
use crate::schema::{EventSchemas, MAX_VIOLATIONS, SchemaDocument, ViolationList};

/// Stored events a push checks by default (`?check=`, `--check`).
pub const DEFAULT_SCHEMA_CHECK: usize = 100;

/// The most stored events a push may check.
pub const MAX_SCHEMA_CHECK: usize = 10_000;

/// Violations reported per broken event.
const BREAKAGES_PER_EVENT: usize = 3;

/// How to push a schema ([`Engine::put_schema`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutSchemaOptions {
    /// Store it even when stored events break it, or when another schema is stored under
    /// its version (which it then replaces).
    pub force: bool,
    /// How many of the newest stored events of its name to check it against (at most
    /// [`MAX_SCHEMA_CHECK`]; 0: none).
    pub check: usize,
}

impl Default for PutSchemaOptions {
    fn default() -> Self {
        PutSchemaOptions {
            force: false,
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
    /// Another schema is stored under that version (push with `force` to replace it):
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
        let files = self.inner.file_schemas.read().clone();
        let stored = self.inner.catalog_view.lock().stored.clone();
        let (merged, warnings) = files.merged_with(&stored);
        for w in warnings {
            warn!("event schemas: {w}");
        }
        *self.inner.schemas.write() = Arc::new(merged.with_strict(self.inner.config.strict_events));
    }

    /// Reads the catalog again when its generation moved since it was last read; true when
    /// it did (the schemas in use were rebuilt). Nothing to do without a catalog.
    pub async fn refresh_catalog(&self) -> Result<bool> {
        let Some(catalog) = self.inner.state.catalog() else {
            return Ok(false);
        };
        let generation = catalog.generation().await?;
        if self.inner.catalog_view.lock().generation == Some(generation) {
            return Ok(false);
        }
        // Read after the generation: what is read is at least that new.
        let stored = Arc::new(catalog.list_schemas().await?);
        {
            let mut view = self.inner.catalog_view.lock();
            if view.generation.is_some_and(|g| g >= generation) {
                // A concurrent refresh stored something as new.
                return Ok(false);
            }
            *view = CatalogView {
                generation: Some(generation),
                stored,
            };
        }
        self.merge_schemas();
        Ok(true)
    }

    /// Pushes a schema to the catalog, where every node finds it: unless `force`, only when
    /// no other schema is stored under its version and none of the newest `check` stored
    /// events of its name that it would judge breaks it. Those events are the ones without
    /// `v` or with the newest version's `v` when it becomes the newest version, and those of
    /// its own version. This node uses it at once; other nodes within `catalog_poll`.
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
        let alone = match document.compile() {
            Ok(alone) => alone,
            Err(problems) => {
                report.outcome = PutSchemaOutcome::Invalid(problems);
                return Ok(report);
            }
        };
        let canonical = canonical_json(&document.schema);
        let stored = catalog.list_schemas().await?;
        let same_version = stored
            .iter()
            .find(|s| s.name == document.name && s.version == document.version);
        match same_version {
            Some(s) if canonical_json(&s.schema) == canonical => return Ok(report),
            Some(_) if !options.force => {
                report.outcome = PutSchemaOutcome::Conflict;
                return Ok(report);
            }
            _ => {}
        }
        self.check_stored_events(document, &alone, options.check, &mut report)
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
                options.force,
            )
            .await?;
        report.outcome = match put {
            SchemaPut::Conflict => PutSchemaOutcome::Conflict,
            done => PutSchemaOutcome::Stored(done),
        };
        self.refresh_catalog().await?;
        Ok(report)
    }

    /// Deletes a pushed schema from the catalog (schema files are left alone); true when it
    /// was stored. This node stops using it at once; other nodes within `catalog_poll`.
    pub async fn delete_schema(&self, name: &str, version: &str) -> Result<bool> {
        let catalog = self.catalog()?;
        let deleted = catalog.delete_schema(name, version).await?;
        self.refresh_catalog().await?;
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

    /// Checks the newest `limit` stored events of the document's name that it would judge
    /// (see [`put_schema`](Self::put_schema)) against `alone` (the document compiled alone).
    async fn check_stored_events(
        &self,
        document: &SchemaDocument,
        alone: &EventSchemas,
        limit: usize,
        report: &mut PutSchemaReport,
    ) -> Result<()> {
        let limit = limit.min(MAX_SCHEMA_CHECK);
        if limit == 0 {
            return Ok(());
        }
        let in_use = self.event_schemas();
        let becomes_newest = in_use.would_be_newest(&document.name, &document.version);
        let newest = in_use.newest(&document.name).map(str::to_owned);
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
            let judged = match event.v.as_deref() {
                Some(v) if v == document.version => true,
                None => becomes_newest,
                Some(v) => becomes_newest && newest.as_deref() == Some(v),
            };
            if !judged {
                continue;
            }
            report.checked += 1;
            let mut value = serde_json::to_value(&event)?;
            // Judged by the pushed version, whatever `v` it was sent with.
            if let Value::Object(map) = &mut value {
                map.insert("v".into(), Value::String(document.version.clone()));
            }
            let mut list = ViolationList::default();
            list.check(alone, 0, &value, true);
            let Err(e) = list.into_result() else {
                continue;
            };
            report.broken += 1;
            let room = MAX_VIOLATIONS.saturating_sub(report.breakages.len());
            let found = crate::schema::violations_of(&e).unwrap_or_default();
            report
                .breakages
                .extend(
                    found
                        .iter()
                        .take(BREAKAGES_PER_EVENT.min(room))
                        .map(|v| Breakage {
                            event_id: event.id.clone(),
                            pointer: v.pointer.clone(),
                            message: v.message.clone(),
                        }),
                );
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
