//! One Celery task message (protocol v2, JSON), decoded, and the event it becomes.
//!
//! Protocol v2 (Celery ≥ 4) puts what the worker needs to route a task in the message headers
//! (`task`, `id`, `eta`, `expires`, `retries`, `root_id`, `parent_id`, `group`, …; anything else
//! a producer added with `apply_async(headers=…)` sits beside them) and the call in the body:
//! `[args, kwargs, embed]`, where `embed` holds `callbacks`, `errbacks`, `chain` and `chord`.

use serde_json::{Map, Value, json};
use weir_core::Event;

/// Headers of protocol v2 itself; every other header is the producer's own.
const PROTOCOL_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// A message weir does not run, and why; `task_id` when the message names one (the task then
/// gets a FAILURE result saying why, so its client does not wait for nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The task's id, when the message carries one.
    pub task_id: Option<String>,
    /// What is wrong, for the FAILURE result and the log.
    pub reason: String,
}

/// A Celery task, as a protocol v2 message carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The task's name (`tasks.add`).
    pub task: String,
    /// The task id (the client's `AsyncResult` id).
    pub id: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// When to run it (ISO 8601), from `eta` or `countdown`.
    pub eta: Option<String>,
    /// When it expires (ISO 8601): an expired task does not run.
    pub expires: Option<String>,
    /// How often it was retried.
    pub retries: u64,
    /// The first task of its workflow.
    pub root_id: Option<String>,
    /// The task that sent it.
    pub parent_id: Option<String>,
    /// The group it belongs to.
    pub group: Option<String>,
    /// The producer's own headers (`apply_async(headers=…)`).
    pub custom_headers: Map<String, Value>,
    /// `callbacks`, `errbacks`, `chain`, `chord`: what runs after it.
    pub embed: Map<String, Value>,
    /// Where an `rpc://` result goes (the message's `reply_to` property).
    pub reply_to: Option<String>,
}

impl TaskMessage {
    /// Decodes a message from its headers, its content type and encoding, and its body (as
    /// the broker delivered it: not base64). Protocol v1, a serializer other than JSON and a
    /// compressed body are refused with the reason.
    pub fn decode(
        headers: &Map<String, Value>,
        content_type: &str,
        content_encoding: &str,
        reply_to: Option<&str>,
        body: &[u8],
    ) -> Result<TaskMessage, Refused> {
        let task_id = text(headers, "id");
        let refuse = |reason: String| Refused {
            task_id: task_id.clone(),
            reason,
        };
        if let Some(compression) = text(headers, "compression") {
            return Err(refuse(format!(
                "compressed task bodies ({compression}) are not supported: send tasks to weir without task_compression"
            )));
        }
        let task = match text(headers, "task") {
            Some(task) => task,
            None if headers.is_empty() => {
                // Protocol v1 carried everything in the body; its id can still be read there.
                let v1_id = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|b| b.get("id")?.as_str().map(str::to_string));
                return Err(Refused {
                    task_id: v1_id,
                    reason: "Celery task protocol 1 is not supported: use protocol 2 (the default since Celery 4; task_protocol = 2)".into(),
                });
            }
            None => return Err(refuse("the message has no `task` header".into())),
        };
        let Some(id) = task_id.clone() else {
            return Err(refuse("the message has no `id` header".into()));
        };
        if content_type != "application/json" {
            let serializer = match content_type {
                "application/x-python-serialize" => "pickle",
                "application/x-yaml" => "yaml",
                "application/x-msgpack" => "msgpack",
                other => other,
            };
            return Err(refuse(format!(
                "task {task}: the {serializer} serializer is not supported: weir takes JSON task bodies (task_serializer = \"json\")"
            )));
        }
        if !matches!(content_encoding, "utf-8" | "utf8" | "") {
            return Err(refuse(format!(
                "task {task}: content encoding {content_encoding:?} is not supported (utf-8 only)"
            )));
        }
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| refuse(format!("task {task}: the body is not JSON: {e}")))?;
        let Value::Array(mut parts) = body else {
            return Err(refuse(format!(
                "task {task}: the body is not [args, kwargs, embed]"
            )));
        };
        if parts.len() != 3 {
            return Err(refuse(format!(
                "task {task}: the body has {} parts, not [args, kwargs, embed]",
                parts.len()
            )));
        }
        let embed = parts.pop().unwrap_or_default();
        let kwargs = parts.pop().unwrap_or_default();
        let args = parts.pop().unwrap_or_default();
        let (Value::Array(args), Value::Object(kwargs), Value::Object(embed)) =
            (args, kwargs, embed)
        else {
            return Err(refuse(format!(
                "task {task}: args must be a list, kwargs and embed objects"
            )));
        };
        let custom_headers = headers
            .iter()
            .filter(|(k, _)| !PROTOCOL_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(TaskMessage {
            eta: text(headers, "eta"),
            expires: text(headers, "expires"),
            retries: headers.get("retries").and_then(Value::as_u64).unwrap_or(0),
            root_id: text(headers, "root_id"),
            parent_id: text(headers, "parent_id"),
            group: text(headers, "group"),
            reply_to: reply_to.filter(|r| !r.is_empty()).map(str::to_string),
            task,
            id,
            args,
            kwargs,
            custom_headers,
            embed,
        })
    }

    /// The event the task becomes: `celery/<task name>` with the task id as its id (a
    /// redelivered message starts no second run), and the call in its data. Built and checked
    /// as an event sent over HTTP is (a task name too long for an event name is refused).
    pub fn to_event(&self) -> Result<Event, Refused> {
        let event = json!({
            "name": format!("celery/{}", self.task),
            "id": self.id,
            "data": {
                "args": self.args,
                "kwargs": self.kwargs,
                "task_id": self.id,
                "retries": self.retries,
                "eta": self.eta,
                "expires": self.expires,
                "root_id": self.root_id,
                "parent_id": self.parent_id,
                "group": self.group,
                "headers": self.custom_headers,
            },
        });
        Event::from_json(event, "").map_err(|e| Refused {
            task_id: Some(self.id.clone()),
            reason: format!("task {}: {e}", self.task),
        })
    }
}

/// A header's text, when it is a non-empty string.
fn text(headers: &Map<String, Value>, key: &str) -> Option<String> {
    headers
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
