//! The HTTP API over a real listener: events in, bad input rejected with nothing left behind,
//! runs and functions listed.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{engine_with, function_dir};
use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::engine::Engine;
use weir::core::events::EventFilter;

async fn serve(engine: Engine, keys: EventKeys) -> String {
    common::serve_api(engine, keys, EventKeys::Any).await
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn stored(engine: &Engine) -> usize {
    engine
        .events()
        .scan(&EventFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .expect("scan")
        .len()
}

fn signup_fn() -> common::FnDir {
    let def = json!({"id": "greet", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"hello": {"path": "file://./steps/hello", "runtime": {"type": "process"}}}});
    function_dir(&def, &[("hello", r#"echo '{"hi": true}'"#)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_runs_out() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), EventKeys::Any).await;
    let (status, body) = post(
        &format!("{base}/e/any-key"),
        r#"{"name":"user/signed.up","user":{"id":"u7"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    let id = body["ids"][0].as_str().expect("an id").to_string();
    let (status, batch) = post(
        &format!("{base}/e/k"),
        r#"[{"name":"user/signed.up"},{"name":"user/signed.up","id":"mine"}]"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(batch["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(batch["ids"][1], "mine");

    // The run shows up in /v1/runs (filtered by user) and /v1/runs/{id} with its steps.
    let mut runs = Value::Null;
    for _ in 0..200 {
        runs = reqwest::get(format!("{base}/v1/runs?user=u7"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if runs
            .as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["status"] == "completed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let run = &runs[0];
    assert_eq!(run["event_id"], id.as_str());
    assert_eq!(run["function_id"], "greet");
    assert_eq!(run["status"], "completed");
    let detail: Value = reqwest::get(format!(
        "{base}/v1/runs/{}",
        run["id"].as_str().expect("id")
    ))
    .await
    .expect("get")
    .json()
    .await
    .expect("json");
    assert_eq!(detail["steps"]["hello"]["output"], json!({"hi": true}));
    assert_eq!(detail["steps"]["hello"]["attempts"], 1);
    assert!(
        detail["timeline"].as_array().is_some_and(|t| t.len() >= 4),
        "{detail}"
    );
    let missing = reqwest::get(format!("{base}/v1/runs/nope"))
        .await
        .expect("get");
    assert_eq!(missing.status().as_u16(), 404);

    let functions: Value = reqwest::get(format!("{base}/v1/functions"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(functions[0]["id"], "greet");
    let events: Value = reqwest::get(format!("{base}/v1/events?name=user/signed.up"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(events.as_array().map(Vec::len), Some(3));
    let health = reqwest::get(format!("{base}/health")).await.expect("get");
    assert_eq!(health.status().as_u16(), 200);
    let page = reqwest::get(format!("{base}/"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("<title>weir</title>") && page.contains("/ui/app.js"),
        "the dashboard is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_and_leaves_nothing_behind() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), EventKeys::Any).await;
    let url = format!("{base}/e/k");

    let (status, body) = post(&url, "{\"name\": \"a\",\n \"data\": {oops}}").await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().expect("message");
    assert!(msg.contains("malformed JSON at line 2, column"), "{msg}");

    let (status, body) = post(&url, r#"{"data": {}}"#).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("missing event \"name\"")
    );

    // A batch with one bad event stores none of them.
    let (status, body) = post(&url, r#"[{"name":"user/signed.up"},{"nmae":"x"}]"#).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .starts_with("[1]: "),
        "{body}"
    );

    let big_event = format!(
        r#"{{"name":"user/signed.up","data":{{"blob":"{}"}}}}"#,
        "x".repeat(600 * 1024)
    );
    let (status, body) = post(&url, big_event).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("message")
            .contains("limit is 524288"),
        "{body}"
    );

    let chunk = format!(
        r#"{{"name":"user/signed.up","data":{{"blob":"{}"}}}}"#,
        "x".repeat(400 * 1024)
    );
    let huge_batch = format!("[{}]", vec![chunk; 8].join(","));
    let (status, _) = post(&url, huge_batch).await;
    assert_eq!(status, 413, "over 3 MiB per request");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stored(&engine).await, 0, "nothing stored");
    let runs = engine
        .state()
        .list_runs(&Default::default())
        .await
        .expect("list");
    assert!(runs.is_empty(), "no run started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_event_keys_reject_unknown_keys_with_401() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let keys = EventKeys::Only(Arc::new(HashSet::from(["secret-key".to_string()])));
    let base = serve(engine.clone(), keys).await;
    let (status, _) = post(&format!("{base}/e/wrong"), r#"{"name":"user/signed.up"}"#).await;
    assert_eq!(status, 401);
    assert_eq!(stored(&engine).await, 0);
    let (status, _) = post(
        &format!("{base}/e/secret-key"),
        r#"{"name":"user/signed.up"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stored(&engine).await, 1);
}

/// Every error is JSON, including those of routing and of the path and query string, and a
/// body that breaks off before its declared length is a 400, not a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_and_request_errors_are_json() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), EventKeys::Any).await;
    let client = reqwest::Client::new();
    for (method, path, status, says) in [
        ("GET", "/v1/runs?limit=abc", 400, "limit"),
        ("GET", "/v1/runs?limit=-1", 400, "limit"),
        ("GET", "/v1/events?from=yesterday", 400, "from"),
        ("GET", "/v1/runs/%ff", 400, "UTF-8"),
        ("POST", "/e/%ff", 400, "UTF-8"),
        ("GET", "/nope", 404, "no such endpoint: GET /nope"),
        ("GET", "/e/k", 405, "GET is not allowed on /e/k"),
        ("DELETE", "/v1/runs", 405, "DELETE is not allowed"),
    ] {
        let r = client
            .request(method.parse().expect("method"), format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {body}");
        assert_eq!(body["status"], status, "{method} {path}: {body}");
    }

    // Content-Length 100, 8 bytes sent, then the client stops sending.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(b"POST /e/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"name\":")
        .await
        .expect("write");
    socket.shutdown().await.expect("shutdown");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_string(&mut reply))
        .await
        .expect("answered at once")
        .expect("read");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("broke off"), "{reply}");
    assert_eq!(stored(&engine).await, 0);
}

/// The `/v1` API behind API keys: the scheme name is read in any case, a missing or other
/// scheme and a wrong key are 401s that say which, and events keep their own keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_read_from_bearer_authorization_in_any_case() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let api_keys = weir::api::ApiKeys::Only(Arc::new(HashSet::from(["k-api".to_string()])));
    let app = weir::api::secured_router(engine.clone(), EventKeys::Any, api_keys);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    for (authorization, status, says) in [
        (None, 401, "needs an API key"),
        (Some("Basic azphcGk="), 401, "needs an API key"),
        (Some("Bearer wrong"), 401, "unknown API key"),
        (Some("Bearer k-api"), 200, ""),
        (Some("bearer k-api"), 200, ""),
        (Some("BEARER  k-api "), 200, ""),
    ] {
        let mut request = client.get(format!("http://{addr}/v1/runs"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let r = request.send().await.expect("send");
        assert_eq!(r.status().as_u16(), status, "{authorization:?}");
        let body: Value = r.json().await.expect("json");
        if status == 401 {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(says), "{authorization:?}: {body}");
        } else {
            assert!(body.is_array(), "{body}");
        }
    }
    let head = client
        .head(format!("http://{addr}/v1/runs"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status().as_u16(), 401, "HEAD is guarded too");
    let (status, _) = post(
        &format!("http://{addr}/e/any"),
        r#"{"name":"user/signed.up"}"#,
    )
    .await;
    assert_eq!(status, 200, "events need no API key");
}

/// Event schemas in the functions' `schemas/` folder are enforced at ingest: a request with an
/// event that breaks its schema is answered 400 with every violation (position in the batch,
/// JSON pointer, message) and stores none of its events; an unknown `v` is a violation at
/// `/v`; a matching event is accepted.
#[tokio::test]
async fn events_that_break_their_schema_are_refused_whole_with_every_violation() {
    let def = json!({"id": "typed", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = function_dir(&def, &[("s", "cat > /dev/null\necho '{}'")]);
    std::fs::create_dir(f.dir.join("schemas")).expect("mkdir");
    let schema = json!({"name": "user/signed.up", "version": "1", "schema": {
        "type": "object",
        "properties": {"data": {"type": "object", "required": ["plan"], "properties": {
            "plan": {"enum": ["pro", "team"]},
            "seats": {"type": "integer", "minimum": 1}
        }}}
    }});
    std::fs::write(f.dir.join("schemas/signed-up.json"), schema.to_string()).expect("write");
    let (engine, _handle) = engine_with(&f.dir).await;
    let loaded = weir::functions::load_into(&engine, &f.dir).await;
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(engine.event_schemas().versions("user/signed.up"), ["1"]);
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let client = client.clone();
        let url = format!("{base}/e/key");
        async move {
            let response = client.post(url).json(&body).send().await.expect("post");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };

    let (status, body) = post(json!([
        {"name": "user/signed.up", "id": "typed-good", "data": {"plan": "pro", "seats": 2}},
        {"name": "user/signed.up", "id": "typed-bad", "data": {"plan": "free", "seats": 0}}
    ]))
    .await;
    assert_eq!(status, 400, "{body}");
    let violations = body["violations"].as_array().expect("violations");
    let mut found: Vec<(u64, &str)> = violations
        .iter()
        .map(|v| (v["index"].as_u64().unwrap(), v["pointer"].as_str().unwrap()))
        .collect();
    found.sort();
    assert_eq!(found, [(1, "/data/plan"), (1, "/data/seats")], "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("2 schema violation(s), nothing stored: [1] /data/"),
        "{body}"
    );
    assert_eq!(
        error.matches("/data/plan").count(),
        1,
        "listed once: {body}"
    );
    for id in ["typed-good", "typed-bad"] {
        assert!(
            engine.events().get(id).await.expect("get").is_none(),
            "{id} was stored although its request was refused"
        );
    }

    let (status, body) =
        post(json!({"name": "user/signed.up", "v": "9", "data": {"plan": "pro"}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["violations"][0]["pointer"], "/v", "{body}");

    let (status, body) =
        post(json!({"name": "user/signed.up", "id": "typed-ok", "data": {"plan": "team"}})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        engine
            .events()
            .get("typed-ok")
            .await
            .expect("get")
            .is_some()
    );
    // The schemas in use, listed and shown.
    let listed: Value = client
        .get(format!("{base}/v1/schemas"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["strict"], false);
    assert_eq!(listed["schemas"][0]["name"], "user/signed.up", "{listed}");
    assert_eq!(listed["schemas"][0]["version"], "1");
    assert_eq!(listed["schemas"][0]["newest"], true);
    let shown: Value = client
        .get(format!("{base}/v1/schemas/user%2Fsigned.up/1"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["schema"], schema["schema"], "{shown}");
    let missing = client
        .get(format!("{base}/v1/schemas/user%2Fsigned.up/2"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status().as_u16(), 404);
}

/// Strict events: an event whose name has no schema is refused (a violation at `/name`);
/// one whose name has a schema is checked as usual.
#[tokio::test]
async fn strict_events_refuse_names_without_a_schema() {
    let def = json!({"id": "strict", "triggers": [{"event": "user/signed.up"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = function_dir(&def, &[("s", "cat > /dev/null\necho '{}'")]);
    std::fs::create_dir(f.dir.join("schemas")).expect("mkdir");
    let schema = json!({"name": "user/signed.up", "version": "1", "schema": {"type": "object"}});
    std::fs::write(f.dir.join("schemas/signed-up.json"), schema.to_string()).expect("write");
    let config = weir::core::engine::EngineConfig {
        strict_events: true,
        ..common::fast_config()
    };
    let (engine, _handle) =
        common::engine_configured(&f.dir, "memory://", "memory://", config).await;
    weir::functions::load_into(&engine, &f.dir).await;
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/e/key"))
        .json(&json!({"name": "order/placed", "id": "strict-no-schema"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["violations"][0]["pointer"], "/name", "{body}");
    assert!(
        engine
            .events()
            .get("strict-no-schema")
            .await
            .expect("get")
            .is_none()
    );
    let response = client
        .post(format!("{base}/e/key"))
        .json(&json!({"name": "user/signed.up", "id": "strict-ok"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
}

/// `GET /v1/runs` pages by cursor (`x-next-before` on a full page, `?before=` for the next):
/// every run once, newest first; `GET /v1/runs/counts` counts them by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_paged_by_cursor_and_counted_by_status() {
    let f = signup_fn();
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), EventKeys::Any).await;
    let batch: Vec<Value> = (0..7)
        .map(|i| json!({"name": "user/signed.up", "user": {"id": format!("u{}", i % 2)}}))
        .collect();
    let (status, _) = post(&format!("{base}/e/k"), json!(batch).to_string()).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts: Value = reqwest::get(format!("{base}/v1/runs/counts?function=greet"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if counts["completed"] == 7 {
            assert_eq!(
                counts,
                json!({"running": 0, "completed": 7, "failed": 0, "cancelled": 0, "capped": false})
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user_counts: Value = reqwest::get(format!("{base}/v1/runs/counts?user=u1"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(user_counts["completed"], 3, "u1 sent events 1, 3 and 5");

    let mut listed: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    for want in [3, 3, 1] {
        let mut url = format!("{base}/v1/runs?function=greet&limit=3");
        if let Some(cursor) = &before {
            url.push_str(&format!("&before={cursor}"));
        }
        let answer = reqwest::get(url).await.expect("get");
        let next = answer
            .headers()
            .get("x-next-before")
            .map(|v| v.to_str().expect("text").to_string());
        let page: Vec<Value> = answer.json().await.expect("json");
        assert_eq!(page.len(), want);
        assert_eq!(
            next.is_some(),
            want == 3,
            "a full page says where the next starts"
        );
        listed.extend(
            page.iter()
                .map(|r| r["id"].as_str().expect("id").to_string()),
        );
        before = next;
    }
    let distinct: HashSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), 7, "every run once: {listed:?}");
    let all: Vec<Value> = reqwest::get(format!("{base}/v1/runs?function=greet"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let newest_first: Vec<&str> = all.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(listed, newest_first, "the pages are the listing, in order");

    let bad = reqwest::get(format!("{base}/v1/runs?before=yesterday"))
        .await
        .expect("get");
    assert_eq!(bad.status().as_u16(), 400);
}
