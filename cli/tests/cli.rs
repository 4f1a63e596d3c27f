//! The `weir` binary: run, validate, init, and the dev server with send / runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env_remove("WEIR_URL").env_remove("WEIR_EVENT_KEY");
    c
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
}

#[test]
fn run_prints_both_step_outputs_of_the_signup_example() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let out = weir()
        .current_dir(repo())
        .env("WEIR_OUTBOX", outbox.path())
        .args([
            "run",
            "examples/signup",
            "--event",
            "examples/signup/event.json",
        ])
        .output()
        .expect("weir run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("step-1: completed"), "{stdout}");
    assert!(stdout.contains(r#""to":"+15555550142""#), "{stdout}");
    assert!(stdout.contains("step-2: completed"), "{stdout}");
    assert!(
        stdout.contains(r#""contact":"ada@example.com""#),
        "{stdout}"
    );
    let sms =
        std::fs::read_to_string(outbox.path().join("sms.log")).expect("the SMS step really ran");
    assert!(sms.contains("+15555550142"));
}

#[test]
fn run_json_has_the_documented_shape_and_exit_code_follows_the_run() {
    let outbox = tempfile::tempdir().expect("tempdir");
    let out = weir()
        .current_dir(repo())
        .env("WEIR_OUTBOX", outbox.path())
        .args(["run", "examples/signup", "--event", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let event =
                r#"{"name":"user/signed.up","user":{"email":"x@y","created_at":"2023-01-01"}}"#;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(event.as_bytes())?;
            child.wait_with_output()
        })
        .expect("weir run");
    // No phone: step-1 answers status 422 → the run fails, step-2 is skipped, exit non-zero.
    assert!(!out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["status"], "failed");
    assert!(doc["run_id"].is_string());
    assert_eq!(doc["steps"]["step-1"]["status"], "failed");
    assert_eq!(doc["steps"]["step-1"]["attempts"], 1);
    assert_eq!(doc["steps"]["step-1"]["output"]["status"], 422);
    assert_eq!(doc["steps"]["step-2"]["status"], "skipped");
}

#[test]
fn validate_reports_every_error_with_file_and_json_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("broken");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let def = r#"{
      "id": "broken",
      "triggers": [{"event": "a/b", "expression": "user.created_at >"}],
      "steps": {
        "a": {"path": "/bin/true", "after": [{"step": "c"}]},
        "b": {"path": "/bin/true", "after": [{"step": "a"}, {"step": "step-9"}], "timeout": "soon"},
        "c": {"path": "/bin/true", "after": [{"step": "b"}]}
      }
    }"#;
    std::fs::write(dir.join("weir.json"), def).expect("write");
    let out = weir()
        .args(["validate"])
        .arg(&dir)
        .output()
        .expect("weir validate");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let file = dir.join("weir.json");
    let file = file.display();
    for expected in [
        format!("{file}: triggers[0].expression: invalid CEL expression"),
        format!("{file}: steps.b.after[1].step: no step \"step-9\""),
        format!("{file}: steps.b.timeout: invalid duration \"soon\""),
        format!("{file}: steps: the steps form a cycle: "),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        text.contains("a → b → c → a")
            || text.contains("b → c → a → b")
            || text.contains("c → a → b → c"),
        "{text}"
    );
    let json_out = weir()
        .args(["validate", "--json"])
        .arg(&dir)
        .output()
        .expect("weir validate --json");
    let errors: Value = serde_json::from_slice(&json_out.stdout).expect("JSON");
    assert_eq!(errors.as_array().map(Vec::len), Some(4), "{errors}");
}

#[test]
fn validate_explains_unsupported_fields_and_missing_runtimes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("f");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let def = r#"{"id": "f", "triggers": [{"event": "a"}, {"cron": "61 12 * * *"}, {"cron": "TZ=Europe/Paris 0 12 * * *"}],
      "concurrency": [{"limit": 10}],
      "steps": {"s": {"path": "file://./x", "runtime": {"type": "docker"},
                      "after": []},
                "t": {"runtime": {"type": "lambda"}, "after": [{"step": "s", "wait": "'tomorrow'"}]}}}"#;
    std::fs::write(dir.join("weir.json"), def).expect("write");
    let out = weir()
        .args(["validate"])
        .arg(&dir)
        .output()
        .expect("weir validate");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("concurrency: not supported yet"), "{text}");
    assert!(
        text.contains("triggers[1].cron: invalid cron schedule \"61 12 * * *\""),
        "{text}"
    );
    assert!(
        text.contains("triggers[2].cron: time zones are not supported yet"),
        "{text}"
    );
    assert!(
        text.contains(
            "steps.t.after[0].wait: \"'tomorrow'\": \"tomorrow\" is not an RFC 3339 time"
        ),
        "{text}"
    );
    // Where the runtimes are compiled in (--all-features), they are known and load.
    if !cfg!(feature = "driver-docker") {
        assert!(text.contains("steps.s.runtime: runtime \"docker\" is not in this build of weir: it needs the `driver-docker` Cargo feature of weir"), "{text}");
    }
    if !cfg!(feature = "driver-lambda") {
        assert!(text.contains("`driver-lambda` Cargo feature"), "{text}");
    }
}

