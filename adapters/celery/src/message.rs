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
    /// The task's name, when the message carries one (a task no weir function handles goes
    /// to the Celery workers under `unhandled=requeue:…`, however it is encoded).
    pub task: Option<String>,
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
    /// When to run it (ISO 8601), from `eta` or `countdown`. Celery writes it with an offset;
    /// one without (a naive `eta=datetime(…)`) is in the producer's `timezone`, UTC by default.
    pub eta: Option<String>,
    /// When it expires (ISO 8601, the same rule): an expired task does not run.
    pub expires: Option<String>,
    /// How often it was retried.
    pub retries: u64,
    /// How many times it replaced a task (`Task.replace`; the replacement keeps the task id).
    pub replaced_task_nesting: u64,
    /// The first task of its workflow.
    pub root_id: Option<String>,
    /// The task that sent it.
    pub parent_id: Option<String>,
    /// The group it belongs to.
    pub group: Option<String>,
    /// The client wants no result (`ignore_result=True`): none is written, as a worker writes
    /// none.
    pub ignore_result: bool,
    /// The producer's own headers (`apply_async(headers=…)`).
    pub custom_headers: Map<String, Value>,
    /// `callbacks`, `errbacks`, `chain`, `chord`: what runs after it.
    pub embed: Map<String, Value>,
    /// The message's `reply_to` property: the producer's own id, which Celery sets on every
    /// message; only when results go by `rpc://` is a reply sent there.
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
            task: text(headers, "task"),
            reason,
        };
        if let Some(compression) = text(headers, "compression") {
            return Err(refuse(format!(
                "compressed task bodies ({compression}) are not supported: send tasks to weir without task_compression"
            )));
        }
        let task = match text(headers, "task") {
            Some(task) => task,
            None => {
                // As a worker decides: no `task` header and a body that names the task is
                // protocol 1, whatever other headers the producer or the broker added; its id
                // is in the body.
                let v1 = serde_json::from_slice::<Value>(body)
                    .ok()
                    .filter(|b| b.get("task").is_some_and(Value::is_string));
                return Err(match v1 {
                    Some(v1) => Refused {
                        task_id: v1["id"].as_str().map(str::to_string).or(task_id.clone()),
                        task: v1["task"].as_str().map(str::to_string),
                        reason: "Celery task protocol 1 is not supported: use protocol 2 (the default since Celery 4; task_protocol = 2)".into(),
                    },
                    None => refuse("the message has no `task` header".into()),
                });
            }
        };
        let Some(id) = task_id.clone() else {
            return Err(refuse("the message has no `id` header".into()));
        };
        if content_type != "application/json" {
            let serializer = match content_type {
                "application/x-python-serialize" => "pickle",
                "application/x-yaml" => "yaml",
                "application/x-msgpack" => "msgpack",
                "" => "unnamed (no content type)",
                other => other,
            };
            return Err(refuse(format!(
                "task {task}: the {serializer} serializer is not supported: weir takes JSON task bodies (task_serializer = \"json\")"
            )));
        }
        if !(content_encoding.is_empty()
            || content_encoding.eq_ignore_ascii_case("utf-8")
            || content_encoding.eq_ignore_ascii_case("utf8"))
        {
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
        // The producer's own headers: not the protocol's, not the broker's (`x-death`,
        // `x-delivery-count`, …).
        let custom_headers = headers
            .iter()
            .filter(|(k, _)| !PROTOCOL_HEADERS.contains(&k.as_str()) && !k.starts_with("x-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // A worker refuses these when a producer's headers overrode them with other types;
        // running the task at once, or never letting it expire, would be worse.
        let time = |key: &str| match headers.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(refuse(format!(
                "task {task}: header {key} must be an ISO 8601 time, got {other}"
            ))),
        };
        let (eta, expires) = (time("eta")?, time("expires")?);
        let count = |key: &str| match headers.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                refuse(format!(
                    "task {task}: header {key} must be a count, got {v}"
                ))
            }),
        };
        let retries = count("retries")?;
        let replaced_task_nesting = count("replaced_task_nesting")?;
        Ok(TaskMessage {
            eta,
            expires,
            retries,
            replaced_task_nesting,
            ignore_result: headers
                .get("ignore_result")
                .and_then(Value::as_bool)
                .unwrap_or(false),
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

    /// The id of the task's event: the task id, so that a redelivered message starts no second
    /// run. A task sent again under the same id on purpose is a new event: `task.retry()` (its
    /// `retries` header counts up) gets `<id>/r<retries>`, a `Task.replace()` replacement (its
    /// `replaced_task_nesting` counts up) `<id>/n<nesting>`, both when both.
    pub fn event_id(&self) -> String {
        let mut id = self.id.clone();
        if self.retries > 0 {
            id.push_str(&format!("/r{}", self.retries));
        }
        if self.replaced_task_nesting > 0 {
            id.push_str(&format!("/n{}", self.replaced_task_nesting));
        }
        id
    }

    /// The event the task becomes: `celery/<task name>` with [`TaskMessage::event_id`] as its
    /// id, and the call in its data (`task_id` is the task id the client waits on). Built and
    /// checked as an event sent over HTTP is (a task name too long for an event name is
    /// refused).
    pub fn to_event(&self) -> Result<Event, Refused> {
        let event = json!({
            "name": format!("celery/{}", self.task),
            "id": self.event_id(),
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
                "reply_to": self.reply_to,
                "ignore_result": self.ignore_result,
                "embed": self.embed,
            },
        });
        Event::from_json(event, "").map_err(|e| Refused {
            task_id: Some(self.id.clone()),
            task: Some(self.task.clone()),
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
