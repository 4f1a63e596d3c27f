//! One attempt: a WASI context over in-memory stdio, a store with the step's limits, an
//! instance from the pool, `_start` called asynchronously until it returns, traps, exits or
//! runs out of time.

use std::fmt;
use std::path::Path;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime::{Extern, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use weir_core::driver::{StepRequest, StepResult};
use weir_core::protocol::input_argument;
use weir_core::{Error, ErrorKind, Result};

use crate::config::{StepConfig, show_size};
use crate::engine::Ticker;
use crate::modules::Compiled;
use crate::streams::Capture;

/// Variables identifying the attempt, always set (they win over the function's `.env`).
const WEIR_VARS: [&str; 4] = [
    "WEIR_RUN_ID",
    "WEIR_STEP_ID",
    "WEIR_ATTEMPT",
    "WEIR_FUNCTION_ID",
];

/// What a store holds: the guest's WASI context, its memory limit, whether time ran out.
pub(crate) struct State {
    /// WASI preview 1 for the guest.
    pub wasi: WasiP1Ctx,
    limits: MemoryLimit,
    out_of_time: bool,
}

/// Refuses linear memory past `runtime.memory`, trapping the guest, and remembers it did.
struct MemoryLimit {
    max: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            return Err(wasmtime::Error::new(LimitHit("memory")));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}

/// A limit the driver enforces stopped the guest.
#[derive(Debug)]
struct LimitHit(&'static str);

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the step's {} limit was reached", self.0)
    }
}

impl std::error::Error for LimitHit {}

/// Everything an attempt needs from the driver.
pub(crate) struct Attempt<'a> {
    /// The module to run.
    pub compiled: &'a Compiled,
    /// The step's runtime settings.
    pub step: &'a StepConfig,
    /// The attempt.
    pub request: &'a StepRequest,
    /// The module's path, for messages.
    pub path: &'a Path,
    /// How much stderr to keep.
    pub max_log: usize,
    /// Instance slots (the pool's size); waiting for one counts against the timeout.
    pub slots: &'a Semaphore,
    /// Keeps the epoch moving while the guest runs.
    pub ticker: &'a Ticker,
}

