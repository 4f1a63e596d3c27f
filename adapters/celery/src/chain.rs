//! What a Celery worker sends when a task ends, so that chains and callbacks that mix Celery
//! workers and weir work both ways.
//!
//! A task message's `embed` carries what follows it: `chain` (the rest of a `chain(…)`, in
//! reverse order: the next task is the last entry), `callbacks` (`link=`) and `errbacks`
//! (`link_error=`), each a signature `{"task", "args", "kwargs", "options", "immutable", …}`.
//! As Celery's tracer does:
//! - on success, the next task of the chain is sent with the result prepended to its args
//!   (not when immutable, `.si()`), the rest of the chain in its own `embed`, and the task id
//!   its signature was frozen with (the client already waits on it); each callback is sent the
//!   same way with a new id;
//! - on failure, each errback is sent with the failed task's id as its first argument (a
//!   worker does so for errbacks it does not run itself).
//!
//! A signature names no queue: a worker picks it from its own `task_routes`; here the adapter's
//! `routes` setting does, else the queue `celery`. Chords are not followed (reported).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::results::TaskState;

/// Where the tasks a finished task sends on go: by task name, else `default_queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    by_task: HashMap<String, String>,
    default_queue: String,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            by_task: HashMap::new(),
            default_queue: "celery".into(),
        }
    }
}

impl Routes {
    /// Parses the `routes` setting: `task:queue` pairs separated by commas
    /// (`tasks.mul:math,tasks.send_welcome:mail`); `*:queue` sets the default queue.
    pub fn parse(value: &str) -> Result<Routes, String> {
        let mut routes = Routes::default();
        for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((task, queue)) = pair.split_once(':') else {
                return Err(format!("{pair:?} is not task:queue"));
            };
            let (task, queue) = (task.trim(), queue.trim());
            if task.is_empty() || queue.is_empty() {
                return Err(format!("{pair:?} is not task:queue"));
            }
            if task == "*" {
                routes.default_queue = queue.to_string();
            } else {
                routes.by_task.insert(task.to_string(), queue.to_string());
            }
        }
        Ok(routes)
    }

    /// The queue of `task`.
    pub fn queue_of(&self, task: &str) -> &str {
        self.by_task
            .get(task)
            .map_or(self.default_queue.as_str(), String::as_str)
    }
}

/// A task message to send: the protocol v2 headers and body of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The task's name.
    pub task: String,
    /// Its id.
    pub id: String,
    /// The queue it goes to.
    pub queue: String,
    /// Protocol v2 headers.
    pub headers: Map<String, Value>,
    /// The JSON body `[args, kwargs, embed]`.
    pub body: Vec<u8>,
    /// The `reply_to` of the task that sent it (an `rpc://` client's queue), if any.
    pub reply_to: Option<String>,
    /// Its priority (0–9 on Redis, up to the queue's `x-max-priority` on RabbitMQ).
    pub priority: u8,
}

/// What a finished task sends on, and what it cannot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowUpPlan {
    /// The messages to send.
    pub send: Vec<Outgoing>,
    /// Why some follow-up cannot be sent (a group or a chord as the next task of a chain);
    /// the tasks the client may wait on then get a FAILURE saying so ([`rest_of_chain_ids`]).
    pub unsupported: Option<String>,
}

/// The task ids frozen into the rest of a task's chain: what a client of the chain may wait
/// on (each gets a failure when the chain cannot go on).
pub fn rest_of_chain_ids(data: &Value) -> Vec<String> {
    list(&data["embed"]["chain"])
        .iter()
        .filter_map(frozen_id)
        .collect()
}

