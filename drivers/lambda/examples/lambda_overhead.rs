//! Per-invoke time through `LambdaDriver::execute` vs a bare aws-sdk-lambda `Invoke` of the same
//! function, against moto's simple Lambda backend (which answers at once, so the difference is
//! the driver's own cost).
//!
//! ```text
//! cargo run --release -p weir-driver-lambda --example lambda_overhead -- [invokes]
//! ```
//!
//! Uses `WEIR_TEST_LAMBDA_URL` (default `http://127.0.0.1:5000`): switches that moto to its
//! simple Lambda mode, creates the role `weir-lambda` and one function in `ap-northeast-1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use serde_json::{Map, json};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, Driver, StepRequest};
use weir_driver_lambda::{LambdaDriver, LambdaDriverConfig, package_dir};

const REGION: &str = "ap-northeast-1";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("WEIR_TEST_LAMBDA_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".to_owned());
    let invokes: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(300);
    setup_moto(&url).await?;

    let config = LambdaDriverConfig::new()
        .with_region(REGION)
        .with_endpoint(&url)
        .with_static_credentials("test", "test", None);
    let driver = Arc::new(LambdaDriver::connect(config).await?);
    let client = driver.client().await.clone();
    let name = format!("overhead-{:08x}", rand::random::<u32>());
    create_function(&driver, &name).await?;

    let input = weir_core::testkit::driver::sample_input();
    let request = StepRequest {
        input: input.clone(),
        function_id: "overhead".into(),
        function_dir: std::env::temp_dir(),
        run_id: "01J0000000000000000000RUN1".into(),
        step_id: "step-1".into(),
        attempt: 1,
        path: None,
        runtime: Map::from_iter([
            ("type".to_owned(), json!("lambda")),
            ("function".to_owned(), json!(name)),
        ]),
        timeout: Duration::from_secs(30),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    };

    let bare = || async {
        let out = client
            .invoke()
            .function_name(&name)
            .invocation_type(InvocationType::RequestResponse)
            .log_type(LogType::Tail)
            .payload(Blob::new(input.to_vec()))
            .send()
            .await
            .expect("bare invoke");
        assert!(out.function_error().is_none());
    };
    let through_driver = || async {
        let result = driver
            .execute(request.clone())
            .await
            .expect("driver invoke");
        assert!(result.success);
    };

    for _ in 0..20 {
        bare().await;
        through_driver().await;
    }
    let (mut bare_ms, mut driver_ms) = (Vec::new(), Vec::new());
    for _ in 0..invokes {
        let start = Instant::now();
        bare().await;
        bare_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = Instant::now();
        through_driver().await;
        driver_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{invokes} invokes each, {} byte payload, moto at {url} (simple Lambda backend)",
        input.len()
    );
    report("bare aws-sdk-lambda Invoke", &mut bare_ms);
    report("LambdaDriver::execute     ", &mut driver_ms);
    Ok(())
}

fn report(what: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{what}  mean {mean:6.2} ms   p50 {:6.2} ms   p99 {:6.2} ms",
        at(0.50),
        at(0.99)
    );
}

async fn setup_moto(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    http.post(format!("{url}/moto-api/config"))
        .json(&json!({"lambda": {"use_docker": false}}))
        .send()
        .await?
        .error_for_status()?;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    // moto routes by the signature's credential scope and does not check the signature.
    let response = http
        .post(format!("{url}/"))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "weir-lambda"),
            ("AssumeRolePolicyDocument", policy),
        ])
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() && !body.contains("EntityAlreadyExists") {
        return Err(format!("CreateRole at moto: {status} {body}").into());
    }
    Ok(())
}

async fn create_function(
    driver: &LambdaDriver,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("bootstrap"), "#!/bin/sh\ncat\n")?;
    let package = package_dir(dir.path())?;
    driver
        .client()
        .await
        .create_function()
        .function_name(name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role("arn:aws:iam::123456789012:role/weir-lambda")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(package.zip().to_vec()))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}
