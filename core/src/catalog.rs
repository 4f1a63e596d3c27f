//! The catalog: what every node of a deployment must agree on beyond runs, kept in the state
//! store: the event schemas pushed through the API (`PUT /v1/schemas/…`, `weir schemas
//! push`; schema files in a node's `schemas/` folder stay that node's own), and the stored
//! versions of functions (numbered 1, 2, … per function, each with its bundle of files) with
//! the routing that says which version is live and which is a canary.
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

/// A stored version of a function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionVersion {
    /// The function's id.
    pub function_id: String,
    /// Its number among the function's versions: 1, 2, …
    pub number: u64,
    /// Its content hash (`FunctionBundle::version`), what runs are pinned to.
    pub version: String,
    /// When it was stored (epoch ms).
    pub stored_at: i64,
    /// Who stored it (`weir deploy`, a node loading its files).
    pub source: String,
}

/// Which version of a function new runs start on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Routing {
    /// The live version's number.
    pub live: u64,
    /// A canary taking a share of new runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// The versions live before, oldest first (what a rollback goes back to).
    #[serde(default)]
    pub previous: Vec<u64>,
    /// Why the last change was made.
    #[serde(default)]
    pub note: String,
    /// When it was made (epoch ms).
    pub changed_at: i64,
}

impl Routing {
    /// Refuses a routing no store may keep: a canary's share over 100%.
    pub fn check(&self) -> Result<()> {
        if self.canary.is_some_and(|c| c.percent > 100) {
            return Err(crate::Error::invalid("a canary's percent is at most 100"));
        }
        Ok(())
    }
}

/// A canary version and its share of new runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Canary {
    /// The canary's version number.
    pub number: u64,
    /// The percentage of new runs it takes (0 to 100; 0 is a blue-green standby).
    pub percent: u8,
    /// Route by the event's user rather than by the event, so that one user stays on one
    /// version.
    #[serde(default)]
    pub sticky_user: bool,
    /// The lifetime counts of the canary and the live version when the canary started: the
    /// automatic rollback judges the runs since.
    #[serde(default)]
    pub baseline: CountBaseline,
}

/// Lifetime run counts of a canary and its live version at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountBaseline {
    /// The canary's ended runs.
    pub canary_runs: u64,
    /// Of them, failed.
    pub canary_failed: u64,
    /// The live version's ended runs.
    pub live_runs: u64,
    /// Of them, failed.
    pub live_failed: u64,
}

/// Runs of one function version that ended, counted by a node since it last reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunCount {
    /// The function's id.
    pub function_id: String,
    /// The version's content hash.
    pub version: String,
    /// Runs that ended (completed or failed).
    pub runs: u64,
    /// Of them, those that failed.
    pub failed: u64,
}

/// Shared definitions, visible to every node (see the module documentation).
///
/// Contract (checked by the conformance suite, `testkit::catalog`): a schema version is
/// stored once, and [`put_schema`](Catalog::put_schema) decides atomically between
/// [`SchemaPut`]'s outcomes, so two nodes storing different schemas under one version see one
/// `Created` and one `Conflict`. Schemas are equal when their JSON values are (key order does
/// not matter). A function version is stored once per content hash and numbered in the order
/// stored, without gaps, whichever node stores it; routing changes are compare-and-set on
/// its revision. The generation increases with every change and never otherwise; it starts
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

    /// Stores a version of function `function_id` whose content hash is `version.version`,
    /// with its encoded bundle: numbered next when the hash is new (its `number` is then
    /// ignored), else the version stored under that hash, unchanged. True when it was new.
    async fn put_function_version(
        &self,
        version: &FunctionVersion,
        bundle: bytes::Bytes,
    ) -> Result<(FunctionVersion, bool)>;

    /// The stored versions of `function_id`, by number.
    async fn function_versions(&self, function_id: &str) -> Result<Vec<FunctionVersion>>;

    /// The encoded bundle of the version of `function_id` whose content hash is `version`.
    async fn function_bundle(
        &self,
        function_id: &str,
        version: &str,
    ) -> Result<Option<bytes::Bytes>>;

    /// Adds ended runs to the lifetime counts of their versions (counts do not move the
    /// generation).
    async fn add_run_counts(&self, counts: &[RunCount]) -> Result<()>;

    /// The lifetime counts of `function_id`'s versions, by content hash (`function_id`
    /// repeated in each).
    async fn run_counts(&self, function_id: &str) -> Result<Vec<RunCount>>;

    /// Every function's routing with its revision, by function id.
    async fn routings(&self) -> Result<Vec<(String, Routing, u64)>>;

    /// Sets `function_id`'s routing if its revision is still `expected` (`0`: it has none
    /// yet); the new revision, or `None` when another change came first. A routing's
    /// versions must be stored.
    async fn set_routing(
        &self,
        function_id: &str,
        routing: &Routing,
        expected: u64,
    ) -> Result<Option<u64>>;
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
