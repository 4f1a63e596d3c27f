//! `weir-bench runs --wasm MODULE`: single- and multi-step runs whose steps run a WASI module
//! through the engine, in one process. The figures are not checked here (timing belongs to the
//! benchmark); that every run completes through the wasm runtime is.
#![cfg(feature = "driver-wasm")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The wasm driver's no-op test module (prints nothing, exits 0), built for wasm32-wasip1.
fn noop_module() -> PathBuf {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../drivers/wasm/test-modules/Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-test-modules");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
        .args(["--bin", "noop", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .expect("cargo");
    assert!(
        build.status.success(),
        "building the no-op module (rustup target add wasm32-wasip1): {}",
        String::from_utf8_lossy(&build.stderr)
    );
    target_dir.join("wasm32-wasip1/release/noop.wasm")
}

fn bench_runs(args: &[&str], module: &Path) -> (i32, Value, String) {
    let cache = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_weir-bench"))
        .args(["runs", "--json", "--wasm"])
        .arg(module)
        .args(args)
        .env("WEIR_WASM_CACHE_DIR", cache.path())
        .output()
        .expect("weir-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let figures = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), figures, stderr)
}

#[test]
fn every_run_of_wasm_steps_completes() {
    let module = noop_module();
    for steps in ["1", "3"] {
        let (code, figures, stderr) = bench_runs(
            &["--events", "300", "--batch", "50", "--steps", steps],
            &module,
        );
        assert_eq!(code, 0, "exit code; {figures}\n{stderr}");
        assert_eq!(figures["step_runtime"], "wasm", "{figures}");
        assert_eq!(figures["runs_completed"], 300, "{figures}");
        assert_eq!(figures["runs_failed"], 0, "{figures}");
        let steps: u64 = steps.parse().expect("number");
        assert_eq!(figures["steps_executed"], 300 * steps, "{figures}");
        assert!(
            figures["runs_per_sec"].as_f64().is_some_and(|r| r > 0.0),
            "{figures}"
        );
    }
}

#[test]
fn a_missing_module_is_a_clear_error() {
    let (code, _, stderr) = bench_runs(&["--events", "1"], Path::new("/nonexistent/noop.wasm"));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--wasm /nonexistent/noop.wasm"),
        "the error names the option and the path: {stderr}"
    );
}
