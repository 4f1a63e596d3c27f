//! `examples/wasm-greet`: its step, a Rust program built for WASI, runs through `weir run` on
//! the wasm runtime.
#![cfg(feature = "driver-wasm")]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_wasm_example_step_builds_and_runs() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm-greet");
    // As the example's README says (the module lands where weir.json points).
    let build = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(example.join("steps/greet/Cargo.toml"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo");
    assert!(
        build.status.success(),
        "building the example step for wasm32-wasip1 (rustup target add wasm32-wasip1): {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let cache = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--json", "--event"])
        .arg(example.join("event.json"))
        .arg(&example)
        .env("WEIR_WASM_CACHE_DIR", cache.path())
        .output()
        .expect("weir run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "weir run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_str(&stdout).expect("--json prints the run");
    assert_eq!(run["status"], "completed", "{run}");
    let output = &run["steps"]["greet"]["output"];
    assert_eq!(
        output["greeting"], "Hello, ada! Welcome to the pro plan.",
        "{run}"
    );
    assert_eq!(output["runtime"], "wasm", "{run}");
    assert!(
        run["steps"]["greet"]["log"]
            .as_str()
            .is_some_and(|l| l.contains("greeting ada@example.com")),
        "the step's stderr is its log: {run}"
    );
}
