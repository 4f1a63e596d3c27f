//! Parses the `async` and `wait` objects of an edge (see docs/functions.md, *Waiting for
//! events* and *Sleeping*), collecting problems with their JSON paths.

use serde_json::{Map, Value};

use super::matcher::{check_reads, shape};
use super::problems::Problems;
use super::wait::{CancelRule, EventSpec, EventWait, Sleep, WaitKind, WaitMode, time_of};
use crate::duration::parse_duration;
use crate::event::type_name;
use crate::expr::{Expr, Vars};

/// What an edge's `async` or `wait` asks for, before edges are grouped into waits.
#[derive(Debug, Clone)]
pub(crate) struct EdgeWait {
    /// Edges of one parent with the same group share a wait.
    pub(crate) group: String,
    /// Taken on timeout rather than on a match.
    pub(crate) on_timeout: bool,
    /// The wait.
    pub(crate) kind: WaitKind,
}

/// The variables a `match` sees.
const MATCH_VARS: &[&str] = &["event", "async"];
/// The variables a `wait` expression sees (as an edge's `if` does).
const WAIT_VARS: &[&str] = &["event", "steps", "response"];

/// Parses `"async": {...}` at `path` (`steps.b.after[0].async`).
pub(crate) fn parse_async(v: &Value, path: &str, p: &mut Problems) -> Option<EdgeWait> {
    let Some(obj) = v.as_object() else {
        p.push(
            path,
            format!(
                "must be an object like {{\"event\": \"user/activated\", \"match\": \"async.user.id == event.user.id\", \"ttl\": \"2d\"}}, got {}",
                type_name(v)
            ),
        );
        return None;
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "event" | "match" | "ttl" | "onTimeout" | "lookback" | "any" | "all"
        ) {
            p.push(format!("{path}.{key}"), "unknown field");
        }
    }
    let before = p.0.len();
    let listed = ["any", "all"].into_iter().filter(|k| obj.contains_key(*k));
    let listed: Vec<&str> = listed.collect();
    let (mode, specs) = match listed.as_slice() {
        [] => (
            WaitMode::One,
            parse_spec(obj, path, p).into_iter().collect(),
        ),
        [which] => {
            for key in ["event", "match"] {
                if obj.contains_key(key) {
                    p.push(
                        format!("{path}.{key}"),
                        format!("goes inside each spec of {which:?}, not beside it"),
                    );
                }
            }
            let mode = if *which == "any" {
                WaitMode::Any
            } else {
                WaitMode::All
            };
            (
                mode,
                parse_spec_list(&obj[*which], &format!("{path}.{which}"), p),
            )
        }
        _ => {
            p.push(path, "has both \"any\" and \"all\"; use one");
            (WaitMode::One, Vec::new())
        }
    };
    let ttl = match obj.get("ttl") {
        None => {
            p.push(
                format!("{path}.ttl"),
                "required: how long to wait, e.g. \"2d\" (then the onTimeout edge is taken)",
            );
            None
        }
        Some(t) => duration(t, &format!("{path}.ttl"), p),
    };
    let lookback = obj
        .get("lookback")
        .and_then(|l| duration(l, &format!("{path}.lookback"), p));
    let on_timeout = match obj.get("onTimeout") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            p.push(
                format!("{path}.onTimeout"),
                format!("must be true or false, got {}", type_name(other)),
            );
            false
        }
    };
    if p.0.len() > before {
        return None;
    }
    let mut group = obj.clone();
    group.remove("onTimeout");
    Some(EdgeWait {
        group: format!("async:{}", canonical(&Value::Object(group))),
        on_timeout,
        kind: WaitKind::Event(EventWait {
            specs,
            mode,
            ttl: ttl?,
            lookback,
        }),
    })
}

fn parse_spec_list(v: &Value, path: &str, p: &mut Problems) -> Vec<EventSpec> {
    let Some(items) = v.as_array() else {
        p.push(
            path,
            format!(
                "must be an array of {{\"event\", \"match\"}} objects, got {}",
                type_name(v)
            ),
        );
        return Vec::new();
    };
    if items.is_empty() {
        p.push(path, "must list at least one {\"event\", \"match\"}");
    }
    let mut specs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(obj) = item.as_object() else {
            p.push(at, format!("must be an object, got {}", type_name(item)));
            continue;
        };
        for key in obj
            .keys()
            .filter(|k| !matches!(k.as_str(), "event" | "match"))
        {
            p.push(format!("{at}.{key}"), "unknown field");
        }
        specs.extend(parse_spec(obj, &at, p));
    }
    specs
}

