//! The bare cost of a WASI attempt without weir, for `weir-bench runtimes`: wasmtime alone
//! instantiates a pre-linked module from a pooling allocator, runs `_start` with the input on
//! stdin and as `argv[1]`, and captures stdout and stderr in memory (async call, as the driver).
//! Its pool resets freed slots as the driver's does (pages kept resident), so the two compare
//! the same wasmtime work.

use bytes::Bytes;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use weir_core::driver::DEFAULT_MAX_OUTPUT_BYTES;
use weir_core::{Error, ErrorKind, Result};

/// A module compiled and linked once, run bare.
pub struct BareWasm {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
}

impl std::fmt::Debug for BareWasm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareWasm").finish_non_exhaustive()
    }
}

fn bench_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("bare wasm baseline: {what}: {e}"),
    )
}

impl BareWasm {
    /// Compiles and links the module at `path` (a WASI preview 1 command).
    pub fn new(path: &std::path::Path) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(16)
            .total_memories(16)
            .total_tables(16)
            .total_stacks(16)
            .linear_memory_keep_resident(weir_driver_wasm::KEEP_RESIDENT)
            .table_keep_resident(weir_driver_wasm::KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| bench_error("engine", e))?;
        let module = Module::from_file(&engine, path).map_err(|e| bench_error("module", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx: &mut WasiP1Ctx| cx)
            .map_err(|e| bench_error("linking WASI", e))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| bench_error("linking the module", e))?;
        Ok(BareWasm { engine, pre })
    }

    /// One attempt: instantiate, run `_start`, capture; returns stdout.
    pub async fn run(&self, input: &Bytes) -> Result<Bytes> {
        let stdout = MemoryOutputPipe::new(DEFAULT_MAX_OUTPUT_BYTES);
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let arg = std::str::from_utf8(input).unwrap_or_default();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.clone()))
            .stdout(stdout.clone())
            .stderr(stderr)
            .args(&["step.wasm", arg])
            .build_p1();
        let mut store = Store::new(&self.engine, wasi);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| bench_error("instantiate", e))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| bench_error("_start", e))?;
        start
            .call_async(&mut store, ())
            .await
            .map_err(|e| bench_error("run", e))?;
        drop(store);
        Ok(stdout.contents())
    }
}
