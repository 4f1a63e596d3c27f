//! Loading every function under a directory, and reloading them when their files change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_core::engine::Engine;
use weir_core::function::{
    Function, LoadError, RuntimeCatalog, definition_file, discover, load_function,
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

/// Loads `root` into the engine, printing what loaded and what did not.
pub fn load_into(engine: &Engine, root: &Path) -> Loaded {
    let loaded = load_all(root, engine.drivers());
    for e in &loaded.errors {
        eprintln!("{e}");
    }
    engine.functions().replace(loaded.functions.clone());
    loaded
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
            let loaded = load_into(&engine, &root);
            eprintln!(
                "reloaded {}: {} function(s), {} with errors",
                root.display(),
                loaded.functions.len(),
                loaded.errors.len()
            );
        }
    }
}
