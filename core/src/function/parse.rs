//! Walks a function definition (JSON) into a [`Function`], collecting every problem with its
//! JSON path instead of stopping at the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::cron::CronTrigger;
use super::dag;
use super::model::{DEFAULT_ATTEMPTS, DEFAULT_STEP_TIMEOUT, Edge, Function, Join, Step, Trigger};
use super::parse_wait::{EdgeWait, parse_async, parse_cancel, parse_sleep};
use super::problems::Problems;
use super::wait::{Wait, WaitKind};
use crate::duration::parse_duration;
use crate::event::type_name;
use crate::expr::Expr;

/// Checks runtimes while loading: is `runtime.type` available, and is its config right?
pub trait RuntimeCatalog {
    /// An error whose message says what is wrong when the runtime is unknown, not in this
    /// build, or misconfigured.
    fn check(
        &self,
        runtime_type: &str,
        runtime: &Map<String, Value>,
        path: Option<&Path>,
    ) -> crate::Result<()>;
}

/// Function-level fields that are part of the model but not implemented yet.
const NOT_YET: &[&str] = &[
    "concurrency",
    "throttle",
    "rateLimit",
    "debounce",
    "batchEvents",
    "priority",
    "idempotency",
];

/// Parses and validates `doc`, the content of `dir/weir.json`.
pub fn parse_function(
    doc: &Value,
    dir: &Path,
    version: String,
    runtimes: &dyn RuntimeCatalog,
) -> Result<Function, Vec<super::Problem>> {
    let mut p = Problems::default();
    let Some(obj) = doc.as_object() else {
        p.push(
            "",
            format!(
                "a function definition must be a JSON object, got {}",
                type_name(doc)
            ),
        );
        return Err(p.0);
    };
    for key in obj.keys() {
        let known = matches!(
            key.as_str(),
            "id" | "name" | "triggers" | "steps" | "retries" | "cancel" | "$schema"
        );
        if NOT_YET.contains(&key.as_str()) {
            p.push(key.clone(), "not supported yet: this weir version does not implement it; remove it to load the function");
        } else if !known {
            p.push(key.clone(), "unknown field");
        }
    }
    let id = slug_field(obj, "id", "", &mut p).unwrap_or_default();
    let name = match obj.get("name") {
        None => id.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            p.push("name", format!("must be a string, got {}", type_name(v)));
            id.clone()
        }
    };
    let default_attempts =
        parse_retries(obj.get("retries"), "retries", &mut p).unwrap_or(DEFAULT_ATTEMPTS);
    let (triggers, crons) = parse_triggers(obj.get("triggers"), &mut p);
    let cancels = obj
        .get("cancel")
        .map(|c| parse_cancel(c, &mut p))
        .unwrap_or_default();
    let (steps, edges) = parse_steps(obj.get("steps"), dir, default_attempts, runtimes, &mut p);

    let index: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let mut children = vec![Vec::new(); steps.len()];
    let mut steps = steps;
    let mut resolved = Vec::new();
    let mut waits: Vec<Wait> = Vec::new();
    let mut groups: HashMap<(usize, String), usize> = HashMap::new();
    for pending in edges {
        let PendingEdge {
            child,
            after: after_idx,
            parent: parent_id,
            condition,
            wait,
        } = pending;
        let Some(&parent) = index.get(&parent_id) else {
            p.push(
                format!("steps.{}.after[{after_idx}].step", steps[child].id),
                format!("no step {parent_id:?}"),
            );
            continue;
        };
        let e = resolved.len();
        let mut edge = Edge {
            parent,
            child,
            condition,
            wait: None,
            on_timeout: false,
        };
        if let Some(EdgeWait {
            group,
            on_timeout,
            kind,
        }) = wait
        {
            let is_event = matches!(kind, WaitKind::Event(_));
            let w = *groups.entry((parent, group)).or_insert_with(|| {
                let ordinal = waits.iter().filter(|w| w.parent == parent).count() as u32;
                waits.push(Wait {
                    parent,
                    ordinal,
                    edges: Vec::new(),
                    kind,
                });
                waits.len() - 1
            });
            waits[w].edges.push(e);
            edge.wait = Some(w);
            edge.on_timeout = on_timeout;
            if is_event {
                if steps[child].async_wait.is_some() {
                    p.push(
                        format!("steps.{}.after[{after_idx}].async", steps[child].id),
                        "a step has at most one incoming async edge (its input's `async` is that edge's event)",
                    );
                }
                steps[child].async_wait = Some(w);
            }
        }
        resolved.push(edge);
        children[parent].push(e);
        steps[child].parents.push(e);
    }
    if let Some(cycle) = dag::find_cycle(steps.len(), &resolved) {
        let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
        p.push(
            "steps",
            format!("the steps form a cycle: {}", names.join(" → ")),
        );
    }
    let roots: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].parents.is_empty())
        .collect();
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Function {
        id,
        name,
        version,
        dir: dir.to_path_buf(),
        triggers,
        crons,
        steps,
        index,
        children,
        edges: resolved,
        roots,
        definition: doc.clone(),
        env: Default::default(),
        waits,
        cancels,
    })
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !s.starts_with('-')
}

