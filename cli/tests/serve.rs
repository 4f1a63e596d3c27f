//! `weir serve` as a process: configuration, event keys, roles, state by URL, SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    for var in [
        "WEIR_URL",
        "WEIR_EVENT_KEYS",
        "WEIR_STATE",
        "WEIR_BROKER",
        "WEIR_CONFIG",
        "WEIR_ROLE",
        "WEIR_LISTEN",
        "WEIR_FUNCTIONS",
        "WEIR_RUN_RETENTION",
        "WEIR_API_KEYS",
        "WEIR_API_KEY",
    ] {
        c.env_remove(var);
    }
    c
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

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

fn wait_listening(port: u16) {
    // Up to 30 s: joining consumer groups (Kafka) takes seconds before serve listens.
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("weir serve did not start listening on {port}");
}

fn functions_dir(tmp: &Path) -> std::path::PathBuf {
    let functions = tmp.join("functions");
    std::fs::create_dir_all(&functions).expect("mkdir");
    let out = weir()
        .args(["init", "greet", "--dir"])
        .arg(&functions)
        .output()
        .expect("init");
    assert!(out.status.success());
    functions
}

fn post(url: &str, body: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

/// GETs `url` (with `bearer` as the API key, if any): the status and the JSON body (`null`
/// when the body is not JSON).
fn get_with(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut request = reqwest::Client::new().get(url);
        if let Some(key) = bearer {
            request = request.bearer_auth(key);
        }
        let r = request.send().await.expect("get");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

fn get_status(url: &str) -> u16 {
    get_with(url, None).0
}

fn get(url: &str) -> Value {
    get_with(url, None).1
}

/// The newest run of `user` once it has completed (10 s at most), read with `bearer`.
fn completed_run_of(base: &str, user: &str, bearer: Option<&str>) -> Value {
    let mut runs = Value::Null;
    for _ in 0..200 {
        runs = get_with(&format!("{base}/v1/runs?user={user}"), bearer).1;
        if runs[0]["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(runs[0]["status"], "completed", "{runs}");
    runs[0].clone()
}

fn terminate(server: &mut Server) -> std::process::ExitStatus {
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    for _ in 0..200 {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("weir serve did not exit within 10 s of SIGTERM");
}

/// Serves with `state`, sends events with a good and a bad key, checks the run, stops.
fn serve_round_trip(state: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    let port = free_port();
    let config = tmp.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "functions = {:?}\nstate = {state:?}\nevent_keys = [\"file-key\"]\n",
            functions.display().to_string()
        ),
    )
    .expect("config");
    let mut server = Server(
        weir()
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("WEIR_EVENT_KEYS", "env-key-1,env-key-2")
            .stderr(Stdio::null())
            .spawn()
            .expect("weir serve"),
    );
    wait_listening(port);
    let base = format!("http://127.0.0.1:{port}");
    let event = r#"{"name": "app/greet.requested", "user": {"id": "serve-user"}}"#;

    // The environment's keys replace the file's; any other key gets 401 and stores nothing.
    for bad in ["file-key", "nope"] {
        let (status, _) = post(&format!("{base}/e/{bad}"), event);
        assert_eq!(status, 401, "key {bad}");
    }
    let events = get(&format!("{base}/v1/events"));
    assert_eq!(
        events.as_array().map(Vec::len),
        Some(0),
        "a 401 stores nothing: {events}"
    );

    let (status, body) = post(&format!("{base}/e/env-key-2"), event);
    assert_eq!(status, 200, "{body}");
    let event_id = body["ids"][0].as_str().expect("id").to_string();
    let newest = completed_run_of(&base, "serve-user", None);
    assert_eq!(newest["event_id"], event_id.as_str(), "{newest}");
    let run = get(&format!(
        "{base}/v1/runs/{}",
        newest["id"].as_str().expect("id")
    ));
    assert_eq!(
        run["steps"]["goodbye"]["output"]["greeting"], "hello from goodbye",
        "{run}"
    );

    let status = terminate(&mut server);
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

#[test]
fn serve_on_memory_requires_keys_and_runs_functions() {
    serve_round_trip("memory://");
}

#[test]
#[cfg(feature = "state-redis")]
fn serve_on_redis_state_runs_functions() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    serve_round_trip(&format!("{url}{sep}prefix=weirserve-{}", ulid::Ulid::new()));
}

/// `weir serve` of `functions` listening on `listen` with the event key `event_key`;
/// the caller adds settings and spawns it.
fn serve_command(functions: &Path, listen: &str, event_key: &str) -> Command {
    let mut c = weir();
    c.arg("serve")
        .arg("--functions")
        .arg(functions)
        .args(["--listen", listen])
        .args(["--event-key", event_key]);
    c
}

/// `weir serve` of a fresh `greet` function on a free loopback port, with the event key
/// `event_key` and the environment setting `env`, once it listens: its tempdir (keep it alive),
/// the server and its base URL.
fn serve_greet(event_key: &str, env: (&str, &str)) -> (tempfile::TempDir, Server, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    let port = free_port();
    let server = Server(
        serve_command(&functions, &format!("127.0.0.1:{port}"), event_key)
            .env(env.0, env.1)
            .stderr(Stdio::null())
            .spawn()
            .expect("weir serve"),
    );
    wait_listening(port);
    (tmp, server, format!("http://127.0.0.1:{port}"))
}

/// With `WEIR_RUN_RETENTION=5s` a finished run is listed and readable, then deleted about
/// five seconds after it ended: `GET /v1/runs/ID` answers 404 and the listing no longer holds it.
#[test]
fn finished_runs_are_deleted_after_the_run_retention() {
    let (_tmp, _server, base) = serve_greet("k", ("WEIR_RUN_RETENTION", "5s"));
    let (status, body) = post(
        &format!("{base}/e/k"),
        r#"{"name": "app/greet.requested", "user": {"id": "kept-a-second"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let newest = completed_run_of(&base, "kept-a-second", None);
    let run_url = format!("{base}/v1/runs/{}", newest["id"].as_str().expect("id"));
    assert_eq!(get_status(&run_url), 200, "kept until the retention passes");
    let mut status = 200;
    for _ in 0..200 {
        status = get_status(&run_url);
        if status == 404 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status, 404,
        "the run is deleted within 10 s of a 5 s retention"
    );
    let runs = get(&format!("{base}/v1/runs?user=kept-a-second"));
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
}

/// With `api_keys` the /v1 API and `/metrics` answer 401 (JSON) without a key or with a wrong
/// one and serve a request carrying one (`WEIR_API_KEYS="api-1, api-2"`: spaces around keys
/// are not part of them); events still go in with an event key; `weir runs` sends the key from
/// `WEIR_API_KEY`.
#[test]
fn api_keys_guard_the_v1_api() {
    let (_tmp, _server, base) = serve_greet("ek", ("WEIR_API_KEYS", "api-1, api-2"));
    let (status, body) = post(
        &format!("{base}/e/ek"),
        r#"{"name": "app/greet.requested", "user": {"id": "keyed"}}"#,
    );
    assert_eq!(status, 200, "events take the event key: {body}");
    for (path, bearer) in [
        ("/v1/runs", None),
        ("/v1/runs", Some("ek")),
        ("/v1/events", Some("nope")),
        ("/v1/functions", None),
        ("/v1/runs/anything", None),
        ("/metrics", None),
    ] {
        let (status, body) = get_with(&format!("{base}{path}"), bearer);
        assert_eq!(status, 401, "{path} with {bearer:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("API key")),
            "{body}"
        );
    }
    completed_run_of(&base, "keyed", Some("api-2"));
    let (status, _) = get_with(&format!("{base}/health"), None);
    assert_eq!(status, 200, "health needs no key");
    let (status, _) = get_with(&format!("{base}/metrics"), Some("api-1"));
    assert_eq!(status, 200, "metrics take an API key");

    let listed = weir()
        .args(["runs", "--url", &base])
        .env("WEIR_API_KEY", "api-1")
        .output()
        .expect("weir runs");
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("completed"));
    let refused = weir()
        .args(["runs", "--url", &base])
        .output()
        .expect("weir runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("error 401"),
        "{refused:?}"
    );
}

/// Waits for a line of `command`'s stderr holding every one of `needles` (30 s at most);
/// panics with what it printed otherwise.
fn expect_stderr_line(mut command: Command, needles: &[&str]) {
    use std::io::BufRead;
    let mut child = Server(command.stderr(Stdio::piped()).spawn().expect("spawn"));
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let found = needles.iter().all(|n| line.contains(n));
        seen.push(line);
        if found {
            return;
        }
    }
    panic!("no line with {needles:?}: {seen:#?}");
}

/// Listening beyond loopback with an open API is allowed, with a warning: `weir serve` without
/// `api_keys`, and `weir dev` (any event key, open API) whatever it is given.
#[test]
fn an_open_api_on_a_public_address_is_warned_about() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    let serve = serve_command(&functions, &format!("0.0.0.0:{}", free_port()), "ek");
    expect_stderr_line(serve, &["warning: the /v1 API", "set api_keys"]);
    let mut dev = weir();
    dev.arg("dev")
        .arg(&functions)
        .args(["--listen", &format!("0.0.0.0:{}", free_port())]);
    expect_stderr_line(dev, &["weir dev: warning:", "use weir serve"]);
}

#[test]
fn serve_without_event_keys_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    let out = weir()
        .args(["serve", "--functions"])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs at least one event key"), "{err}");
}

