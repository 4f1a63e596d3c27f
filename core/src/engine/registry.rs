//! The functions an engine knows: every loaded version (runs stay pinned to theirs), the live
//! version of each id, and an index by event name for the router.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use tracing::debug;

use crate::event::Event;
use crate::expr::Vars;
use crate::function::{Function, name_matches};
use crate::metrics::Metrics;

/// Loaded functions, replaced atomically on (re)load; readers never block writers for long.
#[derive(Default)]
pub struct FunctionRegistry {
    snapshot: RwLock<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Snapshot {
    /// Every version ever loaded into this process, by id, then version (nested so that a
    /// lookup by `&str`s builds no key).
    versions: HashMap<String, HashMap<String, Arc<Function>>>,
    /// The live functions, by id.
    live: HashMap<String, Arc<Function>>,
    /// Live functions by exact trigger name.
    exact: HashMap<String, Vec<Arc<Function>>>,
    /// Live functions with a wildcard trigger, with the pattern, by the pattern's first
    /// segment (`""` when the first segment is itself `*`).
    wildcard: HashMap<String, Vec<(String, Arc<Function>)>>,
    /// The names of the events some loaded version waits for (`async` edges), each with the
    /// paths its matches file pauses by (`async.X == event.Y`: the `X`s).
    awaited: HashMap<String, Arc<Vec<Vec<String>>>>,
    /// Canary versions by function id: a share of the runs the live version's triggers start.
    canaries: HashMap<String, CanaryVersion>,
}

/// A canary version of a function and the share of new runs it takes.
#[derive(Debug, Clone)]
pub struct CanaryVersion {
    /// The version.
    pub function: Arc<Function>,
    /// The percentage of new runs it takes (0 to 100).
    pub percent: u8,
    /// Route by the event's user key (one user stays on one version) rather than its id.
    pub sticky_user: bool,
}

/// The bucket (0 to 99) of a routing key for a canary of `function_id`: a stable hash, the
/// same on every node, so that a redelivered event (or, sticky, a user's next event) goes to
/// the same version. The function's id is hashed in, so that the same users are not the
/// canary of every function.
pub fn canary_bucket(function_id: &str, key: &str) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in function_id
        .as_bytes()
        .iter()
        .chain(b"\n")
        .chain(key.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits mix poorly for short keys.
    ((h ^ (h >> 32)) % 100) as u8
}

impl Snapshot {
    /// The snapshot of every loaded version `versions` with `live` live.
    fn build(
        versions: HashMap<String, HashMap<String, Arc<Function>>>,
        live_functions: Vec<Arc<Function>>,
        canaries: HashMap<String, CanaryVersion>,
    ) -> Snapshot {
        let mut live = HashMap::new();
        let mut exact: HashMap<String, Vec<Arc<Function>>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<(String, Arc<Function>)>> = HashMap::new();
        for f in live_functions {
            let mut names: Vec<&str> = f.trigger_names().collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                if name.contains('*') {
                    let first = name.split('/').next().filter(|s| *s != "*").unwrap_or("");
                    wildcard
                        .entry(first.to_string())
                        .or_default()
                        .push((name.to_string(), f.clone()));
                } else {
                    exact.entry(name.to_string()).or_default().push(f.clone());
                }
            }
            live.insert(f.id.clone(), f);
        }
        // Every loaded version, live or not: runs pinned to an older one still wait.
        let mut awaited: HashMap<String, Vec<Vec<String>>> = HashMap::new();
        for f in versions.values().flat_map(|v| v.values()) {
            let waits = f.waits.iter().filter_map(|w| match &w.kind {
                crate::function::WaitKind::Event(w) => Some(w.specs.iter()),
                crate::function::WaitKind::Sleep(_) => None,
            });
            let cancels = f.cancels.iter().map(|c| &c.spec);
            for spec in waits.flatten().chain(cancels) {
                let paths = awaited.entry(spec.event.clone()).or_default();
                if let Some(key) = &spec.key
                    && !paths.contains(&key.incoming)
                {
                    paths.push(key.incoming.clone());
                }
            }
        }
        let awaited = awaited.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        Snapshot {
            versions,
            live,
            exact,
            wildcard,
            awaited,
            canaries,
        }
    }

    /// Live functions whose wildcard trigger matches `event_name` (the buckets of its first
    /// segment and of patterns starting with `*`).
    fn wildcard_matches<'a>(
        &'a self,
        event_name: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Function>> {
        let first = event_name.split('/').next().unwrap_or("");
        [self.wildcard.get(first), self.wildcard.get("")]
            .into_iter()
            .flatten()
            .flatten()
            .filter(move |(pattern, _)| name_matches(pattern, event_name))
            .map(|(_, f)| f)
    }
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.snapshot.read();
        f.debug_struct("FunctionRegistry")
            .field("live", &snap.live.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that creates the series of the functions it loads in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        FunctionRegistry {
            snapshot: RwLock::default(),
            metrics,
        }
    }

