//! The runtime `weir replay --stub STEP` gives a step: it answers each attempt with the step's
//! output in the original run of the same event, instead of running anything (a step with side
//! effects: an e-mail, a payment).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use weir_core::driver::{Driver, StepRequest, StepResult};

/// The runtime type stubbed steps are given.
pub const STUB_RUNTIME: &str = "weir-replay-stub";

/// Recorded outputs by event id, then step id.
#[derive(Debug, Default)]
pub struct RecordedOutputs {
    /// What the original runs' steps answered.
    pub outputs: HashMap<String, BTreeMap<String, Value>>,
}

#[async_trait]
impl Driver for RecordedOutputs {
    fn kind(&self) -> &str {
        STUB_RUNTIME
    }

    async fn execute(&self, request: StepRequest) -> weir_core::Result<StepResult> {
        let input: Value = serde_json::from_slice(&request.input)?;
        let event_id = input["event"]["id"].as_str().unwrap_or_default();
        let recorded = self
            .outputs
            .get(event_id)
            .and_then(|steps| steps.get(&request.step_id));
        Ok(match recorded {
            Some(output) => StepResult {
                success: true,
                stdout: Bytes::from(serde_json::to_vec(output)?),
                log: String::new(),
                detail: None,
                retryable: None,
            },
            None => StepResult {
                success: false,
                stdout: Bytes::new(),
                log: String::new(),
                detail: Some(format!(
                    "stubbed, and the original run of event {event_id} has no output of step {}",
                    request.step_id
                )),
                retryable: Some(false),
            },
        })
    }
}
