//! CEL expressions, compiled once when a function loads and evaluated per event.
//!
//! Evaluation builds one child scope of a shared root context (creating a root context costs
//! ~20 µs; a child scope costs nothing). A key that does not exist evaluates as `null` instead
//! of failing: an expression whose evaluation reads a missing key yields `null` (so a trigger
//! `user.plan == 'pro'` simply does not match an event without `user.plan`).

use std::sync::{Arc, LazyLock, OnceLock};

use crate::event::Event;

use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, ExecutionError, Program, Value as CelValue};
use serde_json::Value;

use crate::error::{Error, Result};

static ROOT: LazyLock<Context<'static, 'static>> = LazyLock::new(Context::default);

/// A compiled CEL expression and its source text.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<Program>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

/// The longest expression [`Expr::compile`] takes, in bytes.
pub const MAX_EXPR_BYTES: usize = 4096;
/// The deepest nesting of brackets (`(`, `[`, `{`) [`Expr::compile`] takes.
pub const MAX_EXPR_NESTING: usize = 32;
/// The deepest syntax tree [`Expr::compile`] takes: chains of operators (`a + b + …`) nest
/// without brackets, and evaluating them recurses as deep.
pub const MAX_EXPR_DEPTH: usize = 32;
/// The stack of the thread the CEL parser runs on (reserved, not committed, until used).
const PARSER_STACK_BYTES: usize = 64 << 20;

/// The depth of the syntax tree `e`.
fn ast_depth(e: &cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr as Ast};
    let entry = |x: &EntryExpr| match x {
        EntryExpr::StructField(f) => ast_depth(&f.value),
        EntryExpr::MapEntry(m) => ast_depth(&m.key).max(ast_depth(&m.value)),
    };
    1 + match &e.expr {
        Ast::Select(s) => ast_depth(&s.operand),
        Ast::Call(call) => call
            .target
            .iter()
            .map(|t| ast_depth(t))
            .chain(call.args.iter().map(ast_depth))
            .max()
            .unwrap_or(0),
        Ast::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .map(ast_depth)
        .max()
        .unwrap_or(0),
        Ast::List(l) => l.elements.iter().map(ast_depth).max().unwrap_or(0),
        Ast::Map(m) => m.entries.iter().map(|x| entry(&x.expr)).max().unwrap_or(0),
        Ast::Struct(s) => s.entries.iter().map(|x| entry(&x.expr)).max().unwrap_or(0),
        Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => 0,
    }
}

/// How deep brackets nest in `source`, counting those in string literals and comments too:
/// never less than the parser will see (CEL's strings — triple-quoted, raw — and comments are
/// not worth lexing twice), at the price of refusing an expression whose strings hold more
/// than the limit of opening brackets.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

