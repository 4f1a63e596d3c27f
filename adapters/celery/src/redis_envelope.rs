//! kombu's Redis transport: how a Celery message is stored in a Redis list.
//!
//! kombu pushes each message to the list named after the queue (priorities above 0 go to
//! sub-lists: see [`priority_list`]) as a JSON envelope: `{"body": <base64>, "content-type",
//! "content-encoding", "headers": {…}, "properties": {"correlation_id", "reply_to",
//! "delivery_mode", "delivery_info": {"exchange", "routing_key"}, "priority", "body_encoding":
//! "base64", "delivery_tag"}}`.

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::message::{Refused, TaskMessage};

/// The separator kombu puts between a queue's name and its priority (`\x06\x16`).
const PRIORITY_SEP: &str = "\x06\x16";

/// The list kombu stores a message of `priority` in: the queue's own list for 0 to 2, else
/// `queue\x06\x16N` with `N` the priority rounded down to 3, 6 or 9 (kombu's default steps).
/// On Redis the lists are served from priority 0 up: the reverse of AMQP's order.
pub fn priority_list(queue: &str, priority: u8) -> String {
    match priority {
        0..=2 => queue.to_string(),
        3..=5 => format!("{queue}{PRIORITY_SEP}3"),
        6..=8 => format!("{queue}{PRIORITY_SEP}6"),
        _ => format!("{queue}{PRIORITY_SEP}9"),
    }
}

/// The lists of `queue` in the order kombu serves them.
pub fn lists_in_order(queue: &str) -> [String; 4] {
    [0, 3, 6, 9].map(|p| priority_list(queue, p))
}

/// The list entry kombu would write for `outgoing`, with `priority` (0–9).
pub fn encode(outgoing: &crate::chain::Outgoing, priority: u8) -> String {
    serde_json::json!({
        "body": base64::engine::general_purpose::STANDARD.encode(&outgoing.body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": outgoing.headers,
        "properties": {
            "correlation_id": outgoing.id,
            "reply_to": outgoing.reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": outgoing.queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": ulid::Ulid::new().to_string(),
        },
    })
    .to_string()
}

/// Decodes one list entry. An entry that is not a kombu envelope at all is refused without a
/// task id (nothing to report it to: it is logged and dropped by the caller).
pub fn decode(entry: &[u8]) -> Result<TaskMessage, Refused> {
    let refused = |reason: String| Refused {
        task_id: None,
        task: None,
        reason,
    };
    let envelope: Value = serde_json::from_slice(entry)
        .map_err(|e| refused(format!("the Redis list entry is not a kombu message: {e}")))?;
    if !envelope.get("body").is_some_and(Value::is_string)
        || !envelope.get("headers").is_none_or(Value::is_object)
        || !envelope.get("properties").is_none_or(Value::is_object)
    {
        return Err(refused(
            "the Redis list entry is not a kombu message (no string body, or headers and properties not objects)".into(),
        ));
    }
    let empty = Map::new();
    let headers = envelope
        .get("headers")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let properties = envelope
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let field = |key: &str| envelope.get(key).and_then(Value::as_str).unwrap_or("");
    let body = field("body");
    let body = match properties.get("body_encoding").and_then(Value::as_str) {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| Refused {
                task_id: headers
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                task: headers
                    .get("task")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                reason: format!("the message body is not valid base64: {e}"),
            })?,
        _ => body.as_bytes().to_vec(),
    };
    let reply_to = properties.get("reply_to").and_then(Value::as_str);
    TaskMessage::decode(
        headers,
        field("content-type"),
        field("content-encoding"),
        reply_to,
        &body,
    )
}