/// A bad event schema file stops `weir serve` before it starts (exit code 2), naming the file
/// and what is wrong with it.
#[test]
fn serve_refuses_to_start_on_a_bad_schema_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    std::fs::create_dir(functions.join("schemas")).expect("mkdir");
    std::fs::write(
        functions.join("schemas/broken.json"),
        r#"{"name": "user/signed.up", "version": "1", "schema": {"type": 12}}"#,
    )
    .expect("write");
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--listen",
            "127.0.0.1:0",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.json: schema"), "{err}");
    assert!(err.contains("not a valid JSON Schema"), "{err}");
}

#[test]
fn serve_rejects_unknown_roles_schemes_and_config_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let functions = functions_dir(tmp.path());
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--role",
            "api,chef",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role \"chef\""));
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--state",
            "postgres://x",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown state scheme \"postgres\""));
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "evnt_keys = [\"k\"]\n").expect("write");
    let out = weir()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("evnt_keys"),
        "{err}"
    );
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--stuck-message-delay",
            "soon",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stuck_message_delay"), "{err}");
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--ingest-deadline",
            "1 fortnight",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest_deadline"), "{err}");
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--ingest-deadline",
            "61s",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest_deadline: at most 1m"), "{err}");
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--stuck-run-grace",
            "10s",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stuck_run_grace must be longer than step_lease"),
        "{err}"
    );
    let out = weir()
        .args([
            "serve",
            "--event-key",
            "k",
            "--sweep-every",
            "200ms",
            "--functions",
        ])
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sweep_every: 200ms is below 1s"), "{err}");
    let blank = tmp.path().join("blank.toml");
    std::fs::write(&blank, "event_keys = [\"k\"]\napi_keys = [\"  \"]\n").expect("write");
    let out = weir()
        .args(["serve", "--config"])
        .arg(&blank)
        .arg("--functions")
        .arg(&functions)
        .output()
        .expect("serve");
    assert!(
        !out.status.success(),
        "a blank API key would let a bare `Bearer` in"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api_keys: a key is empty"), "{err}");
}

