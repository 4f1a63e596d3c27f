//! A Faktory job as PUSH carries it and FETCH hands it out, checked as Faktory's server checks
//! it, and the weir event it becomes when a weir function handles its job type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use weir_core::Event;

/// Faktory's default number of retries.
pub const DEFAULT_RETRY: i64 = 25;

/// The longest reservation a job may ask for (`reserve_for`, seconds).
pub const MAX_RESERVE_FOR: u64 = 86_400;

/// A job. Keys Faktory does not know (`priority`, …) are dropped, as Faktory drops them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id, chosen by the client (at least 8 characters).
    #[serde(default, deserialize_with = "null_as_default")]
    pub jid: String,
    /// The queue (default `default`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub queue: String,
    /// The job type: what a worker (or weir function) does.
    #[serde(default, deserialize_with = "null_as_default")]
    pub jobtype: String,
    /// The arguments (present, possibly empty).
    #[serde(default)]
    pub args: Option<Vec<Value>>,
    /// When the client made it (RFC 3339; filled in when absent).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
    /// When it was last put on its queue.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub enqueued_at: String,
    /// When it is to run (RFC 3339), if later than now.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub at: String,
    /// How long a worker may hold it, in seconds (0: Faktory's default; under 60: 60).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero_i64"
    )]
    pub reserve_for: i64,
    /// How many retries it gets (0: none, dropped on failure; -1: dead on failure).
    #[serde(default)]
    pub retry: Option<i64>,
    /// Backtrace lines a worker keeps (not used by the server).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero_i64"
    )]
    pub backtrace: i64,
    /// The last failure, once it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Value>,
    /// The client's own data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
}

/// A `null` read as the type's default, as Go's JSON decoding leaves a zero value (clients
/// send `"at": null`).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl Job {
    /// Reads a PUSH payload: `invalid JSON: …` as Faktory answers it when it does not parse.
    pub fn parse(payload: &[u8]) -> Result<Job, String> {
        serde_json::from_slice(payload).map_err(|e| format!("invalid JSON: {e}"))
    }

    /// Checks the job as Faktory's PUSH does, with its messages, and fills in what it fills in:
    /// `queue` (default), `created_at`, `retry` (25). Returns the time it is due at (epoch ms),
    /// when `at` is later than `now_ms`.
    pub fn validate(&mut self, now_ms: i64) -> Result<Option<i64>, String> {
        if self.jid.chars().count() < 8 {
            return Err("jobs must have a reasonable jid parameter".into());
        }
        if self.jobtype.is_empty() {
            return Err("jobs must have a jobtype parameter".into());
        }
        if self.args.is_none() {
            return Err("jobs must have an args parameter".into());
        }
        if self.reserve_for > MAX_RESERVE_FOR as i64 {
            return Err("jobs cannot be reserved for more than one day".into());
        }
        if self.queue.is_empty() {
            self.queue = "default".into();
        }
        if !valid_queue_name(&self.queue) {
            return Err(format!(
                "cannot get {:?} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z",
                self.queue
            ));
        }
        if self.created_at.is_empty() {
            self.created_at = rfc3339(now_ms);
        }
        self.retry.get_or_insert(DEFAULT_RETRY);
        if self.at.is_empty() {
            return Ok(None);
        }
        let at = chrono::DateTime::parse_from_rfc3339(&self.at)
            .map_err(|e| format!("invalid timestamp for 'at': {:?}: {e}", self.at))?
            .timestamp_millis();
        Ok((at > now_ms).then_some(at))
    }

    /// The event of a job a weir function handles: `faktory/<jobtype>`, id = the jid (a
    /// job pushed twice starts one run), data = the job's fields.
    pub fn to_event(&self) -> weir_core::Result<Event> {
        let event = json!({
            "name": format!("faktory/{}", self.jobtype),
            "id": self.jid,
            "data": {
                "jid": self.jid,
                "args": self.args,
                "queue": self.queue,
                "custom": self.custom,
                "at": non_empty(&self.at),
                "retry": self.retry,
                "created_at": non_empty(&self.created_at),
                "enqueued_at": non_empty(&self.enqueued_at),
            },
        });
        Event::from_json(event, "")
    }
}

