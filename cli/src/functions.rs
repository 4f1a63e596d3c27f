//! Loading every function under a directory, and reloading them when their files change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_core::driver::{DriverSet, StepSpec};
use weir_core::engine::Engine;
use weir_core::function::{
    Function, LoadError, Problem, RuntimeCatalog, definition_file, discover, load_function,
};

/// What loading a directory gave: the valid functions and the errors of the others.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Functions that validated.
    pub functions: Vec<Function>,
    /// One entry per invalid function file.
    pub errors: Vec<LoadError>,
}

/// Loads every function under `root` (or the one function `root` is).
pub fn load_all(root: &Path, runtimes: &dyn RuntimeCatalog) -> Loaded {
    let mut loaded = Loaded::default();
    let dirs = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        discover(root)
    };
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

/// Loads `root` into the engine (steps prepared, see [`prepare`]), printing what loaded and
/// what did not.
pub async fn load_into(engine: &Engine, root: &Path) -> Loaded {
    let mut loaded = load_all(root, engine.drivers());
    prepare(engine.drivers(), &mut loaded).await;
    for e in &loaded.errors {
        eprintln!("{e}");
    }
    engine.functions().replace(loaded.functions.clone());
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
            let spec = StepSpec {
                function_id: function.id.clone(),
                function_dir: function.dir.clone(),
                step_id: step.id.clone(),
                path: step.path.clone(),
                runtime: step.runtime.clone(),
                env: function.env.clone(),
            };
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

/// A cheap fingerprint of the definition files under `root`: paths, sizes, mtimes.
fn fingerprint(root: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let dirs = if root.is_file() {
        vec![root.to_path_buf()]
    } else {
        discover(root)
    };
    dirs.into_iter()
        .filter_map(|d| {
            if d.is_file() {
                Some(d)
            } else {
                definition_file(&d)
            }
        })
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok());
            (f, size, mtime)
        })
        .collect()
}

/// Reloads the functions under `root` whenever a definition file appears, changes or goes.
/// Runs until the task is dropped. Runs in flight stay pinned to the version they started on.
pub async fn watch(engine: Engine, root: PathBuf, every: Duration) {
    let mut last = fingerprint(&root);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&root);
        if now != last {
            last = now;
            let loaded = load_into(&engine, &root).await;
            eprintln!(
                "reloaded {}: {} function(s), {} with errors",
                root.display(),
                loaded.functions.len(),
                loaded.errors.len()
            );
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

        async fn prepare(&self, step: &StepSpec) -> Result<()> {
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
}
