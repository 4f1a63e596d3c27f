//! `weir-bench runtimes`: the per-attempt cost of each runtime driver for a no-op step, beside
//! the bare cost of the same work without weir.
//!
//! Attempts run one after the other (this is overhead per attempt, not throughput). Each row
//! prints the bare and the driver's p50 and mean, and driver / bare (of the means).
//!
//! - process: a static no-op executable (`true`, a link to the static busybox when
//!   `/bin/busybox` exists, else `/bin/true`); bare = spawn it with the input as argument and on
//!   stdin, read stdout and stderr, wait (tokio::process, as the driver does).
//! - wasm (`--wasm MODULE`): bare = wasmtime alone, the module pre-linked, instantiated from a
//!   pooling allocator, `_start` called async with stdin/stdout/stderr in memory.
//! - docker (`--docker-image IMAGE`): bare = `docker run --rm -i IMAGE INPUT` with the input on
//!   stdin (the CLI, as a person would time it).
//! - lambda (`--lambda-function NAME`): bare = one aws-sdk-lambda `Invoke` of that function with
//!   the driver's own client (moto's simple backend, which echoes, makes this the driver's cost).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
use weir_core::{Error, ErrorKind, Result};

use super::RuntimesArgs;
use super::stats::Percentiles;

/// One row of the table.
struct Row {
    runtime: String,
    bare: Percentiles,
    driver: Percentiles,
}

pub(super) async fn runtimes(args: RuntimesArgs) -> Result<i32> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir()
        .map_err(|e| Error::internal("bench: a temporary directory").with_source(e))?;
    if args.process {
        rows.push(process_row(&args, dir.path()).await?);
    }
    if let Some(module) = &args.wasm {
        rows.push(wasm_row(&args, module).await?);
    }
    if let Some(image) = &args.docker_image {
        rows.push(docker_row(&args, image).await?);
    }
    if let Some(function) = &args.lambda_function {
        rows.push(lambda_row(&args, function).await?);
    }
    println!(
        "weir-bench runtimes: {} attempts each, one at a time (after {} warm-up attempts)",
        args.attempts, args.warmup
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "runtime", "bare p50 µs", "bare mean", "weir p50 µs", "weir mean", "ratio"
    );
    for r in &rows {
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>7.2}×",
            r.runtime,
            us(r.bare.p50),
            us(r.bare.mean),
            us(r.driver.p50),
            us(r.driver.mean),
            r.driver.mean as f64 / r.bare.mean.max(1) as f64
        );
    }
    Ok(0)
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

/// The no-op step input every attempt gets.
fn input() -> Bytes {
    Bytes::from(
        json!({"event": {"name": "bench/noop", "data": {}}, "steps": {}, "async": null,
               "ctx": {"fn_id": "bench", "fn_version": "1", "run_id": "r", "step_id": "s",
                       "attempt": 1}})
        .to_string(),
    )
}

/// A request for a no-op step of `runtime` at `path`.
fn request(runtime: &str, path: Option<PathBuf>, settings: Map<String, Value>) -> StepRequest {
    let mut runtime_map = settings;
    runtime_map.insert("type".into(), json!(runtime));
    StepRequest {
        input: input(),
        function_id: "bench".into(),
        function_dir: std::env::temp_dir(),
        run_id: "bench-run".into(),
        step_id: "noop".into(),
        attempt: 1,
        path,
        runtime: runtime_map,
        timeout: Duration::from_secs(60),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    }
}

/// Times `n` sequential calls of `f` (after `warmup` untimed ones).
async fn time<F, Fut>(warmup: u32, n: u32, mut f: F) -> Result<Percentiles>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for _ in 0..warmup {
        f().await?;
    }
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let started = Instant::now();
        f().await?;
        samples.push(super::stats::nanos(started.elapsed()));
    }
    Ok(Percentiles::of(&mut samples))
}

/// Times `n` attempts of `request` through `driver`; each must succeed.
async fn time_driver(
    driver: Arc<dyn Driver>,
    request: StepRequest,
    args: &RuntimesArgs,
) -> Result<Percentiles> {
    driver.prepare(&request.spec()).await?;
    time(args.warmup, args.attempts, || {
        let driver = driver.clone();
        let request = request.clone();
        async move {
            let result = driver.execute(request).await?;
            if !result.success {
                return Err(Error::new(
                    ErrorKind::StepFailed,
                    format!("bench: the no-op step failed: {:?}", result.detail),
                ));
            }
            Ok(())
        }
    })
    .await
}

/// The process row: a static no-op executable, bare spawn vs the process driver.
async fn process_row(args: &RuntimesArgs, dir: &std::path::Path) -> Result<Row> {
    let noop = dir.join("true");
    let target = if std::path::Path::new("/bin/busybox").exists() {
        "/bin/busybox"
    } else {
        "/bin/true"
    };
    std::os::unix::fs::symlink(target, &noop)
        .map_err(|e| Error::internal("bench: linking the no-op executable").with_source(e))?;
    let payload = input();
    let bare = time(args.warmup, args.attempts, || bare_spawn(&noop, &payload)).await?;
    let driver: Arc<dyn Driver> = Arc::new(weir_driver_process::ProcessDriver::new());
    let weir = time_driver(
        driver,
        request("process", Some(noop.clone()), Map::new()),
        args,
    )
    .await?;
    Ok(Row {
        runtime: format!("process ({target})"),
        bare,
        driver: weir,
    })
}

