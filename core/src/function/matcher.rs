//! What a `match` (or `wait`) expression reads, checked when a function loads, and the
//! equality `async.X == event.Y` that lets pending pauses be found by a value instead of by
//! evaluating every pause's expression for every incoming event.

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr as Ast, operators};
use serde_json::Value;

use crate::event::Event;
use crate::expr::Expr;

/// The fields of an event as expressions see it.
pub const EVENT_FIELDS: &[&str] = &["name", "data", "user", "id", "ts", "v"];

/// The equality `async.X == event.Y` of a `match`: a pause is filed under the value of `Y` in
/// the run's trigger, and an incoming event finds it by its value of `X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchKey {
    /// The path `X` in the incoming event (`["user", "id"]`).
    pub incoming: Vec<String>,
    /// The path `Y` in the run's trigger event.
    pub trigger: Vec<String>,
}

impl MatchKey {
    /// The index key of the value at `path` in `event` (`user.id="u1"`), or `None` when it is
    /// missing or not a string, number or boolean (such a value is never filed by value: a
    /// missing key makes the equality false, and objects are compared by the expression).
    pub fn key_at(path: &[String], event: &Event) -> Option<String> {
        let value = event_path(event, path)?;
        let scalar = match &value {
            Value::String(_) | Value::Bool(_) => value.to_string(),
            Value::Number(n) => canonical_number(n),
            _ => return None,
        };
        Some(format!("{}={scalar}", path.join(".")))
    }

    /// The key a pause of a run triggered by `trigger` is filed under.
    pub fn pause_key(&self, trigger: &Event) -> Option<String> {
        // Filed under the incoming path's name, so that an incoming event computes the same
        // key from its own field.
        let value = Self::key_at(&self.trigger, trigger)?;
        let (_, scalar) = value.split_once('=')?;
        Some(format!("{}={scalar}", self.incoming.join(".")))
    }

    /// The key an incoming event finds pauses under.
    pub fn incoming_key(&self, incoming: &Event) -> Option<String> {
        Self::key_at(&self.incoming, incoming)
    }
}

/// Numbers as keys: `1` and `1.0` are the same key (as they are equal in an expression).
fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The value at `path` (first segment an event field) in `event`.
pub fn event_path(event: &Event, path: &[String]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    let mut value = match first.as_str() {
        "name" => return rest.is_empty().then(|| Value::String(event.name.clone())),
        "id" => return rest.is_empty().then(|| Value::String(event.id.clone())),
        "ts" => return rest.is_empty().then(|| Value::from(event.ts)),
        "v" => {
            return rest
                .is_empty()
                .then(|| event.v.clone().map(Value::String))?;
        }
        "data" => &event.data,
        "user" => &event.user,
        _ => return None,
    };
    for segment in rest {
        value = value.as_object()?.get(segment)?;
    }
    Some(value.clone())
}

/// How a `match` can be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchShape {
    /// The equality found among the top-level `&&` terms, if any.
    pub key: Option<MatchKey>,
    /// Whether the equality is the whole expression: a pause found by its key matches, and the
    /// expression need not be evaluated.
    pub key_decides: bool,
}

/// Finds an `async.X == event.Y` (either way round) among the top-level `&&` terms of `expr`.
pub fn shape(expr: &Expr) -> MatchShape {
    let mut terms = Vec::new();
    conjuncts(expr.ast(), &mut terms);
    let key = terms.iter().find_map(|t| equality(t));
    MatchShape {
        key_decides: key.is_some() && terms.len() == 1,
        key,
    }
}

fn conjuncts<'a>(e: &'a IdedExpr, out: &mut Vec<&'a IdedExpr>) {
    match &e.expr {
        Ast::Call(call) if call.func_name == operators::LOGICAL_AND && call.target.is_none() => {
            for arg in &call.args {
                conjuncts(arg, out);
            }
        }
        _ => out.push(e),
    }
}

fn equality(e: &IdedExpr) -> Option<MatchKey> {
    let Ast::Call(call) = &e.expr else {
        return None;
    };
    if call.func_name != operators::EQUALS || call.args.len() != 2 {
        return None;
    }
    let left = select_path(&call.args[0])?;
    let right = select_path(&call.args[1])?;
    let (incoming, trigger) = match (left.0, right.0) {
        ("async", "event") => (left.1, right.1),
        ("event", "async") => (right.1, left.1),
        _ => return None,
    };
    let known = |p: &Vec<String>| {
        p.first()
            .is_some_and(|f| EVENT_FIELDS.contains(&f.as_str()))
    };
    (known(&incoming) && known(&trigger)).then_some(MatchKey { incoming, trigger })
}

/// `root.a.b.c` as (`root`, [`a`, `b`, `c`]); `None` for anything else.
fn select_path(e: &IdedExpr) -> Option<(&str, Vec<String>)> {
    let mut path = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Ast::Select(s) if !s.test => {
                path.push(s.field.clone());
                cur = &s.operand;
            }
            Ast::Ident(root) if !path.is_empty() => {
                path.reverse();
                return Some((root.as_str(), path));
            }
            _ => return None,
        }
    }
}

