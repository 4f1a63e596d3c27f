//! The wasmtime engines of a driver: Cranelift, a pooling instance allocator, epoch
//! interruption driven by a ticker thread, and the on-disk compilation cache.
//!
//! There are two engines because fuel metering is compiled into the code: the plain one runs
//! every step; the fuel-metered one is built the first time a step sets `runtime.fuel`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use weir_core::{Error, ErrorKind, Result};

use crate::WasmDriverConfig;
use crate::instance::State;

/// How often the engines' epoch advances while an instance runs: the timeout's resolution
/// and the longest a guest runs between two yields to the async runtime.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Wasm stack of a guest (wasmtime's default is 512 KiB).
const MAX_WASM_STACK: usize = 1024 * 1024;
/// Host stack of an async call: the wasm stack plus room for host calls.
const ASYNC_STACK: usize = MAX_WASM_STACK + 1024 * 1024;

/// Bytes of each linear memory and table kept resident when its slot is freed: the pages an
/// instance touched are reset with `memset` (found with Linux's `PAGEMAP_SCAN` where the kernel
/// has it, ≥ 6.7) instead of being dropped with `madvise` and faulted in again by the next
/// instance. Under concurrent runs this cut the kernel time per attempt several-fold (see
/// docs/performance.md).
pub const KEEP_RESIDENT: usize = 1024 * 1024;

/// An engine with the WASI preview 1 linker its modules are instantiated with.
pub(crate) struct Runtime {
    /// The engine.
    pub engine: Engine,
    /// WASI preview 1 (async host functions) over [`State`].
    pub linker: Linker<State>,
}

/// The plain engine and, once a step asks for fuel, the fuel-metered one.
pub(crate) struct Engines {
    plain: Runtime,
    fueled: OnceLock<Runtime>,
    settings: Settings,
}

/// What both engines are built from.
#[derive(Clone)]
struct Settings {
    max_instances: u32,
    max_memory: u64,
    cache: Option<Cache>,
}

impl Engines {
    /// Builds the plain engine (the fuel-metered one waits for a step that needs it).
    pub fn new(config: &WasmDriverConfig) -> Result<Self> {
        let cache = match &config.cache_dir {
            None => None,
            Some(dir) => {
                let dir = std::path::absolute(dir).map_err(|e| {
                    config_error(format!("invalid wasm cache directory {}", dir.display()))
                        .with_source(e)
                })?;
                let mut cache_config = CacheConfig::new();
                cache_config.with_directory(&dir);
                Some(Cache::new(cache_config).map_err(|e| {
                    config_error(format!(
                        "could not set up the wasm compilation cache in {}: {e:#}",
                        dir.display()
                    ))
                })?)
            }
        };
        let settings = Settings {
            max_instances: config.max_instances.max(1),
            max_memory: config.max_memory,
            cache,
        };
        Ok(Engines {
            plain: build(&settings, false)?,
            fueled: OnceLock::new(),
            settings,
        })
    }

    /// The engine for a step with (`fuel`) or without fuel metering.
    pub fn get(&self, fuel: bool) -> Result<&Runtime> {
        if !fuel {
            return Ok(&self.plain);
        }
        if let Some(rt) = self.fueled.get() {
            return Ok(rt);
        }
        let rt = build(&self.settings, true)?;
        // A racing caller may have won: either engine works, keep the first.
        Ok(self.fueled.get_or_init(|| rt))
    }

    /// The on-disk compilation cache, when there is one.
    pub fn disk_cache(&self) -> Option<&Cache> {
        self.settings.cache.as_ref()
    }

    fn tick(&self) {
        self.plain.engine.increment_epoch();
        if let Some(rt) = self.fueled.get() {
            rt.engine.increment_epoch();
        }
    }
}

fn build(settings: &Settings, fuel: bool) -> Result<Runtime> {
    let mut pool = PoolingAllocationConfig::new();
    let n = settings.max_instances;
    pool.total_core_instances(n)
        .total_memories(n)
        .total_tables(n)
        .total_stacks(n)
        .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(fuel)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        .cache(settings.cache.clone());
    let engine = Engine::new(&config).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("could not start the wasm engine ({n} instance slots; lower max_instances if virtual memory is limited): {e:#}"),
        )
    })?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| -> &mut WasiP1Ctx {
        &mut s.wasi
    })
    .map_err(|e| Error::internal(format!("could not link WASI preview 1: {e:#}")))?;
    Ok(Runtime { engine, linker })
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Advances the engines' epoch every [`TICK`] while at least one instance runs; parked
/// otherwise. Stops when dropped.
pub(crate) struct Ticker {
    shared: Arc<TickerShared>,
    thread: Thread,
}

struct TickerShared {
    active: AtomicUsize,
    stop: AtomicBool,
}

impl Ticker {
    /// Starts the ticker thread for `engines`.
    pub fn start(engines: Arc<Engines>) -> Result<Self> {
        let shared = Arc::new(TickerShared {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("weir-wasm-epoch".into())
            .spawn(move || {
                while !state.stop.load(Ordering::Acquire) {
                    if state.active.load(Ordering::Acquire) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engines.tick();
                }
            })
            .map_err(|e| Error::internal("could not start the wasm epoch thread").with_source(e))?;
        Ok(Ticker {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Keeps the epoch advancing until the guard is dropped.
    pub fn running(&self) -> TickGuard {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        TickGuard {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// One running instance, as the [`Ticker`] counts them.
pub(crate) struct TickGuard {
    shared: Arc<TickerShared>,
}

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}