/// Parses the function's `"cancel": [{"event", "if", "timeout"}]`.
pub(crate) fn parse_cancel(v: &Value, p: &mut Problems) -> Vec<CancelRule> {
    let Some(items) = v.as_array() else {
        p.push(
            "cancel",
            format!(
                "must be an array like [{{\"event\": \"user/deleted\", \"if\": \"async.user.id == event.user.id\"}}], got {}",
                type_name(v)
            ),
        );
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("cancel[{i}]");
        let Some(obj) = item.as_object() else {
            p.push(path, format!("must be an object, got {}", type_name(item)));
            continue;
        };
        for key in obj
            .keys()
            .filter(|k| !matches!(k.as_str(), "event" | "if" | "timeout"))
        {
            p.push(format!("{path}.{key}"), "unknown field");
        }
        // The rule's `if` is a match: `event` the run's trigger, `async` the incoming event.
        let mut as_spec = Map::new();
        if let Some(e) = obj.get("event") {
            as_spec.insert("event".into(), e.clone());
        }
        let before = p.0.len();
        let spec = match obj.get("if") {
            Some(cond) => {
                as_spec.insert("match".into(), cond.clone());
                let mut inner = Problems::default();
                let spec = parse_spec(&as_spec, &path, &mut inner);
                for problem in inner.0 {
                    let fixed = problem
                        .path
                        .replace(&format!("{path}.match"), &format!("{path}.if"));
                    p.push(fixed, problem.message);
                }
                spec
            }
            None => parse_spec(&as_spec, &path, p),
        };
        let timeout = obj
            .get("timeout")
            .and_then(|t| duration(t, &format!("{path}.timeout"), p));
        if p.0.len() == before
            && let Some(spec) = spec
        {
            rules.push(CancelRule { spec, timeout });
        }
    }
    rules
}

/// Parses `event` and `match` of one spec in `obj`.
fn parse_spec(obj: &Map<String, Value>, path: &str, p: &mut Problems) -> Option<EventSpec> {
    let event = match obj.get("event") {
        Some(Value::String(s)) if s.contains('*') => {
            p.push(
                format!("{path}.event"),
                "must be an exact event name (no `*`)",
            );
            None
        }
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None => {
            p.push(
                format!("{path}.event"),
                "required: the name of the event to wait for",
            );
            None
        }
        Some(other) => {
            p.push(
                format!("{path}.event"),
                format!("must be a string, got {}", type_name(other)),
            );
            None
        }
    };
    let matcher = match obj.get("match") {
        None | Some(Value::Null) => None,
        Some(Value::String(src)) => match Expr::compile(src) {
            Ok(expr) => match check_reads(&expr, MATCH_VARS, MATCH_VARS) {
                Ok(()) => Some(expr),
                Err(e) => {
                    p.push(format!("{path}.match"), format!("{src:?}: {e}"));
                    None
                }
            },
            Err(e) => {
                p.push(format!("{path}.match"), e.to_string());
                None
            }
        },
        Some(other) => {
            p.push(
                format!("{path}.match"),
                format!("must be a string, got {}", type_name(other)),
            );
            None
        }
    };
    let shape = matcher.as_ref().map(shape);
    Some(EventSpec {
        event: event?,
        key: shape.as_ref().and_then(|s| s.key.clone()),
        key_decides: shape.is_some_and(|s| s.key_decides),
        matcher,
    })
}

/// Parses `"wait": "1h"` or `"wait": "<expression>"` at `path`.
pub(crate) fn parse_sleep(v: &Value, path: &str, p: &mut Problems) -> Option<EdgeWait> {
    let Some(src) = v.as_str().filter(|s| !s.trim().is_empty()) else {
        p.push(
            path,
            format!(
                "must be a duration like \"1h\" or an expression giving a time, got {}",
                type_name(v)
            ),
        );
        return None;
    };
    let sleep = if let Ok(d) = parse_duration(src) {
        if d > MAX_WAIT {
            p.push(
                path,
                format!("{src:?} is longer than the longest wait, 366d"),
            );
            return None;
        }
        Sleep::For(d)
    } else {
        let expr = match Expr::compile(src) {
            Ok(e) => e,
            Err(_) => {
                p.push(
                    path,
                    format!(
                        "{src:?} is neither a duration (\"30s\", \"1h\", \"2d\") nor an expression"
                    ),
                );
                return None;
            }
        };
        if let Err(e) = check_reads(&expr, WAIT_VARS, &["event"]) {
            p.push(path, format!("{src:?}: {e}"));
            return None;
        }
        // An expression that reads nothing is a constant: check its time now.
        if expr.ast_reads_nothing() {
            match expr.eval_json(&Vars::new()).map_err(|e| e.to_string()) {
                Ok(value) => {
                    if let Err(e) = time_of(&value) {
                        p.push(path, format!("{src:?}: {e}"));
                        return None;
                    }
                }
                Err(e) => {
                    p.push(path, e);
                    return None;
                }
            }
        }
        Sleep::Until(expr)
    };
    Some(EdgeWait {
        group: format!("wait:{src}"),
        on_timeout: true,
        kind: WaitKind::Sleep(sleep),
    })
}

/// The longest `ttl`, `lookback`, `wait` or cancel `timeout`: a year.
pub(crate) const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

fn duration(v: &Value, path: &str, p: &mut Problems) -> Option<std::time::Duration> {
    match v {
        Value::String(s) => match parse_duration(s) {
            Ok(d) if d > MAX_WAIT => {
                p.push(path, format!("{s:?} is longer than the longest wait, 366d"));
                None
            }
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                p.push(path, "must be longer than 0");
                None
            }
            Err(e) => {
                p.push(path, e.to_string());
                None
            }
        },
        other => {
            p.push(
                path,
                format!(
                    "must be a duration string like \"2d\", got {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// JSON with object keys sorted, so equal objects group together whatever their key order.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}