/// The messages a task whose event data is `data` sends on once it ended in `state`.
pub fn follow_ups(data: &Value, state: &TaskState, routes: &Routes) -> FollowUpPlan {
    let embed = &data["embed"];
    let task_id = data["task_id"].as_str().unwrap_or_default();
    let root_id = data["root_id"].as_str().unwrap_or(task_id);
    let reply_to = data["reply_to"].as_str();
    let mut out = Vec::new();
    let mut unsupported = None;
    match state {
        TaskState::Success(value) => {
            if let Some(chain) = embed["chain"].as_array()
                && let Some((next, _)) = chain.split_last()
                && let Some(kind) = next["subtask_type"].as_str()
            {
                unsupported = Some(format!(
                    "the next task of the chain is a {kind}, which weir does not send on yet"
                ));
            } else if let Some(chain) = embed["chain"].as_array()
                && let Some((next, rest)) = chain.split_last()
            {
                let rest = (!rest.is_empty()).then(|| Value::Array(rest.to_vec()));
                let id = frozen_id(next).unwrap_or_else(|| derived_id(task_id, "chain", 0));
                out.extend(message(
                    next,
                    Some(value),
                    id,
                    rest,
                    task_id,
                    root_id,
                    reply_to,
                    routes,
                ));
            }
            for (i, callback) in list(&embed["callbacks"]).iter().enumerate() {
                let id = frozen_id(callback).unwrap_or_else(|| derived_id(task_id, "link", i));
                out.extend(message(
                    callback,
                    Some(value),
                    id,
                    None,
                    task_id,
                    root_id,
                    reply_to,
                    routes,
                ));
            }
        }
        TaskState::Failure { .. } => {
            for (i, errback) in list(&embed["errbacks"]).iter().enumerate() {
                let id = frozen_id(errback).unwrap_or_else(|| derived_id(task_id, "errback", i));
                let first = json!(task_id);
                out.extend(message(
                    errback,
                    Some(&first),
                    id,
                    None,
                    task_id,
                    root_id,
                    reply_to,
                    routes,
                ));
            }
        }
        _ => {}
    }
    FollowUpPlan {
        send: out,
        unsupported,
    }
}