fn slug_field(obj: &Map<String, Value>, key: &str, base: &str, p: &mut Problems) -> Option<String> {
    let path = join(base, key);
    match obj.get(key) {
        None => {
            p.push(path, "required");
            None
        }
        Some(Value::String(s)) if is_slug(s) => Some(s.clone()),
        Some(Value::String(s)) => {
            p.push(
                path,
                format!("{s:?} is not a slug (lowercase letters, digits, '-' and '_')"),
            );
            None
        }
        Some(v) => {
            p.push(path, format!("must be a string, got {}", type_name(v)));
            None
        }
    }
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn parse_retries(v: Option<&Value>, path: &str, p: &mut Problems) -> Option<u32> {
    let v = v?;
    let Some(obj) = v.as_object() else {
        p.push(
            path,
            format!(
                "must be an object like {{\"attempts\": 4}}, got {}",
                type_name(v)
            ),
        );
        return None;
    };
    for key in obj.keys().filter(|k| *k != "attempts") {
        p.push(format!("{path}.{key}"), "unknown field");
    }
    match obj.get("attempts") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|a| (1..=100).contains(&a)) => {
            n.as_u64().map(|a| a as u32)
        }
        Some(_) => {
            p.push(
                format!("{path}.attempts"),
                "must be an integer from 1 to 100",
            );
            None
        }
        None => None,
    }
}

fn parse_triggers(v: Option<&Value>, p: &mut Problems) -> (Vec<Trigger>, Vec<CronTrigger>) {
    let mut crons = Vec::new();
    let Some(v) = v else {
        p.push("triggers", "required: at least one trigger");
        return (Vec::new(), crons);
    };
    let Some(items) = v.as_array() else {
        p.push(
            "triggers",
            format!("must be an array, got {}", type_name(v)),
        );
        return (Vec::new(), crons);
    };
    if items.is_empty() {
        p.push("triggers", "at least one trigger is required");
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("triggers[{i}]");
        let Some(obj) = item.as_object() else {
            p.push(path, format!("must be an object, got {}", type_name(item)));
            continue;
        };
        for key in obj.keys() {
            match key.as_str() {
                "event" | "expression" | "cron" => {}
                "definition" => p.push(
                    format!("{path}.{key}"),
                    "not supported yet: this weir version does not implement it",
                ),
                _ => p.push(format!("{path}.{key}"), "unknown field"),
            }
        }
        if let Some(cron) = obj.get("cron") {
            if obj.contains_key("event") || obj.contains_key("expression") {
                p.push(
                    path.clone(),
                    "a trigger is either an event (with an optional expression) or a cron, not both",
                );
            }
            match cron {
                Value::String(src) => match CronTrigger::parse(src) {
                    Ok(c) => crons.push(c),
                    Err(e) => p.push(format!("{path}.cron"), e.to_string()),
                },
                v => p.push(
                    format!("{path}.cron"),
                    format!("must be a string, got {}", type_name(v)),
                ),
            }
            continue;
        }
        let event = match obj.get("event") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(v) if !v.is_string() => {
                p.push(
                    format!("{path}.event"),
                    format!("must be a string, got {}", type_name(v)),
                );
                continue;
            }
            _ => {
                p.push(
                    format!("{path}.event"),
                    "required: the event name this trigger listens to",
                );
                continue;
            }
        };
        let expression = match obj.get("expression") {
            None | Some(Value::Null) => None,
            Some(Value::String(src)) => match Expr::compile(src) {
                Ok(e) => Some(e),
                Err(e) => {
                    p.push(format!("{path}.expression"), e.to_string());
                    None
                }
            },
            Some(v) => {
                p.push(
                    format!("{path}.expression"),
                    format!("must be a string, got {}", type_name(v)),
                );
                None
            }
        };
        out.push(Trigger { event, expression });
    }
    (out, crons)
}

