//! A function's bundle: the files a version of it runs from (its definition file and every
//! file under each step's local `path` inside its directory), by path relative to the
//! directory. A bundle is what a deployed version stores, so that any node can run a version
//! whose files it no longer has on disk; and its content hash names the version.
//!
//! Not bundled: files and directories whose name starts with `.` (`.env`, `.npmrc`, `.git`,
//! `.venv`: secrets stay on the nodes, each uses its own `.env`) but `.dockerignore`,
//! `__pycache__` and `*.pyc`, symbolic links,
//! step paths outside the function directory (absolute paths name a file each node has), and
//! steps without a local path (an image, a Lambda ARN, a URL). A step whose path names a
//! `Dockerfile` brings its directory (the build context).
//!
//! Encoded as `WEIRBUNDLE1\n`, then per file (sorted by path): the path's length, `:`, the
//! path, `x` or `-` (executable or not), the content's length, `:`, the content.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Function;
use crate::error::{Error, Result};

/// The largest bundle (all of its files) a version may have.
pub const MAX_BUNDLE_BYTES: u64 = 32 << 20;

/// The most files a bundle may hold.
pub const MAX_BUNDLE_FILES: usize = 10_000;

const MAGIC: &[u8] = b"WEIRBUNDLE1\n";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Its path relative to the function directory, `/`-separated, without `.` or `..`.
    pub path: String,
    /// Whether it is executable (a script a `process` step runs).
    pub executable: bool,
    /// Its content.
    pub content: Bytes,
}

/// The files of a function version (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionBundle {
    files: Vec<BundleFile>,
}

