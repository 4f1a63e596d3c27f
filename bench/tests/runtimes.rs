//! `weir-bench runtimes`: each row is printed with its five figures (bare p50/mean, weir
//! p50/mean, ratio). The figures are not checked here (timing belongs to the benchmark); that
//! both sides ran is.

use std::process::Command;

/// The figures of the row starting with `runtime` in `weir-bench runtimes`' table.
fn row_figures(table: &str, runtime: &str) -> Vec<f64> {
    let row = table
        .lines()
        .find(|l| l.starts_with(runtime))
        .unwrap_or_else(|| panic!("no {runtime} row: {table}"));
    let figures: Vec<f64> = row
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('×').parse().ok())
        .collect();
    assert_eq!(
        figures.len(),
        5,
        "bare p50/mean, weir p50/mean, ratio: {row}"
    );
    assert!(figures.iter().all(|f| *f > 0.0), "{row}");
    figures
}

fn run(bench: &mut Command) -> String {
    let out = bench.output().expect("weir-bench runtimes");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weir-bench runtimes failed: {table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    table
}

#[test]
fn the_process_row_times_a_bare_spawn_and_the_driver() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_weir-bench"));
    bench.args(["runtimes", "--process", "--attempts", "5", "--warmup", "1"]);
    let table = run(&mut bench);
    row_figures(&table, "process (");
}

/// A function deployed to moto from the 2022 example's lambda step, timed bare and through the
/// driver.
#[cfg(feature = "driver-lambda")]
#[tokio::test]
async fn the_lambda_row_times_a_bare_invoke_and_the_driver() {
    use std::path::Path;
    use std::sync::Arc;

    use weir_driver_lambda::{LambdaDriver, LambdaDriverConfig};

    /// A region no other test queues moto answers in (moto's simple Lambda backend echoes the
    /// payload unless answers are queued for the region).
    const REGION: &str = "ap-northeast-2";

    let Some(url) = weir_core::testkit::service_url("WEIR_TEST_LAMBDA_URL") else {
        return;
    };
    let url = url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let config = http
        .post(format!("{url}/moto-api/config"))
        .json(&serde_json::json!({"lambda": {"use_docker": false}}))
        .send()
        .await
        .expect("moto /moto-api/config");
    assert!(config.status().is_success(), "{config:?}");
    // The role the driver deploys with by default (moto checks a function's role exists).
    let role = http
        .post(format!("{url}/"))
        // moto routes by the signature's credential scope and does not check the signature.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "weir-lambda"),
            ("AssumeRolePolicyDocument", "{}"),
        ])
        .send()
        .await
        .expect("IAM CreateRole at moto");
    let answer = role.text().await.unwrap_or_default();
    assert!(
        answer.contains("CreateRoleResult") || answer.contains("EntityAlreadyExists"),
        "creating the weir-lambda role on moto: {answer}"
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/signup-2022");
    let lambda = LambdaDriver::connect(
        LambdaDriverConfig::new()
            .with_region(REGION)
            .with_endpoint(&url)
            .with_static_credentials("test", "test", None),
    )
    .await
    .expect("connect");
    let mut runtime = serde_json::Map::new();
    runtime.insert("type".into(), "lambda".into());
    let spec = weir_core::driver::StepSpec {
        function_id: "weir-bench-runtimes".into(),
        step_id: "noop".into(),
        path: Some(example.join("steps/add-to-intercom")),
        function_dir: example,
        runtime,
        env: Arc::default(),
        timeout: weir_core::function::DEFAULT_STEP_TIMEOUT,
    };
    let function = lambda.deploy(&spec).await.expect("deploy").function_name;

    let mut bench = Command::new(env!("CARGO_BIN_EXE_weir-bench"));
    bench
        .args(["runtimes", "--attempts", "5", "--warmup", "1"])
        .args(["--lambda-function", &function])
        .env("AWS_ENDPOINT_URL", &url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE");
    let table = tokio::task::spawn_blocking(move || run(&mut bench))
        .await
        .expect("weir-bench");
    row_figures(&table, &format!("lambda ({function})"));
}
