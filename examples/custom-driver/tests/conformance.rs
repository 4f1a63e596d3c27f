//! The `shell` runtime passes weir's runtime-driver conformance suite.

use std::sync::Arc;

use serde_json::json;
use weir_core::testkit::driver::{Fixture, Harness, run_all, sample_request};
use weir_custom::shell::ShellDriver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let harness = Harness::new(Arc::new(ShellDriver), |fixture, input, timeout| {
        let command = match fixture {
            Fixture::Echo => "exec cat",
            Fixture::EchoArg => "printf '%s' \"$1\"",
            Fixture::Text => "echo hello weir",
            Fixture::FailWithLog => "echo boom >&2; exit 3",
            Fixture::Sleep => "sleep 30",
            Fixture::ClientError => "echo '{\"status\": 422}'",
            Fixture::Flood => "yes weir | head -c 10485760",
        };
        sample_request(json!({"type": "shell", "command": command}), input, timeout)
    });
    run_all(&harness.with_argv(true)).await;
}
