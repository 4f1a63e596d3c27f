//! The 2022 example function as written (`examples/signup-2022`: a `docker` step and a
//! `lambda` step) runs through `weir run`, with the container really started by the local
//! Docker engine and the Lambda really deployed to and invoked on moto.
#![cfg(all(feature = "driver-docker", feature = "driver-lambda"))]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A region of moto's no other test queues answers in (moto's simple Lambda backend echoes
/// the payload unless answers are queued for the region).
const REGION: &str = "ap-southeast-2";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// moto: Lambda without Docker (invocations echo the payload) and the `weir-lambda` role the
/// driver deploys with by default.
fn prepare_moto(endpoint: &str) {
    let config = Command::new("curl")
        .args(["-sf", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"lambda":{"use_docker":false}}"#])
        .arg(format!("{endpoint}/moto-api/config"))
        .status()
        .expect("curl");
    assert!(config.success(), "configuring moto's Lambda backend");
    let role = Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/iam/aws4_request"
        ))
        .arg(format!(
            "{endpoint}/?Action=CreateRole&RoleName=weir-lambda&Version=2010-05-08&AssumeRolePolicyDocument=%7B%7D"
        ))
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&role.stdout);
    assert!(
        answer.contains("CreateRoleResult") || answer.contains("EntityAlreadyExists"),
        "creating the weir-lambda role on moto: {answer}"
    );
}

/// `weir` with the AWS chain pointed at moto (`endpoint`, region [`REGION`], test credentials).
fn weir_on_moto(endpoint: &str) -> Command {
    let mut weir = Command::new(env!("CARGO_BIN_EXE_weir"));
    weir.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE");
    weir
}

fn containers_of(function_id: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=weir.function_id={function_id}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_2022_example_runs_its_docker_and_lambda_steps() {
    let (Some(_docker), Some(lambda)) = (
        weir_core::testkit::service_url("WEIR_TEST_DOCKER_URL"),
        weir_core::testkit::service_url("WEIR_TEST_LAMBDA_URL"),
    ) else {
        return;
    };
    prepare_moto(&lambda);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/signup-2022");
    let dir = tempfile::tempdir().expect("tempdir");
    let function = dir.path().join("signup-2022");
    copy_dir(&example, &function);
    // The step image is built FROM scratch around a static busybox (no registry here).
    std::fs::copy(
        "/bin/busybox",
        function.join("steps/send-sms-dispatch/busybox"),
    )
    .expect("copy /bin/busybox (scripts/test.sh installs busybox-static)");

    let out = weir_on_moto(&lambda)
        .args(["run", "--json", "--event"])
        .arg(function.join("event.json"))
        .arg(&function)
        .output()
        .expect("weir run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir run failed: {stdout}\n{stderr}");
    let run: Value = serde_json::from_str(&stdout).expect("--json prints the run");
    assert_eq!(run["status"], "completed", "{run}");
    // Step 1 ran in a container (its script says so, and it read the event from its input).
    let sms = &run["steps"]["step-1"]["output"]["sms"];
    assert_eq!(sms["via"], "docker", "{run}");
    assert_eq!(sms["to"], "+15555550142", "{run}");
    // Step 2 was invoked on moto, whose Lambda echoes the payload: the output is the input
    // weir sent, holding the event and step 1's output.
    let echoed = &run["steps"]["step-2"]["output"];
    assert_eq!(echoed["event"]["user"]["id"], "user-42", "{run}");
    assert_eq!(echoed["steps"]["step-1"]["sms"]["via"], "docker", "{run}");
    assert_eq!(echoed["ctx"]["step_id"], "step-2", "{run}");
    // Every container was removed.
    assert_eq!(
        containers_of("prompt-deer-ede40d"),
        "",
        "containers left behind"
    );
}