/// Spawns `exe` with `input` as argument and on stdin, reads its stdout and stderr, waits.
async fn bare_spawn(exe: &std::path::Path, input: &Bytes) -> Result<()> {
    let io = |e: std::io::Error| Error::internal("bench: bare spawn").with_source(e);
    let mut child = tokio::process::Command::new(exe)
        .arg(std::str::from_utf8(input).unwrap_or_default())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(io)?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let write = async {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(input).await;
        }
        drop(stdin.take());
    };
    let read = |r: Option<tokio::process::ChildStdout>| async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let read_err = async {
        let mut buf = Vec::new();
        if let Some(r) = stderr.as_mut() {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let ((), _, _, status) = tokio::join!(write, read(stdout.take()), read_err, child.wait());
    if !status.map_err(io)?.success() {
        return Err(Error::internal("bench: the bare no-op failed"));
    }
    Ok(())
}

/// The wasm row: bare wasmtime vs the wasm driver, the same module.
#[cfg(feature = "driver-wasm")]
async fn wasm_row(args: &RuntimesArgs, module: &std::path::Path) -> Result<Row> {
    let module = std::path::absolute(module)
        .map_err(|e| Error::new(ErrorKind::Config, "bench: the --wasm path").with_source(e))?;
    let bare_wasm = Arc::new(crate::bare_wasm::BareWasm::new(&module)?);
    let payload = input();
    let bare = time(args.warmup, args.attempts, || {
        let bare_wasm = bare_wasm.clone();
        let payload = payload.clone();
        async move { bare_wasm.run(&payload).await.map(|_| ()) }
    })
    .await?;
    let cache = tempfile::tempdir()
        .map_err(|e| Error::internal("bench: a temporary directory").with_source(e))?;
    let driver: Arc<dyn Driver> = Arc::new(weir_driver_wasm::WasmDriver::new(
        weir_driver_wasm::WasmDriverConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..Default::default()
        },
    )?);
    let weir = time_driver(driver, request("wasm", Some(module), Map::new()), args).await?;
    Ok(Row {
        runtime: "wasm".into(),
        bare,
        driver: weir,
    })
}

#[cfg(not(feature = "driver-wasm"))]
async fn wasm_row(_: &RuntimesArgs, _: &std::path::Path) -> Result<Row> {
    Err(Error::new(
        ErrorKind::Config,
        "--wasm needs weir-bench built with the `driver-wasm` feature",
    ))
}

/// The docker row: `docker run --rm -i` vs the docker driver, the same image.
#[cfg(feature = "driver-docker")]
async fn docker_row(args: &RuntimesArgs, image: &str) -> Result<Row> {
    let payload = input();
    let bare = time(args.warmup, args.attempts, || {
        let payload = payload.clone();
        async move {
            let io = |e: std::io::Error| Error::internal("bench: docker run").with_source(e);
            let mut child = tokio::process::Command::new("docker")
                .args(["run", "--rm", "-i", image])
                .arg(std::str::from_utf8(&payload).unwrap_or_default())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(io)?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&payload).await;
            }
            let out = child.wait_with_output().await.map_err(io)?;
            if !out.status.success() {
                return Err(Error::internal(format!(
                    "bench: docker run {image} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            Ok(())
        }
    })
    .await?;
    let driver: Arc<dyn Driver> = Arc::new(weir_driver_docker::DockerDriver::new(
        weir_driver_docker::DockerDriverConfig::default(),
    ));
    let settings = Map::from_iter([("image".to_string(), json!(image))]);
    let weir = time_driver(driver, request("docker", None, settings), args).await?;
    Ok(Row {
        runtime: format!("docker ({image})"),
        bare,
        driver: weir,
    })
}

#[cfg(not(feature = "driver-docker"))]
async fn docker_row(_: &RuntimesArgs, _: &str) -> Result<Row> {
    Err(Error::new(
        ErrorKind::Config,
        "--docker-image needs weir-bench built with the `driver-docker` feature",
    ))
}

/// The lambda row: a bare SDK `Invoke` vs the lambda driver, the same existing function.
#[cfg(feature = "driver-lambda")]
async fn lambda_row(args: &RuntimesArgs, function: &str) -> Result<Row> {
    use crate::bare_lambda::BareInvoke;
    use weir_driver_lambda::{LambdaDriver, LambdaDriverConfig};
    let driver = Arc::new(LambdaDriver::connect(LambdaDriverConfig::new()).await?);
    let bare_invoke = BareInvoke::new(&driver, function).await;
    let payload = input();
    let bare = time(args.warmup, args.attempts, || {
        let bare_invoke = bare_invoke.clone();
        let payload = payload.clone();
        async move { bare_invoke.run(&payload).await.map(|_| ()) }
    })
    .await?;
    let settings = Map::from_iter([("function".to_string(), json!(function))]);
    let weir = time_driver(driver, request("lambda", None, settings), args).await?;
    Ok(Row {
        runtime: format!("lambda ({function})"),
        bare,
        driver: weir,
    })
}

#[cfg(not(feature = "driver-lambda"))]
async fn lambda_row(_: &RuntimesArgs, _: &str) -> Result<Row> {
    Err(Error::new(
        ErrorKind::Config,
        "--lambda-function needs weir-bench built with the `driver-lambda` feature",
    ))
}