impl Expr {
    /// Compiles `source`; an [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// error's message says what is wrong with it.
    ///
    /// At most [`MAX_EXPR_BYTES`] long and [`MAX_EXPR_NESTING`] brackets deep: the CEL parser
    /// recurses deeply for each level (16 nested parentheses overflowed a 2 MiB stack in a
    /// debug build, found by `weir-fuzz cel`), so it runs on a thread of its own with a large
    /// stack, and deeper expressions are refused with a clear error instead of aborting the
    /// process.
    pub fn compile(source: &str) -> Result<Expr> {
        if source.trim().is_empty() {
            return Err(Error::invalid("empty expression"));
        }
        if source.len() > MAX_EXPR_BYTES {
            return Err(Error::invalid(format!(
                "expression is {} bytes; the limit is {MAX_EXPR_BYTES}",
                source.len()
            )));
        }
        let depth = bracket_depth(source);
        if depth > MAX_EXPR_NESTING {
            return Err(Error::invalid(format!(
                "expression nests brackets {depth} deep; the limit is {MAX_EXPR_NESTING}"
            )));
        }
        let compiled = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("weir-cel-compile".into())
                .stack_size(PARSER_STACK_BYTES)
                .spawn_scoped(scope, || {
                    // The tree's depth bounds the evaluator's recursion, which runs on any
                    // thread (a runtime worker's stack is 2 MiB): measured here, where the
                    // stack is large.
                    Program::compile(source).map(|p| {
                        let depth = ast_depth(p.expression());
                        (p, depth)
                    })
                })
                .map(|handle| handle.join())
        });
        let (program, depth) = match compiled {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(_)) => {
                return Err(Error::internal(format!(
                    "the CEL parser panicked on {source:?}"
                )));
            }
            Err(e) => {
                return Err(Error::internal("cannot start the CEL parser's thread").with_source(e));
            }
        }
        .map_err(|e| {
            let text = e.to_string();
            Error::invalid(format!(
                "invalid CEL expression {source:?}: {}",
                text.trim()
            ))
        })?;
        if depth > MAX_EXPR_DEPTH {
            return Err(Error::invalid(format!(
                "expression is {depth} operations deep; the limit is {MAX_EXPR_DEPTH} (split a long chain of operators with a list: `[a, b, c].all(x, x)`)"
            )));
        }
        Ok(Expr {
            source: source.into(),
            program: Arc::new(program),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads no variable (a constant).
    pub(crate) fn ast_reads_nothing(&self) -> bool {
        self.program.references().variables().is_empty()
    }

    /// The parsed expression (its syntax tree), for load-time checks of what it reads.
    pub(crate) fn ast(&self) -> &cel::IdedExpr {
        self.program.expression()
    }

    /// Evaluates the expression with the variables of `vars`, giving a CEL value.
    pub fn eval_cel(&self, vars: &Vars) -> Result<CelValue> {
        let root: &Context<'_, '_> = &ROOT;
        let mut scope = root.new_inner_scope();
        scope.set_variable_resolver(vars);
        match self.program.execute(&scope) {
            Ok(v) => Ok(v),
            Err(ExecutionError::NoSuchKey(_)) => Ok(CelValue::Null),
            Err(e) => Err(Error::invalid(format!(
                "evaluating {:?} failed: {e}",
                self.source
            ))),
        }
    }

    /// Evaluates the expression to a boolean; `null` (e.g. from a missing key) is `false`.
    pub fn eval_bool(&self, vars: &Vars) -> Result<bool> {
        match self.eval_cel(vars)? {
            CelValue::Bool(b) => Ok(b),
            CelValue::Null => Ok(false),
            other => Err(Error::invalid(format!(
                "{:?} must evaluate to a boolean, got {other:?}",
                self.source
            ))),
        }
    }

    /// Evaluates the expression and converts the result to JSON.
    pub fn eval_json(&self, vars: &Vars) -> Result<Value> {
        let v = self.eval_cel(vars)?;
        v.json()
            .map_err(|e| Error::invalid(format!("{:?}: result is not JSON: {e:?}", self.source)))
    }
}

/// Where a variable's value comes from; converted to a CEL value on first use only.
enum Source<'a> {
    Json(&'a Value),
    JsonMap(&'a serde_json::Map<String, Value>),
    OwnedJson(Value),
    Event(&'a Event),
    Cel(CelValue),
}

impl Source<'_> {
    fn to_cel(&self) -> CelValue {
        match self {
            Source::Json(v) => to_cel(v),
            Source::JsonMap(m) => map_to_cel(m),
            Source::OwnedJson(v) => to_cel(v),
            Source::Event(e) => event_to_cel(e),
            Source::Cel(v) => v.clone(),
        }
    }
}

/// The variables an expression sees. Each is converted to a CEL value the first time an
/// expression reads it, then lent (not copied) to every later evaluation: a trigger that reads
/// only `user` never pays for converting `data`.
#[derive(Default)]
pub struct Vars<'a>(Vec<Var<'a>>);

/// One variable: its name, where its value comes from, and the value once converted.
struct Var<'a> {
    name: &'static str,
    source: Source<'a>,
    converted: OnceLock<Box<dyn Val>>,
}

impl std::fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|v| v.name))
            .finish()
    }
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let Var {
            source, converted, ..
        } = self.0.iter().find(|v| v.name == variable)?;
        let val = converted.get_or_init(|| {
            // A `Value` made of JSON-like variants (no opaque values) always converts.
            Box::<dyn Val>::try_from(source.to_cel()).unwrap_or_else(|_| {
                Box::<dyn Val>::try_from(CelValue::Null).expect("null converts")
            })
        });
        Some(CowVal::Borrowed(val.as_ref()))
    }
}

