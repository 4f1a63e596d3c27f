//! Shared by the driver's integration tests: the test modules, a driver, requests.
#![allow(dead_code)] // Each test binary uses a part of it.

pub mod modules;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, StepRequest};
use weir_core::testkit::driver::Fixture;
use weir_driver_wasm::{WasmDriver, WasmDriverConfig};

pub use modules::module;

/// The test module of a conformance fixture.
pub fn fixture(fixture: Fixture) -> PathBuf {
    module(match fixture {
        Fixture::Echo => "echo",
        Fixture::EchoArg => "echo_arg",
        Fixture::Text => "text",
        Fixture::FailWithLog => "fail_with_log",
        Fixture::Sleep => "sleep",
        Fixture::ClientError => "client_error",
        Fixture::Flood => "flood",
    })
}

/// A driver caching compiled modules in `cache_dir` (never the user's cache).
pub fn driver(cache_dir: &Path) -> WasmDriver {
    driver_with(cache_dir, |_| {})
}

/// A driver with settings changed by `tweak`.
pub fn driver_with(cache_dir: &Path, tweak: impl FnOnce(&mut WasmDriverConfig)) -> WasmDriver {
    let mut config = WasmDriverConfig {
        cache_dir: Some(cache_dir.to_path_buf()),
        max_instances: 32,
        ..WasmDriverConfig::default()
    };
    tweak(&mut config);
    WasmDriver::new(config).expect("wasm driver")
}

/// `{"type": "wasm"}` plus `extra` keys.
pub fn runtime(extra: Value) -> Map<String, Value> {
    let mut map = Map::from_iter([("type".to_string(), json!("wasm"))]);
    if let Value::Object(extra) = extra {
        map.extend(extra);
    }
    map
}

/// A request running the module at `path` in function directory `dir`.
pub fn request(
    dir: &Path,
    path: &Path,
    input: impl Into<Bytes>,
    runtime: Map<String, Value>,
    timeout: Duration,
) -> StepRequest {
    StepRequest {
        input: input.into(),
        function_id: "fn-wasm".into(),
        function_dir: dir.to_path_buf(),
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        attempt: 2,
        path: Some(path.to_path_buf()),
        runtime,
        timeout,
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Arc::default(),
    }
}
