//! Compiled modules, cached in memory by path (checked against the file's metadata on every
//! attempt, one `stat`) and by content hash (SHA-256), on disk by wasmtime's cache.
//!
//! A changed file (other size, times or inode) is read and hashed again: the same content
//! reuses its compiled module, new content is compiled. Compiling runs on the blocking pool,
//! one module at a time per driver.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::{ExternType, InstancePre, Module, ModuleExport};
use weir_core::{Error, ErrorKind, Result};

use crate::engine::Engines;
use crate::instance::State;

/// A module ready to instantiate.
pub(crate) struct Compiled {
    /// The module with its WASI imports resolved.
    pub pre: InstancePre<State>,
    /// Its `_start` export.
    pub start: ModuleExport,
    /// The guest's `argv[0]`: the file name.
    pub name: String,
}

type Hash = [u8; 32];

/// A module file for the plain (`false`) or the fuel-metered (`true`) engine.
type PathKey = (PathBuf, bool);

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The module cache of one driver.
#[derive(Default)]
pub(crate) struct Modules {
    by_path: Mutex<HashMap<PathKey, (Stamp, Arc<Compiled>)>>,
    by_hash: Mutex<HashMap<(Hash, bool), Weak<Compiled>>>,
    compiling: tokio::sync::Mutex<()>,
    compiled: AtomicU64,
    hits: AtomicU64,
}

impl Modules {
    /// Modules compiled (or loaded from the disk cache) so far.
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Attempts that found their module compiled already.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The module at `path` for the plain or the fuel-metered engine, compiled once.
    pub async fn get(
        &self,
        engines: &Arc<Engines>,
        path: &Path,
        fuel: bool,
    ) -> Result<Arc<Compiled>> {
        let key = (path.to_path_buf(), fuel);
        let stamp = stamp_of(path)?;
        if let Some(found) = self.cached(&key, &stamp) {
            return Ok(found);
        }
        let _one_at_a_time = self.compiling.lock().await;
        // Stamp before reading: a file changed while being read is read again next time.
        let stamp = stamp_of(path)?;
        if let Some(found) = self.cached(&key, &stamp) {
            return Ok(found);
        }
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| read_error(path, e))?;
        check_header(&bytes).map_err(|m| config(format!("{m}: {}", path.display())))?;
        let hash: Hash = Sha256::digest(&bytes).into();
        let same = self
            .by_hash
            .lock()
            .get(&(hash, fuel))
            .and_then(Weak::upgrade);
        let compiled = match same {
            Some(compiled) => compiled,
            None => {
                let engines = engines.clone();
                let owned = path.to_path_buf();
                let compiled =
                    tokio::task::spawn_blocking(move || compile(&engines, &bytes, fuel, &owned))
                        .await
                        .map_err(|e| {
                            Error::internal("wasm compilation panicked").with_source(e)
                        })??;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(path = %path.display(), fuel, "compiled wasm module");
                let compiled = Arc::new(compiled);
                let mut by_hash = self.by_hash.lock();
                by_hash.retain(|_, weak| weak.strong_count() > 0);
                by_hash.insert((hash, fuel), Arc::downgrade(&compiled));
                compiled
            }
        };
        self.by_path.lock().insert(key, (stamp, compiled.clone()));
        Ok(compiled)
    }

    fn cached(&self, key: &PathKey, stamp: &Stamp) -> Option<Arc<Compiled>> {
        let by_path = self.by_path.lock();
        let (seen, compiled) = by_path.get(key)?;
        if seen != stamp {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(compiled.clone())
    }
}

fn stamp_of(path: &Path) -> Result<Stamp> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_file() {
        return Err(config(format!(
            "the step's `path` must be a .wasm file, not a directory: {}",
            path.display()
        )));
    }
    Ok(Stamp::of(&meta))
}

/// Checks the first bytes of a file: a WebAssembly core module (not a component, not text).
pub(crate) fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err("not a WebAssembly module (no `\\0asm` header; build it with `cargo build --target wasm32-wasip1`)".into());
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok(()),
        [_, _, 1, 0] => Err("a WebAssembly component, but the wasm runtime runs WASI preview 1 core modules (build it for wasm32-wasip1)".into()),
        _ => Err("an unsupported WebAssembly binary version".into()),
    }
}

fn compile(engines: &Engines, bytes: &[u8], fuel: bool, path: &Path) -> Result<Compiled> {
    let shown = path.display();
    let rt = engines.get(fuel)?;
    let module = Module::new(&rt.engine, bytes)
        .map_err(|e| config(format!("could not compile the wasm module {shown}: {e:#}")))?;
    let start = match (
        module.get_export("_start"),
        module.get_export_index("_start"),
    ) {
        (Some(ExternType::Func(f)), Some(index))
            if f.params().len() == 0 && f.results().len() == 0 =>
        {
            index
        }
        _ => {
            return Err(config(format!(
                "the wasm module has no `_start` function: build it as a WASI command (a binary with `main`, for wasm32-wasip1): {shown}"
            )));
        }
    };
    let pre = rt.linker.instantiate_pre(&module).map_err(|e| {
        config(format!(
            "the wasm module needs imports the wasm runtime does not provide (only WASI preview 1, `wasi_snapshot_preview1`): {e:#}: {shown}"
        ))
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.wasm".into());
    Ok(Compiled { pre, start, name })
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Config,
    };
    Error::new(
        kind,
        format!("cannot read the wasm module {}", path.display()),
    )
    .permanent()
    .with_source(e)
}

fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message).permanent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_other_files() {
        assert!(check_header(b"\0asm\x01\0\0\0").is_ok());
        assert!(
            check_header(b"#!/bin/sh\necho")
                .unwrap_err()
                .contains("not a WebAssembly module")
        );
        assert!(
            check_header(b"\0asm")
                .unwrap_err()
                .contains("not a WebAssembly module")
        );
        assert!(
            check_header(b"\0asm\x0d\0\x01\0")
                .unwrap_err()
                .contains("component")
        );
        assert!(
            check_header(b"\0asm\x02\0\0\0")
                .unwrap_err()
                .contains("version")
        );
    }
}
