//! The catalog on Redis (see `weir_core::catalog`): every catalog key shares the hash tag
//! `{catalog}`, and every change is one Lua script that also bumps the generation.
//!
//! A schema is a field of the schemas hash: `LEN:NAME` then the version label (the name's
//! length first, so that no name and version pair spells another's), its value `STORED_AT:`
//! (epoch ms) then the schema's canonical JSON text, which the script compares.
//!
//! A function's versions are a hash by number (the record's JSON, its number being the
//! field), a hash from content hash to number, and one string per bundle; the script that
//! stores a version numbers it (`HLEN + 1`), so numbers have no gaps whichever node stores.
//! Routings are one hash by function id, each value `REVISION:` then the routing's JSON.

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use weir_core::catalog::{
    Catalog, FunctionVersion, Routing, RunCount, SchemaPut, StoredSchema, canonical_json,
};
use weir_core::{Error, Result};

use crate::config::RedisStateConfig;
use crate::conn::RedisConn;
use crate::keys::Keys;

/// Stores a schema. KEYS: the schemas hash, the generation. ARGV: the field, `STORED_AT:`,
/// the canonical text, `1` to replace. Answers what it did.
static PUT_SCHEMA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
local outcome = 'created'
if old then
  local colon = string.find(old, ':', 1, true)
  if colon and string.sub(old, colon + 1) == ARGV[3] then return 'unchanged' end
  if ARGV[4] ~= '1' then return 'conflict' end
  outcome = 'replaced'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ARGV[3])
redis.call('INCR', KEYS[2])
return outcome
"#,
    )
});

/// Deletes a schema. KEYS: the schemas hash, the generation. ARGV: the field.
static DELETE_SCHEMA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1
"#,
    )
});

/// Stores a function version unless its content hash is stored. KEYS: the versions hash, the
/// hashes hash, the bundle, the generation. ARGV: the content hash, the record's JSON, the
/// bundle. Answers `{new (1/0), number, record JSON}`.
static PUT_FUNCTION_VERSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('HGET', KEYS[2], ARGV[1])
if n then return {0, n, redis.call('HGET', KEYS[1], n)} end
n = tostring(redis.call('HLEN', KEYS[1]) + 1)
redis.call('HSET', KEYS[1], n, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], n)
redis.call('SET', KEYS[3], ARGV[3])
redis.call('INCR', KEYS[4])
return {1, n, ARGV[2]}
"#,
    )
});

/// Sets a routing if its revision is the expected one. KEYS: the routings hash, the
/// function's versions hash, the generation. ARGV: the function id, the expected revision,
/// the routing's JSON, the live number, the canary number (or ''). Answers the new revision,
/// -1 when the revision moved, -2 when a version is not stored.
static SET_ROUTING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local rev = 0
if cur then rev = tonumber(string.sub(cur, 1, string.find(cur, ':', 1, true) - 1)) end
if rev ~= tonumber(ARGV[2]) then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then return -2 end
if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], (rev + 1) .. ':' .. ARGV[3])
redis.call('INCR', KEYS[3])
return rev + 1
"#,
    )
});

/// A function version record as stored: its number is the field it is stored under.
fn decode_version(number: &str, json: &str) -> Result<FunctionVersion> {
    let mut version: FunctionVersion =
        serde_json::from_str(json).map_err(|_| corrupt("function version JSON"))?;
    version.number = number.parse().map_err(|_| corrupt("version number"))?;
    Ok(version)
}

/// The catalog in Redis: what [`crate::RedisStateStore`] hands out as its [`Catalog`]
/// (`StateStore::catalog`).
#[derive(Debug, Clone)]
pub struct RedisCatalog {
    conn: RedisConn,
    keys: Keys,
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("corrupt catalog data in redis: {what}"))
}

/// The field of version `version` of `name`'s schema.
fn schema_field(name: &str, version: &str) -> String {
    format!("{}:{name}{version}", name.len())
}

/// The name and version a schema field spells.
fn parse_field(field: &str) -> Result<(String, String)> {
    let (len, rest) = field.split_once(':').ok_or_else(|| corrupt("field"))?;
    let len: usize = len.parse().map_err(|_| corrupt("field length"))?;
    if !rest.is_char_boundary(len) {
        return Err(corrupt("field length"));
    }
    let (name, version) = rest.split_at(len);
    Ok((name.to_owned(), version.to_owned()))
}