/// An edge as written, before its parent is looked up.
struct PendingEdge {
    /// The child step's index.
    child: usize,
    /// The edge's position in the child's `after`.
    after: usize,
    /// The parent step's id.
    parent: String,
    /// The `if`.
    condition: Option<Expr>,
    /// The `async` or `wait`, if any.
    wait: Option<EdgeWait>,
}

fn parse_steps(
    v: Option<&Value>,
    dir: &Path,
    default_attempts: u32,
    runtimes: &dyn RuntimeCatalog,
    p: &mut Problems,
) -> (Vec<Step>, Vec<PendingEdge>) {
    let mut steps = Vec::new();
    let mut edges = Vec::new();
    let Some(v) = v else {
        p.push("steps", "required: at least one step");
        return (steps, edges);
    };
    let Some(obj) = v.as_object() else {
        p.push(
            "steps",
            format!("must be an object of steps by id, got {}", type_name(v)),
        );
        return (steps, edges);
    };
    if obj.is_empty() {
        p.push("steps", "at least one step is required");
    }
    for (key, value) in obj {
        let base = format!("steps.{key}");
        if !is_slug(key) {
            p.push(
                base.clone(),
                format!("step id {key:?} is not a slug (lowercase letters, digits, '-' and '_')"),
            );
        }
        let Some(s) = value.as_object() else {
            p.push(base, format!("must be an object, got {}", type_name(value)));
            continue;
        };
        let index = steps.len();
        if let Some(step) = parse_step(
            key,
            s,
            &base,
            dir,
            default_attempts,
            runtimes,
            p,
            index,
            &mut edges,
        ) {
            steps.push(step);
        }
    }
    (steps, edges)
}

