//! The conformance suite's harness: every fixture a real invocation at moto.
//!
//! How each fixture's behaviour is produced (all through `LambdaDriver`, nothing in between):
//!
//! | fixture | moto | how |
//! |---|---|---|
//! | Echo (also 1 MiB, over-limit, concurrent) | simple mode | moto's simple backend answers with the payload |
//! | Text | simple mode | the answer `hello weir`, queued in the fixture's own region |
//! | ClientError | simple mode | the answer `{"status":422}`, queued in its own region |
//! | Flood | simple mode | a queued 10 MiB answer; moto turns it into Lambda's `Function.ResponseSizeTooLarge` function error, as Lambda does over 6 MB |
//! | FailWithLog | Docker mode | a deployed `bootstrap` writes `boom` to stderr and exits 1: a `Handled` function error with `boom` in the log tail |
//! | Sleep | Docker mode | a deployed `bootstrap` runs `sleep 30`; the SDK's operation timeout cuts the call |
//!
//! Lambda steps get no argv, so `EchoArg` is not asked for. The suite hands every request to
//! one `Driver`; here that is a dispatcher (test code) that passes each request, unchanged, to
//! the `LambdaDriver` connected to the moto server and region of its fixture.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use weir_core::Result;
use weir_core::driver::{Driver, StepRequest, StepResult, StepSpec};
use weir_core::testkit::driver::{self as suite, DriverHarness, Fixture};
use weir_core::testkit::{Factory, unique};

use super::{Functions, create_function, driver, queue_answers};

/// Regions of the simple-mode moto, one per fixture with a queued answer (moto's queue is per
/// region; each region only ever gets the same answer, so a leftover from an aborted run is
/// harmless).
const ECHO_REGION: &str = "eu-west-1";
const TEXT_REGION: &str = "eu-west-2";
const CLIENT_ERROR_REGION: &str = "eu-west-3";
const FLOOD_REGION: &str = "eu-north-1";
/// The region of the Docker-mode moto.
const DOCKER_REGION: &str = "us-west-2";

pub struct Harness {
    functions: Functions,
    steps: HashMap<Fixture, StepSpec>,
    dispatcher: Arc<Dispatcher>,
}

/// Passes each request to the driver of its fixture (by step id).
struct Dispatcher {
    drivers: HashMap<String, Arc<dyn Driver>>,
}

#[async_trait]
impl Driver for Dispatcher {
    fn kind(&self) -> &str {
        weir_driver_lambda::KIND
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let driver = self
            .drivers
            .get(&request.step_id)
            .unwrap_or_else(|| panic!("no driver for step {}", request.step_id));
        driver.execute(request).await
    }
}

impl Harness {
    /// Every fixture set up at the simple-mode (`simple`) and Docker-mode (`docker`) moto.
    pub async fn new(simple: &str, docker: &str) -> Self {
        let functions = Functions::new();
        let function_id = unique("conformance");
        let mut steps = HashMap::new();
        let mut drivers: HashMap<String, Arc<dyn Driver>> = HashMap::new();

        // Simple mode: existing functions, created with the SDK, named by `runtime.function`.
        let simple_fixtures = [
            (Fixture::Echo, ECHO_REGION, None),
            (Fixture::Text, TEXT_REGION, Some("hello weir".to_owned())),
            (
                Fixture::ClientError,
                CLIENT_ERROR_REGION,
                Some(r#"{"status":422}"#.to_owned()),
            ),
            (
                Fixture::Flood,
                FLOOD_REGION,
                Some("weir\n".repeat(suite::FLOOD_BYTES / 5)),
            ),
        ];
        for (fixture, region, answer) in simple_fixtures {
            let lambda = driver(simple, region).await;
            let name = unique(&format!("conformance-{fixture:?}"));
            create_function(&lambda, &name, "exit 0").await;
            let step_id = format!("{fixture:?}");
            let spec = functions.spec(&function_id, &step_id, None, json!({"function": name}), &[]);
            lambda
                .prepare(&spec)
                .await
                .expect("prepare (function exists)");
            if let Some(answer) = answer {
                queue_answers(simple, region, &[&answer]).await;
            }
            steps.insert(fixture, spec);
            drivers.insert(step_id, lambda);
        }

        // Docker mode: functions deployed from their directories by the driver.
        let lambda = driver(docker, DOCKER_REGION).await;
        let docker_fixtures = [
            (
                Fixture::FailWithLog,
                "echo boom >&2\necho '{\"errorType\":\"StepFailed\",\"errorMessage\":\"boom\"}'\nexit 1",
            ),
            (Fixture::Sleep, "sleep 30\necho '{}'"),
        ];
        for (fixture, body) in docker_fixtures {
            let step_id = format!("{fixture:?}");
            let path = functions.bootstrap(&step_id, body);
            let spec = functions.spec(&function_id, &step_id, Some(&path), json!({}), &[]);
            lambda.prepare(&spec).await.expect("prepare (deploy)");
            steps.insert(fixture, spec);
            drivers.insert(step_id, lambda.clone());
        }
        Harness {
            functions,
            steps,
            dispatcher: Arc::new(Dispatcher { drivers }),
        }
    }
}

#[async_trait]
impl Factory<dyn Driver> for Harness {
    async fn make(&self) -> Arc<dyn Driver> {
        self.dispatcher.clone()
    }
}

impl DriverHarness for Harness {
    fn request(&self, fixture: Fixture, input: Bytes, timeout: Duration) -> StepRequest {
        let spec = self
            .steps
            .get(&fixture)
            .unwrap_or_else(|| panic!("the suite asked for {fixture:?}"));
        assert!(self.functions.dir.path().is_dir());
        super::request(spec, input, timeout)
    }

    fn supports_argv(&self) -> bool {
        false
    }
}
