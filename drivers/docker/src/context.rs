//! A step's Docker build context: the directory holding its Dockerfile, walked once per use into
//! a cheap fingerprint (names, sizes, modes, mtimes), a content hash and an in-memory tar.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use weir_core::{Error, ErrorKind, Result};

use crate::ignore::IgnoreRules;

/// The file Docker builds from, in the context directory.
pub(crate) const DOCKERFILE: &str = "Dockerfile";
/// The file listing what of the context directory is not sent (see [`crate::ignore`]).
pub(crate) const IGNORE_FILE: &str = ".dockerignore";

/// Where a step's image is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BuildSource {
    /// The context directory (sent to the engine but for what its ignore file excludes).
    pub dir: PathBuf,
    /// The Dockerfile's name inside `dir`.
    pub dockerfile: String,
}

impl BuildSource {
    /// The build source of a step `path`: a directory holding a `Dockerfile`, or a Dockerfile
    /// itself (its directory is the context).
    pub fn from_path(path: &Path) -> std::result::Result<BuildSource, String> {
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "step path {} cannot be read ({e}): a docker step needs `runtime.image` or a path to a directory holding a Dockerfile",
                path.display()
            )
        })?;
        if meta.is_dir() {
            let dockerfile = path.join(DOCKERFILE);
            if !dockerfile.is_file() {
                return Err(format!(
                    "step directory {} has no Dockerfile: add one, or set `runtime.image` (and no path) to run an existing image",
                    path.display()
                ));
            }
            return Ok(BuildSource {
                dir: path.to_path_buf(),
                dockerfile: DOCKERFILE.into(),
            });
        }
        match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(dir), Some(name)) => Ok(BuildSource {
                dir: if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_path_buf()
                },
                dockerfile: name.to_string(),
            }),
            _ => Err(format!(
                "step path {} is not a Dockerfile or a directory holding one",
                path.display()
            )),
        }
    }
}

/// One entry of a context, in walk order (sorted by path).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Path relative to the context directory, `/`-separated.
    rel: String,
    kind: Kind,
    mode: u32,
    size: u64,
    mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

/// A context as last seen on disk: cheap to recompute (one `lstat` per entry), so an attempt can
/// tell whether the step changed without reading every file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint(Vec<Entry>);

/// Walks `source`'s directory (symlinks are not followed), leaving out what its ignore file
/// excludes (see [`ignore_file`]).
pub(crate) fn fingerprint(source: &BuildSource) -> Result<Fingerprint> {
    let (ignore_name, rules) = match ignore_file(source)? {
        Some((name, rules)) => (Some(name), rules),
        None => (None, IgnoreRules::default()),
    };
    let walk = Walk {
        root: &source.dir,
        rules: &rules,
        // Sent even when a pattern matches them, as `docker build` sends them.
        keep: [Some(source.dockerfile.as_str()), ignore_name.as_deref()],
    };
    let mut entries = Vec::new();
    walk.dir(&source.dir, &mut entries)?;
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Fingerprint(entries))
}

/// The ignore file of `source` and its rules: `<Dockerfile name>.dockerignore` beside the
/// Dockerfile when there is one (as BuildKit reads it), else `.dockerignore`; `None` without
/// either. A line Docker would refuse is a permanent error naming the file and line.
fn ignore_file(source: &BuildSource) -> Result<Option<(String, IgnoreRules)>> {
    for name in [
        format!("{}.dockerignore", source.dockerfile),
        IGNORE_FILE.to_owned(),
    ] {
        let path = source.dir.join(&name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let rules = IgnoreRules::parse(&text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{}: {e} (a .dockerignore pattern Docker would refuse)",
                    path.display()
                ),
            )
            .permanent()
        })?;
        return Ok(Some((name, rules)));
    }
    Ok(None)
}

/// The walk of one context: its root, its ignore rules, the files always sent.
struct Walk<'a> {
    root: &'a Path,
    rules: &'a IgnoreRules,
    keep: [Option<&'a str>; 2],
}