/// Whether `name` is a queue name Faktory takes: `[a-zA-Z0-9._-]+`.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Epoch milliseconds as Faktory writes times: RFC 3339 in UTC with fractional seconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn non_empty(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000;

    fn checked(payload: &str) -> Result<(Job, Option<i64>), String> {
        let mut job = Job::parse(payload.as_bytes())?;
        let due = job.validate(NOW)?;
        Ok((job, due))
    }

    #[test]
    fn a_python_push_is_read_with_its_spaces_and_unknown_keys_dropped() {
        let (job, due) = checked(
            r#"{"jid": "0123456789abcdef", "queue": "default", "jobtype": "send_email", "priority": 5, "args": [1, "a"], "retry": 5, "backtrace": 0}"#,
        )
        .expect("valid");
        assert_eq!(due, None);
        assert_eq!(job.retry, Some(5));
        assert_eq!(job.created_at, rfc3339(NOW));
        let stored = serde_json::to_value(&job).expect("json");
        assert!(stored.get("priority").is_none(), "{stored}");
        assert_eq!(stored["args"], json!([1, "a"]));
    }

    #[test]
    fn faktorys_checks_and_messages() {
        let err = |payload: &str| checked(payload).expect_err(payload);
        assert_eq!(
            err(r#"{"jid":"short","jobtype":"x","args":[]}"#),
            "jobs must have a reasonable jid parameter"
        );
        assert_eq!(
            err(r#"{"jobtype":"x","args":[]}"#),
            "jobs must have a reasonable jid parameter"
        );
        assert_eq!(
            err(r#"{"jid":"12345678","args":[]}"#),
            "jobs must have a jobtype parameter"
        );
        assert_eq!(
            err(r#"{"jid":"12345678","jobtype":"x","args":null}"#),
            "jobs must have an args parameter"
        );
        assert_eq!(
            err(r#"{"jid":"12345678","jobtype":"x","args":[],"reserve_for":86401}"#),
            "jobs cannot be reserved for more than one day"
        );
        assert!(
            err(r#"{"jid":"12345678","jobtype":"x","args":[],"queue":"a b"}"#)
                .starts_with("cannot get \"a b\" queue")
        );
        assert!(
            err(r#"{"jid":"12345678","jobtype":"x","args":[],"at":"soon"}"#)
                .starts_with("invalid timestamp for 'at'")
        );
        assert!(err("{not json").starts_with("invalid JSON: "));
        let (job, _) = checked(
            r#"{"jid":"12345678","jobtype":"x","args":[],"at":null,"reserve_for":null,"queue":null,"created_at":null,"retry":null}"#,
        )
        .expect("nulls are zero values, as in Go");
        assert_eq!(
            (job.queue.as_str(), job.retry, job.reserve_for),
            ("default", Some(25), 0)
        );
        assert!(
            err(r#"{"jid":"12345678","jobtype":"x","args":"1"}"#).starts_with("invalid JSON: ")
        );
    }

    #[test]
    fn defaults_are_filled_in_and_a_future_at_is_due_then() {
        let (job, due) =
            checked(r#"{"jid":"12345678","jobtype":"x","args":[],"at":"2030-01-01T00:00:00Z"}"#)
                .expect("valid");
        assert_eq!(job.queue, "default");
        assert_eq!(job.retry, Some(DEFAULT_RETRY));
        assert_eq!(due, Some(1_893_456_000_000));
        let (_, due) = checked(
            r#"{"jid":"12345678","jobtype":"x","args":[],"at":"2001-01-01T00:00:00.5+01:00"}"#,
        )
        .expect("valid");
        assert_eq!(due, None, "a past at runs now");
    }

    #[test]
    fn the_event_is_faktory_slash_jobtype_with_the_jid_as_id() {
        let (job, _) = checked(
            r#"{"jid":"12345678","jobtype":"send_email","args":[1],"custom":{"tenant":"t"}}"#,
        )
        .expect("valid");
        let event = job.to_event().expect("event");
        assert_eq!(event.name, "faktory/send_email");
        assert_eq!(event.id, "12345678");
        assert_eq!(event.data["args"], json!([1]));
        assert_eq!(event.data["custom"]["tenant"], "t");
        assert_eq!(event.data["queue"], "default");
        assert_eq!(event.data["retry"], 25);
        assert_eq!(event.data["at"], Value::Null);
    }
}