/// A schema from its field and value.
fn decode_schema(field: &str, value: &str) -> Result<StoredSchema> {
    let (name, version) = parse_field(field)?;
    let (stored_at, text) = value.split_once(':').ok_or_else(|| corrupt("value"))?;
    Ok(StoredSchema {
        name,
        version,
        schema: serde_json::from_str(text).map_err(|_| corrupt("schema JSON"))?,
        stored_at: stored_at.parse().map_err(|_| corrupt("stored_at"))?,
    })
}

impl RedisCatalog {
    /// A catalog on `conn` under the key prefix of `config`.
    pub fn new(conn: RedisConn, config: &RedisStateConfig) -> Self {
        RedisCatalog {
            conn,
            keys: Keys::new(&config.prefix),
        }
    }
}

#[async_trait]
impl Catalog for RedisCatalog {
    async fn generation(&self) -> Result<u64> {
        let generation: Option<u64> = self
            .conn
            .cmd(redis::cmd("GET").arg(self.keys.catalog_generation()))
            .await?;
        Ok(generation.unwrap_or(0))
    }

    async fn put_schema(&self, schema: &StoredSchema, replace: bool) -> Result<SchemaPut> {
        let mut invocation = PUT_SCHEMA.prepare_invoke();
        invocation
            .key(self.keys.catalog_schemas())
            .key(self.keys.catalog_generation())
            .arg(schema_field(&schema.name, &schema.version))
            .arg(format!("{}:", schema.stored_at))
            .arg(canonical_json(&schema.schema))
            .arg(if replace { "1" } else { "0" });
        let outcome: String = self.conn.script("put_schema", &invocation).await?;
        match outcome.as_str() {
            "created" => Ok(SchemaPut::Created),
            "unchanged" => Ok(SchemaPut::Unchanged),
            "replaced" => Ok(SchemaPut::Replaced),
            "conflict" => Ok(SchemaPut::Conflict),
            other => Err(corrupt(&format!("put_schema answered {other:?}"))),
        }
    }

    async fn list_schemas(&self) -> Result<Vec<StoredSchema>> {
        let all: Vec<(String, String)> = self
            .conn
            .cmd(redis::cmd("HGETALL").arg(self.keys.catalog_schemas()))
            .await?;
        // One unreadable field (written by hand, or by a newer weir) must not hide the others
        // from every node: it is skipped, with a warning.
        let mut schemas: Vec<StoredSchema> = all
            .iter()
            .filter_map(|(field, value)| match decode_schema(field, value) {
                Ok(schema) => Some(schema),
                Err(e) => {
                    tracing::warn!(field = %field, error = %e, "catalog schema skipped");
                    None
                }
            })
            .collect();
        schemas.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(schemas)
    }

    async fn put_function_version(
        &self,
        version: &FunctionVersion,
        bundle: Bytes,
    ) -> Result<(FunctionVersion, bool)> {
        let id = &version.function_id;
        let record = serde_json::to_string(&FunctionVersion {
            number: 0,
            ..version.clone()
        })?;
        let mut invocation = PUT_FUNCTION_VERSION.prepare_invoke();
        invocation
            .key(self.keys.catalog_versions(id))
            .key(self.keys.catalog_hashes(id))
            .key(self.keys.catalog_bundle(id, &version.version))
            .key(self.keys.catalog_generation())
            .arg(&version.version)
            .arg(record)
            .arg(bundle.as_ref());
        let (new, number, json): (i64, String, String) = self
            .conn
            .script("put_function_version", &invocation)
            .await?;
        Ok((decode_version(&number, &json)?, new == 1))
    }

    async fn function_versions(&self, function_id: &str) -> Result<Vec<FunctionVersion>> {
        let all: Vec<(String, String)> = self
            .conn
            .cmd(redis::cmd("HGETALL").arg(self.keys.catalog_versions(function_id)))
            .await?;
        let mut versions = all
            .iter()
            .map(|(number, json)| decode_version(number, json))
            .collect::<Result<Vec<_>>>()?;
        versions.sort_by_key(|v| v.number);
        Ok(versions)
    }

