//! One user's timeline (`GET /v1/users/{id}/timeline`, `weir user ID`): their events, each
//! with the runs it started, newest first; other users' events left out; a user known only
//! by email found by it.

mod common;

use std::time::{Duration, Instant};

use common::{engine_on, function_dir};
use serde_json::{Value, json};
use weir::api::EventKeys;
use weir::core::run::{Run, RunStatus};

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// The timeline of `user` once it holds `events` events whose runs have all ended.
async fn settled_timeline(base: &str, user: &str, events: usize) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = get(&format!("{base}/v1/users/{user}/timeline")).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().expect("items");
        let settled = items.len() == events
            && items.iter().all(|i| {
                i["runs"].as_array().is_some_and(|runs| {
                    !runs.is_empty() && runs.iter().all(|r| r["status"] != "running")
                })
            });
        if settled {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the timeline of {user} never settled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_users_events_and_runs_make_one_timeline(state_url: &str) {
    let def = json!({"id": "greet", "triggers": [{"event": "user/*"}],
                     "steps": {"s": {"path": "file://./steps/s", "runtime": {"type": "process"}}}});
    let f = function_dir(&def, &[("s", "cat > /dev/null\necho '{\"ok\": true}'")]);
    let (engine, _handle) = engine_on(&f.dir, state_url).await;
    let base = common::serve_api(engine.clone(), EventKeys::Any, EventKeys::Any).await;
    // Users of this run only: the Redis store may be shared with other tests.
    let suffix = ulid::Ulid::new().to_string();
    let (alice, bob, carol, dave) = (
        format!("alice-{suffix}"),
        format!("bob-{suffix}"),
        format!("carol-{suffix}@example.com"),
        format!("dave-{suffix}"),
    );
    let client = reqwest::Client::new();
    for (name, ts, user) in [
        ("user/signed.up", 1_000, json!({"id": alice})),
        (
            "user/paid",
            3_000,
            json!({"id": alice, "email": "a@example.com"}),
        ),
        ("user/signed.up", 2_000, json!({"id": bob})),
        ("user/signed.up", 4_000, json!({"email": carol})),
    ] {
        let event = json!({"name": name, "ts": ts, "user": user});
        let response = client
            .post(format!("{base}/e/key"))
            .json(&event)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 200);
    }

    let timeline = settled_timeline(&base, &alice, 2).await;
    assert_eq!(timeline["user"], alice.as_str());
    let items = timeline["items"].as_array().expect("items");
    let names: Vec<(&str, i64)> = items
        .iter()
        .map(|i| {
            (
                i["event"]["name"].as_str().expect("name"),
                i["at"].as_i64().expect("at"),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("user/paid", 3_000), ("user/signed.up", 1_000)],
        "newest first, bob's left out"
    );
    for item in items {
        assert_eq!(item["kind"], "event");
        let runs = item["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{item}");
        assert_eq!(runs[0]["function_id"], "greet");
        assert_eq!(runs[0]["status"], "completed");
        assert_eq!(runs[0]["event_id"], item["event"]["id"]);
    }
    let carol_items = settled_timeline(&base, &carol, 1).await;
    assert_eq!(
        carol_items["items"][0]["event"]["user"]["email"],
        carol.as_str()
    );

    let (status, empty) = get(&format!("{base}/v1/users/nobody-{suffix}/timeline")).await;
    assert_eq!(
        (status, empty["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, body) = get(&format!("{base}/v1/users/{alice}/timeline?limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["items"].as_array().map(Vec::len),
        Some(1),
        "the limit holds: {body}"
    );
    assert_eq!(
        body["items"][0]["event"]["name"], "user/paid",
        "the newest kept: {body}"
    );
    let (status, body) = get(&format!("{base}/v1/users/{alice}/timeline?limit=1001")).await;
    assert_eq!(status, 400, "{body}");

    // An event with an id is found by its id, not by its email.
    let (status, by_email) = get(&format!("{base}/v1/users/a@example.com/timeline")).await;
    assert_eq!(status, 200);
    assert!(
        by_email["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["event"]["user"]["id"] != alice.as_str())),
        "{by_email}"
    );

    // A run whose event is no longer stored is an item of its own, at its creation time.
    let gone = weir::core::Event::from_json(
        json!({"name": "user/left", "ts": 9_000, "user": {"id": dave}}),
        "",
    )
    .expect("event");
    let key = format!("greet:v:{}", gone.id);
    let orphan = Run {
        id: Run::id_for_key(&key, &gone.id),
        key,
        function_id: "greet".into(),
        function_version: "v".into(),
        fn_version: None,
        event: gone,
        status: RunStatus::Running,
        steps: Default::default(),
        created_at: 9_500,
        ended_at: None,
        history: Vec::new(),
        pauses: Default::default(),
    };
    engine.state().create_run(&orphan).await.expect("create");
    let (status, body) = get(&format!("{base}/v1/users/{dave}/timeline")).await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["items"][0]["kind"], "run");
    assert_eq!(body["items"][0]["at"], 9_500);
    assert_eq!(body["items"][0]["run"]["id"], orphan.id.as_str());

    // `weir user` prints the same timeline.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["user", &alice, "--url", &base])
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir user");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "two events, a run under each: {stdout}");
    assert!(
        lines[0].starts_with("1970-01-01T00:00:03.000Z  event user/paid"),
        "{stdout}"
    );
    assert!(
        lines[1].trim_start().starts_with("run ") && lines[1].contains("greet  completed"),
        "{stdout}"
    );
    assert!(lines[2].contains("event user/signed.up"), "{stdout}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["user", &dave, "--url", &base])
        .env_remove("WEIR_API_KEY")
        .output()
        .await
        .expect("weir user");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim_end(),
        format!(
            "1970-01-01T00:00:09.500Z  run {}  greet  running",
            orphan.id
        ),
        "a run on its own line"
    );
}

on_every_state!(a_users_events_and_runs_make_one_timeline);
