//! `weir replay`: a server's stored events run through a changed function here, the changed
//! step outputs printed exactly; the server's runs untouched.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir::api::EventKeys;

/// Function `double` under `root`: its step answers `{"double": 2i}` for `data.i`, or, when
/// `changed`, `{"double": -1}` for every tenth `i`.
fn write_double(root: &Path, changed: bool) -> PathBuf {
    let dir = root.join("double");
    std::fs::create_dir_all(dir.join("steps")).expect("mkdir");
    let def = json!({"id": "double", "triggers": [{"event": "num/seen"}],
        "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    std::fs::write(dir.join("weir.json"), def.to_string()).expect("write");
    let change = if changed {
        "case $i in *0) echo '{\"double\": -1}'; exit 0;; esac\n"
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\ni=$(printf '%s' \"$input\" | sed -n 's/.*\"i\":\\([0-9]*\\).*/\\1/p')\n{change}echo \"{{\\\"double\\\": $((i * 2))}}\"\n"
    );
    let step = dir.join("steps/s");
    std::fs::write(&step, script).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

async fn runs(base: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/v1/runs?function=double&limit=10000"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_prints_exactly_the_changed_outputs_and_leaves_the_server_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v1 = write_double(&tmp.path().join("v1"), false);
    let (engine, _handle) = common::engine_with(&v1).await;
    let loaded = weir::functions::load_into(&engine, &v1).await;
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let client = reqwest::Client::new();
    for chunk in 0..10 {
        let batch: Vec<Value> = (0..100)
            .map(|j| json!({"name": "num/seen", "data": {"i": chunk * 100 + j}}))
            .collect();
        let r = client
            .post(format!("{base}/e/key"))
            .json(&batch)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 200);
    }
    let other = client
        .post(format!("{base}/e/key"))
        .json(&json!({"name": "other/thing", "data": {"i": 5}}))
        .send()
        .await
        .expect("post");
    assert_eq!(other.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = runs(&base).await;
        if listed.len() == 1_000 && listed.iter().all(|r| r["status"] == "completed") {
            break;
        }
        assert!(Instant::now() < deadline, "the 1,000 runs did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let v2 = write_double(&tmp.path().join("v2"), true);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--shadow", "--json", "--url", &base, "--dir",
        ])
        .arg(&v2)
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        report["events"], 1_000,
        "the other event does not trigger double"
    );
    assert_eq!(report["runs"], 1_000);
    let changed = report["changed"].as_array().expect("changed");
    assert_eq!(changed.len(), 100, "every tenth output changed, no other");
    for c in changed {
        assert_eq!(c["step_id"], "s");
        assert_eq!(c["after"], json!({"double": -1}));
        let before = c["before"]["double"].as_i64().expect("before");
        assert_eq!(before % 20, 0, "{c}");
    }
    assert_eq!(
        runs(&base).await.len(),
        1_000,
        "the server's runs are untouched"
    );

    // The changed step stubbed with its recorded outputs: nothing runs it, nothing changed.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--stub", "s", "--json", "--url", &base, "--dir",
        ])
        .arg(&v2)
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (
            report["runs"].as_u64(),
            report["failed"].as_u64(),
            report["changed"].as_array().map(Vec::len)
        ),
        (Some(1_000), Some(0), Some(0)),
        "{report}"
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--stub", "nope", "--url", &base,
        ])
        .output()
        .await
        .expect("weir replay");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such step"));

    // The live version replayed: nothing changed. A window with no events: zero.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--shadow", "--json", "--url", &base,
        ])
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir replay");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (
            report["runs"].as_u64(),
            report["changed"].as_array().map(Vec::len)
        ),
        (Some(1_000), Some(0))
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "2h", "--to", "1h", "--json", "--url", &base,
        ])
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir replay");
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        report,
        json!({"events": 0, "runs": 0, "failed": 0, "changed": []})
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no stored event"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // An export replayed from its file: every event runs; nothing to compare with.
    let export = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["events", "export", "--from", "1h", "--url", &base])
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir events export");
    assert!(export.status.success());
    let lines = String::from_utf8_lossy(&export.stdout).lines().count();
    assert_eq!(lines, 1_001, "every stored event, one per line");
    let file = tmp.path().join("events.ndjson");
    std::fs::write(&file, &export.stdout).expect("write");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--json", "--url", &base, "--source",
        ])
        .arg(&file)
        .arg("--dir")
        .arg(&v2)
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        report,
        json!({"events": 1_000, "runs": 1_000, "failed": 0, "changed": []})
    );
    // A truncated last line: a clear error naming it, nothing replayed.
    let cut = &export.stdout[..export.stdout.len() - 10];
    std::fs::write(&file, cut).expect("write");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay", "double", "--from", "1h", "--url", &base, "--source",
        ])
        .arg(&file)
        .output()
        .await
        .expect("weir replay");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 1001") && stderr.contains("nothing replayed"),
        "{stderr}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "replay",
            "double",
            "--from",
            "yesterday-ish",
            "--url",
            &base,
        ])
        .output()
        .await
        .expect("weir replay");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--from"));

    // The changed files loaded by the server become version 2, live: replayed by default,
    // and `--version 1` replays the first one (nothing changed); an unknown version is refused.
    let loaded = weir::functions::load_into(&engine, &v2).await;
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let replay_first_hundred = |version: Option<&'static str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args(["replay", "double", "--from", "1h", "--json", "--url", &base])
            .args(["--filter", "event.data.i < 100"])
            .env_remove("WEIR_API_KEY");
        if let Some(version) = version {
            command.args(["--version", version]);
        }
        command.output()
    };
    let changed_of = |output: &std::process::Output| {
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        (
            report["runs"].as_u64(),
            report["changed"].as_array().map(Vec::len),
        )
    };
    let live = replay_first_hundred(None).await.expect("weir replay");
    assert_eq!(
        changed_of(&live),
        (Some(100), Some(10)),
        "version 2 is live"
    );
    let first = replay_first_hundred(Some("1")).await.expect("weir replay");
    assert_eq!(
        changed_of(&first),
        (Some(100), Some(0)),
        "version 1, as it ran"
    );
    let unknown = replay_first_hundred(Some("9")).await.expect("weir replay");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no version 9"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