#[allow(clippy::too_many_arguments)]
fn parse_step(
    key: &str,
    s: &Map<String, Value>,
    base: &str,
    dir: &Path,
    default_attempts: u32,
    runtimes: &dyn RuntimeCatalog,
    p: &mut Problems,
    index: usize,
    edges: &mut Vec<PendingEdge>,
) -> Option<Step> {
    for k in s.keys() {
        if !matches!(
            k.as_str(),
            "id" | "name" | "path" | "runtime" | "timeout" | "after" | "join" | "retries"
        ) {
            p.push(format!("{base}.{k}"), "unknown field");
        }
    }
    match s.get("id") {
        None => {}
        Some(Value::String(id)) if id == key => {}
        Some(other) => p.push(
            format!("{base}.id"),
            format!("must equal the step's key {key:?}, got {other}"),
        ),
    }
    let name = s
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(key)
        .to_string();
    let path = match s.get("path") {
        None => None,
        Some(Value::String(raw)) => Some(resolve_path(dir, raw)),
        Some(v) => {
            p.push(
                format!("{base}.path"),
                format!("must be a string, got {}", type_name(v)),
            );
            None
        }
    };
    let (runtime_type, runtime) = match s.get("runtime") {
        None => (
            "process".to_string(),
            Map::from_iter([("type".to_string(), Value::from("process"))]),
        ),
        Some(Value::Object(rt)) => match rt.get("type") {
            Some(Value::String(t)) => (t.clone(), rt.clone()),
            _ => {
                p.push(
                    format!("{base}.runtime.type"),
                    "required: one of process, docker, lambda, wasm, http",
                );
                (String::new(), rt.clone())
            }
        },
        Some(v) => {
            p.push(
                format!("{base}.runtime"),
                format!(
                    "must be an object like {{\"type\": \"process\"}}, got {}",
                    type_name(v)
                ),
            );
            (String::new(), Map::new())
        }
    };
    if !runtime_type.is_empty()
        && let Err(e) = runtimes.check(&runtime_type, &runtime, path.as_deref())
    {
        p.push(format!("{base}.runtime"), e.to_string());
    }
    let timeout = match s.get("timeout") {
        None => DEFAULT_STEP_TIMEOUT,
        Some(Value::String(t)) => parse_duration(t).unwrap_or_else(|e| {
            p.push(format!("{base}.timeout"), e.to_string());
            DEFAULT_STEP_TIMEOUT
        }),
        Some(v) => {
            p.push(
                format!("{base}.timeout"),
                format!(
                    "must be a duration string like \"30s\", got {}",
                    type_name(v)
                ),
            );
            DEFAULT_STEP_TIMEOUT
        }
    };
    let attempts =
        parse_retries(s.get("retries"), &format!("{base}.retries"), p).unwrap_or(default_attempts);
    let join = match s.get("join") {
        None => Join::All,
        Some(Value::String(j)) if j == "all" => Join::All,
        Some(Value::String(j)) if j == "any" => Join::Any,
        Some(_) => {
            p.push(format!("{base}.join"), "must be \"all\" or \"any\"");
            Join::All
        }
    };
    match s.get("after") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let epath = format!("{base}.after[{i}]");
                let Some(e) = item.as_object() else {
                    p.push(
                        epath,
                        format!(
                            "must be an object like {{\"step\": \"step-1\"}}, got {}",
                            type_name(item)
                        ),
                    );
                    continue;
                };
                for k in e.keys() {
                    if !matches!(k.as_str(), "step" | "if" | "wait" | "async") {
                        p.push(format!("{epath}.{k}"), "unknown field");
                    }
                }
                let wait = match (e.get("async"), e.get("wait")) {
                    (Some(_), Some(_)) => {
                        p.push(
                            epath.clone(),
                            "an edge has either \"async\" (wait for an event) or \"wait\" (sleep), not both",
                        );
                        None
                    }
                    (Some(a), None) => parse_async(a, &format!("{epath}.async"), p),
                    (None, Some(w)) => parse_sleep(w, &format!("{epath}.wait"), p),
                    (None, None) => None,
                };
                let parent = match e.get("step") {
                    Some(Value::String(s)) => s.clone(),
                    _ => {
                        p.push(
                            format!("{epath}.step"),
                            "required: the id of the parent step",
                        );
                        continue;
                    }
                };
                let cond = match e.get("if") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(src)) => match Expr::compile(src) {
                        // Evaluated when the parent completes: `async` is not known yet.
                        Ok(x) => match super::matcher::check_reads(
                            &x,
                            &["event", "steps", "response"],
                            &["event"],
                        ) {
                            Ok(()) => Some(x),
                            Err(e) => {
                                p.push(format!("{epath}.if"), format!("{src:?}: {e}"));
                                None
                            }
                        },
                        Err(e) => {
                            p.push(format!("{epath}.if"), e.to_string());
                            None
                        }
                    },
                    Some(v) => {
                        p.push(
                            format!("{epath}.if"),
                            format!("must be a string, got {}", type_name(v)),
                        );
                        None
                    }
                };
                edges.push(PendingEdge {
                    child: index,
                    after: i,
                    parent,
                    condition: cond,
                    wait,
                });
            }
        }
        Some(v) => p.push(
            format!("{base}.after"),
            format!("must be an array, got {}", type_name(v)),
        ),
    }
    Some(Step {
        id: key.to_string(),
        name,
        path,
        runtime_type,
        runtime,
        timeout,
        attempts,
        parents: Vec::new(),
        join,
        async_wait: None,
    })
}

/// Resolves a step `path`: `file://./x` and `./x` relative to the function directory,
/// `file:///abs` and `/abs` as given. Other schemes are kept verbatim.
pub fn resolve_path(dir: &Path, raw: &str) -> PathBuf {
    let stripped = raw.strip_prefix("file://").unwrap_or(raw);
    let p = Path::new(stripped);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}
