//! Pushed event schemas (`PUT /v1/schemas/{name}/{version}`, `weir schemas push`): checked
//! against stored events before they are stored, kept in the state store's catalog, enforced
//! at ingest, and seen by every node.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{engine_on, function_dir};
use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::engine::Engine;

fn signup_fn() -> common::FnDir {
    let def = json!({"id": "typed", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    function_dir(&def, &[("s", "cat > /dev/null\necho '{}'")])
}

/// A schema of `user/signed.up` whose `data` requires `plan` (pro or team), and `seats`
/// too when `seats` is true.
fn plan_schema(seats: bool) -> Value {
    let mut required = vec!["plan"];
    if seats {
        required.push("seats");
    }
    json!({"type": "object", "properties": {"data": {
        "type": "object", "required": required,
        "properties": {"plan": {"enum": ["pro", "team"]}, "seats": {"type": "integer"}}
    }}})
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body.to_string()))
            .await
    }

    async fn event(&self, event: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, "/e/key", Some(event.to_string()))
            .await
    }

    async fn listed(&self) -> Vec<(String, String, String)> {
        let (status, body) = self.send(reqwest::Method::GET, "/v1/schemas", None).await;
        assert_eq!(status, 200, "{body}");
        body["schemas"]
            .as_array()
            .expect("schemas")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().expect("a string").to_owned(),
                    s["version"].as_str().expect("a string").to_owned(),
                    s["source"].as_str().expect("a string").to_owned(),
                )
            })
            .collect()
    }
}

async fn api_on(state_url: &str) -> (Api, Engine, common::FnDir, weir::core::engine::EngineHandle) {
    let f = signup_fn();
    let (engine, handle) = engine_on(&f.dir, state_url).await;
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let api = Api {
        base,
        client: reqwest::Client::new(),
    };
    (api, engine, f, handle)
}

