//! Deploying versions with `weir deploy`, canaries, promote, rollback, and the automatic
//! rollback of a failing canary, against a server on the embedded default.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::engine::Engine;

/// Writes function `greet` under `root` whose step answers `{"v": N}`, and fails for events
/// with `"odd": true` when `fail_odd`.
fn write_greet(root: &Path, n: u32, fail_odd: bool) -> PathBuf {
    let dir = root.join("greet");
    std::fs::create_dir_all(dir.join("steps")).expect("mkdir");
    let def = json!({"id": "greet", "triggers": [{"event": "user/signed.up"}],
        "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"},
                        "retries": {"attempts": 1}}}});
    std::fs::write(dir.join("weir.json"), def.to_string()).expect("write");
    let fail = if fail_odd {
        "case \"$input\" in *'\"odd\":true'*) exit 1;; esac\n"
    } else {
        ""
    };
    let script = format!("#!/bin/sh\ninput=$(cat)\n{fail}echo '{{\"v\": {n}}}'\n");
    let step = dir.join("steps/s");
    std::fs::write(&step, script).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&step, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn weir(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("WEIR_URL")
        .env_remove("WEIR_API_KEY")
        .output()
        .expect("weir")
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A server whose `greet` is loaded from its files as version 1.
async fn server(tmp: &Path) -> (Engine, weir::core::engine::EngineHandle, String) {
    let v1 = write_greet(&tmp.join("v1"), 1, false);
    let (engine, handle) = common::engine_with(&v1).await;
    let loaded = weir::functions::load_into(&engine, &v1).await;
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    (engine, handle, base)
}

async fn send(base: &str, events: &[Value]) {
    let response = reqwest::Client::new()
        .post(format!("{base}/e/key"))
        .json(&events)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
}

/// The ended runs of `greet`, once at least `n` have ended.
async fn ended_runs(base: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Vec<Value> = reqwest::get(format!("{base}/v1/runs?function=greet&limit=10000"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let ended: Vec<Value> = runs
            .into_iter()
            .filter(|r| r["status"] != "running")
            .collect();
        if ended.len() >= n {
            return ended;
        }
        assert!(Instant::now() < deadline, "only {} runs ended", ended.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn versions(base: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/v1/functions/greet/versions"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// `weir deploy --canary 30` sends about 30% of new runs to version 2; `weir versions`
/// counts them; `weir promote` makes version 2 live; `weir rollback` brings version 1 back;
/// bad requests change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_a_canary_promote_and_roll_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (engine, _handle, base) = server(tmp.path()).await;
    let v2 = write_greet(&tmp.path().join("v2"), 2, false);
    let v2_dir = v2.display().to_string();

    let out = weir(&["deploy", &v2_dir, "--canary", "150", "--url", &base]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = weir(&["promote", "greet", "--url", &base]);
    assert_eq!(out.status.code(), Some(1), "no canary yet: {}", text(&out));
    assert!(
        text(&out).contains("no canary to promote"),
        "{}",
        text(&out)
    );

    // A browser page elsewhere cannot change the server; a deploy is a binary body.
    let client = reqwest::Client::new();
    let cross = client
        .post(format!("{base}/v1/functions/greet/rollback"))
        .header("origin", "http://elsewhere.example")
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status().as_u16(), 403);
    // DNS rebinding: the page's own name pointed at this server, "same-origin" to the browser.
    let port = base.rsplit(':').next().expect("port");
    let rebound = client
        .post(format!("{base}/v1/functions/greet/rollback"))
        .header("host", format!("rebound.example:{port}"))
        .header("origin", format!("http://rebound.example:{port}"))
        .send()
        .await
        .expect("post");
    assert_eq!(rebound.status().as_u16(), 403);
    let as_text = client
        .post(format!("{base}/v1/deploy"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(as_text.status().as_u16(), 415);

    let out = weir(&["deploy", &v2_dir, "--canary", "30", "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("greet: version 2 deployed as a canary"),
        "{}",
        text(&out)
    );
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"name": "user/signed.up", "data": {"i": i}}))
        .collect();
    send(&base, &events).await;
    let ended = ended_runs(&base, 300).await;
    let listed = versions(&base).await;
    let v2_hash = listed[1]["hash"].as_str().expect("hash").to_owned();
    let on_canary = ended
        .iter()
        .filter(|r| r["function_version"] == v2_hash.as_str())
        .count();
    for run in &ended {
        let expected = if run["function_version"] == v2_hash.as_str() {
            2
        } else {
            1
        };
        assert_eq!(run["fn_version"], expected, "{run}");
    }
    assert!(
        (60..=120).contains(&on_canary),
        "30% of 300 runs on the canary, give or take: {on_canary}"
    );

    // The lifetime counts reach the catalog within a second or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = versions(&base).await;
        let runs: u64 = listed.iter().map(|v| v["runs"].as_u64().unwrap_or(0)).sum();
        if runs == 300 {
            assert_eq!(listed[0]["status"], "live");
            assert_eq!(listed[1]["status"], "canary");
            assert_eq!(listed[1]["percent"], 30);
            assert_eq!(listed[1]["runs"], on_canary as u64);
            assert_eq!(listed[1]["failed"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts never reached 300: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = weir(&["versions", "greet", "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("canary 30%"), "{}", text(&out));

    let out = weir(&["promote", "greet", "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "greet: version 2 live"
    );
    assert_eq!(
        engine.functions().live("greet").expect("live").version,
        v2_hash
    );

    let out = weir(&["rollback", "greet", "--to", "9", "--url", &base]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("has no version 9"), "{}", text(&out));
    let out = weir(&["rollback", "greet", "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "greet: version 1 live",
        "the number comes back"
    );
    let json_out = weir(&["versions", "greet", "--json", "--url", &base]);
    let listed: Value = serde_json::from_slice(&json_out.stdout).expect("json");
    let statuses: Vec<(u64, &str)> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().expect("n"),
                v["status"].as_str().expect("s"),
            )
        })
        .collect();
    assert_eq!(statuses, [(1, "live"), (2, "retired")]);

    // The same files again: stored before, made live again without a new number.
    let out = weir(&["deploy", &v2_dir, "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("version 2 deployed, live (stored before)"),
        "{}",
        text(&out)
    );
}

/// A canary that fails half its runs is rolled back automatically after its 20th run; no
/// run starts on it after that, and `weir versions` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_automatically() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (engine, _handle, base) = server(tmp.path()).await;
    let v2 = write_greet(&tmp.path().join("v2"), 2, true);
    let out = weir(&[
        "deploy",
        &v2.display().to_string(),
        "--canary",
        "50",
        "--url",
        &base,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v2_hash = versions(&base).await[1]["hash"]
        .as_str()
        .expect("hash")
        .to_owned();

    // Batches until the canary is judged.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    loop {
        let listed = versions(&base).await;
        if listed[1]["status"] == "retired" {
            let note = listed[0]["note"]
                .as_str()
                .expect("a note on the live version");
            assert!(note.contains("rolled back automatically"), "{note}");
            assert!(
                listed[1]["runs"].as_u64().expect("runs") >= 20,
                "{listed:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never rolled back: {listed:?}");
        let batch: Vec<Value> = (0..20)
            .map(|i| json!({"name": "user/signed.up", "data": {"odd": i % 2 == 1}}))
            .collect();
        send(&base, &batch).await;
        sent += 20;
        ended_runs(&base, sent).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once this node routes no run to the canary, every run created starts on version 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.functions().canary("greet").is_some() {
        assert!(
            Instant::now() < deadline,
            "the rollback was not applied here"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rolled_back_at = weir::core::event::now_ms();
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"name": "user/signed.up", "data": {"odd": i % 2 == 1}}))
        .collect();
    send(&base, &batch).await;
    let ended = ended_runs(&base, sent + 50).await;
    let after: Vec<&Value> = ended
        .iter()
        .filter(|r| r["created_at"].as_i64().expect("created_at") >= rolled_back_at)
        .collect();
    assert_eq!(after.len(), 50, "the runs of the last batch");
    assert!(
        after
            .iter()
            .all(|r| r["function_version"] != v2_hash.as_str()),
        "no run starts on the rolled-back canary"
    );
    let out = weir(&["versions", "greet", "--url", &base]);
    assert!(
        text(&out).contains("rolled back automatically"),
        "{}",
        text(&out)
    );
}

/// `weir dev` reloading its folder does not undo a deployed version unless a file there
/// changed: a reload with the same files leaves version 2 live; an edit makes version 3 live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_deployed_version_until_a_file_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (engine, _handle, base) = server(tmp.path()).await;
    let v1_dir = tmp.path().join("v1/greet");
    let v2 = write_greet(&tmp.path().join("v2"), 2, false);
    let out = weir(&["deploy", &v2.display().to_string(), "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    let live = |engine: &Engine| {
        engine
            .functions()
            .live("greet")
            .expect("live")
            .version
            .clone()
    };
    let v2_hash = live(&engine);
    weir::functions::load_into(&engine, &v1_dir).await;
    assert_eq!(
        live(&engine),
        v2_hash,
        "the same files again: the deploy stands"
    );
    write_greet(&tmp.path().join("v1"), 3, false);
    weir::functions::load_into(&engine, &v1_dir).await;
    assert_ne!(
        live(&engine),
        v2_hash,
        "an edited file: its version is live"
    );
    let listed = versions(&base).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["status"], "live");
}

/// A canary needs a live version to run beside: a first deploy with `--canary` is refused and
/// routes nothing; without it, it goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deploy_cannot_be_a_canary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let v1 = write_greet(&tmp.path().join("v1"), 1, false);
    let (_engine, _handle) = common::engine_with(&v1).await;
    let base = common::serve_api(_engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let dir = v1.display().to_string();
    let out = weir(&["deploy", &dir, "--canary", "0", "--url", &base]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no live version for a canary"),
        "{}",
        text(&out)
    );
    let out = weir(&["deploy", &dir, "--json", "--url", &base]);
    assert!(out.status.success(), "{}", text(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["deployed"][0]["status"], "live");
    assert_eq!(
        answer["deployed"][0]["served"], false,
        "this server loaded greet without the catalog: it does not serve it"
    );
}
