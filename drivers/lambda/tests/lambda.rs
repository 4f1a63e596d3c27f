//! Lambda-specific behaviour against moto: deploying from a path, updates, errors, timeouts.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use weir_core::ErrorKind;
use weir_core::driver::Driver;
use weir_core::protocol::{Outcome, classify, parse_output};
use weir_core::testkit::driver as suite;
use weir_core::testkit::unique;
use weir_driver_lambda::{
    DeployAction, LambdaDriver, LambdaDriverConfig, deployed_function_name, package_dir,
};

use common::{
    ACCOUNT, Functions, create_function, docker_moto, driver, queue_answers, request, simple_moto,
};

/// The function's configuration at moto.
async fn configuration(
    lambda: &LambdaDriver,
    name: &str,
) -> aws_sdk_lambda::types::FunctionConfiguration {
    lambda
        .client()
        .await
        .get_function()
        .function_name(name)
        .send()
        .await
        .expect("GetFunction")
        .configuration
        .expect("configuration")
}

fn env_of(c: &aws_sdk_lambda::types::FunctionConfiguration) -> Value {
    json!(c.environment().and_then(|e| e.variables()))
}

#[tokio::test]
async fn deploys_from_path_then_updates_only_what_changed() {
    let Some(url) = simple_moto().await else {
        return;
    };
    let region = "us-east-2";
    let lambda = driver(&url, region).await;
    let f = Functions::new();
    let path = f.bootstrap("sms", "echo '{}'");
    let function_id = unique("deploy");
    let env = [("GREETING", "hello from .env"), ("AWS_REGION", "reserved")];
    let spec = f.spec(&function_id, "step-1", Some(&path), json!({}), &env);

    let first = lambda.deploy(&spec).await.expect("deploy");
    assert_eq!(first.action, DeployAction::Created);
    assert_eq!(first.function_name, format!("{function_id}-step-1"));
    assert_eq!(
        first.function_name,
        deployed_function_name(&function_id, "step-1")
    );
    let package = package_dir(&f.dir.path().join(&path)).unwrap();
    assert_eq!(first.code_sha256, package.code_sha256());
    let c = configuration(&lambda, &first.function_name).await;
    assert_eq!(c.code_sha256(), Some(package.code_sha256()));
    assert_eq!(c.handler(), Some("bootstrap"));
    assert_eq!(c.runtime().map(|r| r.as_str()), Some("provided.al2023"));
    // The default role, named through STS's account.
    assert_eq!(
        c.role(),
        Some(format!("arn:aws:iam::{ACCOUNT}:role/weir-lambda").as_str())
    );
    assert_eq!(c.timeout(), Some(300));
    assert_eq!(
        env_of(&c),
        json!({"GREETING": "hello from .env", "WEIR_FUNCTION_ID": function_id, "WEIR_STEP_ID": "step-1"})
    );

    // The same content again: this process knows it, a new one finds Lambda up to date.
    assert_eq!(
        lambda.deploy(&spec).await.unwrap().action,
        DeployAction::Cached
    );
    let other_process = driver(&url, region).await;
    assert_eq!(
        other_process.deploy(&spec).await.unwrap().action,
        DeployAction::Unchanged
    );

    // New code: updated, and Lambda has the new hash.
    f.bootstrap("sms", "echo '{\"v\":2}'");
    let second = lambda.deploy(&spec).await.unwrap();
    assert_eq!(second.action, DeployAction::Updated);
    assert_ne!(second.code_sha256, first.code_sha256);
    let c = configuration(&lambda, &second.function_name).await;
    assert_eq!(c.code_sha256(), Some(second.code_sha256.as_str()));

    // New configuration and .env: updated, same code.
    let spec = f.spec(
        &function_id,
        "step-1",
        Some(&path),
        json!({"memory": 256, "timeout": "1m"}),
        &[("GREETING", "changed")],
    );
    let third = other_process.deploy(&spec).await.unwrap();
    assert_eq!(third.action, DeployAction::Updated);
    assert_eq!(third.code_sha256, second.code_sha256);
    let c = configuration(&lambda, &third.function_name).await;
    assert_eq!((c.memory_size(), c.timeout()), (Some(256), Some(60)));
    assert_eq!(env_of(&c)["GREETING"], json!("changed"));
    assert_eq!(
        lambda.deploy(&spec).await.unwrap().action,
        DeployAction::Unchanged
    );
}