/// The signup example (examples/signup) through `weir serve` on `broker`: its event is POSTed
/// to the HTTP API and the run completes with both steps' outputs. Each broker driver calls
/// this with its test URL (issue 4: every broker runs the signup example end to end).
fn signup_example_through_serve(state: &str, broker: &str) {
    // Only this example: the others need Docker, AWS or a WASM build.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/signup");
    let port = free_port();
    let mut server = Server(
        weir()
            .args(["serve", "--functions"])
            .arg(&examples)
            .args(["--state", state, "--broker", broker, "--event-key", "k"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("weir serve"),
    );
    wait_listening(port);
    let base = format!("http://127.0.0.1:{port}");
    let event = std::fs::read_to_string(examples.join("event.json")).expect("event");
    let (status, body) = post(&format!("{base}/e/k"), &event);
    assert_eq!(status, 200, "{body}");
    let event_id = body["ids"][0].as_str().expect("id").to_string();
    let mut run = Value::Null;
    for _ in 0..600 {
        let runs = get(&format!(
            "{base}/v1/runs?function=prompt-deer-ede40d&limit=50"
        ));
        if let Some(r) = runs
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["event_id"] == event_id.as_str()))
            && r["status"] != "running"
        {
            run = get(&format!("{base}/v1/runs/{}", r["id"].as_str().expect("id")));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(run["status"], "completed", "signup run on {broker}: {run}");
    for step in ["step-1", "step-2"] {
        assert!(
            run["steps"][step]["output"].is_object(),
            "{step} has an output on {broker}: {run}"
        );
    }
    let status = terminate(&mut server);
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

#[test]
fn the_signup_example_runs_through_serve_on_the_memory_broker() {
    signup_example_through_serve("memory://", "memory://");
}

#[test]
#[cfg(feature = "broker-amqp")]
fn the_signup_example_runs_through_serve_on_rabbitmq() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_AMQP_URL") else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    // A fresh prefix: the run's queues are its own (and expire when unused).
    let url = format!(
        "{url}{sep}prefix=weirsignup{}&queue_expires=2m",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    signup_example_through_serve("memory://", &url);
}

/// Kafka: `kafka+mock://` starts librdkafka's mock cluster inside `weir serve`.
#[test]
#[cfg(feature = "broker-kafka")]
fn the_signup_example_runs_through_serve_on_the_kafka_mock_cluster() {
    signup_example_through_serve("memory://", "kafka+mock://?prefix=weirsignup");
}

/// Kafka: a real Kafka-protocol broker process (scripts/test.sh starts tansu and sets
/// `WEIR_TEST_KAFKA_URL`); topics are created through the admin API.
#[test]
#[cfg(feature = "broker-kafka")]
fn the_signup_example_runs_through_serve_on_a_kafka_protocol_broker() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_KAFKA_URL") else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{url}{sep}prefix=weirsignup{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    signup_example_through_serve("memory://", &url);
}

#[test]
#[cfg(feature = "broker-sqs")]
fn the_signup_example_runs_through_serve_on_sqs() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_SQS_URL") else {
        return;
    };
    // A fresh queue-name prefix: sqs://PREFIX?…
    let (scheme_and_prefix, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    // Queue-name prefixes are at most 24 characters: 8 of the ULID's random part.
    let fresh = ulid::Ulid::new().to_string().to_lowercase();
    let url = format!("{scheme_and_prefix}{}?{query}", &fresh[18..]);
    signup_example_through_serve("memory://", &url);
}

#[test]
#[cfg(all(feature = "state-redis", feature = "broker-redis"))]
fn the_signup_example_runs_through_serve_on_the_redis_broker() {
    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_REDIS_URL") else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}prefix=weirsignup-{}", ulid::Ulid::new());
    signup_example_through_serve(&url, &url);
}