impl<'a> Vars<'a> {
    /// No variables.
    pub fn new() -> Self {
        Vars(Vec::new())
    }

    fn put(&mut self, name: &'static str, source: Source<'a>) -> &mut Self {
        let var = Var {
            name,
            source,
            converted: OnceLock::new(),
        };
        if let Some(slot) = self.0.iter_mut().find(|v| v.name == name) {
            *slot = var;
        } else {
            self.0.push(var);
        }
        self
    }

    /// Adds (or replaces) a variable holding a borrowed JSON value.
    pub fn set_json(&mut self, name: &'static str, value: &'a Value) -> &mut Self {
        self.put(name, Source::Json(value))
    }

    /// Adds (or replaces) a variable holding a borrowed JSON object.
    pub fn set_json_map(
        &mut self,
        name: &'static str,
        map: &'a serde_json::Map<String, Value>,
    ) -> &mut Self {
        self.put(name, Source::JsonMap(map))
    }

    /// Adds (or replaces) a variable holding a JSON value.
    pub fn set_owned_json(&mut self, name: &'static str, value: Value) -> &mut Self {
        self.put(name, Source::OwnedJson(value))
    }

    /// Adds (or replaces) a variable holding a CEL value.
    pub fn set(&mut self, name: &'static str, value: CelValue) -> &mut Self {
        self.put(name, Source::Cel(value))
    }

    /// Adds (or replaces) a variable holding an event as a map (`name`, `data`, `user`, `id`,
    /// `ts`, `v`).
    pub fn set_event(&mut self, name: &'static str, event: &'a Event) -> &mut Self {
        self.put(name, Source::Event(event))
    }

    /// The variables a trigger expression sees: `event`, and the event's fields at top level
    /// (`name`, `data`, `user`, `id`, `ts`, `v`).
    pub fn for_trigger(event: &'a Event) -> Vars<'a> {
        let mut vars = Vars::new();
        vars.set_event("event", event);
        vars.set("name", CelValue::String(Arc::new(event.name.clone())));
        vars.set_json("data", &event.data);
        vars.set_json("user", &event.user);
        vars.set("id", CelValue::String(Arc::new(event.id.clone())));
        vars.set("ts", CelValue::Int(event.ts));
        vars.set(
            "v",
            event
                .v
                .as_ref()
                .map_or(CelValue::Null, |v| CelValue::String(Arc::new(v.clone()))),
        );
        vars
    }
}

/// An event as a CEL map.
fn event_to_cel(event: &Event) -> CelValue {
    let mut map = std::collections::HashMap::<cel::objects::Key, CelValue>::new();
    map.insert(
        "name".into(),
        CelValue::String(Arc::new(event.name.clone())),
    );
    map.insert("data".into(), to_cel(&event.data));
    map.insert("user".into(), to_cel(&event.user));
    map.insert("id".into(), CelValue::String(Arc::new(event.id.clone())));
    map.insert("ts".into(), CelValue::Int(event.ts));
    let v = event
        .v
        .as_ref()
        .map_or(CelValue::Null, |v| CelValue::String(Arc::new(v.clone())));
    map.insert("v".into(), v);
    CelValue::Map(map.into())
}

/// Converts JSON to a CEL value (integers stay integers, objects become maps).
pub fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(obj) => map_to_cel(obj),
    }
}

