//! weir-driver-wasm: runs weir steps as WebAssembly modules on wasmtime (the `wasm` runtime).
//!
//! A step's `path` is a WASI preview 1 command module (`.wasm`, e.g. built with
//! `cargo build --target wasm32-wasip1`). Each attempt gets a fresh instance from a pooling
//! allocator: the step input is its first argument (under [`MAX_ARG_BYTES`]) and always its
//! stdin; stdout (capped at `max_output_bytes`) is the output, stderr the log. Modules are
//! compiled once per content and cached in memory and on disk. The guest runs as an async
//! call on the caller's task (yielding to the runtime every 10 ms of guest code); limits:
//! `runtime.memory`, `runtime.fuel`, the step timeout (epoch interruption). The guest has no
//! filesystem, network or `.env` variables unless `runtime.dirs` / `runtime.env` grant them.

mod config;
mod engine;
mod instance;
mod modules;
mod streams;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use weir_core::driver::{DEFAULT_MAX_LOG_BYTES, Driver, StepRequest, StepResult, StepSpec};
use weir_core::{Error, ErrorKind, Result};

use crate::config::StepConfig;
use crate::engine::{Engines, Ticker};
use crate::modules::Modules;

pub use engine::KEEP_RESIDENT;
pub use weir_core::protocol::MAX_ARG_BYTES;

/// The `runtime.type` served by [`WasmDriver`].
pub const KIND: &str = "wasm";

/// `runtime.memory` when a step does not set it: 64 MiB.
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
/// The largest `runtime.memory` by default: 4 GiB, all a 32-bit wasm memory can address.
pub const DEFAULT_MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// Instances that may exist at once by default (more attempts wait for a slot).
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Settings of a [`WasmDriver`].
#[derive(Debug, Clone)]
pub struct WasmDriverConfig {
    /// Directory of the on-disk compilation cache (wasmtime's cache, keyed by module content
    /// and engine settings); `None` keeps compiled modules in memory only. The default is
    /// `$WEIR_WASM_CACHE_DIR`, else `$XDG_CACHE_HOME/weir/wasm`, else `~/.cache/weir/wasm`.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (the pooling allocator's slots): more attempts wait.
    /// Each slot reserves (but does not use) about 4 GiB of virtual address space.
    pub max_instances: u32,
    /// `runtime.memory` when a step does not set it.
    pub default_memory: u64,
    /// The largest `runtime.memory` a step may ask for (at most 4 GiB).
    pub max_memory: u64,
    /// How much of each attempt's stderr is kept (its tail).
    pub max_log_bytes: usize,
}

impl Default for WasmDriverConfig {
    fn default() -> Self {
        WasmDriverConfig {
            cache_dir: default_cache_dir(),
            max_instances: DEFAULT_MAX_INSTANCES,
            default_memory: DEFAULT_MEMORY,
            max_memory: DEFAULT_MAX_MEMORY,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Where compiled modules are cached on disk unless configured otherwise.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WEIR_WASM_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("weir").join("wasm")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("weir").join("wasm")))
}

/// Counters of a [`WasmDriver`], for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmStats {
    /// Modules compiled (or loaded from the on-disk cache) since the driver started.
    pub compiled: u64,
    /// Attempts and preparations that found their module compiled already.
    pub reused: u64,
    /// Modules the on-disk cache had (not compiled again).
    pub disk_cache_hits: usize,
    /// Modules the on-disk cache did not have (compiled, then stored).
    pub disk_cache_misses: usize,
    /// Instances alive right now.
    pub running: usize,
}

/// Runs steps whose `runtime.type` is `wasm`. Cheap to clone (one engine, cache and pool).
#[derive(Clone)]
pub struct WasmDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: WasmDriverConfig,
    engines: Arc<Engines>,
    modules: Modules,
    slots: Semaphore,
    ticker: Ticker,
}

