//! Helpers shared by the integration tests: moto servers, drivers, step directories, requests.
//!
//! Two moto servers: `WEIR_TEST_LAMBDA_URL` in moto's simple Lambda mode (invoke echoes the
//! payload, or answers with what was queued at `/moto-api/static/lambda-simple/response`), and
//! `WEIR_TEST_LAMBDA_DOCKER_URL` in moto's Docker mode, which runs each invocation in a
//! container of the local image `weir-test/moto-lambda:provided.al2023` (see
//! `tests/moto-docker/`). Every test uses a region of its own on the simple server, because
//! moto's queue of answers is per account and region.
#![allow(dead_code)]

pub mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use weir_core::driver::{DEFAULT_MAX_OUTPUT_BYTES, StepRequest, StepSpec};
use weir_driver_lambda::{LambdaDriver, LambdaDriverConfig, package_dir};

/// The account moto answers with.
pub const ACCOUNT: &str = "123456789012";

/// The simple-mode moto (`WEIR_TEST_LAMBDA_URL`), set up; `None`: skip (panics under CI).
pub async fn simple_moto() -> Option<String> {
    let url = weir_core::testkit::service_url("WEIR_TEST_LAMBDA_URL")?;
    let url = url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{url}/moto-api/config"))
        .json(&json!({"lambda": {"use_docker": false}}))
        .send()
        .await
        .expect("moto /moto-api/config");
    assert!(response.status().is_success(), "{response:?}");
    create_role(&url, "weir-lambda").await;
    Some(url)
}

/// The Docker-mode moto (`WEIR_TEST_LAMBDA_DOCKER_URL`), checked and set up; `None`: skip.
pub async fn docker_moto() -> Option<String> {
    let url = weir_core::testkit::service_url("WEIR_TEST_LAMBDA_DOCKER_URL")?;
    let url = url.trim_end_matches('/').to_owned();
    let config: Value = reqwest::get(format!("{url}/moto-api/config"))
        .await
        .expect("moto /moto-api/config")
        .json()
        .await
        .expect("moto config JSON");
    assert_eq!(
        config["lambda"]["use_docker"],
        json!(true),
        "WEIR_TEST_LAMBDA_DOCKER_URL must be a moto server in Docker mode (started with \
         MOTO_DOCKER_LAMBDA_IMAGE=weir-test/moto-lambda, never told use_docker=false)"
    );
    create_role(&url, "weir-lambda").await;
    Some(url)
}

/// Creates IAM role `name` at moto (moto checks a function's role exists); exists: fine.
pub async fn create_role(url: &str, name: &str) {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        // moto routes by the signature's credential scope and does not check the signature.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
            ("AssumeRolePolicyDocument", policy),
        ])
        .send()
        .await
        .expect("IAM CreateRole at moto");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(
        status.is_success() || body.contains("EntityAlreadyExists"),
        "CreateRole: {status} {body}"
    );
}

/// Queues answers for the next invocations in `region` (moto's simple mode).
pub async fn queue_answers(url: &str, region: &str, answers: &[&str]) {
    let response = reqwest::Client::new()
        .post(format!("{url}/moto-api/static/lambda-simple/response"))
        .json(&json!({"results": answers, "region": region, "account_id": ACCOUNT}))
        .send()
        .await
        .expect("queue a moto Lambda answer");
    assert!(response.status().is_success(), "{response:?}");
}

/// A driver for `region` at moto, with test credentials.
pub async fn driver(url: &str, region: &str) -> Arc<LambdaDriver> {
    let config = LambdaDriverConfig::new()
        .with_region(region)
        .with_endpoint(url)
        .with_static_credentials("test", "test", None);
    Arc::new(LambdaDriver::connect(config).await.expect("connect"))
}

/// A function directory holding step directories: `steps/<name>/<file>`.
pub struct Functions {
    pub dir: tempfile::TempDir,
}

impl Functions {
    pub fn new() -> Self {
        Functions {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Writes `steps/<step>/bootstrap` (executable `#!/bin/sh` with `body`); returns the
    /// step's path relative to the function directory.
    pub fn bootstrap(&self, step: &str, body: &str) -> PathBuf {
        self.file(step, "bootstrap", &format!("#!/bin/sh\n{body}\n"), 0o755)
    }

    /// Writes `steps/<step>/<name>` with `mode`.
    pub fn file(&self, step: &str, name: &str, content: &str, mode: u32) -> PathBuf {
        let rel = PathBuf::from("steps").join(step);
        let path = self.dir.path().join(&rel).join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        rel
    }

    /// A step of function `function_id` deployed from `path`, with `runtime` keys and `.env`.
    pub fn spec(
        &self,
        function_id: &str,
        step_id: &str,
        path: Option<&Path>,
        runtime: Value,
        env: &[(&str, &str)],
    ) -> StepSpec {
        let mut map = match runtime {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("type".into(), json!("lambda"));
        StepSpec {
            function_id: function_id.into(),
            function_dir: self.dir.path().to_path_buf(),
            step_id: step_id.into(),
            path: path.map(|p| self.dir.path().join(p)),
            runtime: map,
            env: Arc::new(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            timeout: weir_core::function::DEFAULT_STEP_TIMEOUT,
        }
    }
}

/// A request running `spec` with `input` and `timeout`.
pub fn request(spec: &StepSpec, input: Bytes, timeout: Duration) -> StepRequest {
    StepRequest {
        input,
        function_id: spec.function_id.clone(),
        function_dir: spec.function_dir.clone(),
        run_id: "01J0000000000000000000RUN1".into(),
        step_id: spec.step_id.clone(),
        attempt: 1,
        path: spec.path.clone(),
        runtime: spec.runtime.clone(),
        timeout,
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: spec.env.clone(),
    }
}

/// Creates function `name` with the SDK (for steps naming an existing function).
pub async fn create_function(driver: &LambdaDriver, name: &str, bootstrap: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap");
    std::fs::write(&path, format!("#!/bin/sh\n{bootstrap}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let package = package_dir(dir.path()).expect("package");
    driver
        .client()
        .await
        .create_function()
        .function_name(name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(format!("arn:aws:iam::{ACCOUNT}:role/weir-lambda"))
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(
                    package.zip().to_vec(),
                ))
                .build(),
        )
        .send()
        .await
        .expect("CreateFunction");
}