impl Walk<'_> {
    fn dir(&self, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
        let root = self.root;
        let read = std::fs::read_dir(dir).map_err(|e| io_error("read the directory", dir, e))?;
        for item in read {
            let item = item.map_err(|e| io_error("read the directory", dir, e))?;
            let path = item.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error("stat", &path, e))?;
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let kind = if meta.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| io_error("read the link", &path, e))?;
                Kind::Symlink(target)
            } else if meta.is_dir() {
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else {
                // Sockets, fifos and devices are not part of a build context.
                continue;
            };
            let is_dir = kind == Kind::Dir;
            let excluded = !self.keep.contains(&Some(rel.as_str())) && self.rules.excludes(&rel);
            if excluded && !(is_dir && self.rules.walk_excluded_dir(&rel)) {
                // Nothing under it can come back: not even walked.
                continue;
            }
            if !excluded {
                out.push(Entry {
                    rel,
                    kind,
                    mode: meta.permissions().mode() & 0o7777,
                    size: meta.len(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                });
            }
            if is_dir {
                self.dir(&path, out)?;
            }
        }
        Ok(())
    }
}

/// The context as sent to the engine, and the hash of what it holds.
pub(crate) struct Packed {
    /// Hex SHA-256 of every entry's path, type, mode and content (or link target).
    pub hash: String,
    /// The context as a tar archive.
    pub tar: Vec<u8>,
}