/// The event ids and pointers of a push answer's breakages, sorted.
fn breakages(body: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = body["breakages"]
        .as_array()
        .expect("breakages")
        .iter()
        .map(|b| {
            (
                b["event_id"].as_str().expect("a string").to_owned(),
                b["pointer"].as_str().expect("a string").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// A push is checked against the newest stored events of its name and refused (409, the
/// breakages listed, nothing stored) when some break it, unless forced; once stored it is
/// enforced at ingest; the same schema again changes nothing, another one under the same
/// version conflicts; invalid documents are refused with their problems; a delete lifts it.
async fn a_pushed_schema_is_checked_stored_enforced_and_deleted(state_url: &str) {
    let (api, engine, _f, _handle) = api_on(state_url).await;
    // Explicit, increasing times: the newest is `no-plan` (what `check=1` reads).
    for (id, ts, data) in [
        ("ok-1", 1_000, json!({"plan": "pro"})),
        ("bad-plan", 2_000, json!({"plan": "free"})),
        ("no-plan", 3_000, json!({})),
    ] {
        let (status, body) = api
            .event(json!({"name": "user/signed.up", "id": id, "ts": ts, "data": data}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = api.event(json!({"name": "other", "id": "other-1"})).await;
    assert_eq!(status, 200);
    let v1 = json!({"name": "user/signed.up", "version": "1", "schema": plan_schema(false)});
    let path = "/v1/schemas/user%2Fsigned.up/1";

    let (status, body) = api.put(path, &v1).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (body["checked"].as_u64(), body["broken"].as_u64()),
        (Some(3), Some(2)),
        "{body}"
    );
    assert_eq!(
        breakages(&body),
        [
            ("bad-plan".to_owned(), "/data/plan".to_owned()),
            ("no-plan".to_owned(), "/data".to_owned())
        ],
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .expect("a string")
            .contains("nothing stored"),
        "{body}"
    );
    assert!(
        api.listed().await.is_empty(),
        "a refused push stores nothing"
    );
    let catalog = engine.state().catalog().expect("catalog");
    assert!(catalog.list_schemas().await.expect("list").is_empty());

    let (status, body) = api.put(&format!("{path}?check=1"), &v1).await;
    assert_eq!(
        (status, body["checked"].as_u64()),
        (409, Some(1)),
        "the newest event only: {body}"
    );
    assert_eq!(
        breakages(&body),
        [("no-plan".to_owned(), "/data".to_owned())],
        "the newest by ts: {body}"
    );
    let (status, body) = api.put(&format!("{path}?force=true"), &v1).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stored"], "created");
    assert_eq!(body["broken"], 2, "a forced push still reports: {body}");
    assert_eq!(
        api.listed().await,
        [("user/signed.up".into(), "1".into(), "pushed".into())]
    );

    let (status, body) = api
        .event(json!({"name": "user/signed.up", "id": "late-bad", "data": {"plan": "free"}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["violations"][0]["pointer"], "/data/plan");
    assert!(
        engine
            .events()
            .get("late-bad")
            .await
            .expect("get")
            .is_none()
    );

    // The same schema, keys in another order: unchanged; another one: a conflict.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"schema": {}, "version": "1", "name": "user/signed.up"}}"#,
        plan_schema(false)
    ))
    .expect("JSON");
    let (status, body) = api.put(path, &reordered).await;
    assert_eq!(
        (status, body["stored"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    let other = json!({"schema": {"type": "object"}});
    let (status, body) = api.put(&format!("{path}?force=true"), &other).await;
    assert_eq!(status, 409, "force does not replace: {body}");
    assert!(
        body["error"]
            .as_str()
            .expect("a string")
            .contains("another schema"),
        "{body}"
    );
    let (status, body) = api.send(reqwest::Method::GET, path, None).await;
    assert_eq!(
        (status, &body["schema"]),
        (200, &plan_schema(false)),
        "unchanged by the conflict"
    );
    let (status, body) = api.put(&format!("{path}?replace=true"), &other).await;
    assert_eq!(
        (status, body["stored"].as_str()),
        (200, Some("replaced")),
        "{body}"
    );
    let (status, body) = api
        .put(&format!("{path}?replace=true&force=true"), &v1)
        .await;
    assert_eq!(
        (status, body["stored"].as_str()),
        (200, Some("replaced")),
        "back: {body}"
    );

    // Version 2 (requiring seats) judges the events it would meet: those without `v` (it
    // becomes the newest). Events pinned to version 1 keep meeting version 1: not judged.
    for (id, ts, v) in [("with-v1", 4_000, Some("1")), ("without-v", 5_000, None)] {
        let mut event =
            json!({"name": "user/signed.up", "id": id, "ts": ts, "data": {"plan": "pro"}});
        if let Some(v) = v {
            event["v"] = json!(v);
        }
        let (status, body) = api.event(event).await;
        assert_eq!(status, 200, "{body}");
    }
    let v2 = json!({"schema": plan_schema(true)});
    let (status, body) = api.put("/v1/schemas/user%2Fsigned.up/2", &v2).await;
    assert_eq!(status, 409, "{body}");
    let broken: Vec<String> = breakages(&body).into_iter().map(|(id, _)| id).collect();
    assert!(broken.contains(&"without-v".to_owned()), "{body}");
    assert!(
        !broken.contains(&"with-v1".to_owned()),
        "pinned to version 1: {body}"
    );
    // An event whose `v` names no version would be refused once a schema exists: version 3
    // of a name with none yet is checked against it.
    let (status, _) = api
        .event(json!({"name": "fresh", "id": "fresh-v7", "v": "7"}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.put("/v1/schemas/fresh/3", &json!({"schema": {}})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        breakages(&body),
        [("fresh-v7".to_owned(), "/v".to_owned())],
        "{body}"
    );
    // Once the name has a schema, ingest refuses unknown `v` itself: the next version does
    // not judge them (or every push would be refused for them).
    let (status, body) = api
        .put("/v1/schemas/fresh/3?force=true", &json!({"schema": {}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.put("/v1/schemas/fresh/4", &json!({"schema": {}})).await;
    assert_eq!((status, body["checked"].as_u64()), (201, Some(0)), "{body}");
    // Version "0" sorts before 1: it judges only events of its own `v`, none here.
    let (status, body) = api.put("/v1/schemas/user%2Fsigned.up/0", &v2).await;
    assert_eq!(
        (status, body["checked"].as_u64()),
        (201, Some(0)),
        "no event has v 0: {body}"
    );
    let (status, body) = api
        .event(json!({"name": "user/signed.up", "v": "0", "data": {"plan": "pro"}}))
        .await;
    assert_eq!(status, 400, "version 0 requires seats: {body}");

    // Bad documents: not JSON Schema, another name than the path's, not JSON at all.
    let (status, body) = api
        .put("/v1/schemas/x/1", &json!({"schema": {"type": 12}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["problems"][0]["path"]
            .as_str()
            .expect("a string")
            .starts_with("schema"),
        "{body}"
    );
    let (status, body) = api
        .put("/v1/schemas/x/1", &json!({"name": "y", "schema": {}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("a string")
            .contains("the path"),
        "{body}"
    );
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            "/v1/schemas/x/1",
            Some("{\"schema\":".into()),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.put("/v1/schemas/x/1", &json!({"type": "object"})).await;
    assert_eq!(status, 400, "a bare JSON Schema is not a document: {body}");
    assert_eq!(api.listed().await.len(), 4, "no bad document stored");

    // Deleted: the events it refused pass again.
    let (status, body) = api.send(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api.send(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 404);
    // Version 1 is gone: an event pinned to it names an unknown version now.
    let (status, body) = api
        .event(json!({"name": "user/signed.up", "data": {"plan": "free"}, "v": "1"}))
        .await;
    assert_eq!(status, 400, "version 1 is unknown now: {body}");
    assert_eq!(body["violations"][0]["pointer"], "/v");
    let (status, body) = api
        .send(
            reqwest::Method::DELETE,
            "/v1/schemas/user%2Fsigned.up/0",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .event(json!({"name": "user/signed.up", "data": {"plan": "free"}, "v": "1"}))
        .await;
    assert_eq!(status, 200, "no schema left: {body}");
}

on_every_state!(a_pushed_schema_is_checked_stored_enforced_and_deleted);

/// A schema file of a node and a pushed schema of the same version: the pushed one applies
/// (the file is named in a warning); files of other versions apply beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_schema_outranks_a_file_of_its_version() {
    let (api, engine, f, _handle) = api_on("memory://").await;
    std::fs::create_dir(f.dir.join("schemas")).expect("mkdir");
    for (version, schema) in [("1", json!({"type": "object"})), ("2", plan_schema(true))] {
        let doc = json!({"name": "user/signed.up", "version": version, "schema": schema});
        std::fs::write(
            f.dir.join(format!("schemas/v{version}.json")),
            doc.to_string(),
        )
        .expect("write");
    }
    let loaded = weir::functions::load_into(&engine, &f.dir).await;
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let (status, body) = api
        .put(
            "/v1/schemas/user%2Fsigned.up/1?force=true",
            &json!({"schema": plan_schema(false)}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut listed = api.listed().await;
    listed.sort();
    assert_eq!(listed[0].2, "pushed", "{listed:?}");
    assert!(listed[1].2.ends_with("v2.json"), "{listed:?}");
    let (status, body) = api
        .event(json!({"name": "user/signed.up", "v": "1", "data": {"plan": "free"}}))
        .await;
    assert_eq!(
        status, 400,
        "the pushed version 1 applies, not the file's: {body}"
    );
    // Reloading the files keeps the pushed one on top.
    weir::functions::load_into(&engine, &f.dir).await;
    let (status, _) = api
        .event(json!({"name": "user/signed.up", "v": "1", "data": {"plan": "free"}}))
        .await;
    assert_eq!(status, 400);
}

fn weir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.env_remove("WEIR_URL").env_remove("WEIR_API_KEY");
    command
}

/// Two `weir serve` nodes on one Redis: a schema pushed to one with `weir schemas push` is
/// enforced by the other within its catalog poll; `weir schemas delete` lifts it on both.
#[test]
#[cfg(feature = "state-redis")]
fn a_schema_pushed_to_one_node_is_enforced_by_the_other() {
    let Some(state) = common::redis_state_url() else {
        return;
    };
    let f = signup_fn();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = [common::free_port(), common::free_port()];
    let _nodes: Vec<common::Node> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            common::start_node(
                &f.dir,
                &state,
                "memory://",
                *port,
                &tmp.path().join(format!("node{i}.log")),
            )
        })
        .collect();
    let [a, b] = ports.map(|p| format!("http://127.0.0.1:{p}"));
    let schema_file = tmp.path().join("plan.json");
    std::fs::write(&schema_file, plan_schema(false).to_string()).expect("write");

    let pushed = weir()
        .args(["schemas", "push", "user/signed.up", "--version", "1"])
        .arg(&schema_file)
        .args(["--url", &a])
        .output()
        .expect("weir schemas push");
    let stdout = String::from_utf8_lossy(&pushed.stdout);
    assert!(
        pushed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(
        stdout.contains("version 1 of user/signed.up: created"),
        "{stdout}"
    );

    let bad = json!({"name": "user/signed.up", "data": {"plan": "free"}}).to_string();
    let post = |base: &str| {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "content-type: application/json",
                "-d",
                &bad,
            ])
            .arg(format!("{base}/e/crash-key"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(post(&a), "400", "the node pushed to enforces it at once");
    let start = Instant::now();
    while post(&b) != "400" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node b never enforced the schema"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let listed = weir()
        .args(["schemas", "list", "--json", "--url", &b])
        .output()
        .expect("weir schemas list");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["schemas"][0]["source"], "pushed", "{listed}");

    // The same file again: unchanged. A conflicting one: exit 1, the reason printed.
    let again = weir()
        .args(["schemas", "push", "user/signed.up", "--version", "1"])
        .arg(&schema_file)
        .args(["--url", &b])
        .output()
        .expect("push");
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"));
    let other_file = tmp.path().join("other.json");
    std::fs::write(
        &other_file,
        json!({"name": "user/signed.up", "version": "1", "schema": {}}).to_string(),
    )
    .expect("write");
    let conflict = weir()
        .args(["schemas", "push"])
        .arg(&other_file)
        .args(["--url", &b])
        .output()
        .expect("push");
    assert_eq!(conflict.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("error 409"),
        "{conflict:?}"
    );

    let deleted = weir()
        .args(["schemas", "delete", "user/signed.up", "1", "--url", &b])
        .output()
        .expect("delete");
    assert!(deleted.status.success(), "{deleted:?}");
    let start = Instant::now();
    while post(&a) != "200" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node a never dropped the schema"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `weir schemas push` refuses, before calling anyone, a file without the name or version it
/// needs, a file that is not JSON, and a file that disagrees with the command line.
#[test]
fn push_refuses_incomplete_documents_before_sending() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bare = tmp.path().join("bare.json");
    std::fs::write(&bare, r#"{"type": "object"}"#).expect("write");
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, r#"{"type": "#).expect("write");
    let named = tmp.path().join("named.json");
    std::fs::write(&named, r#"{"name": "a", "version": "1", "schema": {}}"#).expect("write");
    // Nothing listens on this port: an attempt to send would fail with another message.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    for (args, needle) in [
        (
            vec!["a".to_owned(), bare.display().to_string()],
            "gives no version: pass --version",
        ),
        (
            vec![bare.display().to_string(), "--version".into(), "1".into()],
            "gives no name: pass NAME",
        ),
        (
            vec![
                "a".to_owned(),
                broken.display().to_string(),
                "--version".into(),
                "1".into(),
            ],
            "malformed JSON",
        ),
        (
            vec!["b".to_owned(), named.display().to_string()],
            "its name is \"a\", the command line says \"b\"",
        ),
    ] {
        let output = weir()
            .args(["schemas", "push"])
            .args(&args)
            .args(["--url", &url])
            .output()
            .expect("push");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
