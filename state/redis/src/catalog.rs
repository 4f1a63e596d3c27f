//! The catalog on Redis (see `weir_core::catalog`): every catalog key shares the hash tag
//! `{catalog}`, and every change is one Lua script that also bumps the generation.
//!
//! A schema is a field of the schemas hash: `LEN:NAME` then the version label (the name's
//! length first, so that no name and version pair spells another's), its value `STORED_AT:`
//! (epoch ms) then the schema's canonical JSON text, which the script compares.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use weir_core::catalog::{Catalog, SchemaPut, StoredSchema, canonical_json};
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
