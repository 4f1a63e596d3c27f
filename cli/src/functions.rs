//! Loading every function (and the event schemas of its `schemas/` folder) under a directory,
//! and reloading them when their files change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_core::driver::DriverSet;
use weir_core::engine::Engine;
use weir_core::function::{
    Function, LoadError, Problem, RuntimeCatalog, definition_file, discover, load_function,
};
use weir_core::schema::EventSchemas;

/// The folder of event schema files inside the functions directory.
pub const SCHEMAS_DIR: &str = "schemas";

/// What loading a directory gave: the valid functions and the errors of the others.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Functions that validated.
    pub functions: Vec<Function>,
    /// One entry per invalid function file (and per invalid schema file).
    pub errors: Vec<LoadError>,
    /// The event schemas of `schemas/`, or `None` when a schema file is invalid (its errors
    /// are in `errors`).
    pub schemas: Option<EventSchemas>,
}

/// Loads every function under `root` (or the one function `root` is).
pub fn load_all(root: &Path, runtimes: &dyn RuntimeCatalog) -> Loaded {
    let mut loaded = Loaded::default();
    let dirs = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        discover(root)
    };
    if root.is_dir() {
        match EventSchemas::load_dir(&root.join(SCHEMAS_DIR)) {
            Ok(schemas) => loaded.schemas = Some(schemas),
            Err(errors) => loaded.errors.extend(errors),
        }
    } else {
        loaded.schemas = Some(EventSchemas::new());
    }
    for dir in dirs {
        match load_function(&dir, runtimes) {
            Ok(f) => {
                if loaded.functions.iter().any(|g| g.id == f.id) {
                    let file = definition_file(&dir).unwrap_or(dir.clone());
                    loaded.errors.push(LoadError {
                        file,
                        problems: vec![weir_core::function::Problem {
                            path: "id".into(),
                            message: format!("another function already has the id {:?}", f.id),
                        }],
                    });
                } else {
                    loaded.functions.push(f);
                }
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded
}

/// Loads `root` into the engine (steps prepared, see [`prepare`]; each function stored as a
/// version in the state store's catalog, see `Engine::load_functions`), printing what loaded
/// and what did not. Event schemas are replaced only when every schema file is valid (else the
/// ones in use stay).
pub async fn load_into(engine: &Engine, root: &Path) -> Loaded {
    let mut loaded = load_all(root, engine.drivers());
    prepare(engine.drivers(), &mut loaded).await;
    for e in &loaded.errors {
        eprintln!("{e}");
    }
    if let Err(e) = engine
        .load_functions(loaded.functions.clone(), "weir dev")
        .await
    {
        eprintln!("cannot store the functions' versions: {e}");
        engine.functions().replace(loaded.functions.clone());
    }
    if let Some(schemas) = loaded.schemas.take() {
        if !schemas.is_empty() {
            eprintln!(
                "loaded {} event schema(s) from {SCHEMAS_DIR}/",
                schemas.len()
            );
        }
        engine.set_event_schemas(schemas);
    }
    loaded
}

/// Steps prepared at once by [`prepare`] (image builds and deploys are heavy).
const PREPARE_CONCURRENCY: usize = 4;

/// Gets every step of `loaded` ready on its driver ([`Driver::prepare`]: an image built, a
/// module compiled, a Lambda deployed), a few at a time. A permanent failure (a Dockerfile that
/// does not build, a file that is not a module) moves the function to the errors, naming the
/// file and the step; a retryable one (the Docker engine or AWS unreachable) is printed as a
/// warning, the function loads, and the step prepares again at its first attempt.
///
/// [`Driver::prepare`]: weir_core::driver::Driver::prepare
pub async fn prepare(drivers: &DriverSet, loaded: &mut Loaded) {
    use futures::StreamExt;
    let mut work = Vec::new();
    for (f, function) in loaded.functions.iter().enumerate() {
        for step in &function.steps {
            let Some(driver) = drivers.get(&step.runtime_type) else {
                continue;
            };
            let spec = function.step_spec(step);
            let driver = driver.clone();
            work.push(async move { (f, spec.step_id.clone(), driver.prepare(&spec).await) });
        }
    }
    let results: Vec<_> = futures::stream::iter(work)
        .buffer_unordered(PREPARE_CONCURRENCY)
        .collect()
        .await;
    let mut failed: Vec<(usize, Problem)> = Vec::new();
    for (f, step_id, result) in results {
        let Err(e) = result else { continue };
        if e.is_retryable() {
            eprintln!(
                "warning: {}: step {step_id} could not be prepared now (it will be at its first attempt): {e}",
                loaded.functions[f].id
            );
        } else {
            failed.push((
                f,
                Problem {
                    path: format!("steps.{step_id}"),
                    message: e.to_string(),
                },
            ));
        }
    }
    let mut failed_functions: Vec<usize> = failed.iter().map(|(f, _)| *f).collect();
    failed_functions.sort_unstable();
    failed_functions.dedup();
    for &f in failed_functions.iter().rev() {
        let function = loaded.functions.remove(f);
        let mut problems: Vec<Problem> = failed
            .iter()
            .filter(|(g, _)| *g == f)
            .map(|(_, p)| p.clone())
            .collect();
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        loaded.errors.push(LoadError {
            file: definition_file(&function.dir).unwrap_or(function.dir.clone()),
            problems,
        });
    }
}

/// Files stat-ed per step path at most (a step directory that holds a build tree).
const MAX_FILES_PER_STEP: usize = 10_000;

/// Size and modification time of a file, as [`fingerprint`] compares them.
type Stamp = (PathBuf, u64, Option<SystemTime>);

/// A cheap fingerprint of what the functions under `root` are made of: the definition files
/// (paths, sizes, mtimes) and every file under the `path` of a loaded step (`steps`: a wasm
/// module, a Docker build context, a Lambda's code), so that editing a step's code prepares it
/// again (an image rebuilt, a module compiled) as editing `weir.json` does.
fn fingerprint(root: &Path, steps: &[PathBuf]) -> Vec<Stamp> {
    let dirs = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        discover(root)
    };
    let mut stamps: Vec<Stamp> = dirs
        .into_iter()
        .filter_map(|d| {
            if d.is_file() {
                Some(d)
            } else {
                definition_file(&d)
            }
        })
        .map(|f| stamp(&f))
        .collect();
    let schemas = root.join(SCHEMAS_DIR);
    if schemas.is_dir() {
        let mut budget = MAX_FILES_PER_STEP;
        stamp_tree(&schemas, &mut budget, &mut stamps);
    }
    for path in steps {
        let mut budget = MAX_FILES_PER_STEP;
        stamp_tree(path, &mut budget, &mut stamps);
    }
    stamps
}

fn stamp(file: &Path) -> Stamp {
    let meta = std::fs::metadata(file).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta.and_then(|m| m.modified().ok());
    (file.to_path_buf(), size, mtime)
}

/// Stamps `path` and, when it is a directory, the files under it (sorted, at most `budget`).
fn stamp_tree(path: &Path, budget: &mut usize, stamps: &mut Vec<Stamp>) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    stamps.push(stamp(path));
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        stamp_tree(&child, budget, stamps);
    }
}