#[tokio::test]
async fn execute_deploys_lazily_then_invokes() {
    let Some(url) = simple_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-1").await;
    let f = Functions::new();
    let path = f.bootstrap("lazy", "cat");
    let spec = f.spec(&unique("lazy"), "step-1", Some(&path), json!({}), &[]);
    let name = deployed_function_name(&spec.function_id, "step-1");
    let input = suite::sample_input();
    let result = lambda
        .execute(request(&spec, input.clone(), suite::QUICK_TIMEOUT))
        .await
        .expect("execute");
    assert!(result.success, "{result:?}");
    assert_eq!(
        parse_output(&result.stdout),
        serde_json::from_slice::<Value>(&input).unwrap()
    );
    let c = configuration(&lambda, &name).await;
    assert_eq!(c.handler(), Some("bootstrap"));
}

#[tokio::test]
async fn a_role_lambda_cannot_assume_is_a_config_error_naming_it() {
    let Some(url) = simple_moto().await else {
        return;
    };
    let lambda = driver(&url, "ca-central-1").await;
    let f = Functions::new();
    let path = f.bootstrap("norole", "cat");
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{}", unique("missing"));
    let spec = f.spec(
        &unique("norole"),
        "step-1",
        Some(&path),
        json!({"role": role}),
        &[],
    );
    let err = lambda.prepare(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&role), "{err}");
    // A role given by name becomes an ARN in the caller's account.
    let spec = f.spec(
        &unique("named"),
        "step-1",
        Some(&path),
        json!({"role": "weir-lambda"}),
        &[],
    );
    let deployed = lambda.deploy(&spec).await.expect("deploy");
    let c = configuration(&lambda, &deployed.function_name).await;
    assert_eq!(
        c.role(),
        Some(format!("arn:aws:iam::{ACCOUNT}:role/weir-lambda").as_str())
    );
}