/// Reads every file of `fp` once: hashes it and adds it to an in-memory tar.
pub(crate) fn pack(source: &BuildSource, fp: &Fingerprint) -> Result<Packed> {
    let mut hasher = Sha256::new();
    hasher.update(source.dockerfile.as_bytes());
    hasher.update([0]);
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    for entry in &fp.0 {
        let path = source.dir.join(&entry.rel);
        hasher.update(entry.rel.as_bytes());
        hasher.update([0]);
        hasher.update(entry.mode.to_be_bytes());
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_mtime(0);
        match &entry.kind {
            Kind::Dir => {
                hasher.update(b"d");
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &entry.rel, std::io::empty())
                    .map_err(|e| io_error("pack", &path, e))?;
            }
            Kind::Symlink(target) => {
                hasher.update(b"l");
                hasher.update(target.as_os_str().as_encoded_bytes());
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &entry.rel, target)
                    .map_err(|e| io_error("pack", &path, e))?;
            }
            Kind::File => {
                let data = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
                hasher.update(b"f");
                hasher.update((data.len() as u64).to_be_bytes());
                hasher.update(&data);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, &entry.rel, data.as_slice())
                    .map_err(|e| io_error("pack", &path, e))?;
            }
        }
    }
    let tar = tar
        .into_inner()
        .map_err(|e| io_error("pack", &source.dir, e))?;
    Ok(Packed {
        hash: hex::encode(hasher.finalize()),
        tar,
    })
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "could not {what} {} in the step's Docker build context",
            path.display()
        ),
    )
    .permanent()
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> (tempfile::TempDir, BuildSource) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(DOCKERFILE), "FROM scratch\n").expect("write");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
        std::fs::write(dir.path().join("bin/app"), "#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("app", dir.path().join("bin/link")).expect("symlink");
        let source = BuildSource::from_path(dir.path()).expect("source");
        (dir, source)
    }

    #[test]
    fn hash_follows_content_and_tar_holds_every_entry() {
        let (dir, source) = context();
        let fp = fingerprint(&source).unwrap();
        let first = pack(&source, &fp).unwrap();
        assert_eq!(pack(&source, &fp).unwrap().hash, first.hash);
        let mut archive = tar::Archive::new(first.tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["Dockerfile", "bin", "bin/app", "bin/link"]);

        std::fs::write(dir.path().join("bin/app"), "#!/bin/sh\necho 2\n").unwrap();
        let fp2 = fingerprint(&source).unwrap();
        assert_ne!(fp, fp2);
        assert_ne!(pack(&source, &fp2).unwrap().hash, first.hash);
    }

    #[test]
    fn mode_changes_change_the_hash() {
        let (dir, source) = context();
        let before = pack(&source, &fingerprint(&source).unwrap()).unwrap().hash;
        let app = dir.path().join("bin/app");
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
        let after = pack(&source, &fingerprint(&source).unwrap()).unwrap().hash;
        assert_ne!(before, after);
    }

    fn tar_names(packed: &Packed) -> Vec<String> {
        tar::Archive::new(packed.tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dockerignore_leaves_files_out_of_the_tar_and_the_hash() {
        let (dir, source) = context();
        let root = dir.path();
        std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
        std::fs::write(root.join("node_modules/pkg/index.js"), "1").unwrap();
        std::fs::create_dir(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/drop.md"), "x").unwrap();
        std::fs::write(root.join("docs/keep.md"), "y").unwrap();
        std::fs::write(root.join("debug.log"), "z").unwrap();
        // `*` would take the Dockerfile and the ignore file too: both are sent regardless.
        std::fs::write(
            root.join(IGNORE_FILE),
            "# build output\nnode_modules\n*.log\ndocs\n!docs/keep.md\nDockerfile\n",
        )
        .unwrap();
        let packed = pack(&source, &fingerprint(&source).unwrap()).unwrap();
        assert_eq!(
            tar_names(&packed),
            [
                ".dockerignore",
                "Dockerfile",
                "bin",
                "bin/app",
                "bin/link",
                "docs/keep.md"
            ]
        );

        // Changing what is left out changes nothing; changing the rules does.
        std::fs::write(root.join("node_modules/pkg/index.js"), "2").unwrap();
        std::fs::write(root.join("debug.log"), "zz").unwrap();
        let again = pack(&source, &fingerprint(&source).unwrap()).unwrap();
        assert_eq!(again.hash, packed.hash);
        std::fs::write(
            root.join(IGNORE_FILE),
            "node_modules
",
        )
        .unwrap();
        let changed = pack(&source, &fingerprint(&source).unwrap()).unwrap();
        assert_ne!(changed.hash, packed.hash);
        assert!(tar_names(&changed).contains(&"debug.log".to_owned()));
    }

    #[test]
    fn an_exception_opens_an_excluded_directory_only_when_it_names_it() {
        let (dir, source) = context();
        let root = dir.path();
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(root.join("secrets/creds.json"), "{}").unwrap();
        std::fs::write(root.join("secrets/public.json"), "{}").unwrap();
        std::fs::write(root.join("app.json"), "{}").unwrap();
        // As `docker build`: `!**/*.json` does not reach into `secrets`.
        std::fs::write(root.join(IGNORE_FILE), "secrets\n*.json\n!**/*.json\n").unwrap();
        let names = tar_names(&pack(&source, &fingerprint(&source).unwrap()).unwrap());
        assert!(names.contains(&"app.json".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("secrets")), "{names:?}");
        // An exception naming a path under it does.
        std::fs::write(root.join(IGNORE_FILE), "secrets\n!secrets/public.json\n").unwrap();
        let names = tar_names(&pack(&source, &fingerprint(&source).unwrap()).unwrap());
        assert!(
            names.contains(&"secrets/public.json".to_owned()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"secrets/creds.json".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn a_dockerfile_of_its_own_name_has_its_own_ignore_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("step.Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join("step.Dockerfile.dockerignore"), "a\n").unwrap();
        std::fs::write(root.join(IGNORE_FILE), "b\n").unwrap();
        std::fs::write(root.join("a"), "").unwrap();
        std::fs::write(root.join("b"), "").unwrap();
        let source = BuildSource::from_path(&root.join("step.Dockerfile")).unwrap();
        let names = tar_names(&pack(&source, &fingerprint(&source).unwrap()).unwrap());
        assert!(
            names.contains(&"b".to_owned()) && !names.contains(&"a".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn a_bad_dockerignore_names_its_file_and_line() {
        let (dir, source) = context();
        std::fs::write(dir.path().join(IGNORE_FILE), "ok\n[abc\n").unwrap();
        let err = fingerprint(&source).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains(".dockerignore: line 2:") && text.contains("`]`"),
            "{text}"
        );
    }

    #[test]
    fn a_source_needs_a_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let err = BuildSource::from_path(dir.path()).unwrap_err();
        assert!(err.contains("has no Dockerfile"), "{err}");
        let err = BuildSource::from_path(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("cannot be read"), "{err}");
        let file = dir.path().join("step.Dockerfile");
        std::fs::write(&file, "FROM scratch\n").unwrap();
        let source = BuildSource::from_path(&file).unwrap();
        assert_eq!(source.dir, dir.path());
        assert_eq!(source.dockerfile, "step.Dockerfile");
    }
}