fn map_to_cel(obj: &serde_json::Map<String, Value>) -> CelValue {
    let map: std::collections::HashMap<cel::objects::Key, CelValue> = obj
        .iter()
        .map(|(k, v)| (k.as_str().into(), to_cel(v)))
        .collect();
    CelValue::Map(map.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `weir-fuzz cel`: deep nesting overflowed the stack (an abort, not an error).
    /// Refused with a clear error, and what is accepted evaluates on a 2 MiB stack, a runtime
    /// worker's.
    #[test]
    fn deep_expressions_are_refused_not_a_stack_overflow() {
        let parens = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        let chain = |n: usize| format!("1{}", " + 1".repeat(n));
        let err = Expr::compile(&parens(200)).unwrap_err();
        assert!(err.to_string().contains("nests brackets 200 deep"), "{err}");
        let err = Expr::compile(&chain(1000)).unwrap_err();
        assert!(err.to_string().contains("operations deep"), "{err}");
        let err = Expr::compile(&"x".repeat(5000)).unwrap_err();
        assert!(err.to_string().contains("the limit is 4096"), "{err}");
        // Brackets in strings count too (never fewer than the parser sees).
        Expr::compile(&format!("'{}' == 'x'", "(".repeat(10))).expect("compiles");
        let err = Expr::compile(&format!("r'\\' == '{}'", "(".repeat(40))).unwrap_err();
        assert!(err.to_string().contains("nests brackets"), "{err}");
        let accepted = [parens(MAX_EXPR_NESTING), chain(MAX_EXPR_DEPTH - 2)];
        let evaluated = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                accepted
                    .iter()
                    .map(|s| {
                        Expr::compile(s)
                            .expect("compiles")
                            .eval_json(&Vars::new())
                            .is_ok()
                    })
                    .collect::<Vec<_>>()
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(evaluated, [true, true]);
    }
    use serde_json::json;

    fn event(v: Value) -> Event {
        Event::from_json(v, "").unwrap()
    }

    #[test]
    fn trigger_sees_event_and_top_level_fields() {
        let e = event(json!({"name": "user/signed.up", "user": {"created_at": "2021-05-01"}}));
        let vars = Vars::for_trigger(&e);
        let top = Expr::compile("user.created_at > '2020-01-01'").unwrap();
        let nested =
            Expr::compile("event.user.created_at > '2020-01-01' && name == 'user/signed.up'")
                .unwrap();
        assert!(top.eval_bool(&vars).unwrap());
        assert!(nested.eval_bool(&vars).unwrap());
        let old = event(json!({"name": "u", "user": {"created_at": "2019-05-01"}}));
        assert!(!top.eval_bool(&Vars::for_trigger(&old)).unwrap());
    }

    #[test]
    fn missing_key_is_null_not_an_error() {
        let e = event(json!({"name": "a", "data": {}}));
        let vars = Vars::for_trigger(&e);
        assert!(
            !Expr::compile("data.plan == 'pro'")
                .unwrap()
                .eval_bool(&vars)
                .unwrap()
        );
        assert_eq!(
            Expr::compile("data.plan")
                .unwrap()
                .eval_json(&vars)
                .unwrap(),
            Value::Null
        );
    }

    #[test]
    fn has_tests_presence() {
        let e = event(json!({"name": "a", "data": {"plan": "pro"}}));
        let vars = Vars::for_trigger(&e);
        assert!(
            Expr::compile("has(data.plan)")
                .unwrap()
                .eval_bool(&vars)
                .unwrap()
        );
        assert!(
            !Expr::compile("has(data.seats)")
                .unwrap()
                .eval_bool(&vars)
                .unwrap()
        );
        let ternary = Expr::compile("has(data.seats) ? data.seats : 0").unwrap();
        assert_eq!(ternary.eval_json(&vars).unwrap(), json!(0));
    }

    #[test]
    fn compile_errors_name_the_expression() {
        let err = Expr::compile("a ==").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("invalid CEL expression \"a ==\""),
            "{err}"
        );
    }

    #[test]
    fn numbers_compare_as_json_users_expect() {
        let steps = json!({"s1": {"count": 3, "ratio": 0.5}});
        let mut vars = Vars::new();
        vars.set_json("steps", &steps);
        assert!(
            Expr::compile("steps['s1'].count == 3")
                .unwrap()
                .eval_bool(&vars)
                .unwrap()
        );
        assert!(
            Expr::compile("steps.s1.ratio < 1.0")
                .unwrap()
                .eval_bool(&vars)
                .unwrap()
        );
    }

    #[test]
    fn non_boolean_result_is_an_error() {
        let vars = Vars::new();
        assert!(Expr::compile("1 + 1").unwrap().eval_bool(&vars).is_err());
    }
}