impl FunctionBundle {
    /// A bundle of `files` (sorted here); fails on a path that is not relative and plain, a
    /// path given twice, or more than [`MAX_BUNDLE_FILES`] files or [`MAX_BUNDLE_BYTES`].
    pub fn new(mut files: Vec<BundleFile>) -> Result<Self> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.len() > MAX_BUNDLE_FILES {
            return Err(Error::invalid(format!(
                "{} files: a bundle holds at most {MAX_BUNDLE_FILES}",
                files.len()
            )));
        }
        let total: u64 = files.iter().map(|f| f.content.len() as u64).sum();
        if total > MAX_BUNDLE_BYTES {
            return Err(Error::invalid(format!(
                "{} bytes of files: a bundle holds at most {} MiB (a large Docker build context: build the image and name it instead)",
                total,
                MAX_BUNDLE_BYTES >> 20
            )));
        }
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(Error::invalid(format!("{:?} given twice", pair[0].path)));
            }
        }
        for f in &files {
            check_relative(&f.path)?;
        }
        Ok(FunctionBundle { files })
    }

    /// The bundle of `function` as its files are now: its definition file and the files under
    /// its steps' local paths inside [`Function::dir`].
    pub fn of(function: &Function) -> Result<Self> {
        let dir = &function.dir;
        let definition = super::definition_file(dir)
            .ok_or_else(|| Error::invalid(format!("no definition file in {}", dir.display())))?;
        let mut paths = vec![definition];
        for step in &function.steps {
            let Some(path) = step
                .path
                .as_ref()
                .and_then(|p| std::fs::canonicalize(p).ok())
            else {
                continue;
            };
            let path = match path.file_name() {
                Some(name) if name.to_string_lossy().starts_with("Dockerfile") => {
                    path.parent().map(Path::to_path_buf).unwrap_or(path)
                }
                _ => path,
            };
            if path.starts_with(dir) {
                collect(&path, &mut paths)?;
            }
        }
        paths.sort();
        paths.dedup();
        let mut files = Vec::with_capacity(paths.len());
        let mut total = 0u64;
        for path in paths {
            let relative = path
                .strip_prefix(dir)
                .map_err(|_| Error::internal("a bundled file outside its directory"))?;
            let meta = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?;
            total += meta.len();
            if total > MAX_BUNDLE_BYTES {
                return Err(Error::invalid(format!(
                    "function {}: its files are over {} MiB, the most a version may hold (a large Docker build context: build the image and name it instead)",
                    function.id,
                    MAX_BUNDLE_BYTES >> 20
                )));
            }
            let content = std::fs::read(&path).map_err(|e| read_error(&path, e))?;
            files.push(BundleFile {
                path: slash_path(relative)?,
                executable: is_executable(&meta),
                content: Bytes::from(content),
            });
        }
        Self::new(files)
    }

    /// The files, sorted by path.
    pub fn files(&self) -> &[BundleFile] {
        &self.files
    }

    /// The content hash naming this version: 16 hex digits of the SHA-256 of the encoding.
    pub fn version(&self) -> String {
        let digest = Sha256::digest(self.encode());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bundle as bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .files
            .iter()
            .map(|f| f.path.len() + f.content.len() + 24)
            .sum();
        let mut out = Vec::with_capacity(MAGIC.len() + size);
        out.extend_from_slice(MAGIC);
        for f in &self.files {
            out.extend_from_slice(format!("{}:", f.path.len()).as_bytes());
            out.extend_from_slice(f.path.as_bytes());
            out.push(if f.executable { b'x' } else { b'-' });
            out.extend_from_slice(format!("{}:", f.content.len()).as_bytes());
            out.extend_from_slice(&f.content);
        }
        out
    }

    /// A bundle from its bytes; fails on anything [`encode`](Self::encode) does not make.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::internal(format!("corrupt function bundle: {what}"));
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("not a bundle"))?;
        let mut files = Vec::new();
        while !rest.is_empty() {
            let (path, after) = take_field(rest).ok_or_else(|| corrupt("path"))?;
            let path = String::from_utf8(path.to_vec()).map_err(|_| corrupt("path not UTF-8"))?;
            let (flag, after) = after.split_first().ok_or_else(|| corrupt("flag"))?;
            let executable = match flag {
                b'x' => true,
                b'-' => false,
                _ => return Err(corrupt("flag")),
            };
            let (content, after) = take_field(after).ok_or_else(|| corrupt("content"))?;
            files.push(BundleFile {
                path,
                executable,
                content: Bytes::copy_from_slice(content),
            });
            rest = after;
        }
        Self::new(files).map_err(|e| corrupt(&e.to_string()))
    }

    /// Writes the files under `root/<version>` (made once: an existing one is reused) and
    /// answers that directory, from which the function loads as from its own.
    pub fn materialize(&self, root: &Path) -> Result<PathBuf> {
        let target = root.join(self.version());
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            return Ok(target);
        }
        create_private_dir(root)?;
        // Written aside, then renamed: a node killed half-way leaves no half version.
        let staging = root.join(format!(".staging-{}", ulid::Ulid::new()));
        let written = self.write_into(&staging);
        let renamed = written.and_then(|()| match std::fs::rename(&staging, &target) {
            Ok(()) => Ok(()),
            // Another task materialized it first.
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(write_error(&target, e)),
        });
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        renamed.map(|()| target)
    }

    fn write_into(&self, dir: &Path) -> Result<()> {
        for f in &self.files {
            let path = dir.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
            }
            std::fs::write(&path, &f.content).map_err(|e| write_error(&path, e))?;
            if f.executable {
                set_executable(&path)?;
            }
        }
        Ok(())
    }
}

/// Bundles one after the other, each as its length, `:`, then its encoding: the body of a
/// deploy (`POST /v1/deploy`).
pub fn encode_bundles(bundles: &[FunctionBundle]) -> Vec<u8> {
    let mut out = Vec::new();
    for bundle in bundles {
        let encoded = bundle.encode();
        out.extend_from_slice(format!("{}:", encoded.len()).as_bytes());
        out.extend_from_slice(&encoded);
    }
    out
}

/// The bundles [`encode_bundles`] made.
pub fn decode_bundles(bytes: &[u8]) -> Result<Vec<FunctionBundle>> {
    let mut rest = bytes;
    let mut bundles = Vec::new();
    while !rest.is_empty() {
        let (one, after) =
            take_field(rest).ok_or_else(|| Error::invalid("not a sequence of function bundles"))?;
        bundles.push(FunctionBundle::decode(one).map_err(|e| Error::invalid(e.to_string()))?);
        rest = after;
    }
    Ok(bundles)
}

/// `LEN:` then `LEN` bytes at the start of `raw`, and what follows.
fn take_field(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = raw.iter().take(21).position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&raw[..colon]).ok()?.parse().ok()?;
    let rest = &raw[colon + 1..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// How deep [`collect`] goes into directories (a symlink loop ends there).
const MAX_DEPTH: usize = 32;

/// Adds `path` (a file) or every file under it (a directory, at most [`MAX_DEPTH`] deep) to
/// `out`.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    collect_at(path, out, 0)
}

