//! The catalog in memory (see `weir_core::catalog`): one lock, so every change is atomic.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::Result;
use weir_core::catalog::{Catalog, SchemaPut, StoredSchema, canonical_json};

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
