//! Event schemas: a JSON Schema per event name and version, compiled once and checked against
//! the events an ingest receives.
//!
//! A schema file (`schemas/*.json` beside the functions) is
//! `{"name": "user/signed.up", "version": "1", "schema": {…}}`. The schema describes the
//! whole event as sent (`name`, `data`, `user`, `id`, `ts`, `v`), so a violation's pointer is
//! rooted at the event: `/data/plan`. An event's `v` selects the version; an event without
//! `v` is checked against the newest. Versions are compared as numbers when both are whole
//! numbers (`"2"` before `"10"`), else as text; a number sorts before text. An event whose
//! name has no schema passes (unless the caller asks for strictness).
//!
//! Ingest checks every event of a request before storing any (`Engine::set_event_schemas`):
//! one violation refuses the whole request, and the error's source is [`SchemaViolations`]
//! (see [`violations_of`]), which the HTTP API answers as `400` with the violations listed.
//! `data` and `user` are checked as stored: missing or `null` count as `{}`.
//!
//! Bounded against hostile events: `pattern`s use a linear-time regex engine (no lookaround or
//! backreferences: such a schema is refused at load), a request reports at most
//! [`MAX_VIOLATIONS`] violations, a large event only its first, and each message at most
//! [`MAX_MESSAGE_CHARS`] characters (messages quote the offending value).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::{StoredSchema, canonical_json};
use crate::function::{LoadError, Problem};

/// The most violations one request reports (the error says when there were more).
pub const MAX_VIOLATIONS: usize = 100;

/// The longest violation message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Events larger than this (as sent) report only their first violation: collecting every
/// violation of a large event costs memory in proportion to them.
pub const DETAILED_EVENT_BYTES: usize = 16 << 10;

/// One thing wrong with an event, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The event's position in its request (0 for a single event).
    pub index: usize,
    /// JSON pointer into the event, e.g. `/data/plan` (empty for the event itself).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// The violations of a request's events: the source of the [`crate::ErrorKind::InvalidInput`]
/// error ingest answers with when events do not match their schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolations(pub Vec<Violation>);

impl std::fmt::Display for SchemaViolations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        for (i, v) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            let at = if v.pointer.is_empty() {
                "/"
            } else {
                &v.pointer
            };
            write!(f, "[{}] {at}: {}", v.index, v.message)?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaViolations {}

/// Collects the violations of a request's events, at most [`MAX_VIOLATIONS`], noting whether
/// there were more; [`into_result`](Self::into_result) is the request's verdict.
#[derive(Debug, Default)]
pub struct ViolationList {
    violations: Vec<Violation>,
    more: bool,
}

impl ViolationList {
    /// Checks the event at position `index` of the request; `detailed: false` (a large
    /// event) reports its first violation only.
    pub fn check(&mut self, schemas: &EventSchemas, index: usize, event: &Value, detailed: bool) {
        let room = MAX_VIOLATIONS - self.violations.len();
        // One more than there is room for: to tell whether there were more.
        let limit = if detailed { room + 1 } else { 1 };
        let found = schemas.check_at_most(index, event, limit);
        self.more |= found.len() > room;
        self.violations.extend(found.into_iter().take(room));
    }

    /// `Ok` when no event broke its schema; else the [`crate::ErrorKind::InvalidInput`] error
    /// refusing the request, its source the [`SchemaViolations`].
    pub fn into_result(self) -> crate::Result<()> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let count = self.violations.len();
        let message = if self.more {
            format!(
                "more than {count} schema violations (the first {count} listed), nothing stored"
            )
        } else {
            format!("{count} schema violation(s), nothing stored")
        };
        Err(crate::Error::invalid(message).with_source(SchemaViolations(self.violations)))
    }
}

/// The schema violations an ingest error carries, if that is why it failed.
pub fn violations_of(error: &crate::Error) -> Option<&[Violation]> {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<SchemaViolations>())
        .map(|v| v.0.as_slice())
}

/// A version label ordered as described in the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VersionKey(String);

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0.parse::<u64>(), other.0.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b).then_with(|| self.0.cmp(&other.0)),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The source of schemas pushed to the catalog, as [`EventSchemas::list`] shows it.
pub const PUSHED: &str = "pushed";

/// A schema file's content (what `weir schemas push` sends and `PUT /v1/schemas/…` takes):
/// `{"name": "user/signed.up", "version": "1", "schema": {…}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaDocument {
    /// The event name.
    pub name: String,
    /// The version label (a number in the document is taken as its text).
    pub version: String,
    /// The JSON Schema of the whole event.
    pub schema: Value,
}