/// Whether the task is part of a chord (not followed: its header group and body are left to
/// Celery).
pub fn has_chord(data: &Value) -> bool {
    !data["embed"]["chord"].is_null()
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The task id a signature was frozen with (`options.task_id`).
fn frozen_id(signature: &Value) -> Option<String> {
    signature["options"]["task_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// A new task id, the same each time for the same parent and position (a follow-up sent again
/// after a crash keeps its id, so a weir run of it starts once), shaped as a UUID.
fn derived_id(parent: &str, kind: &str, index: usize) -> String {
    let hash = sha2::Sha256::digest(format!("{parent}/{kind}/{index}").as_bytes());
    let h: Vec<String> = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    let h = h.concat();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The message of `signature`, called with `first` prepended to its args (unless immutable).
#[allow(clippy::too_many_arguments)]
fn message(
    signature: &Value,
    first: Option<&Value>,
    id: String,
    chain: Option<Value>,
    parent_id: &str,
    root_id: &str,
    reply_to: Option<&str>,
    routes: &Routes,
) -> Option<Outgoing> {
    let task = signature["task"].as_str()?.to_string();
    let mut args: Vec<Value> = list(&signature["args"]).to_vec();
    let immutable = signature["immutable"].as_bool().unwrap_or(false);
    if let (Some(first), false) = (first, immutable) {
        args.insert(0, first.clone());
    }
    let kwargs = signature["kwargs"].as_object().cloned().unwrap_or_default();
    let options = &signature["options"];
    let embed = json!({
        "callbacks": options.get("link").cloned().map(as_list).unwrap_or(Value::Null),
        "errbacks": options.get("link_error").cloned().map(as_list).unwrap_or(Value::Null),
        "chain": chain.unwrap_or(Value::Null),
        "chord": options.get("chord").cloned().unwrap_or(Value::Null),
    });
    let body = json!([args, kwargs, embed]).to_string().into_bytes();
    let queue = options["queue"]
        .as_str()
        .map_or_else(|| routes.queue_of(&task).to_string(), str::to_string);
    // The signature's options, as `apply_async` turns them into headers.
    let now = chrono::Utc::now();
    // A time `seconds` from now; `None` past what a date can hold (a client's `countdown` of
    // 1e16 must not panic the adapter: it is dropped, as Celery drops an unusable one).
    let at = |seconds: f64| {
        let ms = seconds * 1000.0;
        if !ms.is_finite() || ms.abs() > 1e15 {
            return None;
        }
        let delta = chrono::TimeDelta::try_milliseconds(ms as i64)?;
        now.checked_add_signed(delta)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
    };
    let eta = match (&options["countdown"], &options["eta"]) {
        (Value::Number(n), _) => n.as_f64().and_then(at).map_or(Value::Null, |t| json!(t)),
        (_, Value::String(eta)) => json!(eta),
        _ => Value::Null,
    };
    let expires = match &options["expires"] {
        Value::Number(n) => n.as_f64().and_then(at).map_or(Value::Null, |t| json!(t)),
        Value::String(expires) => json!(expires),
        _ => Value::Null,
    };
    let mut headers = json!({
        "lang": "py",
        "task": task,
        "id": id,
        "shadow": options["shadow"],
        "eta": eta,
        "expires": expires,
        "group": options["group_id"],
        "group_index": options["group_index"],
        "retries": 0,
        "timelimit": [options["time_limit"], options["soft_time_limit"]],
        "root_id": root_id,
        "parent_id": parent_id,
        "argsrepr": Value::String(saferepr(&Value::Array(args.clone()))),
        "kwargsrepr": Value::String(saferepr(&Value::Object(kwargs.clone()))),
        "origin": format!("weir@{}", std::process::id()),
        "ignore_result": options["ignore_result"].as_bool().unwrap_or(false),
        "replaced_task_nesting": 0,
        "stamped_headers": null,
        "stamps": {},
    });
    // The producer's own headers (`.set(headers=…)`) ride beside the protocol's.
    if let (Some(custom), Some(all)) = (options["headers"].as_object(), headers.as_object_mut()) {
        for (k, v) in custom {
            all.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let Value::Object(headers) = headers else {
        return None;
    };
    let priority = options["priority"].as_u64().unwrap_or(0).min(255) as u8;
    let reply_to = options["reply_to"]
        .as_str()
        .or(reply_to)
        .map(str::to_string);
    Some(Outgoing {
        task,
        id,
        queue,
        headers,
        body,
        reply_to,
        priority,
    })
}

/// A value's JSON, cut to 1,024 characters as Celery's `saferepr` cuts `argsrepr` (a header
/// that must fit in one AMQP frame).
fn saferepr(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(1024) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A `link` option may be one signature or a list of them.
fn as_list(value: Value) -> Value {
    match value {
        Value::Array(_) | Value::Null => value,
        one => Value::Array(vec![one]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(task: &str, args: Value, options: Value, immutable: bool) -> Value {
        json!({"task": task, "args": args, "kwargs": {}, "options": options,
               "subtask_type": null, "immutable": immutable})
    }

    #[test]
    fn the_next_task_of_a_chain_gets_the_result_and_the_rest_of_the_chain() {
        // chain(add.s(2, 2), add.s(4), add.si(1, 1)) as Celery 5.7 sends it: reversed.
        let data = json!({"task_id": "t1", "root_id": "t1", "reply_to": "client",
            "embed": {"callbacks": null, "errbacks": null, "chord": null, "chain": [
                sig("tasks.add", json!([1, 1]), json!({"task_id": "t3"}), true),
                sig("tasks.add", json!([4]), json!({"task_id": "t2"}), false)]}});
        let routes = Routes::parse("tasks.add:math").expect("routes");
        let out = follow_ups(&data, &TaskState::Success(json!(4)), &routes).send;
        assert_eq!(out.len(), 1);
        let next = &out[0];
        assert_eq!((next.task.as_str(), next.id.as_str()), ("tasks.add", "t2"));
        assert_eq!(next.queue, "math");
        assert_eq!(next.headers["parent_id"], "t1");
        assert_eq!(next.headers["root_id"], "t1");
        assert_eq!(next.reply_to.as_deref(), Some("client"));
        let body: Value = serde_json::from_slice(&next.body).expect("json");
        assert_eq!(body[0], json!([4, 4]), "the result comes first");
        assert_eq!(body[2]["chain"][0]["options"]["task_id"], "t3");
        // The last of the chain: immutable, so no result prepended, and no chain after it.
        let data = json!({"task_id": "t2", "root_id": "t1",
            "embed": {"chain": [sig("tasks.add", json!([1, 1]), json!({"task_id": "t3"}), true)]}});
        let out = follow_ups(&data, &TaskState::Success(json!(8)), &Routes::default()).send;
        let body: Value = serde_json::from_slice(&out[0].body).expect("json");
        assert_eq!(body[0], json!([1, 1]));
        assert_eq!(body[2]["chain"], Value::Null);
        assert_eq!(out[0].queue, "celery");
    }

    /// Found reviewing the fuzzer: a `countdown` or `expires` past what a date holds panicked
    /// the adapter. Now such a time is left out.
    #[test]
    fn a_countdown_past_any_date_is_dropped_not_a_panic() {
        for huge in [json!(1e16), json!(-1e300), json!(f64::MAX), json!(i64::MAX)] {
            let data = json!({"task_id": "t1", "embed": {"callbacks": [sig(
                "tasks.add", json!([1]), json!({"countdown": huge, "expires": huge}), false)]}});
            let out = follow_ups(&data, &TaskState::Success(json!(5)), &Routes::default()).send;
            assert_eq!(out.len(), 1, "{huge}");
            assert_eq!(out[0].headers["eta"], Value::Null, "{huge}");
            assert_eq!(out[0].headers["expires"], Value::Null, "{huge}");
        }
        let data = json!({"task_id": "t1", "embed": {"callbacks": [sig(
            "tasks.add", json!([1]), json!({"countdown": 5}), false)]}});
        let out = follow_ups(&data, &TaskState::Success(json!(5)), &Routes::default()).send;
        assert!(
            out[0].headers["eta"].is_string(),
            "an ordinary countdown still gives an eta"
        );
    }

    #[test]
    fn callbacks_on_success_errbacks_on_failure() {
        let data = json!({"task_id": "t1", "embed": {
            "callbacks": [sig("tasks.add", json!([10]), json!({}), false)],
            "errbacks": [sig("tasks.report", json!([]), json!({}), false)]}});
        let ok = follow_ups(&data, &TaskState::Success(json!(5)), &Routes::default()).send;
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].task, "tasks.add");
        let body: Value = serde_json::from_slice(&ok[0].body).expect("json");
        assert_eq!(body[0], json!([5, 10]));
        // A new id, the same when sent again.
        let again = follow_ups(&data, &TaskState::Success(json!(5)), &Routes::default()).send;
        assert_eq!(ok[0].id, again[0].id);
        assert_ne!(ok[0].id, "t1");
        assert_eq!(ok[0].id.len(), 36);
        let failed = TaskState::Failure {
            exc_type: "StepFailed".into(),
            exc_module: None,
            message: "boom".into(),
        };
        let out = follow_ups(&data, &failed, &Routes::default()).send;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].task, "tasks.report");
        let body: Value = serde_json::from_slice(&out[0].body).expect("json");
        assert_eq!(
            body[0],
            json!(["t1"]),
            "an errback gets the failed task's id"
        );
    }

    #[test]
    fn options_become_headers_and_groups_are_not_sent_as_tasks() {
        let next = sig(
            "tasks.mul",
            json!([2]),
            json!({"task_id": "t2", "countdown": 30, "group_id": "g", "group_index": 1,
                   "priority": 6, "headers": {"tenant": "acme"}}),
            false,
        );
        let data = json!({"task_id": "t1", "embed": {"chain": [next]}});
        let plan = follow_ups(&data, &TaskState::Success(json!(1)), &Routes::default());
        let h = &plan.send[0].headers;
        assert!(
            h["eta"].as_str().is_some_and(|e| e.ends_with("+00:00")),
            "{h:?}"
        );
        assert_eq!(
            (h["group"].clone(), h["group_index"].clone()),
            (json!("g"), json!(1))
        );
        assert_eq!(h["tenant"], "acme");
        assert_eq!(plan.send[0].priority, 6);
        // A group as the next task: not sent as a task; said why.
        let mut group = sig("celery.group", json!([]), json!({"task_id": "g1"}), false);
        group["subtask_type"] = json!("group");
        let data = json!({"task_id": "t1", "embed": {"chain": [
            sig("tasks.add", json!([1]), json!({"task_id": "t3"}), false), group]}});
        let plan = follow_ups(&data, &TaskState::Success(json!(1)), &Routes::default());
        assert!(plan.send.is_empty());
        assert!(plan.unsupported.is_some_and(|why| why.contains("group")));
        assert_eq!(rest_of_chain_ids(&data), ["t3", "g1"]);
        // argsrepr is cut as Celery cuts it.
        let big = sig("tasks.add", json!(["x".repeat(5000)]), json!({}), true);
        let data = json!({"task_id": "t1", "embed": {"callbacks": [big]}});
        let plan = follow_ups(&data, &TaskState::Success(json!(1)), &Routes::default());
        assert!(
            plan.send[0].headers["argsrepr"]
                .as_str()
                .is_some_and(|r| r.len() < 1100)
        );
    }

    #[test]
    fn routes_parse() {
        let r = Routes::parse("tasks.a:q1, *:default").expect("routes");
        assert_eq!(r.queue_of("tasks.a"), "q1");
        assert_eq!(r.queue_of("tasks.b"), "default");
        assert!(Routes::parse("tasks.a").is_err());
        assert!(Routes::parse("tasks.a:").is_err());
    }
}