/// Checks that `expr` reads only the variables `allowed`, and that the fields it selects on
/// the event variables `events` are event fields. The message says what is wrong.
pub fn check_reads(expr: &Expr, allowed: &[&str], events: &[&str]) -> Result<(), String> {
    let mut bound = Vec::new();
    walk(expr.ast(), allowed, events, &mut bound)
}

fn walk<'a>(
    e: &'a IdedExpr,
    allowed: &[&str],
    events: &[&str],
    bound: &mut Vec<&'a str>,
) -> Result<(), String> {
    match &e.expr {
        Ast::Ident(name) => {
            if name.starts_with('@') || bound.contains(&name.as_str()) {
                return Ok(());
            }
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "unknown variable {name:?}: this expression sees {}",
                    allowed.join(", ")
                ));
            }
            Ok(())
        }
        Ast::Select(s) => {
            if let Ast::Ident(root) = &s.operand.expr
                && events.contains(&root.as_str())
                && !bound.contains(&root.as_str())
                && !EVENT_FIELDS.contains(&s.field.as_str())
            {
                return Err(format!(
                    "unknown event field {root}.{}: an event has {}",
                    s.field,
                    EVENT_FIELDS.join(", ")
                ));
            }
            walk(&s.operand, allowed, events, bound)
        }
        Ast::Call(call) => {
            if let Some(t) = &call.target {
                walk(t, allowed, events, bound)?;
            }
            call.args
                .iter()
                .try_for_each(|a| walk(a, allowed, events, bound))
        }
        Ast::Comprehension(c) => {
            walk(&c.iter_range, allowed, events, bound)?;
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            let inner = [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|x| walk(x, allowed, events, bound));
            bound.truncate(depth);
            inner
        }
        Ast::List(l) => l
            .elements
            .iter()
            .try_for_each(|x| walk(x, allowed, events, bound)),
        Ast::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::StructField(f) => walk(&f.value, allowed, events, bound),
            EntryExpr::MapEntry(me) => {
                walk(&me.key, allowed, events, bound)?;
                walk(&me.value, allowed, events, bound)
            }
        }),
        Ast::Struct(s) => s.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::StructField(f) => walk(&f.value, allowed, events, bound),
            EntryExpr::MapEntry(me) => {
                walk(&me.key, allowed, events, bound)?;
                walk(&me.value, allowed, events, bound)
            }
        }),
        Ast::Literal(_) | Ast::Unspecified => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compile(s: &str) -> Expr {
        Expr::compile(s).expect(s)
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    #[test]
    fn finds_the_equality_either_way_round() {
        let s = shape(&compile("async.user.id == event.user.id"));
        assert_eq!(
            s.key,
            Some(MatchKey {
                incoming: path("user.id"),
                trigger: path("user.id")
            })
        );
        assert!(s.key_decides);
        let s = shape(&compile(
            "event.data.order == async.data.id && async.data.ok",
        ));
        assert_eq!(
            s.key,
            Some(MatchKey {
                incoming: path("data.id"),
                trigger: path("data.order")
            })
        );
        assert!(!s.key_decides, "the other term must still be evaluated");
        assert_eq!(shape(&compile("async.user.id == 'u1'")).key, None);
        assert_eq!(
            shape(&compile("async.user.id == event.user.id || true")).key,
            None
        );
    }

    #[test]
    fn keys_agree_between_trigger_and_incoming() {
        let key = MatchKey {
            incoming: path("data.user"),
            trigger: path("user.id"),
        };
        let trigger = Event::from_json(json!({"name": "a", "user": {"id": 7}}), "").unwrap();
        let incoming = Event::from_json(json!({"name": "b", "data": {"user": 7.0}}), "").unwrap();
        let other = Event::from_json(json!({"name": "b", "data": {"user": "7"}}), "").unwrap();
        assert_eq!(key.pause_key(&trigger).as_deref(), Some("data.user=7"));
        assert_eq!(key.pause_key(&trigger), key.incoming_key(&incoming));
        assert_ne!(
            key.pause_key(&trigger),
            key.incoming_key(&other),
            "a string is not a number"
        );
        let missing = Event::from_json(json!({"name": "a"}), "").unwrap();
        assert_eq!(key.pause_key(&missing), None);
    }

    #[test]
    fn reads_are_checked() {
        let ok = compile("async.user.id == event.user.id && async.data.items.exists(i, i > 2)");
        assert_eq!(
            check_reads(&ok, &["event", "async"], &["event", "async"]),
            Ok(())
        );
        let e = check_reads(
            &compile("async.usr.id == event.user.id"),
            &["event", "async"],
            &["event", "async"],
        );
        assert!(e.unwrap_err().contains("unknown event field async.usr"));
        let e = check_reads(
            &compile("steps.a.x == 1"),
            &["event", "async"],
            &["event", "async"],
        );
        assert!(e.unwrap_err().contains("unknown variable \"steps\""));
    }
}