/// The local paths the steps of the engine's live functions run from.
fn step_paths(engine: &Engine) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = engine
        .functions()
        .list()
        .iter()
        .flat_map(|f| f.steps.iter().filter_map(|s| s.path.clone()))
        .filter(|p| p.exists())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Reloads (and prepares again) the functions under `root` whenever a definition file appears,
/// changes or goes, or a file under a step's `path` changes. Runs until the task is dropped.
/// Runs in flight stay pinned to the version they started on.
pub async fn watch(engine: Engine, root: PathBuf, every: Duration) {
    let mut steps = step_paths(&engine);
    let mut last = fingerprint(&root, &steps);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&root, &steps);
        if now != last {
            let loaded = load_into(&engine, &root).await;
            eprintln!(
                "reloaded {}: {} function(s), {} with errors",
                root.display(),
                loaded.functions.len(),
                loaded.errors.len()
            );
            // A file edited while loading (preparing steps can take minutes) is loaded at the
            // next look, not absorbed into the new fingerprint.
            let edited_meanwhile = fingerprint(&root, &steps) != now;
            steps = step_paths(&engine);
            last = if edited_meanwhile {
                Vec::new()
            } else {
                fingerprint(&root, &steps)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use weir_core::driver::{Driver, StepRequest, StepResult};
    use weir_core::{Error, ErrorKind, Result};

    use super::*;

    /// A runtime whose `prepare` fails as its `runtime.fail` says: `build` permanently (a
    /// Dockerfile that does not build), `unreachable` retryably (an engine that is down).
    struct Preparing;

    #[async_trait]
    impl Driver for Preparing {
        fn kind(&self) -> &str {
            "preparing"
        }

        async fn prepare(&self, step: &weir_core::driver::StepSpec) -> Result<()> {
            match step.runtime.get("fail").and_then(|v| v.as_str()) {
                Some("build") => Err(Error::new(
                    ErrorKind::Config,
                    "the image did not build: step 3/4 failed",
                )),
                Some("unreachable") => Err(Error::unavailable("the engine did not answer")),
                _ => Ok(()),
            }
        }

        async fn execute(&self, _request: StepRequest) -> Result<StepResult> {
            Err(Error::internal("not run in this test"))
        }
    }

    fn function(root: &Path, id: &str, fail: &str) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let def = format!(
            r#"{{"id": "{id}", "triggers": [{{"event": "a/b"}}], "steps": {{
                "ok": {{"id": "ok", "runtime": {{"type": "preparing"}}}},
                "s": {{"id": "s", "runtime": {{"type": "preparing", "fail": "{fail}"}}}}}}}}"#
        );
        std::fs::write(dir.join("weir.json"), def).unwrap();
    }

    #[tokio::test]
    async fn a_step_that_cannot_be_prepared_keeps_its_function_out_unless_it_may_retry() {
        let root = tempfile::tempdir().unwrap();
        function(root.path(), "builds", "none");
        function(root.path(), "broken", "build");
        function(root.path(), "later", "unreachable");
        let drivers = DriverSet::new().with(Arc::new(Preparing));
        let mut loaded = load_all(root.path(), &drivers);
        assert_eq!(loaded.functions.len(), 3, "{:?}", loaded.errors);
        prepare(&drivers, &mut loaded).await;
        let mut ids: Vec<&str> = loaded.functions.iter().map(|f| f.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["builds", "later"]);
        assert_eq!(loaded.errors.len(), 1);
        let error = &loaded.errors[0];
        assert!(error.file.ends_with("broken/weir.json"), "{error}");
        assert_eq!(error.problems[0].path, "steps.s");
        assert!(error.to_string().contains("did not build"), "{error}");
    }

    /// Editing, adding or removing a file under a step's path changes the fingerprint (so
    /// `weir dev` prepares the step again); touching nothing does not.
    #[test]
    fn the_fingerprint_covers_the_files_a_step_runs_from() {
        let root = tempfile::tempdir().unwrap();
        function(root.path(), "f", "none");
        let step = root.path().join("f/steps/build");
        std::fs::create_dir_all(step.join("src")).unwrap();
        std::fs::write(step.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(step.join("src/main.sh"), "echo one").unwrap();
        let module = root.path().join("f/step.wasm");
        std::fs::write(&module, b"\0asm").unwrap();
        let steps = vec![step.clone(), module.clone()];

        let first = fingerprint(root.path(), &steps);
        assert_eq!(first, fingerprint(root.path(), &steps), "nothing changed");
        assert!(
            first.iter().any(|(p, _, _)| p.ends_with("src/main.sh")),
            "files under a step directory are stamped: {first:?}"
        );

        std::fs::write(step.join("src/main.sh"), "echo two, longer").unwrap();
        let edited = fingerprint(root.path(), &steps);
        assert_ne!(first, edited, "a file in the build context changed");

        std::fs::write(step.join("src/extra.sh"), "x").unwrap();
        let added = fingerprint(root.path(), &steps);
        assert_ne!(edited, added, "a file was added to the build context");

        std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
        assert_ne!(
            added,
            fingerprint(root.path(), &steps),
            "the module changed"
        );

        // Without the step paths only the definition file counts.
        let definitions = fingerprint(root.path(), &[]);
        assert_eq!(definitions.len(), 1, "{definitions:?}");
    }

    /// A step directory holding a huge tree is stamped up to a bound, not walked whole.
    #[test]
    fn a_step_tree_is_stamped_up_to_a_bound() {
        let root = tempfile::tempdir().unwrap();
        let mut budget = 5;
        let mut stamps = Vec::new();
        for i in 0..20 {
            std::fs::write(root.path().join(format!("{i:02}")), "x").unwrap();
        }
        stamp_tree(root.path(), &mut budget, &mut stamps);
        assert_eq!(stamps.len(), 5);
        assert_eq!(budget, 0);
    }
}
