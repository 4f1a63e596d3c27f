//! Per-attempt cost of a no-op wasm step through `WasmDriver::execute`, beside bare wasmtime
//! doing the same work (instantiate from a pre-compiled module and a pooling allocator, run
//! `_start`, capture stdio in memory) without weir: as an async call on the task, as a sync
//! call on the task (the floor) and as a sync call handed to `spawn_blocking`.
//!
//! ```sh
//! cargo run --release -p weir-driver-wasm --example wasm_overhead [ATTEMPTS]
//! ```
//!
//! Builds the test modules (needs `rustup target add wasm32-wasip1`).

#[path = "../tests/common/modules.rs"]
#[allow(dead_code)] // The tests use more of it.
mod modules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest, StepSpec};
use weir_driver_wasm::{WasmDriver, WasmDriverConfig};

const WARMUP: usize = 1000;

fn main() {
    let attempts: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let noop = modules::module("noop");
    let input = weir_core::testkit::driver::sample_input();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!("no-op wasm step, {attempts} attempts after {WARMUP} warm-up, one at a time:");
        let driver = driver_attempts(&noop, &input, attempts).await;
        report("WasmDriver::execute (async call)", &driver);
        let bare = Bare::new(&noop);
        let samples = bare.async_attempts(&input, attempts).await;
        report("bare wasmtime, async call", &samples);
        let samples = bare.sync_attempts(&input, attempts);
        report("bare wasmtime, sync call", &samples);
        let samples = bare.blocking_attempts(&input, attempts).await;
        report("bare wasmtime, sync in spawn_blocking", &samples);
        throughput(&noop, &input, attempts).await;
    });
}

fn request(path: &std::path::Path, input: &Bytes) -> StepRequest {
    StepRequest {
        input: input.clone(),
        function_id: "bench".into(),
        function_dir: path.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
        run_id: "run".into(),
        step_id: "step".into(),
        attempt: 1,
        path: Some(path.to_path_buf()),
        runtime: Map::from_iter([("type".to_string(), Value::from("wasm"))]),
        timeout: Duration::from_secs(10),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Arc::default(),
    }
}

fn driver() -> WasmDriver {
    WasmDriver::new(WasmDriverConfig {
        cache_dir: None,
        ..WasmDriverConfig::default()
    })
    .expect("driver")
}

async fn driver_attempts(path: &std::path::Path, input: &Bytes, attempts: usize) -> Vec<Duration> {
    let driver = driver();
    let spec: StepSpec = request(path, input).spec();
    driver.prepare(&spec).await.expect("prepare");
    let mut samples = Vec::with_capacity(attempts);
    for i in 0..WARMUP + attempts {
        let req = request(path, input);
        let start = Instant::now();
        let result = driver.execute(req).await.expect("execute");
        let took = start.elapsed();
        assert!(result.success, "{result:?}");
        if i >= WARMUP {
            samples.push(took);
        }
    }
    samples
}

/// Attempts in flight at once through one driver: runs per second.
async fn throughput(path: &std::path::Path, input: &Bytes, attempts: usize) {
    let driver = driver();
    driver
        .prepare(&request(path, input).spec())
        .await
        .expect("prepare");
    for concurrency in [1usize, 2, 8, 64] {
        let per_task = attempts / concurrency;
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let driver = driver.clone();
                let req = request(path, input);
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        let r = driver.execute(req.clone()).await.expect("execute");
                        assert!(r.success);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  throughput, {concurrency:>2} in flight (2 worker threads): {:>8.0} attempts/s",
            (per_task * concurrency) as f64 / secs
        );
    }
}

/// wasmtime + WASI p1 without weir: the same engine settings, a pre-instantiated module.
struct Bare {
    pre_async: InstancePre<WasiP1Ctx>,
    pre_sync: InstancePre<WasiP1Ctx>,
    store_engine: Engine,
}

impl Bare {
    fn new(path: &std::path::Path) -> Arc<Self> {
        let mut pool = PoolingAllocationConfig::new();
        // Slots reset as the driver's are (pages kept resident), so both run the same wasmtime.
        pool.total_core_instances(256)
            .total_memories(256)
            .total_tables(256)
            .total_stacks(256)
            .linear_memory_keep_resident(weir_driver_wasm::KEEP_RESIDENT)
            .table_keep_resident(weir_driver_wasm::KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        let module = Module::from_file(&engine, path).expect("module");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx: &mut WasiP1Ctx| cx).expect("link");
        let pre_async = linker.instantiate_pre(&module).expect("pre");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx: &mut WasiP1Ctx| cx).expect("link");
        let pre_sync = linker.instantiate_pre(&module).expect("pre");
        Arc::new(Bare {
            pre_async,
            pre_sync,
            store_engine: engine,
        })
    }

    fn store(&self, input: &Bytes) -> (Store<WasiP1Ctx>, MemoryOutputPipe, MemoryOutputPipe) {
        let stdout = MemoryOutputPipe::new(DEFAULT_MAX_OUTPUT_BYTES);
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let arg = std::str::from_utf8(input).expect("utf-8");
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&["noop.wasm", arg])
            .build_p1();
        (Store::new(&self.store_engine, wasi), stdout, stderr)
    }

    async fn run_async(&self, input: &Bytes) -> Bytes {
        let (mut store, stdout, _stderr) = self.store(input);
        let instance = self
            .pre_async
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start");
        start.call_async(&mut store, ()).await.expect("run");
        drop(store);
        stdout.contents()
    }

    fn run_sync(&self, input: &Bytes) -> Bytes {
        let (mut store, stdout, _stderr) = self.store(input);
        let instance = self.pre_sync.instantiate(&mut store).expect("instantiate");
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start");
        start.call(&mut store, ()).expect("run");
        drop(store);
        stdout.contents()
    }

    async fn async_attempts(self: &Arc<Self>, input: &Bytes, attempts: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(attempts);
        for i in 0..WARMUP + attempts {
            let start = Instant::now();
            std::hint::black_box(self.run_async(input).await);
            if i >= WARMUP {
                samples.push(start.elapsed());
            }
        }
        samples
    }

    fn sync_attempts(self: &Arc<Self>, input: &Bytes, attempts: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(attempts);
        // The sync WASI functions block on the async runtime: not on one of its workers.
        let this = self.clone();
        let input = input.clone();
        std::thread::spawn(move || {
            for i in 0..WARMUP + attempts {
                let start = Instant::now();
                std::hint::black_box(this.run_sync(&input));
                if i >= WARMUP {
                    samples.push(start.elapsed());
                }
            }
            samples
        })
        .join()
        .expect("sync thread")
    }

    async fn blocking_attempts(self: &Arc<Self>, input: &Bytes, attempts: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(attempts);
        for i in 0..WARMUP + attempts {
            let this = self.clone();
            let input = input.clone();
            let start = Instant::now();
            let out = tokio::task::spawn_blocking(move || this.run_sync(&input))
                .await
                .expect("join");
            std::hint::black_box(out);
            if i >= WARMUP {
                samples.push(start.elapsed());
            }
        }
        samples
    }
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "  {what:<40} mean {:>6.1} µs   p50 {:>6.1} µs   p99 {:>6.1} µs",
        micros(mean),
        micros(at(0.50)),
        micros(at(0.99))
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
