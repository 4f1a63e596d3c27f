//! The catalog in memory (see `weir_core::catalog`): one lock, so every change is atomic.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::catalog::{
    Catalog, FunctionVersion, Routing, RunCount, SchemaPut, StoredSchema, canonical_json,
};
use weir_core::{Error, Result};

/// The catalog of a [`crate::MemoryStateStore`].
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    /// Schemas by (name, version), each with its canonical text.
    schemas: BTreeMap<(String, String), (StoredSchema, String)>,
    /// Stored versions and routing by function id.
    functions: BTreeMap<String, Versions>,
}

#[derive(Debug, Default)]
struct Versions {
    /// By number − 1.
    stored: Vec<FunctionVersion>,
    /// Bundles by content hash.
    bundles: HashMap<String, Bytes>,
    /// The routing and its revision.
    routing: Option<(Routing, u64)>,
    /// Ended runs and failed runs by content hash.
    counts: BTreeMap<String, (u64, u64)>,
}

#[async_trait]
impl Catalog for MemoryCatalog {
    async fn generation(&self) -> Result<u64> {
        Ok(self.inner.lock().generation)
    }

    async fn put_schema(&self, schema: &StoredSchema, replace: bool) -> Result<SchemaPut> {
        let text = canonical_json(&schema.schema);
        let mut inner = self.inner.lock();
        let key = (schema.name.clone(), schema.version.clone());
        let outcome = match inner.schemas.get(&key) {
            None => SchemaPut::Created,
            Some((_, stored)) if *stored == text => return Ok(SchemaPut::Unchanged),
            Some(_) if replace => SchemaPut::Replaced,
            Some(_) => return Ok(SchemaPut::Conflict),
        };
        inner.schemas.insert(key, (schema.clone(), text));
        inner.generation += 1;
        Ok(outcome)
    }

    async fn list_schemas(&self) -> Result<Vec<StoredSchema>> {
        Ok(self
            .inner
            .lock()
            .schemas
            .values()
            .map(|(s, _)| s.clone())
            .collect())
    }

    async fn put_function_version(
        &self,
        version: &FunctionVersion,
        bundle: Bytes,
    ) -> Result<(FunctionVersion, bool)> {
        let mut inner = self.inner.lock();
        let versions = inner
            .functions
            .entry(version.function_id.clone())
            .or_default();
        if let Some(stored) = versions
            .stored
            .iter()
            .find(|v| v.version == version.version)
        {
            return Ok((stored.clone(), false));
        }
        let stored = FunctionVersion {
            number: versions.stored.len() as u64 + 1,
            ..version.clone()
        };
        versions.stored.push(stored.clone());
        versions.bundles.insert(version.version.clone(), bundle);
        inner.generation += 1;
        Ok((stored, true))
    }

    async fn function_versions(&self, function_id: &str) -> Result<Vec<FunctionVersion>> {
        Ok(self
            .inner
            .lock()
            .functions
            .get(function_id)
            .map(|v| v.stored.clone())
            .unwrap_or_default())
    }

    async fn function_bundle(&self, function_id: &str, version: &str) -> Result<Option<Bytes>> {
        Ok(self
            .inner
            .lock()
            .functions
            .get(function_id)
            .and_then(|v| v.bundles.get(version).cloned()))
    }

    async fn add_run_counts(&self, counts: &[RunCount]) -> Result<()> {
        let mut inner = self.inner.lock();
        for c in counts {
            let entry = inner
                .functions
                .entry(c.function_id.clone())
                .or_default()
                .counts
                .entry(c.version.clone())
                .or_default();
            entry.0 += c.runs;
            entry.1 += c.failed;
        }
        Ok(())
    }

    async fn run_counts(&self, function_id: &str) -> Result<Vec<RunCount>> {
        Ok(self
            .inner
            .lock()
            .functions
            .get(function_id)
            .map(|v| {
                v.counts
                    .iter()
                    .map(|(version, (runs, failed))| RunCount {
                        function_id: function_id.to_owned(),
                        version: version.clone(),
                        runs: *runs,
                        failed: *failed,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn routings(&self) -> Result<Vec<(String, Routing, u64)>> {
        Ok(self
            .inner
            .lock()
            .functions
            .iter()
            .filter_map(|(id, v)| {
                let (routing, revision) = v.routing.clone()?;
                Some((id.clone(), routing, revision))
            })
            .collect())
    }

    async fn set_routing(
        &self,
        function_id: &str,
        routing: &Routing,
        expected: u64,
    ) -> Result<Option<u64>> {
        routing.check()?;
        let mut inner = self.inner.lock();
        let versions = inner.functions.entry(function_id.to_owned()).or_default();
        let revision = versions.routing.as_ref().map_or(0, |(_, r)| *r);
        if revision != expected {
            return Ok(None);
        }
        let count = versions.stored.len() as u64;
        let numbers = std::iter::once(routing.live).chain(routing.canary.map(|c| c.number));
        for number in numbers {
            if number == 0 || number > count {
                return Err(Error::invalid(format!(
                    "function {function_id:?} has no stored version {number}"
                )));
            }
        }
        versions.routing = Some((routing.clone(), revision + 1));
        inner.generation += 1;
        Ok(Some(revision + 1))
    }

    async fn delete_schema(&self, name: &str, version: &str) -> Result<bool> {
        let mut inner = self.inner.lock();
        let deleted = inner
            .schemas
            .remove(&(name.to_owned(), version.to_owned()))
            .is_some();
        if deleted {
            inner.generation += 1;
        }
        Ok(deleted)
    }
}