#[test]
fn validate_points_into_async_and_wait_edges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("waits");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let def = r#"{"id": "waits", "triggers": [{"event": "user/signed.up"}],
      "steps": {
        "a": {"path": "/bin/true"},
        "b": {"path": "/bin/true", "after": [{"step": "a", "async": {"event": "user/activated", "match": "async.user.id ==", "ttl": "2d"}}]},
        "c": {"path": "/bin/true", "after": [{"step": "a", "async": {"event": "user/activated", "match": "async.usr.id == event.user.id", "ttl": "forever"}}]},
        "d": {"path": "/bin/true", "after": [{"step": "a", "async": {"any": [], "ttl": "1h"}}]},
        "e": {"path": "/bin/true", "after": [{"step": "a", "async": {"all": [{"event": "x/y", "match": "steps.a.ok"}], "ttl": "1h", "onTimeout": "yes"}}]},
        "f": {"path": "/bin/true", "after": [{"step": "a", "wait": "event.data.remind_at"}, {"step": "b", "wait": "soon"}]}
      }}"#;
    std::fs::write(dir.join("weir.json"), def).expect("write");
    let out = weir()
        .args(["validate"])
        .arg(&dir)
        .output()
        .expect("weir validate");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let file = dir.join("weir.json");
    let file = file.display();
    for expected in [
        format!("{file}: steps.b.after[0].async.match: invalid CEL expression"),
        format!(
            "{file}: steps.c.after[0].async.match: \"async.usr.id == event.user.id\": unknown event field async.usr"
        ),
        format!("{file}: steps.c.after[0].async.ttl: invalid duration \"forever\""),
        format!("{file}: steps.d.after[0].async.any: must list at least one"),
        format!(
            "{file}: steps.e.after[0].async.all[0].match: \"steps.a.ok\": unknown variable \"steps\""
        ),
        format!("{file}: steps.e.after[0].async.onTimeout: must be true or false"),
        format!("{file}: steps.f.after[1].wait: \"soon\": unknown variable \"soon\""),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("steps.f.after[0]"),
        "an expression reading the event is fine: {text}"
    );
}

/// A deployed Lambda step's runtime and handler follow its directory's layout, as the AWS
/// console makes it: the 2022 function with a Python step directory validates.
#[cfg(feature = "driver-lambda")]
#[test]
fn validate_infers_a_lambda_steps_runtime_from_its_directory() {
    for (file, ok) in [
        ("lambda_function.py", true),
        ("index.mjs", true),
        ("index.js", true),
        ("bootstrap", true),
        ("README.md", false),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("f");
        std::fs::create_dir_all(dir.join("steps/add-to-intercom")).expect("mkdir");
        std::fs::write(dir.join("steps/add-to-intercom").join(file), "x").expect("write");
        let def = r#"{"id": "f", "triggers": [{"event": "user/signed.up"}],
          "steps": {"step-2": {"id": "step-2", "name": "Add user to Intercom",
                               "path": "file://./steps/add-to-intercom",
                               "runtime": {"type": "lambda"}}}}"#;
        std::fs::write(dir.join("weir.json"), def).expect("write");
        let out = weir()
            .args(["validate"])
            .arg(&dir)
            .output()
            .expect("weir validate");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), ok, "{file}: {text}");
        if !ok {
            assert!(
                text.contains("steps.step-2.runtime")
                    && text.contains("`lambda_function.py` (python3.12)"),
                "{text}"
            );
        }
    }
}

