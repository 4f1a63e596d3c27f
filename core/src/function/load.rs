//! Loading function directories from disk.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::model::Function;
use super::parse::{RuntimeCatalog, parse_function};
use super::problems::{LoadError, Problem};

/// The file names a function directory may hold, in order of preference.
pub const DEFINITION_FILES: &[&str] = &["weir.json", "inngest.json"];

/// The definition file of a function directory, if it has one.
pub fn definition_file(dir: &Path) -> Option<PathBuf> {
    DEFINITION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Loads and validates the function in `dir` (or in the definition file `dir` names).
pub fn load_function(dir: &Path, runtimes: &dyn RuntimeCatalog) -> Result<Function, LoadError> {
    let (dir, file) = if dir.is_file() {
        (
            dir.parent().unwrap_or(Path::new(".")).to_path_buf(),
            dir.to_path_buf(),
        )
    } else {
        match definition_file(dir) {
            Some(f) => (dir.to_path_buf(), f),
            None => {
                return Err(LoadError {
                    file: dir.to_path_buf(),
                    problems: vec![Problem {
                        path: String::new(),
                        message: "no weir.json (or inngest.json) in this directory".into(),
                    }],
                });
            }
        }
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let fail = |message: String| LoadError {
        file: file.clone(),
        problems: vec![Problem {
            path: String::new(),
            message,
        }],
    };
    let text = std::fs::read(&file).map_err(|e| fail(format!("cannot read: {e}")))?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| {
        fail(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let version = content_version(&text);
    let mut function = parse_function(&doc, &dir, version, runtimes)
        .map_err(|problems| LoadError { file, problems })?;
    // Named by its files: the definition and its steps' code. A function whose files cannot
    // be bundled (over the size limit) keeps the definition's hash: it runs where it is on
    // disk, and cannot be stored as a deployed version.
    if let Ok(bundle) = super::FunctionBundle::of(&function) {
        function.version = bundle.version();
    }
    function.env = std::sync::Arc::new(load_dotenv(&dir)?);
    Ok(function)
}

/// The variables of `dir/.env`, if the file exists; a malformed line fails the load (the error
/// names the file and the line, never a value).
fn load_dotenv(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let file = dir.join(super::DOTENV_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(LoadError {
                file,
                problems: vec![Problem {
                    path: String::new(),
                    message: format!("cannot read: {e}"),
                }],
            });
        }
    };
    super::parse_dotenv(&text).map_err(|(line, message)| LoadError {
        file,
        problems: vec![Problem {
            path: format!("line {line}"),
            message,
        }],
    })
}

/// Finds every function directory under `root` (a directory holding a definition file); does
/// not descend into a function directory, hidden directories, `target` or `node_modules`.
pub fn discover(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(root, &mut found, 0);
    found.sort();
    found
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    if definition_file(dir).is_some() {
        found.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            walk(&path, found, depth + 1);
        }
    }
}

/// A short content hash (FNV-1a, 64 bits, hex) naming a function version.
pub fn content_version(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::test_support::AnyRuntime;

    const DEF: &str = r#"{"id": "f", "triggers": [{"event": "a/b"}],
        "steps": {"s": {"id": "s", "path": "x", "runtime": {"type": "process"}}}}"#;

    #[test]
    fn the_dotenv_file_is_loaded_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weir.json"), DEF).unwrap();
        let f = load_function(dir.path(), &AnyRuntime).unwrap();
        assert!(f.env.is_empty());
        std::fs::write(
            dir.path().join(".env"),
            "API_KEY=abc\n# c\nexport MODE='test'\n",
        )
        .unwrap();
        let f = load_function(dir.path(), &AnyRuntime).unwrap();
        assert_eq!(
            *f.env,
            vec![
                ("API_KEY".into(), "abc".into()),
                ("MODE".into(), "test".into())
            ]
        );
        std::fs::write(
            dir.path().join(".env"),
            "API_KEY=abc\nsecret-without-equals\n",
        )
        .unwrap();
        let err = load_function(dir.path(), &AnyRuntime).unwrap_err();
        assert!(err.file.ends_with(".env"), "{err}");
        assert_eq!(err.problems[0].path, "line 2");
        assert!(
            !err.to_string().contains("abc"),
            "values never appear: {err}"
        );
    }
}
