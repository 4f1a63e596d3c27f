//! Process-specific behaviour of [`ProcessDriver`] beyond the conformance suite: process groups,
//! environment and working directory, argv and stdin, directories, spawn errors, exit codes,
//! the log.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use weir_core::ErrorKind;
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
use weir_core::protocol::parse_output;
use weir_core::testkit::driver::{self as suite, Fixture};
use weir_driver_process::{MAX_ARG_BYTES, ProcessDriver};

/// A driver and a function directory holding the conformance fixtures (`tests/common/mod.rs`).
struct Harness {
    dir: tempfile::TempDir,
    driver: Arc<ProcessDriver>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            dir: common::fixtures(),
            driver: Arc::new(ProcessDriver::new()),
        }
    }

    /// Writes an executable `#!/bin/sh` script into the function directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        common::script(self.dir.path(), name, body)
    }

    fn request_for(&self, path: impl AsRef<Path>, input: Bytes, timeout: Duration) -> StepRequest {
        StepRequest {
            input,
            function_id: "fn-process".into(),
            function_dir: self.dir.path().to_path_buf(),
            run_id: "run-1".into(),
            step_id: "step-1".into(),
            attempt: 2,
            path: Some(path.as_ref().to_path_buf()),
            runtime: Map::from_iter([("type".to_string(), json!("process"))]),
            timeout,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            env: Default::default(),
        }
    }

    /// A request running the script of `fixture`.
    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
        self.request_for(self.dir.path().join(format!("{fixture:?}")), input, timeout)
    }

    async fn output_of(&self, name: &str, body: &str, input: Bytes) -> Value {
        self.script(name, body);
        let result = self
            .driver
            .execute(self.request_for(name, input, suite::QUICK_TIMEOUT))
            .await;
        let result = result.expect("execute");
        assert!(result.success, "{result:?}");
        parse_output(&result.stdout)
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let h = Harness::new();
    let pidfile = h.dir.path().join("child.pid");
    let body = format!("sleep 30 &\necho $! > '{}'\nwait", pidfile.display());
    h.script("spawns", &body);
    let err = h
        .driver
        .execute(h.request_for("spawns", suite::sample_input(), Duration::from_secs(1)))
        .await;
    assert_eq!(err.unwrap_err().kind(), ErrorKind::Timeout);
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(&pid) {
        assert!(
            Instant::now() < deadline,
            "background child {pid} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists and is not a zombie (a dead child waiting for its reaper).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn background_children_do_not_hold_the_attempt_open() {
    let h = Harness::new();
    let start = Instant::now();
    let out = h
        .output_of(
            "bg",
            "sleep 30 &\necho '{\"ok\":true}'",
            suite::sample_input(),
        )
        .await;
    assert_eq!(out, json!({"ok": true}));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn env_and_cwd_identify_the_attempt() {
    let h = Harness::new();
    let body = r#"printf '{"run":"%s","step":"%s","attempt":"%s","fn":"%s","cwd":"%s"}' "$WEIR_RUN_ID" "$WEIR_STEP_ID" "$WEIR_ATTEMPT" "$WEIR_FUNCTION_ID" "$(pwd -P)""#;
    let out = h.output_of("env", body, suite::sample_input()).await;
    let cwd = h.dir.path().canonicalize().unwrap();
    assert_eq!(
        out,
        json!({"run": "run-1", "step": "step-1", "attempt": "2", "fn": "fn-process", "cwd": cwd.to_str().unwrap()})
    );
}

#[tokio::test]
async fn the_functions_env_reaches_the_step_and_weirs_own_variables_win() {
    let h = Harness::new();
    h.script(
        "dotenv",
        r#"printf '{"greeting":"%s","run":"%s"}' "$GREETING" "$WEIR_RUN_ID""#,
    );
    let mut request = h.request_for("dotenv", suite::sample_input(), suite::QUICK_TIMEOUT);
    request.env = Arc::new(vec![
        ("GREETING".into(), "hello from .env".into()),
        ("WEIR_RUN_ID".into(), "spoofed".into()),
    ]);
    let result = h.driver.execute(request).await.expect("execute");
    assert_eq!(
        parse_output(&result.stdout),
        json!({"greeting": "hello from .env", "run": "run-1"})
    );
}

#[tokio::test]
async fn large_inputs_come_on_stdin_only() {
    let h = Harness::new();
    let body = r#"printf '{"argc":%d,"stdin":%d}' $# "$(wc -c)""#;
    let small = suite::sample_input();
    let out = h.output_of("argc", body, small.clone()).await;
    assert_eq!(out, json!({"argc": 1, "stdin": small.len()}));
    let large = suite::large_input(suite::LARGE_INPUT_BYTES);
    let out = h.output_of("argc", body, large.clone()).await;
    assert_eq!(out, json!({"argc": 0, "stdin": large.len()}));
    // Linux caps one argument at MAX_ARG_STRLEN (131072 bytes including its NUL).
    let at_limit = Bytes::from(vec![b'x'; MAX_ARG_BYTES - 1]);
    let out = h.output_of("argc", body, at_limit).await;
    assert_eq!(out, json!({"argc": 1, "stdin": MAX_ARG_BYTES - 1}));
    let over = Bytes::from(vec![b'x'; MAX_ARG_BYTES]);
    let out = h.output_of("argc", body, over).await;
    assert_eq!(out, json!({"argc": 0, "stdin": MAX_ARG_BYTES}));
}

#[tokio::test]
async fn a_directory_runs_its_main_or_run() {
    let h = Harness::new();
    h.script("with-main/main", "echo '\"main\"'");
    h.script("with-run/run", "echo '\"run\"'");
    assert_eq!(
        h.output_of("with-main/main", "echo '\"main\"'", Bytes::new())
            .await,
        json!("main")
    );
    for (dir, expected) in [("with-main", "main"), ("with-run", "run")] {
        let result = h
            .driver
            .execute(h.request_for(dir, Bytes::new(), suite::QUICK_TIMEOUT))
            .await;
        assert_eq!(parse_output(&result.unwrap().stdout), json!(expected));
    }
    std::fs::create_dir(h.dir.path().join("empty")).unwrap();
    let err = h
        .driver
        .execute(h.request_for("empty", Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no `main` or `run`"), "{err}");
    assert!(
        h.driver
            .check(&Map::new(), Some(&h.dir.path().join("empty")))
            .is_err()
    );
    assert!(
        h.driver
            .check(&Map::new(), Some(&h.dir.path().join("with-run")))
            .is_ok()
    );
}

#[tokio::test]
async fn spawn_errors_are_permanent_and_name_the_path() {
    let h = Harness::new();
    let missing = h.dir.path().join("missing");
    let err = h
        .driver
        .execute(h.request_for(&missing, Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");

    let plain = h.dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    let err = h
        .driver
        .execute(h.request_for(&plain, Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("not executable"), "{err}");
    assert!(err.to_string().contains(plain.to_str().unwrap()), "{err}");

    let no_interpreter = h.script("no-interp", "");
    std::fs::write(&no_interpreter, "#!/nonexistent/interpreter\n").unwrap();
    let err = h
        .driver
        .execute(h.request_for(&no_interpreter, Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("interpreter"), "{err}");

    let mut request = h.request_for("x", Bytes::new(), suite::QUICK_TIMEOUT);
    request.path = None;
    let err = h.driver.execute(request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn check_validates_the_path() {
    let h = Harness::new();
    let d = &h.driver;
    assert!(
        d.check(&Map::new(), None)
            .unwrap_err()
            .to_string()
            .contains("needs a `path`")
    );
    assert!(
        d.check(&Map::new(), Some(&h.dir.path().join("missing")))
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
    let plain = h.dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    assert!(
        d.check(&Map::new(), Some(&plain))
            .unwrap_err()
            .to_string()
            .contains("not executable")
    );
    assert!(
        d.check(&Map::new(), Some(&h.dir.path().join("Echo")))
            .is_ok()
    );
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let h = Harness::new();
    h.script("killed", "kill -9 $$");
    let result = h
        .driver
        .execute(h.request(Fixture::FailWithLog, Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(result.detail.as_deref(), Some("exited with code 3"));
    let result = h
        .driver
        .execute(h.request_for("killed", Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap();
    assert!(!result.success);
    assert_eq!(result.detail.as_deref(), Some("killed by signal 9"));
}

#[tokio::test]
async fn the_log_keeps_the_tail_of_stderr() {
    let h = Harness::new();
    let body = "head -c 300000 /dev/zero | tr '\\0' 'a' >&2\necho END >&2\necho '{}'";
    h.script("noisy", body);
    let result = h
        .driver
        .execute(h.request_for("noisy", Bytes::new(), suite::QUICK_TIMEOUT))
        .await
        .unwrap();
    assert!(result.success);
    assert!(
        result.log.starts_with("[log truncated"),
        "{}",
        &result.log[..60]
    );
    assert!(result.log.ends_with("aaaEND\n"));
    assert!(result.log.len() <= weir_core::driver::DEFAULT_MAX_LOG_BYTES + 100);
}