impl SchemaDocument {
    /// Parses a schema document; fails with every problem found, each at its JSON path.
    pub fn from_slice(text: &[u8]) -> Result<Self, Vec<Problem>> {
        let doc: Value = serde_json::from_slice(text).map_err(|e| {
            vec![problem(
                "",
                format!(
                    "malformed JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )]
        })?;
        Self::from_value(&doc)
    }

    /// [`from_slice`](Self::from_slice) of a parsed document.
    pub fn from_value(doc: &Value) -> Result<Self, Vec<Problem>> {
        let Some(object) = doc.as_object() else {
            return Err(vec![problem(
                "",
                "a schema document is an object: {\"name\": …, \"version\": …, \"schema\": {…}}",
            )]);
        };
        let mut problems = Vec::new();
        for key in object.keys() {
            if !["name", "version", "schema"].contains(&key.as_str()) {
                problems.push(problem(
                    key.as_str(),
                    "unknown key (a schema document has name, version and schema)",
                ));
            }
        }
        let name = match object.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                problems.push(problem("name", "must be the event name, a string"));
                String::new()
            }
        };
        let version = match object.get("version") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                problems.push(problem("version", "must be the version label, a string"));
                String::new()
            }
        };
        let Some(schema) = object.get("schema") else {
            problems.push(problem("schema", "missing: the JSON Schema of the event"));
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SchemaDocument {
            name,
            version,
            schema: schema.clone(),
        })
    }

    /// Compiles the schema alone: the problems of one that is not valid JSON Schema.
    pub fn compile(&self) -> Result<EventSchemas, Vec<Problem>> {
        let mut one = EventSchemas::new();
        one.insert(&self.name, &self.version, &self.schema, PUSHED)?;
        Ok(one)
    }
}

/// One compiled schema, as written, and where it came from.
struct Compiled {
    validator: jsonschema::Validator,
    schema: Value,
    source: String,
}

/// One schema as the API lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SchemaInfo<'a> {
    /// The event name.
    pub name: &'a str,
    /// The version label.
    pub version: &'a str,
    /// Whether it is the newest version of the name (the one events without `v` meet).
    pub newest: bool,
    /// Where it came from: a file, or `pushed` (the state store's catalog).
    pub source: &'a str,
}

/// The schemas of every event name, by version ([`EventSchemas::check`]).
#[derive(Default)]
pub struct EventSchemas {
    by_name: HashMap<String, BTreeMap<VersionKey, Compiled>>,
    /// An event whose name has no schema is a violation (strict events).
    strict: bool,
}

impl std::fmt::Debug for EventSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.by_name.iter().map(|(n, v)| (n, v.len())).collect();
        names.sort();
        f.debug_struct("EventSchemas")
            .field("versions_by_name", &names)
            .field("strict", &self.strict)
            .finish()
    }
}

