//! What the adapter's service tests share: functions written to a directory, and an engine on
//! the embedded drivers that loads them.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use weir_core::driver::DriverSet;
use weir_core::engine::{Engine, EngineConfig, EngineHandle, EngineParts, Roles};

/// Writes the function `name` into `dir`: its `weir.json` and one executable `step` script.
pub fn write_function(dir: &Path, name: &str, definition: &Value, script: &str) {
    let fn_dir = dir.join(name);
    std::fs::create_dir_all(&fn_dir).expect("mkdir");
    std::fs::write(fn_dir.join("weir.json"), definition.to_string()).expect("weir.json");
    let step = fn_dir.join("step");
    std::fs::write(&step, format!("#!/bin/sh\n{script}\n")).expect("step");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// An engine on memory state and broker with the process runtime, running every role, with
/// the functions `names` of `dir` loaded.
pub async fn engine(dir: &Path, names: &[&str]) -> (Engine, EngineHandle) {
    let drivers = DriverSet::new().with(Arc::new(weir_driver_process::ProcessDriver::new()));
    let engine = Engine::new(EngineParts {
        state: Arc::new(weir_state_memory::MemoryStateStore::new()),
        events: Arc::new(weir_state_memory::MemoryEventStore::new()),
        broker: Arc::new(weir_broker_memory::MemoryBroker::new()),
        drivers,
        config: EngineConfig::default(),
    });
    let mut loaded = Vec::new();
    for name in names {
        loaded.push(
            weir_core::function::load_function(&dir.join(name), engine.drivers())
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    engine.functions().replace(loaded);
    let handle = engine.start(Roles::ALL).await.expect("start");
    (engine, handle)
}

/// `url` percent-encoded as the value of a query parameter (`results=redis%3A%2F%2F…`).
pub fn encoded(url: &str) -> String {
    url.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('&', "%26")
        .replace('@', "%40")
}

/// An adapter running beside an engine, for a test.
pub struct Running {
    trigger: weir_core::adapter::ShutdownTrigger,
    task: tokio::task::JoinHandle<weir_core::Result<()>>,
}

/// Runs `adapter` for `engine` until [`Running::stop`].
pub fn run_adapter(adapter: Box<dyn weir_core::adapter::Adapter>, engine: &Engine) -> Running {
    let (trigger, shutdown) = weir_core::adapter::Shutdown::new();
    let engine = engine.clone();
    let task = tokio::spawn(async move { adapter.run(engine, shutdown).await });
    Running { trigger, task }
}

impl Running {
    /// Raises shutdown and checks that the adapter returns without an error within 10 s.
    pub async fn stop(self) {
        self.trigger.raise();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("the adapter stops at shutdown")
            .expect("joins")
            .expect("no error");
    }
}