#[test]
fn init_scaffolds_a_function_that_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = weir()
        .args(["init", "my-func", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("weir init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.path().join("my-func");
    let out = weir()
        .args(["validate"])
        .arg(&dir)
        .output()
        .expect("validate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = weir()
        .arg("run")
        .arg(&dir)
        .arg("--event")
        .arg(dir.join("event.json"))
        .arg("--json")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["status"], "completed");
    assert_eq!(
        doc["steps"]["goodbye"]["output"]["greeting"],
        "hello from goodbye"
    );
    let again = weir()
        .args(["init", "my-func", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("weir init");
    assert!(!again.status.success(), "init refuses to overwrite");
}

/// Kills the dev server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn dev_server_send_runs_and_reload() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = tmp.path().join("functions");
    std::fs::create_dir_all(&functions).expect("mkdir");
    let init = weir()
        .args(["init", "first", "--dir"])
        .arg(&functions)
        .output()
        .expect("init");
    assert!(init.status.success());
    // A function whose runs wait for an event that never comes (until cancelled).
    let waiter = functions.join("waiter");
    std::fs::create_dir_all(&waiter).expect("mkdir");
    std::fs::write(
        waiter.join("weir.json"),
        r#"{"id": "waiter", "triggers": [{"event": "app/wait"}],
            "steps": {"a": {"path": "/bin/true"},
                      "b": {"path": "/bin/true", "after": [{"step": "a", "async": {"event": "never/comes", "ttl": "1h"}}]}}}"#,
    )
    .expect("write");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Server(
        weir()
            .arg("dev")
            .arg(&functions)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("weir dev"),
    );
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "weir dev did not start listening");

    let sent = weir()
        .args([
            "send",
            "app/first.requested",
            "--data",
            r#"{"a":1}"#,
            "--user",
            r#"{"id":"ann"}"#,
            "--url",
            &url,
        ])
        .output()
        .expect("send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let event_id = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    assert_eq!(event_id.len(), 26, "prints the event id: {event_id:?}");

    let mut runs = Value::Null;
    for _ in 0..100 {
        let out = weir()
            .args(["runs", "--json", "--user", "ann", "--url", &url])
            .output()
            .expect("runs");
        runs = serde_json::from_slice(&out.stdout).expect("JSON");
        if runs[0]["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(runs[0]["event_id"], event_id.as_str(), "{runs}");
    assert_eq!(runs[0]["function_id"], "first");
    assert_eq!(runs[0]["status"], "completed");
    let run_id = runs[0]["id"].as_str().expect("id").to_string();
    let show = weir()
        .args(["runs", "show", &run_id, "--json", "--url", &url])
        .output()
        .expect("show");
    let doc: Value = serde_json::from_slice(&show.stdout).expect("JSON");
    assert_eq!(doc["run_id"], run_id.as_str());
    assert_eq!(doc["steps"]["hello"]["attempts"], 1);
    assert!(doc["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    // A run id is one path segment: `../events` is no run, not another route.
    let escaped = weir()
        .args(["runs", "show", "../events", "--url", &url])
        .output()
        .expect("show");
    assert_eq!(escaped.status.code(), Some(1), "{escaped:?}");
    assert!(
        String::from_utf8_lossy(&escaped.stderr).contains("error 404"),
        "{escaped:?}"
    );
    // `weir runs cancel`: a finished run cannot be; a waiting one is.
    let refused = weir()
        .args(["runs", "cancel", &run_id, "--url", &url])
        .output()
        .expect("cancel");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("error 409"),
        "{refused:?}"
    );
    let sent = weir()
        .args(["send", "app/wait", "--url", &url])
        .output()
        .expect("send");
    assert!(sent.status.success(), "{sent:?}");
    let wait_event_id = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let mut waiting = Value::Null;
    for _ in 0..100 {
        let out = weir()
            .args([
                "runs",
                "--json",
                "--function",
                "waiter",
                "--status",
                "waiting",
                "--url",
                &url,
            ])
            .output()
            .expect("runs");
        waiting = serde_json::from_slice(&out.stdout).expect("JSON");
        if waiting.as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let waiting_id = waiting[0]["id"]
        .as_str()
        .expect("a waiting run")
        .to_string();
    let shown = weir()
        .args(["runs", "show", &waiting_id, "--url", &url])
        .output()
        .expect("show");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("— waiting") && text.contains("a/0 after a waits for never/comes until"),
        "{text}"
    );
    let cancelled = weir()
        .args(["runs", "cancel", &waiting_id, "--url", &url])
        .output()
        .expect("cancel");
    assert!(cancelled.status.success(), "{cancelled:?}");
    let text = String::from_utf8_lossy(&cancelled.stdout);
    assert!(text.contains("— cancelled"), "{text}");
    assert!(
        text.contains("run.cancelled — cancelled by POST /v1/runs/"),
        "{text}"
    );

    // `weir events` lists what the server stored: as a table, and as JSON filtered by name,
    // user and time (an event that happened an hour ago is not in the last 10 minutes).
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 3_600_000;
    let old = format!(r#"{{"name": "app/old", "id": "old-one", "ts": {hour_ago}}}"#);
    assert_eq!(reqwest::blocking_post(&format!("{url}/e/dev"), &old), 200);
    let events = weir()
        .args(["events", "--since", "10m", "--url", &url])
        .output()
        .expect("events");
    assert!(events.status.success(), "{events:?}");
    let table = String::from_utf8_lossy(&events.stdout);
    let row = table
        .lines()
        .find(|l| l.contains(&event_id))
        .unwrap_or_else(|| panic!("the event is listed: {table}"));
    assert!(
        row.contains("app/first.requested") && row.ends_with("ann"),
        "{row}"
    );
    let json_of = |args: &[&str]| -> Value {
        let out = weir()
            .args(["events", "--json", "--url", &url])
            .args(args)
            .output()
            .expect("events");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let mine = json_of(&["--name", "app/first.requested", "--user", "ann"]);
    assert_eq!(mine[0]["id"], event_id.as_str(), "{mine}");
    assert_eq!(mine[0]["data"]["a"], 1);
    assert_eq!(json_of(&["--user", "bob"]), serde_json::json!([]));
    assert_eq!(json_of(&["--name", "app/other"]), serde_json::json!([]));
    assert_eq!(json_of(&["--name", "app/old"])[0]["id"], "old-one");
    // Newest first by `ts` (the old one was stored last): the limit keeps the latest.
    assert_eq!(json_of(&["--limit", "1"])[0]["id"], wait_event_id.as_str());
    assert_eq!(json_of(&["--limit", "1", "--oldest"])[0]["id"], "old-one");
    assert_eq!(
        json_of(&["--name", "app/old", "--since", "10m"]),
        serde_json::json!([])
    );
    assert!(!table.contains("old-one"), "{table}");
    let bad = weir()
        .args(["events", "--since", "soon", "--url", &url])
        .output()
        .expect("events");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));

    // A function added while the server runs is picked up.
    let init = weir()
        .args(["init", "second", "--dir"])
        .arg(&functions)
        .output()
        .expect("init");
    assert!(init.status.success());
    let mut ids = Vec::new();
    for _ in 0..100 {
        let list: Value = reqwest::blocking_get(&format!("{url}/v1/functions"));
        ids = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["id"].as_str().map(str::to_string))
            .collect();
        if ids.len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        ids,
        vec![
            "first".to_string(),
            "second".to_string(),
            "waiter".to_string()
        ],
        "reloaded after a change"
    );

    // SIGTERM stops the server cleanly.
    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = exited.expect("weir dev exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

mod reqwest {
    /// A tiny blocking GET of JSON for the test (no blocking client compiled in).
    pub fn blocking_get(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            ::reqwest::get(url)
                .await
                .expect("get")
                .json()
                .await
                .expect("json")
        })
    }

    /// A tiny blocking POST of a JSON body; the status.
    pub fn blocking_post(url: &str, body: &str) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            ::reqwest::Client::new()
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        })
    }
}

#[test]
fn help_lists_the_drivers_of_this_build_and_what_brings_in_the_others() {
    let out = weir().arg("--help").output().expect("weir --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Drivers in this build:"), "{help}");
    let runtimes = help
        .lines()
        .find(|l| l.trim_start().starts_with("runtimes"))
        .unwrap_or_default();
    assert!(
        runtimes.contains("process") && runtimes.contains("http"),
        "{help}"
    );
    if cfg!(feature = "driver-docker") {
        assert!(runtimes.contains("docker"), "{help}");
    } else {
        assert!(
            help.contains("docker (needs the `driver-docker` Cargo feature of weir)"),
            "{help}"
        );
    }
    let brokers = help
        .lines()
        .find(|l| l.trim_start().starts_with("brokers"))
        .unwrap_or_default();
    assert!(brokers.contains("memory://"), "{help}");
    assert_eq!(
        brokers.contains("kafka://"),
        cfg!(feature = "broker-kafka"),
        "{help}"
    );
}