impl EventSchemas {
    /// No schemas: every event passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many schemas (name and version pairs) there are.
    pub fn len(&self) -> usize {
        self.by_name.values().map(BTreeMap::len).sum()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<&str> {
        self.by_name
            .get(name)
            .map(|v| v.keys().map(|k| k.0.as_str()).collect())
            .unwrap_or_default()
    }

    /// Compiles `schema` as version `version` of event `name`; `source` names where it came
    /// from (a file) in errors. Fails with the problems found: a schema that is not valid JSON
    /// Schema, an empty name or version, a version already given by another source.
    pub fn insert(
        &mut self,
        name: &str,
        version: &str,
        schema: &Value,
        source: &str,
    ) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if name.is_empty() {
            problems.push(problem("name", "must be a non-empty event name"));
        }
        if version.is_empty() {
            problems.push(problem("version", "must be a non-empty version label"));
        }
        if let Some(existing) = self
            .by_name
            .get(name)
            .and_then(|v| v.get(&VersionKey(version.to_owned())))
        {
            problems.push(problem(
                "version",
                format!(
                    "version {version:?} of {name:?} is already given by {}",
                    existing.source
                ),
            ));
        }
        let validator = match jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(schema)
        {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.instance_path().to_string();
                problems.push(problem(
                    format!("schema{}", at.replace('/', ".")),
                    format!("not a valid JSON Schema: {e}"),
                ));
                None
            }
        };
        match validator {
            Some(validator) if problems.is_empty() => {
                self.by_name.entry(name.to_owned()).or_default().insert(
                    VersionKey(version.to_owned()),
                    Compiled {
                        validator,
                        schema: schema.clone(),
                        source: source.to_owned(),
                    },
                );
                Ok(())
            }
            _ => Err(problems),
        }
    }

    /// Reads every `*.json` file of `dir` (in name order) as a schema file. A missing directory
    /// gives no schemas. Fails with every problem of every file, each naming its file and JSON
    /// path.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<LoadError>> {
        let mut schemas = Self::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(schemas),
            Err(e) => {
                return Err(vec![LoadError {
                    file: dir.to_path_buf(),
                    problems: vec![problem("", format!("cannot read the directory: {e}"))],
                }]);
            }
        };
        files.sort();
        let mut errors = Vec::new();
        for file in files {
            if let Err(problems) = schemas.load_file(&file) {
                errors.push(LoadError { file, problems });
            }
        }
        if errors.is_empty() {
            Ok(schemas)
        } else {
            Err(errors)
        }
    }

    /// Reads one schema file into the registry.
    fn load_file(&mut self, file: &Path) -> Result<(), Vec<Problem>> {
        let text =
            std::fs::read(file).map_err(|e| vec![problem("", format!("cannot read: {e}"))])?;
        let document = SchemaDocument::from_slice(&text)?;
        self.insert(
            &document.name,
            &document.version,
            &document.schema,
            &file.display().to_string(),
        )
    }

    /// These schemas (a node's files) merged with the `stored` ones (pushed to the catalog,
    /// which every node shares): a version given by both with other schemas is the stored
    /// one's, and a warning names the file. Stored schemas that do not compile (written by
    /// hand into the store) are left out with a warning.
    pub fn merged_with(&self, stored: &[StoredSchema]) -> (EventSchemas, Vec<String>) {
        let mut merged = EventSchemas::new().with_strict(self.strict);
        let mut warnings = Vec::new();
        for s in stored {
            if let Err(problems) = merged.insert(&s.name, &s.version, &s.schema, PUSHED) {
                warnings.push(format!(
                    "pushed schema version {:?} of {:?} left out: {}",
                    s.version,
                    s.name,
                    problems
                        .iter()
                        .map(|p| p.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        for (name, versions) in &self.by_name {
            for (version, compiled) in versions {
                match merged.schema(name, &version.0) {
                    Some(pushed) if canonical_json(pushed) == canonical_json(&compiled.schema) => {}
                    Some(_) => warnings.push(format!(
                        "{}: version {:?} of {name:?} differs from the pushed one, which applies",
                        compiled.source, version.0
                    )),
                    None => {
                        // Compiled once already: it compiles again.
                        let _ = merged.insert(name, &version.0, &compiled.schema, &compiled.source);
                    }
                }
            }
        }
        (merged, warnings)
    }

    /// The version an event named `name` with version label `v` meets: `Some(Ok(version))`,
    /// `Some(Err(()))` when `v` names no version of a name that has schemas, `None` when the
    /// name has none.
    pub fn selected(&self, name: &str, v: Option<&str>) -> Option<Result<&str, ()>> {
        let versions = self.by_name.get(name)?;
        Some(match v {
            None => versions.keys().next_back().map(|k| k.0.as_str()).ok_or(()),
            Some(v) => versions
                .get_key_value(&VersionKey(v.to_owned()))
                .map(|(k, _)| k.0.as_str())
                .ok_or(()),
        })
    }

    /// Every schema, by name then version (oldest first).
    pub fn list(&self) -> Vec<SchemaInfo<'_>> {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let versions = &self.by_name[name];
            let newest = versions.keys().next_back();
            for (version, compiled) in versions {
                out.push(SchemaInfo {
                    name,
                    version: &version.0,
                    newest: Some(version) == newest,
                    source: &compiled.source,
                });
            }
        }
        out
    }

    /// The JSON Schema of version `version` of `name`, as written.
    pub fn schema(&self, name: &str, version: &str) -> Option<&Value> {
        self.by_name
            .get(name)?
            .get(&VersionKey(version.to_owned()))
            .map(|c| &c.schema)
    }

    /// Whether events named `name` have a schema.
    pub fn covers(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// These schemas, strict or not: with strict events, an event whose name has no schema is
    /// a violation (at `/name`) instead of passing unchecked.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Whether an event named `name` is checked: it has a schema, or events are strict.
    pub fn applies_to(&self, name: &str) -> bool {
        self.strict || self.covers(name)
    }

    /// Whether any event is checked at all (schemas, or strict events).
    pub fn checks_anything(&self) -> bool {
        self.strict || !self.by_name.is_empty()
    }

    /// The violations of `event` (at position `index` of its request), at most `limit` of
    /// them: none when it matches its schema or its name has none. An event whose `v` names
    /// no version of a name that has schemas is a violation at `/v`.
    pub fn check(&self, index: usize, event: &Value) -> Vec<Violation> {
        self.check_at_most(index, event, usize::MAX)
    }

    /// [`check`](Self::check), reporting at most `limit` violations (at least one when there
    /// is any).
    pub fn check_at_most(&self, index: usize, event: &Value, limit: usize) -> Vec<Violation> {
        let Some(name) = event.get("name").and_then(Value::as_str) else {
            return Vec::new();
        };
        let Some(versions) = self.by_name.get(name) else {
            if !self.strict {
                return Vec::new();
            }
            return vec![Violation {
                index,
                pointer: "/name".into(),
                message: format!(
                    "no schema for event {name:?} (strict events: every event name needs one)"
                ),
            }];
        };
        let wanted = match event.get("v") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(number_label(n)),
            Some(other) => {
                return vec![Violation {
                    index,
                    pointer: "/v".into(),
                    message: format!("v must be a version label (a string), not {other}"),
                }];
            }
        };
        let compiled = match &wanted {
            None => versions.values().next_back(),
            Some(v) => versions.get(&VersionKey(v.clone())),
        };
        let Some(compiled) = compiled else {
            let known: Vec<&str> = versions.keys().map(|k| k.0.as_str()).collect();
            return vec![Violation {
                index,
                pointer: "/v".into(),
                message: format!(
                    "{name:?} has no schema version {:?} (known: {})",
                    wanted.unwrap_or_default(),
                    known.join(", ")
                ),
            }];
        };
        if compiled.validator.is_valid(event) {
            return Vec::new();
        }
        let violation = |e: jsonschema::ValidationError<'_>| Violation {
            index,
            pointer: e.instance_path().to_string(),
            message: shortened(e.to_string()),
        };
        if limit <= 1 {
            // The first only: `iter_errors` builds every error before handing out the first.
            return compiled
                .validator
                .validate(event)
                .err()
                .map(violation)
                .into_iter()
                .collect();
        }
        compiled
            .validator
            .iter_errors(event)
            .take(limit)
            .map(violation)
            .collect()
    }
}

/// A version label from a JSON number: a whole number without a fraction (`1.0` → `"1"`), as
/// clients that only have floats send it. Stored events keep their `v` so.
pub fn number_label(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
fn shortened(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn signed_up(plan: &str) -> Value {
        json!({"type": "object", "required": ["name", "data"], "properties": {
            "data": {"type": "object", "required": ["plan"], "properties": {
                "plan": {"enum": [plan]},
                "seats": {"type": "integer", "minimum": 1}
            }}
        }})
    }

    fn write(dir: &Path, file: &str, content: &str) {
        std::fs::write(dir.join(file), content).expect("write");
    }

    #[test]
    fn selected_names_the_version_an_event_meets() {
        let mut schemas = EventSchemas::new();
        for v in ["1", "2", "10"] {
            schemas
                .insert("a", v, &serde_json::json!({}), "test")
                .expect("insert");
        }
        assert_eq!(schemas.selected("a", None), Some(Ok("10")), "the newest");
        assert_eq!(schemas.selected("a", Some("2")), Some(Ok("2")));
        assert_eq!(schemas.selected("a", Some("3")), Some(Err(())));
        assert_eq!(schemas.selected("b", Some("1")), None);
    }

    #[test]
    fn an_event_is_checked_against_its_version_or_the_newest() {
        let mut schemas = EventSchemas::new();
        schemas
            .insert("user/signed.up", "2", &signed_up("pro"), "two.json")
            .expect("v2");
        schemas
            .insert("user/signed.up", "10", &signed_up("team"), "ten.json")
            .expect("v10");
        assert_eq!(schemas.versions("user/signed.up"), ["2", "10"]);
        assert_eq!(schemas.len(), 2);
        let listed: Vec<(&str, bool)> = schemas
            .list()
            .iter()
            .map(|s| (s.version, s.newest))
            .collect();
        assert_eq!(listed, [("2", false), ("10", true)]);
        assert_eq!(
            schemas.schema("user/signed.up", "2"),
            Some(&signed_up("pro"))
        );
        assert_eq!(schemas.schema("user/signed.up", "3"), None);

        let newest = json!({"name": "user/signed.up", "data": {"plan": "team"}});
        assert_eq!(schemas.check(0, &newest), []);
        let old = json!({"name": "user/signed.up", "v": "2", "data": {"plan": "team"}});
        let violations = schemas.check(3, &old);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].index, 3);
        assert_eq!(violations[0].pointer, "/data/plan");

        let numeric_v = json!({"name": "user/signed.up", "v": 2, "data": {"plan": "pro"}});
        assert_eq!(schemas.check(0, &numeric_v), []);
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let mut schemas = EventSchemas::new();
        schemas
            .insert("user/signed.up", "1", &signed_up("pro"), "one.json")
            .expect("v1");
        let bad = json!({"name": "user/signed.up", "data": {"plan": "free", "seats": 0}});
        let mut pointers: Vec<String> = schemas
            .check(0, &bad)
            .into_iter()
            .map(|v| v.pointer)
            .collect();
        pointers.sort();
        assert_eq!(pointers, ["/data/plan", "/data/seats"]);
        // A missing property is reported at its parent, the property named in the message.
        let missing = json!({"name": "user/signed.up", "data": {}});
        let violations = schemas.check(0, &missing);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].pointer, "/data");
        assert!(violations[0].message.contains("plan"), "{violations:?}");
    }

    #[test]
    fn unknown_versions_are_violations_and_unknown_names_pass() {
        let mut schemas = EventSchemas::new();
        schemas
            .insert("user/signed.up", "1", &signed_up("pro"), "one.json")
            .expect("v1");
        let unknown = json!({"name": "user/signed.up", "v": "7", "data": {"plan": "pro"}});
        let violations = schemas.check(0, &unknown);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].pointer, "/v");
        assert!(violations[0].message.contains("known: 1"), "{violations:?}");
        let odd_v = json!({"name": "user/signed.up", "v": [1], "data": {"plan": "pro"}});
        assert_eq!(schemas.check(0, &odd_v)[0].pointer, "/v");
        let other = json!({"name": "order/placed", "data": {"anything": true}});
        assert_eq!(schemas.check(0, &other), []);
    }

    #[test]
    fn strict_events_refuse_names_without_a_schema() {
        let mut schemas = EventSchemas::new();
        schemas
            .insert("user/signed.up", "1", &signed_up("pro"), "one.json")
            .expect("v1");
        let other = json!({"name": "order/placed", "data": {}});
        assert!(!schemas.applies_to("order/placed"));
        let schemas = schemas.with_strict(true);
        assert!(schemas.applies_to("order/placed") && schemas.checks_anything());
        let violations = schemas.check(2, &other);
        assert_eq!(violations.len(), 1);
        assert_eq!(
            (violations[0].index, violations[0].pointer.as_str()),
            (2, "/name")
        );
        assert!(violations[0].message.contains("strict"), "{violations:?}");
        let known = json!({"name": "user/signed.up", "data": {"plan": "pro"}});
        assert_eq!(schemas.check(0, &known), []);
        assert!(EventSchemas::new().with_strict(true).checks_anything());
        assert!(!EventSchemas::new().checks_anything());
    }

    #[test]
    fn a_folder_of_schema_files_loads_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "signed-up-1.json",
            &json!({"name": "user/signed.up", "version": "1", "schema": signed_up("pro")})
                .to_string(),
        );
        write(dir.path(), "notes.txt", "not a schema file");
        let schemas = EventSchemas::load_dir(dir.path()).expect("load");
        assert_eq!(schemas.versions("user/signed.up"), ["1"]);

        write(dir.path(), "broken.json", "{\"name\": ");
        write(
            dir.path(),
            "not-a-schema.json",
            r#"{"name": "a", "version": "1", "schema": {"type": 12}}"#,
        );
        write(
            dir.path(),
            "twice.json",
            &json!({"name": "user/signed.up", "version": "1", "schema": {}}).to_string(),
        );
        write(
            dir.path(),
            "odd-keys.json",
            r#"{"name": "b", "version": "1", "shema": {}}"#,
        );
        let errors = EventSchemas::load_dir(dir.path()).expect_err("bad files");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert_eq!(errors.len(), 4, "{all}");
        assert!(
            all.contains("broken.json: malformed JSON at line 1"),
            "{all}"
        );
        assert!(all.contains("not-a-schema.json: schema"), "{all}");
        assert!(all.contains("not a valid JSON Schema"), "{all}");
        assert!(
            all.contains(
                "twice.json: version: version \"1\" of \"user/signed.up\" is already given by"
            ),
            "{all}"
        );
        assert!(all.contains("odd-keys.json: shema: unknown key"), "{all}");
        assert!(all.contains("odd-keys.json: schema: missing"), "{all}");

        let missing = EventSchemas::load_dir(&dir.path().join("nope")).expect("no folder");
        assert!(missing.is_empty());
    }
}