fn collect_at(path: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| read_error(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // What a step's path names itself is bundled whatever its name (`./.hook.sh`), but a
    // `.env`; what lies under it follows the rules.
    let named_by_step = depth == 0 && !meta.is_dir() && !name.starts_with(".env");
    if meta.file_type().is_symlink() || (!named_by_step && left_out(&name, meta.is_dir())) {
        return Ok(());
    }
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        return Err(Error::invalid(format!(
            "{}: directories nested over {MAX_DEPTH} deep (a symlink loop?)",
            path.display()
        )));
    }
    let entries = std::fs::read_dir(path).map_err(|e| read_error(path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read_error(path, e))?;
        if out.len() > MAX_BUNDLE_FILES {
            return Err(Error::invalid(format!(
                "{}: over {MAX_BUNDLE_FILES} files, the most a version may hold",
                path.display()
            )));
        }
        collect_at(&entry.path(), out, depth + 1)?;
    }
    Ok(())
}

/// Whether a file or directory named `name` stays out of bundles (see the module
/// documentation).
fn left_out(name: &str, is_dir: bool) -> bool {
    // Dot-files hold credentials as often as not (`.env`, `.npmrc`, `.netrc`); a Docker
    // build's `.dockerignore` is the one a step needs.
    (name.starts_with('.') && (is_dir || name != ".dockerignore"))
        || name == "__pycache__"
        || name.ends_with(".pyc")
}

/// A relative path as `/`-separated text.
fn slash_path(relative: &Path) -> Result<String> {
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str().ok_or_else(|| {
                Error::invalid(format!(
                    "{}: a file name that is not UTF-8",
                    relative.display()
                ))
            }),
            _ => Err(Error::invalid(format!(
                "{}: not a plain relative path",
                relative.display()
            ))),
        })
        .collect::<Result<_>>()?;
    Ok(parts.join("/"))
}

/// Refuses a bundle path that could land outside the directory it is written into.
fn check_relative(path: &str) -> Result<()> {
    let plain = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'));
    if plain {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{path:?}: not a plain relative path"
        )))
    }
}

