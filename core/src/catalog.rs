//! The catalog: what every node of a deployment must agree on beyond runs, kept in the state
//! store. Today that is the event schemas pushed through the API (`PUT /v1/schemas/…`,
//! `weir schemas push`); schema files in a node's `schemas/` folder stay that node's own.
//!
//! A capability of a state store: [`crate::state::StateStore::catalog`] hands out a
//! [`Catalog`] when the store has one (memory and Redis do). Every change bumps the catalog's
//! [`generation`](Catalog::generation), a number nodes read cheaply and often: when it moves,
//! they read the catalog again (the engine does this every
//! [`catalog_poll`](crate::engine::EngineConfig::catalog_poll)).

use async_trait::async_trait;
use serde_json::Value;

use crate::error::Result;

/// A schema kept in the catalog: version `version` of event `name`'s JSON Schema.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchema {
    /// The event name.
    pub name: String,
    /// The version label.
    pub version: String,
    /// The JSON Schema, as pushed.
    pub schema: Value,
    /// When it was stored (epoch ms).
    pub stored_at: i64,
}

/// What [`Catalog::put_schema`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaPut {
    /// The version was new: stored.
    Created,
    /// The same schema was stored under that version already: nothing changed.
    Unchanged,
    /// Another schema was stored under that version, and `replace` was asked: replaced.
    Replaced,
    /// Another schema is stored under that version (and `replace` was not asked): nothing
    /// changed.
    Conflict,
}

/// Shared definitions, visible to every node (see the module documentation).
///
/// Contract (checked by the conformance suite, `testkit::catalog`): a schema version is
/// stored once, and [`put_schema`](Catalog::put_schema) decides atomically between
/// [`SchemaPut`]'s outcomes, so two nodes storing different schemas under one version see one
/// `Created` and one `Conflict`. Schemas are equal when their JSON values are (key order does
/// not matter). The generation increases with every change and never otherwise; it starts
/// at 0 in an empty catalog.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// A number that increases whenever the catalog changes.
    async fn generation(&self) -> Result<u64>;

    /// Stores `schema` under its name and version (its `stored_at` kept only when it is
    /// stored); with `replace`, another schema stored there is replaced instead of being a
    /// conflict.
    async fn put_schema(&self, schema: &StoredSchema, replace: bool) -> Result<SchemaPut>;

    /// Every stored schema, by name then version label (byte order).
    async fn list_schemas(&self) -> Result<Vec<StoredSchema>>;

    /// Deletes version `version` of `name`'s schema; true when it was stored.
    async fn delete_schema(&self, name: &str, version: &str) -> Result<bool>;
}

/// The canonical JSON text of a schema (keys sorted), which stores compare to tell whether
/// two schemas are the same.
pub fn canonical_json(value: &Value) -> String {
    // serde_json's map is ordered by key unless its `preserve_order` feature is on; sort
    // explicitly so that the text is canonical either way.
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_text_ignores_key_order() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}});
        let b: Value =
            serde_json::from_str(r#"{"a": {"c": null, "d": [1, {"y": 1, "z": 0}]}, "b": 1}"#)
                .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
        assert_ne!(canonical_json(&a), canonical_json(&json!({"b": 2})));
    }
}