impl Attempt<'_> {
    /// Runs the attempt to its end; nothing of it is left running when this returns (or when
    /// the future is dropped).
    pub async fn run(self) -> Result<StepResult> {
        let timeout = self.request.timeout;
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            Error::new(
                ErrorKind::Timeout,
                format!("step timed out after {timeout:?}"),
            )
            .with_context("path", self.path.display())
        };
        // Declared before the store, so it is released after the store is gone.
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(Error::internal("the wasm driver was shut down")),
            Err(_) => return Err(timed_out()),
        };
        let stdout = Capture::stdout(self.request.max_output_bytes);
        let log = Capture::log(self.max_log);
        let wasi = self.wasi(&stdout, &log)?;
        let engine = self.compiled.pre.module().engine();
        let mut store = Store::new(
            engine,
            State {
                wasi,
                limits: MemoryLimit {
                    max: usize::try_from(self.step.memory).unwrap_or(usize::MAX),
                    exceeded: false,
                },
                out_of_time: false,
            },
        );
        store.limiter(|s| &mut s.limits);
        if let Some(fuel) = self.step.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| Error::internal(format!("could not set the step's fuel: {e:#}")))?;
        }
        let epoch_deadline = deadline.into_std();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut store| {
            if std::time::Instant::now() >= epoch_deadline {
                store.data_mut().out_of_time = true;
                Err(wasmtime::Error::new(LimitHit("time")))
            } else {
                // Let other tasks of the async runtime run between two ticks of guest code.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let _ticking = self.ticker.running();
        let call = async {
            let instance = self
                .compiled
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(Failure::Instantiate)?;
            let start = instance
                .get_module_export(&mut store, &self.compiled.start)
                .and_then(Extern::into_func)
                .ok_or_else(|| Failure::Instantiate(wasmtime::format_err!("`_start` is missing")))?
                .typed::<(), ()>(&store)
                .map_err(Failure::Instantiate)?;
            start.call_async(&mut store, ()).await.map_err(Failure::Run)
        };
        let outcome = tokio::time::timeout_at(deadline, call).await;
        let memory_exceeded = store.data().limits.exceeded;
        let out_of_time = store.data().out_of_time;
        // The instance goes back to the pool before the slot is released.
        drop(store);
        let outcome = match outcome {
            Err(_) => return Err(timed_out()),
            Ok(outcome) => outcome,
        };
        if stdout.overflowed() {
            return Err(stdout
                .into_stdout()
                .err()
                .unwrap_or_else(|| Error::internal("stdout overflow")));
        }
        let (success, detail, retryable) = match outcome {
            Ok(()) => (true, None, None),
            Err(Failure::Run(e) | Failure::Instantiate(e))
                if out_of_time || is_limit(&e, "time") =>
            {
                return Err(timed_out());
            }
            Err(Failure::Run(e) | Failure::Instantiate(e))
                if memory_exceeded || is_limit(&e, "memory") =>
            {
                let detail = format!(
                    "wasm: memory limit of {} exceeded (runtime.memory)",
                    show_size(self.step.memory)
                );
                (false, Some(detail), Some(false))
            }
            Err(Failure::Instantiate(e)) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("could not instantiate the wasm module: {e:#}"),
                )
                .with_context("path", self.path.display()));
            }
            Err(Failure::Run(e)) => run_failure(&e, self.step),
        };
        Ok(StepResult {
            success,
            stdout: stdout.into_stdout()?,
            log: log.into_log(),
            detail,
            retryable,
        })
    }

    /// The guest's WASI context: stdin = input, argv = [name, input], granted dirs and env.
    fn wasi(&self, stdout: &Capture, log: &Capture) -> Result<WasiP1Ctx> {
        let request = self.request;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(request.input.clone()))
            .stdout(stdout.clone())
            .stderr(log.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let name = self.compiled.name.as_str();
        match input_argument(&request.input) {
            Some(input) => wasi.args(&[name, input]),
            None => wasi.args(&[name]),
        };
        for (k, v) in request.env.iter() {
            if self.step.env.allows(k) && !WEIR_VARS.contains(&k.as_str()) {
                wasi.env(k, v);
            }
        }
        wasi.env("WEIR_RUN_ID", &request.run_id)
            .env("WEIR_STEP_ID", &request.step_id)
            .env("WEIR_ATTEMPT", request.attempt.to_string())
            .env("WEIR_FUNCTION_ID", &request.function_id);
        for dir in &self.step.dirs {
            let host = dir.host_path(&request.function_dir);
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&host, &dir.guest, perms).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "cannot grant `runtime.dirs.{}` to the guest: {} is not a readable directory ({e:#})",
                        dir.host.display(),
                        host.display()
                    ),
                )
                .permanent()
            })?;
        }
        Ok(wasi.build_p1())
    }
}

/// How the guest's call went wrong.
enum Failure {
    Instantiate(wasmtime::Error),
    Run(wasmtime::Error),
}

fn is_limit(e: &wasmtime::Error, which: &str) -> bool {
    e.downcast_ref::<LimitHit>().is_some_and(|l| l.0 == which)
}

/// `(success, detail, retryable)` of a guest that stopped with an error: `proc_exit`, a trap.
fn run_failure(e: &wasmtime::Error, step: &StepConfig) -> (bool, Option<String>, Option<bool>) {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return match exit.0 {
            0 => (true, None, None),
            code => (false, Some(format!("exited with code {code}")), None),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            let fuel = step.fuel.unwrap_or_default();
            let detail = format!("wasm: fuel limit of {fuel} exceeded (runtime.fuel)");
            (false, Some(detail), Some(false))
        }
        Some(trap) => (false, Some(format!("wasm trap: {trap}")), None),
        None => (false, Some(format!("wasm error: {e:#}")), None),
    }
}