    /// Makes `functions` the live set; versions loaded before stay reachable for their runs.
    pub fn replace(&self, functions: Vec<Function>) {
        self.replace_shared(functions.into_iter().map(Arc::new).collect());
    }

    /// [`replace`](Self::replace) with functions already shared (some may be loaded versions).
    pub fn replace_shared(&self, functions: Vec<Arc<Function>>) {
        self.replace_routed(functions, HashMap::new());
    }

    /// Makes `functions` the live set and `canaries` (by function id) their canaries.
    pub fn replace_routed(
        &self,
        functions: Vec<Arc<Function>>,
        canaries: HashMap<String, CanaryVersion>,
    ) {
        self.metrics.load(
            functions
                .iter()
                .map(|f| &**f)
                .chain(canaries.values().map(|c| &*c.function)),
        );
        // Read and written under one lock: a version inserted meanwhile is not lost.
        let mut snapshot = self.snapshot.write();
        let mut versions = snapshot.versions.clone();
        for f in functions
            .iter()
            .chain(canaries.values().map(|c| &c.function))
        {
            versions
                .entry(f.id.clone())
                .or_default()
                .insert(f.version.clone(), f.clone());
        }
        *snapshot = Arc::new(Snapshot::build(versions, functions, canaries));
    }

    /// The version of live function `live` that `event` starts a run on: its canary for the
    /// canary's share of events (by a stable hash of the event's id, or of its user key when
    /// sticky), else `live` itself.
    pub fn routed(&self, live: Arc<Function>, event: &Event) -> Arc<Function> {
        let snapshot = self.snapshot.read();
        let Some(canary) = snapshot.canaries.get(&live.id) else {
            return live;
        };
        if canary.percent == 0 {
            return live;
        }
        let user;
        let key = if canary.sticky_user {
            user = event.user_key();
            user.as_deref().unwrap_or(&event.id)
        } else {
            &event.id
        };
        if canary_bucket(&live.id, key) < canary.percent {
            canary.function.clone()
        } else {
            live
        }
    }

    /// The canary of function `id`, if it has one.
    pub fn canary(&self, id: &str) -> Option<CanaryVersion> {
        self.snapshot.read().canaries.get(id).cloned()
    }

    /// Adds a version that is not live (a run's, fetched from the catalog); the live set stays.
    /// Answers the version kept (one loaded before under that version wins).
    pub fn insert_version(&self, function: Function) -> Arc<Function> {
        let mut snapshot = self.snapshot.write();
        if let Some(existing) = snapshot
            .versions
            .get(&function.id)
            .and_then(|v| v.get(&function.version))
        {
            return existing.clone();
        }
        let function = Arc::new(function);
        let mut versions = snapshot.versions.clone();
        versions
            .entry(function.id.clone())
            .or_default()
            .insert(function.version.clone(), function.clone());
        let live: Vec<Arc<Function>> = snapshot.live.values().cloned().collect();
        let canaries = snapshot.canaries.clone();
        *snapshot = Arc::new(Snapshot::build(versions, live, canaries));
        function
    }

    /// Live functions with a trigger whose name pattern matches `event_name` (each once).
    pub fn candidates(&self, event_name: &str) -> Vec<Arc<Function>> {
        let snap = self.snapshot.read().clone();
        let mut out: Vec<Arc<Function>> = snap.exact.get(event_name).cloned().unwrap_or_default();
        for f in snap.wildcard_matches(event_name) {
            if !out.iter().any(|g| Arc::ptr_eq(g, f)) {
                out.push(f.clone());
            }
        }
        out
    }

    /// Whether any live function has a trigger whose name pattern matches `event_name`.
    pub fn may_trigger(&self, event_name: &str) -> bool {
        let snap = self.snapshot.read();
        if snap.exact.contains_key(event_name) {
            return true;
        }
        snap.wildcard_matches(event_name).next().is_some()
    }

    /// When some loaded function version waits for events named `event_name`: the paths
    /// (`async.X`) its matches file pauses by.
    pub fn awaited(&self, event_name: &str) -> Option<Arc<Vec<Vec<String>>>> {
        self.snapshot.read().awaited.get(event_name).cloned()
    }

    /// Live functions that `event` triggers: a trigger's name pattern matches and its
    /// expression (if any) is true. Expressions that fail to evaluate do not match.
    pub fn matching(&self, event: &Event) -> Vec<Arc<Function>> {
        let candidates = self.candidates(&event.name);
        if candidates.is_empty() {
            return candidates;
        }
        let vars = Vars::for_trigger(event);
        candidates
            .into_iter()
            .filter(|f| {
                f.triggers.iter().any(|t| {
                    name_matches(&t.event, &event.name)
                        && t.expression.as_ref().is_none_or(|expr| {
                            expr.eval_bool(&vars).unwrap_or_else(|e| {
                                debug!(function = %f.id, error = %e, "trigger expression failed; not matched");
                                false
                            })
                        })
                })
            })
            .collect()
    }