/// Creates `dir` (and its parents) readable by this user only, where it creates them.
fn create_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| write_error(dir, e))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))
    }
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::invalid(format!("cannot read {}: {e}", path.display()))
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("cannot write {}", path.display())).with_source(e)
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| write_error(path, e))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::function::load_function;
    use crate::function::test_support::AnyRuntime;

    const DEF: &str = r#"{"id": "f", "triggers": [{"event": "a/b"}],
        "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}},
                  "t": {"path": "./steps/tree", "runtime": {"type": "process"}},
                  "u": {"path": "/bin/sh", "runtime": {"type": "process"}}}}"#;

    fn function_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("steps/tree/lib")).expect("mkdir");
        std::fs::write(dir.path().join("weir.json"), DEF).expect("write");
        std::fs::write(dir.path().join("steps/s"), "#!/bin/sh\necho '{}'\n").expect("write");
        set_executable(&dir.path().join("steps/s")).expect("chmod");
        std::fs::write(dir.path().join("steps/tree/main.py"), "print('{}')").expect("write");
        std::fs::write(dir.path().join("steps/tree/lib/x.py"), "X = 1").expect("write");
        std::fs::write(dir.path().join(".env"), "SECRET=1\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a step").expect("write");
        // Never bundled, even inside a step's tree.
        std::fs::write(dir.path().join("steps/tree/.env"), "SECRET=2\n").expect("write");
        std::fs::create_dir_all(dir.path().join("steps/tree/__pycache__")).expect("mkdir");
        std::fs::write(dir.path().join("steps/tree/__pycache__/m.pyc"), "x").expect("write");
        std::fs::create_dir_all(dir.path().join("steps/tree/.git")).expect("mkdir");
        std::fs::write(dir.path().join("steps/tree/.git/HEAD"), "x").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("steps/tree/link"))
            .expect("symlink");
        dir
    }

    #[test]
    fn a_bundle_holds_the_definition_and_the_step_files_only() {
        let dir = function_dir();
        let f = load_function(dir.path(), &AnyRuntime).expect("load");
        let bundle = FunctionBundle::of(&f).expect("bundle");
        let listed: Vec<(&str, bool)> = bundle
            .files()
            .iter()
            .map(|f| (f.path.as_str(), f.executable))
            .collect();
        assert_eq!(
            listed,
            [
                ("steps/s", true),
                ("steps/tree/lib/x.py", false),
                ("steps/tree/main.py", false),
                ("weir.json", false)
            ],
            "no .env, no unrelated file, no absolute step path, no cache, no dot-directory, no symlink"
        );
        let decoded = FunctionBundle::decode(&bundle.encode()).expect("decode");
        assert_eq!(decoded, bundle);
        assert_eq!(decoded.version(), bundle.version());
        assert_eq!(bundle.version().len(), 16);
    }

    #[test]
    fn the_version_follows_contents_and_names_not_times_or_places() {
        let dir = function_dir();
        let version = |d: &Path| {
            FunctionBundle::of(&load_function(d, &AnyRuntime).expect("load"))
                .expect("bundle")
                .version()
        };
        let first = version(dir.path());
        std::fs::write(dir.path().join("steps/tree/lib/x.py"), "X = 1").expect("rewrite");
        std::fs::write(dir.path().join("notes.txt"), "edited").expect("write");
        std::fs::write(dir.path().join(".env"), "SECRET=2\n").expect("write");
        assert_eq!(version(dir.path()), first, "same contents, unrelated edits");
        let elsewhere = function_dir();
        assert_eq!(version(elsewhere.path()), first, "another directory");
        std::fs::write(dir.path().join("steps/tree/lib/x.py"), "X = 2").expect("edit");
        let edited = version(dir.path());
        assert_ne!(edited, first, "a step file edited");
        std::fs::write(dir.path().join("steps/tree/lib/y.py"), "").expect("new");
        assert_ne!(version(dir.path()), edited, "a step file added");
    }

    #[test]
    fn a_materialized_bundle_loads_as_the_same_version() {
        let dir = function_dir();
        let f = load_function(dir.path(), &AnyRuntime).expect("load");
        let bundle = FunctionBundle::of(&f).expect("bundle");
        let cache = tempfile::tempdir().expect("tempdir");
        let at = bundle.materialize(cache.path()).expect("materialize");
        assert_eq!(at, cache.path().join(bundle.version()));
        assert_eq!(bundle.materialize(cache.path()).expect("again"), at);
        let loaded = load_function(&at, &AnyRuntime).expect("load");
        let again = FunctionBundle::of(&loaded).expect("bundle");
        assert_eq!(again, bundle);
        assert_eq!(
            std::fs::read_to_string(at.join("steps/tree/main.py")).expect("read"),
            "print('{}')"
        );
        assert!(!at.join(".env").exists());
        let staging: Vec<_> = std::fs::read_dir(cache.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(staging.is_empty(), "no staging left behind");
    }

    #[test]
    fn bundles_travel_together() {
        let dir = function_dir();
        let f = load_function(dir.path(), &AnyRuntime).expect("load");
        let one = FunctionBundle::of(&f).expect("bundle");
        let two = FunctionBundle::new(vec![BundleFile {
            path: "weir.json".into(),
            executable: false,
            content: Bytes::from_static(b"{}"),
        }])
        .expect("bundle");
        let both = encode_bundles(&[one.clone(), two.clone()]);
        assert_eq!(decode_bundles(&both).expect("decode"), [one, two]);
        assert!(decode_bundles(&both[..both.len() - 1]).is_err());
        assert!(decode_bundles(b"").expect("none").is_empty());
    }

    #[test]
    fn bad_bundles_are_refused() {
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            let file = BundleFile {
                path: path.into(),
                executable: false,
                content: Bytes::new(),
            };
            assert!(FunctionBundle::new(vec![file]).is_err(), "{path:?}");
        }
        let twice = || BundleFile {
            path: "a".into(),
            executable: false,
            content: Bytes::new(),
        };
        assert!(FunctionBundle::new(vec![twice(), twice()]).is_err());
        let good = FunctionBundle::new(vec![twice()]).expect("bundle").encode();
        for cut in 0..good.len() {
            if cut != MAGIC.len() {
                assert!(
                    FunctionBundle::decode(&good[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
        }
        let mut evil = MAGIC.to_vec();
        evil.extend_from_slice(b"5:../ab-0:");
        assert!(FunctionBundle::decode(&evil).is_err());
        assert!(FunctionBundle::decode(b"99999999999999999999999:").is_err());
    }
}
