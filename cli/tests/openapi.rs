//! The OpenAPI document (`GET /openapi.json`, `cli/src/openapi.json`) against the server: every
//! route the API serves is documented, every documented operation is served, and real answers
//! (successes and errors) have a documented status and match their documented JSON Schema.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use common::serve_api as serve;
use common::{engine_with, function_dir, run_event};
use serde_json::{Value, json};
use weir::api::{Keys, OPENAPI};

/// The document's components with every object schema closed (`additionalProperties:
/// false`): the document leaves response objects open for clients, the test holds the server
/// to exactly the documented fields, so a renamed optional field is caught.
fn closed_components(doc: &Value) -> Value {
    fn close(schema: &mut Value) {
        match schema {
            Value::Object(map) => {
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
                map.values_mut().for_each(close);
            }
            Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    let mut components = doc["components"].clone();
    close(&mut components["schemas"]);
    components
}

/// Checks one answer of `method path` (`path` as documented, e.g. `/v1/runs/{id}`) against the
/// document: its status is documented for the operation, and a JSON body matches the schema of
/// that status. Answers the body.
fn check(doc: &Value, method: &str, path: &str, status: u16, body: &str) -> Value {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let mut response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which is not documented: {body}"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/responses/")
            .unwrap_or_else(|| panic!("{method} {path} {status}: odd $ref {reference}"));
        response = &doc["components"]["responses"][name];
        assert!(
            response.is_object(),
            "{method} {path} {status}: no response {reference}"
        );
    }
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no content documented"));
    let Some(json_content) = content.get("application/json") else {
        // A documented non-JSON answer (the metrics text).
        return Value::Null;
    };
    let schema = json_content
        .get("schema")
        .cloned()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no JSON schema documented"));
    let instance: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path} {status} is not JSON ({e}): {body}"));
    // The schema's `$ref`s point into the document's components: validate inside a root that
    // carries them at the same place.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": closed_components(doc),
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match its schema: {errors:?}\n{instance:#}"
    );
    instance
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{base}{path}")).await.expect("get");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn post(base: &str, path: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[test]
fn every_route_the_api_serves_is_documented() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let source = include_str!("../src/api/mod.rs");
    // `.route(` then the path literal, wherever rustfmt put the line break.
    let served: BTreeSet<&str> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|path| *path != "/")
        .collect();
    assert!(
        !source.contains(".nest(") && !source.contains(".route_service("),
        "routes added another way than .route( are not seen by this test"
    );
    assert!(served.len() >= 8, "routes found in api.rs: {served:?}");
    assert_eq!(served, documented, "routes served vs documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_document() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
    let def = json!({"id": "greet", "name": "Greet",
        "triggers": [{"event": "user/signed.up", "expression": "event.data.plan == 'pro'"},
                     {"cron": "0 0 1 1 *"}],
        "steps": {"hello": {"path": "file://./steps/hello", "runtime": {"type": "process"}},
                  "after": {"path": "file://./steps/fail", "runtime": {"type": "process"},
                            "after": [{"step": "hello"}], "retries": {"attempts": 1}},
                  // Waits (only when the event asks to) for an activation that never comes.
                  "later": {"path": "file://./steps/hello", "runtime": {"type": "process"},
                            "after": [{"step": "hello", "if": "event.data.wait == true",
                                       "async": {"event": "user/activated", "ttl": "1h",
                                                 "match": "async.user.id == event.user.id"}}]}}});
    let f = function_dir(
        &def,
        &[
            ("hello", r#"echo 'hi there' >&2; echo '{"hi": true}'"#),
            ("fail", "echo 'no luck' >&2; exit 1"),
        ],
    );
    let (engine, _handle) = engine_with(&f.dir).await;
    let base = serve(engine.clone(), Keys::Any, Keys::Any).await;

    // Events in: one, a batch, and bad ones.
    let event = r#"{"name": "user/signed.up", "data": {"plan": "pro"}, "user": {"id": "u1"}}"#;
    let (status, body) = post(&base, "/e/k", event).await;
    let accepted = check(&doc, "post", "/e/{key}", status, &body);
    assert_eq!(status, 200);
    let (status, body) = post(&base, "/e/k", &format!("[{event}, {event}]")).await;
    check(&doc, "post", "/e/{key}", status, &body);
    for bad in ["{nope", "[]", r#"{"data": {}}"#] {
        let (status, body) = post(&base, "/e/k", bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        check(&doc, "post", "/e/{key}", status, &body);
    }
    let (status, body) = post(&base, "/e/k", &" ".repeat(4 << 20)).await;
    assert_eq!(status, 413);
    check(&doc, "post", "/e/{key}", status, &body);

    // A run with a completed and a failed step, read back.
    let run = run_event(
        &engine,
        "greet",
        &json!({"name": "user/signed.up", "data": {"plan": "pro"}, "user": {"id": "u2"}}),
    )
    .await;
    let (status, body) = get(&base, &format!("/v1/runs/{}", run.id)).await;
    assert_eq!(status, 200);
    let shown = check(&doc, "get", "/v1/runs/{id}", status, &body);
    assert_eq!(shown["steps"]["hello"]["log"], "hi there\n");
    assert_eq!(shown["status"], "failed");
    let (status, body) = get(&base, "/v1/runs/no-such-run").await;
    assert_eq!(status, 404);
    check(&doc, "get", "/v1/runs/{id}", status, &body);
    // A run waiting for an event: shown waiting, with what it waits for; then cancelled.
    let waiting = r#"{"name": "user/signed.up", "data": {"plan": "pro", "wait": true}, "user": {"id": "u3"}}"#;
    let (status, body) = post(&base, "/e/k", waiting).await;
    let id = check(&doc, "post", "/e/{key}", status, &body)["ids"][0].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let waiting_run = loop {
        let (_, body) = get(&base, "/v1/runs?status=waiting").await;
        let runs: Value = serde_json::from_str(&body).expect("runs");
        if let Some(r) = runs
            .as_array()
            .and_then(|r| r.iter().find(|r| r["event_id"] == id))
        {
            break r["id"].as_str().expect("id").to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never waited: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (status, body) = get(&base, &format!("/v1/runs/{waiting_run}")).await;
    let shown = check(&doc, "get", "/v1/runs/{id}", status, &body);
    assert_eq!(shown["status"], "waiting");
    assert_eq!(
        shown["waits"][0]["events"],
        json!(["user/activated"]),
        "{shown}"
    );
    let (status, body) = post(&base, &format!("/v1/runs/{waiting_run}/cancel"), "").await;
    assert_eq!(status, 200, "{body}");
    let cancelled = check(&doc, "post", "/v1/runs/{id}/cancel", status, &body);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["steps"]["later"]["status"], "cancelled");
    assert_eq!(cancelled["waits"][0]["status"], "cancelled");
    let (status, body) = post(&base, &format!("/v1/runs/{}/cancel", run.id), "").await;
    assert_eq!(status, 409, "a failed run cannot be cancelled: {body}");
    check(&doc, "post", "/v1/runs/{id}/cancel", status, &body);
    let (status, body) = post(&base, "/v1/runs/no-such-run/cancel", "").await;
    assert_eq!(status, 404);
    check(&doc, "post", "/v1/runs/{id}/cancel", status, &body);
    // Dead letters: an empty page, then unknown ids.
    let (status, body) = get(&base, "/v1/dead?limit=5").await;
    let page = check(&doc, "get", "/v1/dead", status, &body);
    assert_eq!(page["items"], json!([]));
    let (status, body) = get(&base, "/v1/dead/no-such-letter").await;
    assert_eq!(status, 404, "{body}");
    check(&doc, "get", "/v1/dead/{id}", status, &body);
    let (status, body) = post(&base, "/v1/dead/no-such-letter/retry", "").await;
    assert_eq!(status, 404, "{body}");
    check(&doc, "post", "/v1/dead/{id}/retry", status, &body);
    let gone = reqwest::Client::new()
        .delete(format!("{base}/v1/dead/no-such-letter"))
        .send()
        .await
        .expect("delete");
    let status = gone.status().as_u16();
    let body = gone.text().await.expect("body");
    assert_eq!(status, 404, "{body}");
    check(&doc, "delete", "/v1/dead/{id}", status, &body);
    let (status, body) = get(&base, "/v1/runs?limit=50").await;
    let runs = check(&doc, "get", "/v1/runs", status, &body);
    assert!(runs.as_array().is_some_and(|r| r.len() >= 2), "{runs}");
    for over in [
        "/v1/runs?limit=10001",
        "/v1/events?limit=10001",
        "/v1/jobs?limit=10001",
    ] {
        let (status, body) = get(&base, over).await;
        assert_eq!(status, 400, "{over}: {body}");
        assert!(body.contains("maximum of 10000"), "{body}");
        check(
            &doc,
            "get",
            over.split('?').next().expect("path"),
            status,
            &body,
        );
    }
    let (status, body) = get(&base, "/v1/runs?status=bogus").await;
    assert_eq!(status, 400);
    check(&doc, "get", "/v1/runs", status, &body);
    let (status, body) = get(&base, "/v1/functions").await;
    let functions = check(&doc, "get", "/v1/functions", status, &body);
    assert_eq!(functions[0]["triggers"][1]["cron"], "0 0 1 1 *");
    let (status, body) = get(&base, "/v1/events?user=u1").await;
    let events = check(&doc, "get", "/v1/events", status, &body);
    assert!(
        events
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["id"] == accepted["ids"][0])),
        "{events}"
    );
    let (status, body) = get(&base, "/v1/events?from=soon").await;
    assert_eq!(status, 400);
    check(&doc, "get", "/v1/events", status, &body);
    // Jobs kept for outside workers (the memory store keeps them).
    let jobs = engine.state().jobs().expect("the memory store keeps jobs");
    let failed = json!({"jid": "job-00000001", "jobtype": "email", "args": [],
                        "failure": {"retry_count": 0, "errtype": "E", "message": "boom"}});
    jobs.add_to_set(
        weir::core::jobs::JobSet::Retries,
        &weir::core::jobs::QueuedJob {
            id: "job-00000001".into(),
            queue: "default".into(),
            reserve_ms: 60_000,
            payload: failed.to_string().into(),
        },
        1_000,
    )
    .await
    .expect("add");
    let (status, body) = get(&base, "/v1/jobs?state=retries").await;
    let listed = check(&doc, "get", "/v1/jobs", status, &body);
    assert_eq!(listed[0]["id"], "job-00000001", "{listed}");
    assert_eq!(listed[0]["last_error"], "E: boom");
    assert_eq!(listed[0]["failures"], 1);
    let (status, body) = get(&base, "/v1/jobs?state=bogus").await;
    assert_eq!(status, 400, "{body}");
    check(&doc, "get", "/v1/jobs", status, &body);
    let (status, body) = post(&base, "/v1/workers/w-1", r#"{"state": "quiet"}"#).await;
    assert_eq!(status, 200, "{body}");
    check(&doc, "post", "/v1/workers/{wid}", status, &body);
    assert_eq!(
        weir::core::jobs::worker_order(engine.state().as_ref(), "w-1")
            .await
            .expect("read"),
        Some(weir::core::jobs::WorkerOrder::Quiet)
    );
    let (status, body) = post(&base, "/v1/workers/w-1", r#"{"state": "terminate"}"#).await;
    check(&doc, "post", "/v1/workers/{wid}", status, &body);
    let (status, body) = post(&base, "/v1/workers/w-1", r#"{"state": "quiet"}"#).await;
    let answered = check(&doc, "post", "/v1/workers/{wid}", status, &body);
    assert_eq!(
        answered["state"], "terminate",
        "an order only moves forward"
    );
    let (status, body) = post(&base, "/v1/workers/w-1", r#"{"state": "running"}"#).await;
    let answered = check(&doc, "post", "/v1/workers/{wid}", status, &body);
    assert_eq!(answered["state"], "running", "taken back");
    let (status, body) = post(&base, "/v1/workers/w-1", &"x".repeat(10_000)).await;
    assert_eq!(status, 413, "{body}");
    check(&doc, "post", "/v1/workers/{wid}", status, &body);
    let (status, body) = post(&base, "/v1/workers/w-1", r#"{"state": "asleep"}"#).await;
    assert_eq!(status, 400, "{body}");
    check(&doc, "post", "/v1/workers/{wid}", status, &body);
    let (status, body) = get(&base, "/health").await;
    check(&doc, "get", "/health", status, &body);
    let (status, body) = get(&base, "/metrics").await;
    check(&doc, "get", "/metrics", status, &body);
    assert!(body.contains("weir_runs_started_total"));
    let (status, body) = get(&base, "/openapi.json").await;
    check(&doc, "get", "/openapi.json", status, &body);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        doc,
        "served as written"
    );

    // Every method of every documented path: 405 exactly when the method is not documented.
    let client = reqwest::Client::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        let url = format!(
            "{base}{}",
            path.replace("{key}", "k")
                .replace("{id}", &run.id)
                .replace("{wid}", "w-2")
        );
        for method in ["get", "post", "put", "delete", "patch"] {
            let request = client.request(method.to_uppercase().parse().expect("method"), &url);
            let answer = request.body("{}").send().await.expect("request");
            let status = answer.status().as_u16();
            let body = answer.text().await.expect("body");
            if operations.get(method).is_some() {
                assert_ne!(status, 405, "{method} {path} is documented: {body}");
                check(&doc, method, path, status, &body);
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented: {body}");
            }
        }
    }

    // Behind keys: 401 answers are documented and shaped as documented.
    let only = |key: &str| Keys::Only(Arc::new(HashSet::from([key.to_string()])));
    let locked = serve(engine.clone(), only("ek"), only("ak")).await;
    for (method, path, url) in [
        ("post", "/e/{key}", format!("{locked}/e/wrong")),
        ("get", "/v1/runs", format!("{locked}/v1/runs")),
        (
            "get",
            "/v1/runs/{id}",
            format!("{locked}/v1/runs/{}", run.id),
        ),
        (
            "post",
            "/v1/runs/{id}/cancel",
            format!("{locked}/v1/runs/{}/cancel", run.id),
        ),
        ("get", "/v1/functions", format!("{locked}/v1/functions")),
        ("get", "/v1/events", format!("{locked}/v1/events")),
        ("get", "/v1/jobs", format!("{locked}/v1/jobs")),
        ("get", "/v1/dead", format!("{locked}/v1/dead")),
        ("delete", "/v1/dead/{id}", format!("{locked}/v1/dead/x")),
        (
            "post",
            "/v1/dead/{id}/retry",
            format!("{locked}/v1/dead/x/retry"),
        ),
        (
            "post",
            "/v1/workers/{wid}",
            format!("{locked}/v1/workers/w-1"),
        ),
        ("get", "/metrics", format!("{locked}/metrics")),
    ] {
        let request = client.request(method.to_uppercase().parse().expect("method"), &url);
        let answer = request.body(event).send().await.expect("request");
        let status = answer.status().as_u16();
        assert_eq!(status, 401, "{method} {path}");
        check(
            &doc,
            method,
            path,
            status,
            &answer.text().await.expect("body"),
        );
    }

    // One user's timeline: the events of u1 with their runs.
    let (status, body) = get(&base, "/v1/users/u1/timeline").await;
    assert_eq!(status, 200, "{body}");
    let timeline = check(&doc, "get", "/v1/users/{id}/timeline", status, &body);
    assert!(
        timeline["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty()),
        "{timeline}"
    );
    let (status, body) = get(&base, "/v1/users/u1/timeline?limit=0").await;
    assert_eq!(status, 400);
    check(&doc, "get", "/v1/users/{id}/timeline", status, &body);

    // Event schemas: pushed (refused by a stored event, forced, unchanged, invalid), listed,
    // shown, deleted.
    let schema_path = "/v1/schemas/{name}/{version}";
    let at = format!("{base}/v1/schemas/user%2Fsigned.up/1");
    let strict = json!({"schema": {"properties": {"data": {"required": ["absent"]}}}}).to_string();
    for (query, body, expected) in [
        ("", strict.as_str(), 409),
        ("?force=true", strict.as_str(), 201),
        ("", strict.as_str(), 200),
        ("", r#"{"schema": {"type": 7}}"#, 400),
    ] {
        let answer = client
            .put(format!("{at}{query}"))
            .body(body.to_owned())
            .send()
            .await
            .expect("put");
        let status = answer.status().as_u16();
        let text = answer.text().await.expect("body");
        assert_eq!(status, expected, "PUT {query} {body}: {text}");
        check(&doc, "put", schema_path, status, &text);
    }
    let (status, body) = get(&base, "/v1/schemas").await;
    check(&doc, "get", "/v1/schemas", status, &body);
    let (status, body) = get(&base, "/v1/schemas/user%2Fsigned.up/1").await;
    assert_eq!(status, 200);
    check(&doc, "get", schema_path, status, &body);
    for expected in [200, 404] {
        let answer = client.delete(&at).send().await.expect("delete");
        let status = answer.status().as_u16();
        assert_eq!(status, expected);
        check(
            &doc,
            "delete",
            schema_path,
            status,
            &answer.text().await.expect("body"),
        );
    }

    // The schemas are not vacuous: a run summary without its id does not match.
    let mut broken = runs[0].clone();
    broken.as_object_mut().expect("object").remove("id");
    let root = json!({"components": doc["components"], "$ref": "#/components/schemas/RunSummary"});
    let validator = jsonschema::validator_for(&root).expect("compiles");
    assert!(!validator.is_valid(&broken));
    assert!(validator.is_valid(&runs[0]));
}