    /// A function version, live or not.
    pub fn get(&self, id: &str, version: &str) -> Option<Arc<Function>> {
        self.snapshot
            .read()
            .versions
            .get(id)
            .and_then(|by_version| by_version.get(version))
            .cloned()
    }

    /// The versions of function `id` loaded here.
    pub fn loaded_versions(&self, id: &str) -> Vec<String> {
        self.snapshot
            .read()
            .versions
            .get(id)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The live version of a function.
    pub fn live(&self, id: &str) -> Option<Arc<Function>> {
        self.snapshot.read().live.get(id).cloned()
    }

    /// Every live function, sorted by id.
    pub fn list(&self) -> Vec<Arc<Function>> {
        let mut all: Vec<_> = self.snapshot.read().live.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::function::test_support::function_from;

    fn function(id: &str, version: &str, event: &str) -> Function {
        let doc = json!({"id": id, "triggers": [{"event": event}],
                         "steps": {"s": {"path": "http://x/", "runtime": {"type": "http"}}}});
        function_from(&doc, version)
    }

    /// A canary at 10% takes 10% ± 2% of 10,000 events; with sticky users, every event of
    /// one user goes to one version; at 0% it takes none.
    #[test]
    fn a_canary_takes_its_share_of_events() {
        let registry = FunctionRegistry::new();
        let live = Arc::new(function("f", "v1", "a/b"));
        let canary = Arc::new(function("f", "v2", "a/b"));
        let route = |percent: u8, sticky_user: bool, event: &Event| {
            let mut canaries = HashMap::new();
            canaries.insert(
                "f".to_owned(),
                CanaryVersion {
                    function: canary.clone(),
                    percent,
                    sticky_user,
                },
            );
            registry.replace_routed(vec![live.clone()], canaries);
            registry.routed(live.clone(), event).version.clone()
        };
        let events: Vec<Event> = (0..10_000)
            .map(|i| {
                Event::from_json(
                    json!({"name": "a/b", "user": {"id": format!("u{}", i % 500)}}),
                    "",
                )
                .expect("event")
            })
            .collect();
        let mut canaries = HashMap::new();
        canaries.insert(
            "f".to_owned(),
            CanaryVersion {
                function: canary.clone(),
                percent: 10,
                sticky_user: false,
            },
        );
        registry.replace_routed(vec![live.clone()], canaries);
        let on_canary = events
            .iter()
            .filter(|e| registry.routed(live.clone(), e).version == "v2")
            .count();
        assert!((800..=1_200).contains(&on_canary), "{on_canary} of 10,000");
        let by_user: HashMap<String, std::collections::HashSet<String>> =
            events.iter().fold(HashMap::new(), |mut acc, e| {
                acc.entry(e.user_key().expect("user"))
                    .or_default()
                    .insert(route(30, true, e));
                acc
            });
        assert!(by_user.values().all(|versions| versions.len() == 1));
        let users_on_canary = by_user.values().filter(|v| v.contains("v2")).count();
        assert!(
            (100..=200).contains(&users_on_canary),
            "about 30% of 500 users on the canary: {users_on_canary}"
        );
        assert!(
            events
                .iter()
                .take(1_000)
                .all(|e| route(0, false, e) == "v1")
        );
        assert!(
            events
                .iter()
                .take(1_000)
                .all(|e| route(100, false, e) == "v2")
        );
    }

    #[test]
    fn a_reload_keeps_earlier_versions_for_their_runs() {
        let registry = FunctionRegistry::new();
        registry.replace(vec![
            function("f", "v1", "a/one"),
            function("g", "v1", "a/*"),
        ]);
        registry.replace(vec![function("f", "v2", "a/two")]);
        assert_eq!(
            registry.get("f", "v1").map(|f| f.version.clone()),
            Some("v1".into())
        );
        assert_eq!(
            registry.get("f", "v2").map(|f| f.version.clone()),
            Some("v2".into())
        );
        assert_eq!(
            registry.get("g", "v1").map(|f| f.id.clone()),
            Some("g".into())
        );
        assert!(registry.get("f", "v3").is_none());
        assert!(registry.get("h", "v1").is_none());
        assert_eq!(
            registry.live("f").map(|f| f.version.clone()),
            Some("v2".into())
        );
        assert!(
            registry.live("g").is_none(),
            "g was dropped from the live set"
        );
        assert!(registry.may_trigger("a/two"));
        assert!(!registry.may_trigger("a/one"), "only live triggers route");
        assert_eq!(registry.list().len(), 1);
    }
}
