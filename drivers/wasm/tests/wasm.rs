//! Behaviour specific to the wasm runtime: limits, grants, the module cache, errors.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use weir_core::ErrorKind;
use weir_core::driver::{Driver, StepResult, StepSpec};
use weir_core::protocol::{Outcome, classify, parse_output};
use weir_core::testkit::driver as suite;
use weir_driver_wasm::{MAX_ARG_BYTES, WasmDriver};

use common::{module, request, runtime};

const QUICK: Duration = Duration::from_secs(20);

struct Setup {
    dir: tempfile::TempDir,
    driver: WasmDriver,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = common::driver(&common::modules::shared_cache_dir());
        Setup { dir, driver }
    }

    /// With an empty on-disk cache of its own, for tests counting its hits and misses.
    fn with_own_cache() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let driver = common::driver(&dir.path().join("cache"));
        Setup { dir, driver }
    }

    async fn run(&self, name: &str, input: impl Into<Bytes>, extra: Value) -> StepResult {
        self.run_path(&module(name), input, extra).await
    }

    async fn run_path(&self, path: &Path, input: impl Into<Bytes>, extra: Value) -> StepResult {
        let req = request(self.dir.path(), path, input, runtime(extra), QUICK);
        match self.driver.execute(req).await {
            Ok(result) => result,
            Err(e) => panic!("{}: execute failed ({:?}): {e}", path.display(), e.kind()),
        }
    }

    fn spec(&self, path: &Path, extra: Value) -> StepSpec {
        StepSpec {
            function_id: "fn-wasm".into(),
            function_dir: self.dir.path().to_path_buf(),
            step_id: "step-1".into(),
            path: Some(path.to_path_buf()),
            runtime: runtime(extra),
            env: Arc::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

fn output(result: &StepResult) -> Value {
    assert!(result.success, "expected success: {result:?}");
    parse_output(&result.stdout)
}

#[tokio::test]
async fn a_memory_hog_over_runtime_memory_fails_clearly() {
    let s = Setup::new();
    let result = s.run("memory_hog", "48", json!({"memory": "32MiB"})).await;
    assert!(!result.success, "{result:?}");
    assert_eq!(
        result.detail.as_deref(),
        Some("wasm: memory limit of 32 MiB exceeded (runtime.memory)")
    );
    assert_eq!(result.retryable, Some(false));
    match classify(&result) {
        Outcome::Failed {
            retryable: false,
            error,
            ..
        } => {
            assert!(error.contains("memory limit"), "{error}")
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }
    // Under the limit the same module succeeds.
    let ok = s.run("memory_hog", "16", json!({"memory": "64MiB"})).await;
    assert_eq!(output(&ok), json!({"allocated_mib": 16}));
    // The default limit (64 MiB) applies when the step sets none.
    let over_default = s.run("memory_hog", "100", json!({})).await;
    assert_eq!(
        over_default.detail.as_deref(),
        Some("wasm: memory limit of 64 MiB exceeded (runtime.memory)")
    );
    assert_eq!(s.driver.stats().running, 0);
}

#[tokio::test]
async fn a_module_whose_initial_memory_is_over_the_limit_fails_at_instantiation() {
    let s = Setup::new();
    // A Rust module starts with about 1.1 MiB of memory.
    let result = s.run("echo", "{}", json!({"memory": "128KiB"})).await;
    assert!(!result.success);
    assert_eq!(
        result.detail.as_deref(),
        Some("wasm: memory limit of 128 KiB exceeded (runtime.memory)")
    );
    assert_eq!(s.driver.stats().running, 0);
}

#[tokio::test]
async fn fuel_bounds_the_work_of_a_step() {
    let s = Setup::new();
    let result = s.run("spin", "{}", json!({"fuel": 5_000_000})).await;
    assert!(!result.success);
    assert_eq!(
        result.detail.as_deref(),
        Some("wasm: fuel limit of 5000000 exceeded (runtime.fuel)")
    );
    assert_eq!(result.retryable, Some(false));
    // Enough fuel: the step completes, on the fuel-metered engine.
    let ok = s
        .run("echo", "{\"a\":1}", json!({"fuel": 50_000_000}))
        .await;
    assert_eq!(output(&ok), json!({"a": 1}));
    // The same module without fuel is compiled separately for the plain engine.
    let ok = s.run("echo", "{\"a\":2}", json!({})).await;
    assert_eq!(output(&ok), json!({"a": 2}));
    assert_eq!(s.driver.stats().compiled, 3);
}

#[tokio::test]
async fn the_filesystem_is_closed_unless_a_directory_is_granted() {
    let s = Setup::new();
    let data = s.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "hi from the host").unwrap();

    let denied = s.run("read_file", "/data/hello.txt", json!({})).await;
    assert!(!denied.success);
    assert_eq!(denied.detail.as_deref(), Some("exited with code 2"));
    assert!(
        denied.log.contains("cannot read /data/hello.txt"),
        "{}",
        denied.log
    );

    let granted = s
        .run(
            "read_file",
            "/data/hello.txt",
            json!({"dirs": {"data": "/data"}}),
        )
        .await;
    assert_eq!(output(&granted), json!({"content": "hi from the host"}));

    // Outside the granted directory stays closed, though the file exists on the host.
    std::fs::write(s.dir.path().join("secret.txt"), "not for the guest").unwrap();
    let escape = s
        .run(
            "read_file",
            "/data/../secret.txt",
            json!({"dirs": {"data": "/data"}}),
        )
        .await;
    assert!(!escape.success, "{escape:?}");
    assert!(escape.log.contains("cannot read"), "{}", escape.log);

    // Read-only unless `writable`.
    let ro = s
        .run(
            "write_file",
            "/data/new.txt\nwritten",
            json!({"dirs": {"data": "/data"}}),
        )
        .await;
    assert!(!ro.success, "{ro:?}");
    assert!(!data.join("new.txt").exists());
    let rw = s
        .run(
            "write_file",
            "/out/new.txt\nwritten by wasm",
            json!({"dirs": {"data": {"guest": "/out", "writable": true}}}),
        )
        .await;
    assert_eq!(output(&rw), json!({"written": true}));
    assert_eq!(
        std::fs::read_to_string(data.join("new.txt")).unwrap(),
        "written by wasm"
    );
}

#[tokio::test]
async fn a_missing_granted_directory_is_a_config_error() {
    let s = Setup::new();
    let extra = json!({"dirs": {"nope": "/data"}});
    let err = s
        .driver
        .execute(request(
            s.dir.path(),
            &module("echo"),
            "{}",
            runtime(extra.clone()),
            QUICK,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("runtime.dirs.nope"), "{err}");
    let err = s
        .driver
        .prepare(&s.spec(&module("echo"), extra))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a directory"), "{err}");
    let absolute = json!({"dirs": {"/nonexistent/weir": "/data"}});
    let msg = s
        .driver
        .check(&runtime(absolute), Some(&module("echo")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a directory"), "{msg}");
}

#[tokio::test]
async fn env_is_empty_unless_granted() {
    let s = Setup::new();
    let dotenv = Arc::new(vec![
        ("GREETING".to_string(), "hello from .env".to_string()),
        ("SECRET".to_string(), "s3cret".to_string()),
        ("WEIR_RUN_ID".to_string(), "spoofed".to_string()),
    ]);
    let run = |extra: Value| {
        let mut req = request(s.dir.path(), &module("env"), "{}", runtime(extra), QUICK);
        req.env = dotenv.clone();
        let driver = s.driver.clone();
        async move { driver.execute(req).await.expect("execute") }
    };
    let weir_only = json!({
        "WEIR_ATTEMPT": "2", "WEIR_FUNCTION_ID": "fn-wasm", "WEIR_RUN_ID": "run-1", "WEIR_STEP_ID": "step-1"
    });
    assert_eq!(output(&run(json!({})).await), weir_only);
    assert_eq!(output(&run(json!({"env": false})).await), weir_only);

    let mut all = weir_only.clone();
    all["GREETING"] = json!("hello from .env");
    all["SECRET"] = json!("s3cret");
    assert_eq!(output(&run(json!({"env": true})).await), all);

    let mut listed = weir_only.clone();
    listed["GREETING"] = json!("hello from .env");
    assert_eq!(
        output(&run(json!({"env": ["GREETING", "NOT_IN_DOTENV"]})).await),
        listed
    );
}

#[tokio::test]
async fn a_module_is_compiled_once_and_reused() {
    let s = Setup::new();
    let echo = module("echo");
    s.driver
        .prepare(&s.spec(&echo, json!({})))
        .await
        .expect("prepare");
    assert_eq!(s.driver.stats().compiled, 1);
    for i in 0..3 {
        let input = format!("{{\"i\":{i}}}");
        assert_eq!(
            output(&s.run("echo", input, json!({})).await),
            json!({"i": i})
        );
    }
    let stats = s.driver.stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert!(stats.reused >= 3, "{stats:?}");
    // The same content at another path is not compiled again either.
    let copy = s.dir.path().join("copy.wasm");
    std::fs::copy(&echo, &copy).unwrap();
    assert_eq!(
        output(&s.run_path(&copy, "[1]", json!({})).await),
        json!([1])
    );
    assert_eq!(s.driver.stats().compiled, 1);
}

#[tokio::test]
async fn a_changed_module_is_compiled_again() {
    let s = Setup::with_own_cache();
    let step = s.dir.path().join("step.wasm");
    std::fs::copy(module("text"), &step).unwrap();
    assert_eq!(
        output(&s.run_path(&step, "{}", json!({})).await),
        json!({"body": "hello weir\n"})
    );
    assert_eq!(s.driver.stats().compiled, 1);

    std::fs::copy(module("client_error"), &step).unwrap();
    let result = s.run_path(&step, "{}", json!({})).await;
    assert_eq!(parse_output(&result.stdout), json!({"status": 422}));
    let stats = s.driver.stats();
    assert_eq!(stats.compiled, 2, "{stats:?}");
    assert_eq!(stats.disk_cache_misses, 2, "{stats:?}");

    // Back to the first version: compiled code comes from the on-disk cache.
    std::fs::copy(module("text"), &step).unwrap();
    assert_eq!(
        output(&s.run_path(&step, "{}", json!({})).await),
        json!({"body": "hello weir\n"})
    );
    let stats = s.driver.stats();
    assert_eq!((stats.compiled, stats.disk_cache_hits), (3, 1), "{stats:?}");
}

#[tokio::test]
async fn the_disk_cache_serves_a_new_driver() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spec = StepSpec {
        function_id: "f".into(),
        function_dir: dir.path().to_path_buf(),
        step_id: "s".into(),
        path: Some(module("echo")),
        runtime: runtime(json!({})),
        env: Arc::default(),
        timeout: Duration::from_secs(30),
    };
    let first = common::driver(&cache);
    first.prepare(&spec).await.unwrap();
    let stats = first.stats();
    assert_eq!(
        (stats.disk_cache_hits, stats.disk_cache_misses),
        (0, 1),
        "{stats:?}"
    );
    drop(first);
    let second = common::driver(&cache);
    second.prepare(&spec).await.unwrap();
    let stats = second.stats();
    assert_eq!(
        (stats.disk_cache_hits, stats.disk_cache_misses),
        (1, 0),
        "{stats:?}"
    );
    // Without a cache directory nothing is written or read.
    let memory_only = common::driver_with(&cache, |c| c.cache_dir = None);
    memory_only.prepare(&spec).await.unwrap();
    let stats = memory_only.stats();
    assert_eq!(
        (
            stats.compiled,
            stats.disk_cache_hits,
            stats.disk_cache_misses
        ),
        (1, 0, 0)
    );
}

/// A module importing `env.foo`, which the runtime does not provide.
const IMPORTS_ENV_FOO: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
    0x02, 0x0b, 0x01, 0x03, b'e', b'n', b'v', 0x03, b'f', b'o', b'o', 0x00,
    0x00, // import env.foo
    0x03, 0x02, 0x01, 0x00, // one function
    0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x01, // export _start
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body: nothing
];

#[tokio::test]
async fn bad_modules_are_reported_at_check_and_prepare() {
    let s = Setup::new();
    let d = &s.driver;
    let rt = runtime(json!({}));
    assert!(
        d.check(&rt, None)
            .unwrap_err()
            .to_string()
            .contains("needs a `path`")
    );
    let missing = s.dir.path().join("missing.wasm");
    let msg = d.check(&rt, Some(&missing)).unwrap_err().to_string();
    assert!(
        msg.contains("cannot read the wasm module") && msg.contains("missing.wasm"),
        "{msg}"
    );
    let script = s.dir.path().join("step.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let msg = d.check(&rt, Some(&script)).unwrap_err().to_string();
    assert!(
        msg.contains("not a WebAssembly module") && msg.contains("step.sh"),
        "{msg}"
    );
    let component = s.dir.path().join("component.wasm");
    std::fs::write(&component, b"\0asm\x0d\0\x01\0").unwrap();
    assert!(
        d.check(&rt, Some(&component))
            .unwrap_err()
            .to_string()
            .contains("component")
    );
    assert!(d.check(&rt, Some(&module("echo"))).is_ok());
    let msg = d
        .check(&runtime(json!({"memroy": "1MiB"})), Some(&module("echo")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown key `runtime.memroy`"), "{msg}");
    let msg = d
        .check(&runtime(json!({"memory": "5GiB"})), Some(&module("echo")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("over this driver's limit"), "{msg}");

    // prepare compiles: what only compiling finds shows up there.
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "garbage.wasm",
            b"\0asm\x01\0\0\0\xff\xff\xff",
            "could not compile the wasm module",
        ),
        ("reactor.wasm", b"\0asm\x01\0\0\0", "no `_start` function"),
        (
            "imports.wasm",
            IMPORTS_ENV_FOO,
            "needs imports the wasm runtime does not provide",
        ),
        ("step.sh", b"#!/bin/sh\n", "not a WebAssembly module"),
    ];
    for (name, bytes, expected) in cases {
        let path = s.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = d.prepare(&s.spec(&path, json!({}))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}: {err}");
        assert!(!err.is_retryable(), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(expected) && msg.contains(name),
            "{name}: {msg}"
        );
    }
    assert!(
        d.prepare(&s.spec(&s.dir.path().join("imports.wasm"), json!({})))
            .await
            .unwrap_err()
            .to_string()
            .contains("env")
    );

    // execute reports the same errors without a prior prepare.
    let err = d
        .execute(request(s.dir.path(), &missing, "{}", rt.clone(), QUICK))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!err.is_retryable());
    let mut no_path = request(s.dir.path(), &missing, "{}", rt, QUICK);
    no_path.path = None;
    assert_eq!(
        d.execute(no_path).await.unwrap_err().kind(),
        ErrorKind::Config
    );
    let err = d
        .execute(request(
            s.dir.path(),
            s.dir.path(),
            "{}",
            runtime(json!({})),
            QUICK,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[tokio::test]
async fn the_input_is_the_first_argument_when_it_fits_and_always_stdin() {
    let s = Setup::new();
    let small = suite::sample_input();
    let out = output(&s.run("args", small.clone(), json!({})).await);
    assert_eq!(
        out,
        json!({"argc": 2, "argv0": "args.wasm", "arg1_len": small.len(), "stdin": small.len()})
    );
    let large = suite::large_input(suite::LARGE_INPUT_BYTES);
    let out = output(&s.run("args", large.clone(), json!({})).await);
    assert_eq!(
        out,
        json!({"argc": 1, "argv0": "args.wasm", "arg1_len": 0, "stdin": large.len()})
    );
    let at_limit = Bytes::from(vec![b'x'; MAX_ARG_BYTES - 1]);
    assert_eq!(
        output(&s.run("args", at_limit, json!({})).await)["argc"],
        json!(2)
    );
    let over = Bytes::from(vec![b'x'; MAX_ARG_BYTES]);
    assert_eq!(
        output(&s.run("args", over, json!({})).await)["argc"],
        json!(1)
    );
}

#[tokio::test]
async fn exits_and_traps_are_reported() {
    let s = Setup::new();
    let failed = s.run("fail_with_log", "{}", json!({})).await;
    assert_eq!(failed.detail.as_deref(), Some("exited with code 3"));
    assert_eq!(failed.log, "boom\n");
    assert_eq!(failed.retryable, None);

    let explicit_zero = s.run("exit_zero", "{}", json!({})).await;
    assert_eq!(output(&explicit_zero), json!({"ok": true}));
    assert_eq!(explicit_zero.detail, None);

    let panicked = s.run("panic", "{}", json!({})).await;
    assert!(!panicked.success);
    let detail = panicked.detail.clone().unwrap_or_default();
    assert!(detail.starts_with("wasm trap: "), "{detail}");
    assert!(detail.contains("unreachable"), "{detail}");
    assert!(
        panicked.log.contains("the step panicked on purpose"),
        "{}",
        panicked.log
    );
    assert!(matches!(
        classify(&panicked),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));

    let noop = s.run("noop", "{}", json!({})).await;
    assert!(
        noop.success && noop.stdout.is_empty() && noop.log.is_empty(),
        "{noop:?}"
    );
}

#[tokio::test]
async fn the_log_keeps_the_tail_of_stderr() {
    let s = Setup::new();
    let result = s.run("noisy", "{}", json!({})).await;
    assert_eq!(output(&result), json!({}));
    assert!(
        result.log.starts_with("[log truncated"),
        "{}",
        &result.log[..60]
    );
    assert!(result.log.ends_with("aaaEND\n"));
    assert!(result.log.len() <= weir_core::driver::DEFAULT_MAX_LOG_BYTES + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_beyond_the_instance_slots_wait_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver_with(&common::modules::shared_cache_dir(), |c| {
        c.max_instances = 2
    });
    let runs = (0..24).map(|i| {
        let driver = driver.clone();
        let req = request(
            dir.path(),
            &module("echo"),
            format!("{{\"n\":{i}}}"),
            runtime(json!({})),
            QUICK,
        );
        tokio::spawn(async move { driver.execute(req).await })
    });
    let results = futures::future::join_all(runs).await;
    for (i, result) in results.into_iter().enumerate() {
        let result = result.expect("join").expect("execute");
        assert_eq!(output(&result), json!({"n": i}));
    }
    assert_eq!(driver.stats().running, 0);
}

#[tokio::test]
async fn output_over_the_limit_stops_the_guest() {
    let s = Setup::new();
    let mut req = request(
        s.dir.path(),
        &module("flood"),
        "{}",
        runtime(json!({})),
        QUICK,
    );
    req.max_output_bytes = 1000;
    let err = s.driver.execute(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(
        err.to_string().contains("max_output_bytes (1000 bytes)"),
        "{err}"
    );
    assert_eq!(s.driver.stats().running, 0);
}

#[test]
fn the_driver_serves_the_wasm_runtime_type() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::driver(dir.path());
    assert_eq!(driver.kind(), "wasm");
    let shown = format!("{driver:?}");
    assert!(
        shown.contains("WasmDriver") && shown.contains("running: 0"),
        "{shown}"
    );
}

#[test]
fn an_oversized_max_memory_is_refused() {
    let mut config = weir_driver_wasm::WasmDriverConfig {
        cache_dir: None,
        ..Default::default()
    };
    config.max_memory = 8 << 30;
    let err = WasmDriver::new(config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("over 4 GiB"), "{err}");
}