impl std::fmt::Debug for WasmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmDriver")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WasmDriver {
    /// A driver with its engine, instance pool and epoch thread. Fails when the cache
    /// directory cannot be used or the pool cannot reserve its address space.
    pub fn new(config: WasmDriverConfig) -> Result<Self> {
        if config.max_memory > DEFAULT_MAX_MEMORY {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "max_memory of the wasm driver is over 4 GiB ({} bytes): 32-bit wasm memories cannot use more",
                    config.max_memory
                ),
            ));
        }
        let engines = Arc::new(Engines::new(&config)?);
        let ticker = Ticker::start(engines.clone())?;
        let slots = Semaphore::new(config.max_instances.max(1) as usize);
        Ok(WasmDriver {
            inner: Arc::new(Inner {
                config,
                engines,
                modules: Modules::default(),
                slots,
                ticker,
            }),
        })
    }

    /// The driver's counters.
    pub fn stats(&self) -> WasmStats {
        let inner = &self.inner;
        let disk = inner.engines.disk_cache();
        WasmStats {
            compiled: inner.modules.compiled(),
            reused: inner.modules.hits(),
            disk_cache_hits: disk.map_or(0, |c| c.cache_hits()),
            disk_cache_misses: disk.map_or(0, |c| c.cache_misses()),
            running: (inner.config.max_instances.max(1) as usize)
                .saturating_sub(inner.slots.available_permits()),
        }
    }

    fn step_config(&self, runtime: &Map<String, Value>) -> std::result::Result<StepConfig, String> {
        let c = &self.inner.config;
        config::parse(runtime, c.default_memory, c.max_memory)
    }
}

#[async_trait]
impl Driver for WasmDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, runtime: &Map<String, Value>, path: Option<&Path>) -> Result<()> {
        let problem = || -> std::result::Result<(), String> {
            let step = self.step_config(runtime)?;
            let path = module_path(path, Path::new("")).map_err(|e| e.to_string())?;
            let mut header = [0u8; 8];
            let read = std::fs::File::open(&path).and_then(|mut f| {
                use std::io::Read;
                f.read(&mut header)
            });
            match read {
                Ok(n) => modules::check_header(&header[..n])
                    .map_err(|m| format!("{m}: {}", path.display()))?,
                Err(e) => {
                    return Err(format!(
                        "cannot read the wasm module {}: {e}",
                        path.display()
                    ));
                }
            }
            for dir in step.dirs.iter().filter(|d| d.host.is_absolute()) {
                if !dir.host.is_dir() {
                    return Err(format!(
                        "`runtime.dirs.{}`: not a directory",
                        dir.host.display()
                    ));
                }
            }
            Ok(())
        };
        problem().map_err(Error::config)
    }

    async fn prepare(&self, spec: &StepSpec) -> Result<()> {
        let step = self.step_config(&spec.runtime).map_err(config_error)?;
        let path = module_path(spec.path.as_deref(), &spec.function_dir)?;
        for dir in &step.dirs {
            let host = dir.host_path(&spec.function_dir);
            if !host.is_dir() {
                return Err(config_error(format!(
                    "`runtime.dirs.{}`: {} is not a directory",
                    dir.host.display(),
                    host.display()
                )));
            }
        }
        self.inner
            .modules
            .get(&self.inner.engines, &path, step.fuel.is_some())
            .await?;
        Ok(())
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let inner = &self.inner;
        let step = self.step_config(&request.runtime).map_err(config_error)?;
        let path = module_path(request.path.as_deref(), &request.function_dir)?;
        let compiled = inner
            .modules
            .get(&inner.engines, &path, step.fuel.is_some())
            .await?;
        instance::Attempt {
            compiled: &compiled,
            step: &step,
            request: &request,
            path: &path,
            max_log: inner.config.max_log_bytes,
            slots: &inner.slots,
            ticker: &inner.ticker,
        }
        .run()
        .await
    }
}

/// The module a step runs: its `path`, relative to the function directory.
fn module_path(path: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let path =
        path.ok_or_else(|| config_error("a wasm step needs a `path` to a .wasm module".into()))?;
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::path::absolute(dir.join(path))
        .map_err(|e| config_error(format!("invalid step path {:?}", path.display())).with_source(e))
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message).permanent()
}
