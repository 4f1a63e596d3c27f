//! Events: what producers send, what triggers functions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// An accepted event. `id` is the idempotency key; `ts` is epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event name, e.g. `user/signed.up`.
    pub name: String,
    /// The event payload (an object; `{}` when absent).
    #[serde(default = "empty_object")]
    pub data: Value,
    /// The person the event is about (`id`, `external_id`, `email`, …; `{}` when absent).
    #[serde(default = "empty_object")]
    pub user: Value,
    /// Unique id, defaulting to a new ULID; also the idempotency key.
    pub id: String,
    /// When the event happened, epoch milliseconds (defaults to the time it was accepted).
    pub ts: i64,
    /// Schema version selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The longest event name accepted.
pub const MAX_NAME_LEN: usize = 256;

impl Event {
    /// Builds an event from one JSON object as a producer sent it, filling `id` and `ts`.
    ///
    /// `at` names the element in error messages (`""` for a single event, `"[3]"` in a batch).
    pub fn from_json(value: Value, at: &str) -> Result<Event> {
        let Value::Object(mut obj) = value else {
            return Err(Error::invalid(format!(
                "{}an event must be a JSON object",
                prefix(at)
            )));
        };
        let name = match obj.remove("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(Error::invalid(format!(
                    "{}missing event \"name\"",
                    prefix(at)
                )));
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "{}\"name\" must be a string, got {}",
                    prefix(at),
                    type_name(&other)
                )));
            }
        };
        if name.len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "{}\"name\" is longer than {MAX_NAME_LEN} bytes",
                prefix(at)
            )));
        }
        let data = take_object(&mut obj, "data", at)?;
        let user = take_object(&mut obj, "user", at)?;
        let id = match obj.remove("id") {
            None | Some(Value::Null) => ulid::Ulid::new().to_string(),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s,
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{}\"id\" must be a non-empty string of at most 128 bytes",
                    prefix(at)
                )));
            }
        };
        let ts = match obj.remove("ts") {
            None | Some(Value::Null) => now_ms(),
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default(),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{}\"ts\" must be an integer (epoch milliseconds)",
                    prefix(at)
                )));
            }
        };
        let v = match obj.remove("v") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(crate::schema::number_label(&n)),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "{}\"v\" must be a string",
                    prefix(at)
                )));
            }
        };
        if let Some(key) = obj.keys().next() {
            return Err(Error::invalid(format!(
                "{}unknown event field {key:?} (allowed: name, data, user, id, ts, v)",
                prefix(at)
            )));
        }
        Ok(Event {
            name,
            data,
            user,
            id,
            ts,
            v,
        })
    }

    /// A stable string identifying the user the event is about, if any
    /// (`user.id`, else `user.external_id`, else `user.email`; an empty string names nobody).
    pub fn user_key(&self) -> Option<String> {
        ["id", "external_id", "email"]
            .iter()
            .find_map(|k| match self.user.get(*k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
    }
}

fn prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

fn take_object(obj: &mut Map<String, Value>, key: &str, at: &str) -> Result<Value> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(empty_object()),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(other) => Err(Error::invalid(format!(
            "{}\"{key}\" must be an object, got {}",
            prefix(at),
            type_name(&other)
        ))),
    }
}

/// The JSON type name of a value, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_id_and_ts() {
        let e = Event::from_json(json!({"name": "a/b", "data": {"x": 1}}), "").unwrap();
        assert_eq!(e.name, "a/b");
        assert_eq!(e.id.len(), 26);
        assert!(e.ts > 1_700_000_000_000);
        assert_eq!(e.user, json!({}));
    }

    #[test]
    fn keeps_given_id_and_ts() {
        let e = Event::from_json(json!({"name": "a", "id": "e1", "ts": 5, "v": "2"}), "").unwrap();
        assert_eq!((e.id.as_str(), e.ts, e.v.as_deref()), ("e1", 5, Some("2")));
    }

    #[test]
    fn a_numeric_v_is_kept_as_its_version_label() {
        for (v, label) in [(json!(2), "2"), (json!(2.0), "2"), (json!(2.5), "2.5")] {
            let e = Event::from_json(json!({"name": "a", "v": v}), "").unwrap();
            assert_eq!(e.v.as_deref(), Some(label));
        }
    }

    #[test]
    fn rejects_missing_name_bad_types_and_unknown_keys() {
        let err = Event::from_json(json!({"data": {}}), "[2]").unwrap_err();
        assert_eq!(err.to_string(), "[2]: missing event \"name\"");
        assert!(Event::from_json(json!({"name": 3}), "").is_err());
        assert!(Event::from_json(json!({"name": "a", "data": []}), "").is_err());
        let err = Event::from_json(json!({"name": "a", "nmae": 1}), "").unwrap_err();
        assert!(
            err.to_string().contains("unknown event field \"nmae\""),
            "{err}"
        );
        assert!(Event::from_json(json!([1]), "").is_err());
    }

    #[test]
    fn an_empty_user_field_names_nobody() {
        let e =
            Event::from_json(json!({"name": "a", "user": {"id": "", "email": "e@x"}}), "").unwrap();
        assert_eq!(e.user_key().as_deref(), Some("e@x"));
        let e = Event::from_json(json!({"name": "a", "user": {"id": ""}}), "").unwrap();
        assert_eq!(e.user_key(), None);
    }

    #[test]
    fn user_key_prefers_id() {
        let e =
            Event::from_json(json!({"name": "a", "user": {"email": "e@x", "id": 7}}), "").unwrap();
        assert_eq!(e.user_key().as_deref(), Some("7"));
    }
}