    async fn function_bundle(&self, function_id: &str, version: &str) -> Result<Option<Bytes>> {
        let bundle: Option<Vec<u8>> = self
            .conn
            .cmd(redis::cmd("GET").arg(self.keys.catalog_bundle(function_id, version)))
            .await?;
        Ok(bundle.map(Bytes::from))
    }

    async fn add_run_counts(&self, counts: &[RunCount]) -> Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        // All or nothing: a flush tried again after a timeout adds a whole batch twice at
        // worst, never a part of one.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in counts {
            let key = self.keys.catalog_counts(&c.function_id);
            pipe.hincr(&key, format!("runs:{}", c.version), c.runs)
                .ignore()
                .hincr(&key, format!("failed:{}", c.version), c.failed)
                .ignore();
        }
        self.conn.pipe::<()>(&pipe).await
    }

    async fn run_counts(&self, function_id: &str) -> Result<Vec<RunCount>> {
        let all: Vec<(String, u64)> = self
            .conn
            .cmd(redis::cmd("HGETALL").arg(self.keys.catalog_counts(function_id)))
            .await?;
        let mut by_version: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for (field, n) in all {
            let (what, version) = field
                .split_once(':')
                .ok_or_else(|| corrupt("count field"))?;
            let entry = by_version.entry(version.to_owned()).or_default();
            match what {
                "runs" => entry.0 = n,
                "failed" => entry.1 = n,
                _ => return Err(corrupt("count field")),
            }
        }
        Ok(by_version
            .into_iter()
            .map(|(version, (runs, failed))| RunCount {
                function_id: function_id.to_owned(),
                version,
                runs,
                failed,
            })
            .collect())
    }

    async fn routings(&self) -> Result<Vec<(String, Routing, u64)>> {
        let all: Vec<(String, String)> = self
            .conn
            .cmd(redis::cmd("HGETALL").arg(self.keys.catalog_routings()))
            .await?;
        let mut routings = Vec::with_capacity(all.len());
        for (id, value) in all {
            let (revision, json) = value.split_once(':').ok_or_else(|| corrupt("routing"))?;
            let routing: Routing =
                serde_json::from_str(json).map_err(|_| corrupt("routing JSON"))?;
            let revision = revision.parse().map_err(|_| corrupt("routing revision"))?;
            routings.push((id, routing, revision));
        }
        routings.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(routings)
    }

    async fn set_routing(
        &self,
        function_id: &str,
        routing: &Routing,
        expected: u64,
    ) -> Result<Option<u64>> {
        routing.check()?;
        let mut invocation = SET_ROUTING.prepare_invoke();
        invocation
            .key(self.keys.catalog_routings())
            .key(self.keys.catalog_versions(function_id))
            .key(self.keys.catalog_generation())
            .arg(function_id)
            .arg(expected)
            .arg(serde_json::to_string(routing)?)
            .arg(routing.live)
            .arg(
                routing
                    .canary
                    .map(|c| c.number.to_string())
                    .unwrap_or_default(),
            );
        let answer: i64 = self.conn.script("set_routing", &invocation).await?;
        match answer {
            -1 => Ok(None),
            -2 => Err(Error::invalid(format!(
                "function {function_id:?} has no stored version {}{}",
                routing.live,
                routing
                    .canary
                    .map(|c| format!(" or {}", c.number))
                    .unwrap_or_default()
            ))),
            revision => Ok(Some(revision as u64)),
        }
    }

    async fn delete_schema(&self, name: &str, version: &str) -> Result<bool> {
        let mut invocation = DELETE_SCHEMA.prepare_invoke();
        invocation
            .key(self.keys.catalog_schemas())
            .key(self.keys.catalog_generation())
            .arg(schema_field(name, version));
        let deleted: i64 = self.conn.script("delete_schema", &invocation).await?;
        Ok(deleted == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_spell_one_name_and_version_each() {
        for (name, version) in [("a/b", "1"), ("a", "/b1"), ("ünï:cöde", "v:2"), ("", "")] {
            let field = schema_field(name, version);
            assert_eq!(
                parse_field(&field).unwrap(),
                (name.to_owned(), version.to_owned())
            );
        }
        assert_ne!(schema_field("a1", "2"), schema_field("a", "12"));
        assert!(parse_field("9:short").is_err());
        assert!(parse_field("nolength").is_err());
        assert!(parse_field("1:ü").is_err(), "a length inside a character");
    }
}