#[tokio::test]
async fn prepare_finds_missing_functions() {
    let Some(url) = simple_moto().await else {
        return;
    };
    let lambda = driver(&url, "ap-south-1").await;
    let f = Functions::new();
    let existing = unique("there");
    create_function(&lambda, &existing, "cat").await;
    let spec = f.spec("fn", "step-1", None, json!({"function": existing}), &[]);
    lambda.prepare(&spec).await.expect("an existing function");
    let arn = format!("arn:aws:lambda:ap-south-1:{ACCOUNT}:function:{existing}");
    let spec = f.spec("fn", "step-1", None, json!({"function": arn}), &[]);
    lambda.prepare(&spec).await.expect("by ARN");

    let missing = unique("not-there");
    let spec = f.spec("fn", "step-1", None, json!({"function": missing}), &[]);
    let err = lambda.prepare(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    assert!(
        message.contains("lambda function not found") && message.contains(&missing),
        "{message}"
    );
    assert!(message.contains("ap-south-1"), "{message}");
}

#[tokio::test]
async fn answers_over_max_output_bytes_are_refused() {
    let Some(url) = simple_moto().await else {
        return;
    };
    // Under Lambda's 6 MB, over the default 4 MiB max_output_bytes: refused from its
    // Content-Length.
    let region = "sa-east-1";
    let lambda = driver(&url, region).await;
    let name = unique("big");
    create_function(&lambda, &name, "cat").await;
    let f = Functions::new();
    let spec = f.spec("fn", "step-1", None, json!({"function": name}), &[]);
    queue_answers(&url, region, &[&"x".repeat(5 * 1024 * 1024)]).await;
    let err = lambda
        .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("max_output_bytes"), "{err}");
    // Refused from the announced length, before the body was read.
    assert!(
        err.to_string()
            .contains(&format!("payload_bytes: {}", 5 * 1024 * 1024)),
        "{err}"
    );
    // The next answer is small again.
    let result = lambda
        .execute(request(
            &spec,
            Bytes::from("{\"ok\":1}"),
            suite::QUICK_TIMEOUT,
        ))
        .await
        .unwrap();
    assert_eq!(parse_output(&result.stdout), json!({"ok": 1}));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_and_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let lambda = LambdaDriver::connect(
        LambdaDriverConfig::new()
            .with_region("us-east-1")
            .with_endpoint(&url)
            .with_static_credentials("test", "test", None),
    )
    .await
    .unwrap();
    let f = Functions::new();
    let spec = f.spec("fn", "step-1", None, json!({"function": "anything"}), &[]);
    let err = lambda
        .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn check_names_what_is_wrong() {
    let lambda = LambdaDriver::connect(LambdaDriverConfig::new().with_region("us-east-1"))
        .await
        .unwrap();
    let f = Functions::new();
    let path = f.bootstrap("ok", "cat");
    let runtime = |v: Value| v.as_object().cloned().unwrap();
    let dir = f.dir.path();
    assert!(
        lambda
            .check(&runtime(json!({"type": "lambda"})), Some(&dir.join(&path)))
            .is_ok()
    );
    assert!(
        lambda
            .check(&runtime(json!({"function": "f:prod"})), None)
            .is_ok()
    );
    let cases = [
        (
            json!({"fuction": "f"}),
            Some(dir.join(&path)),
            "unknown key `runtime.fuction`",
        ),
        (json!({}), None, "needs `runtime.function`"),
        (json!({}), Some(dir.join("nope")), "not found"),
        (
            json!({"function": "f", "memory": 512}),
            None,
            "only applies",
        ),
        (
            json!({"runtime": "provided.al2"}),
            Some(dir.join("steps")),
            "`bootstrap`",
        ),
    ];
    for (value, path, message) in cases {
        let err = lambda
            .check(&runtime(value.clone()), path.as_deref())
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{value}: {err}");
    }
    assert!(
        LambdaDriver::connect(LambdaDriverConfig::new().with_endpoint("localhost:5000"))
            .await
            .is_err()
    );
}

// ---- Docker mode: the function's code really runs (a busybox container) ----

#[tokio::test]
async fn deployed_code_runs_with_its_env_and_input() {
    let Some(url) = docker_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-2").await;
    let f = Functions::new();
    let body = r#"printf '{"greeting":"%s","fn":"%s","step":"%s","input":%s}' "$GREETING" "$WEIR_FUNCTION_ID" "$WEIR_STEP_ID" "$1""#;
    let path = f.bootstrap("env", body);
    f.file("env", "data/note.txt", "packaged", 0o644);
    let function_id = unique("env");
    let spec = f.spec(
        &function_id,
        "step-1",
        Some(&path),
        json!({}),
        &[("GREETING", "hello from .env")],
    );
    lambda.prepare(&spec).await.expect("deploy");
    let input = suite::sample_input();
    let result = lambda
        .execute(request(&spec, input.clone(), suite::QUICK_TIMEOUT))
        .await
        .expect("execute");
    assert!(result.success, "{result:?}");
    let expected_input: Value = serde_json::from_slice(&input).unwrap();
    assert_eq!(
        parse_output(&result.stdout),
        json!({"greeting": "hello from .env", "fn": function_id, "step": "step-1", "input": expected_input})
    );

    // New code takes effect on the next attempt after prepare.
    f.bootstrap("env", "cat data/note.txt");
    lambda.prepare(&spec).await.expect("update");
    let result = lambda
        .execute(request(&spec, input, suite::QUICK_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(parse_output(&result.stdout), json!({"body": "packaged"}));
}

#[tokio::test]
async fn function_errors_carry_type_message_log_and_retry_hint() {
    let Some(url) = docker_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-2").await;
    let f = Functions::new();
    let function_id = unique("errors");
    let cases = [
        (
            "retryable",
            r#"echo "carrier is down" >&2; echo '{"errorType":"SmsError","errorMessage":"carrier down"}'; exit 1"#,
            "lambda function error: SmsError: carrier down",
            true,
        ),
        (
            "permanent",
            r#"echo '{"errorType":"BadPhone","errorMessage":"not a number","retry":false}'; exit 1"#,
            "lambda function error: BadPhone: not a number",
            false,
        ),
    ];
    for (step, body, detail, retryable) in cases {
        let path = f.bootstrap(step, body);
        let spec = f.spec(&function_id, step, Some(&path), json!({}), &[]);
        lambda.prepare(&spec).await.expect("deploy");
        let result = lambda
            .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
            .await
            .expect("execute");
        assert!(!result.success, "{result:?}");
        assert_eq!(result.detail.as_deref(), Some(detail));
        match classify(&result) {
            Outcome::Failed { retryable: r, .. } => assert_eq!(r, retryable, "{step}"),
            other => panic!("{step}: {other:?}"),
        }
        if step == "retryable" {
            assert!(result.log.contains("carrier is down"), "{result:?}");
        }
    }
}

#[tokio::test]
async fn the_step_timeout_cuts_a_sleeping_function_but_not_a_quick_one() {
    let Some(url) = docker_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-2").await;
    let f = Functions::new();
    let function_id = unique("timeout");
    let timeout = Duration::from_secs(6);
    let quick = f.bootstrap("quick", "echo '{\"quick\":true}'");
    let quick = f.spec(&function_id, "quick", Some(&quick), json!({}), &[]);
    let slow = f.bootstrap("slow", "sleep 30\necho '{}'");
    let slow = f.spec(&function_id, "slow", Some(&slow), json!({}), &[]);
    lambda.prepare(&quick).await.expect("deploy");
    lambda.prepare(&slow).await.expect("deploy");

    // moto's Docker mode takes a second or two per call; the quick one fits in the timeout.
    let result = lambda
        .execute(request(&quick, suite::sample_input(), timeout))
        .await
        .expect("the quick function answers within the timeout");
    assert_eq!(parse_output(&result.stdout), json!({"quick": true}));

    let start = Instant::now();
    let err = lambda
        .execute(request(&slow, suite::sample_input(), timeout))
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(
        elapsed >= timeout - Duration::from_millis(100)
            && elapsed < timeout + Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn existing_functions_by_arn_and_qualifier_and_missing_ones() {
    let Some(url) = docker_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-2").await;
    let name = unique("existing");
    create_function(&lambda, &name, "echo '{\"existing\":true}'").await;
    let f = Functions::new();
    let arn = format!("arn:aws:lambda:us-west-2:{ACCOUNT}:function:{name}");
    for function in [name.clone(), format!("{name}:$LATEST"), arn] {
        let spec = f.spec("fn", "step-1", None, json!({"function": function}), &[]);
        let result = lambda
            .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
            .await
            .unwrap_or_else(|e| panic!("{function}: {e}"));
        assert_eq!(
            parse_output(&result.stdout),
            json!({"existing": true}),
            "{function}"
        );
    }
    let missing = unique("missing");
    let spec = f.spec("fn", "step-1", None, json!({"function": missing}), &[]);
    let err = lambda
        .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&missing), "{err}");
}

#[tokio::test]
async fn a_deleted_deployed_function_is_deployed_again_on_the_next_attempt() {
    let Some(url) = docker_moto().await else {
        return;
    };
    let lambda = driver(&url, "us-west-2").await;
    let f = Functions::new();
    let path = f.bootstrap("again", "echo '{\"again\":true}'");
    let spec = f.spec(&unique("again"), "step-1", Some(&path), json!({}), &[]);
    let deployed = lambda.deploy(&spec).await.expect("deploy");
    lambda
        .client()
        .await
        .delete_function()
        .function_name(&deployed.function_name)
        .send()
        .await
        .expect("DeleteFunction");
    let err = lambda
        .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains("deploys it again"), "{err}");
    let result = lambda
        .execute(request(&spec, suite::sample_input(), suite::QUICK_TIMEOUT))
        .await
        .expect("redeployed");
    assert_eq!(parse_output(&result.stdout), json!({"again": true}));
}
