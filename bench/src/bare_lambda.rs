//! The bare cost of a Lambda attempt without weir, for `weir-bench runtimes`: one
//! aws-sdk-lambda `Invoke` (request/response, log tail) of the same function through the same
//! client the driver uses, so the two differ only by the driver's own work.

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use bytes::Bytes;
use weir_core::{Error, ErrorKind, Result};

use weir_driver_lambda::LambdaDriver;

/// Invokes one function bare.
#[derive(Debug, Clone)]
pub struct BareInvoke {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl BareInvoke {
    /// Invokes `function` (a name or ARN) with `driver`'s client.
    pub async fn new(driver: &LambdaDriver, function: &str) -> Self {
        BareInvoke {
            client: driver.client().await.clone(),
            function: function.to_owned(),
        }
    }

    /// One invoke with `input` as the payload; returns the response payload. A function error
    /// is an error.
    pub async fn run(&self, input: &Bytes) -> Result<Bytes> {
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::RequestResponse)
            .log_type(LogType::Tail)
            .payload(Blob::new(input.to_vec()))
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "bare lambda baseline: Invoke: {}",
                        aws_sdk_lambda::error::DisplayErrorContext(e)
                    ),
                )
            })?;
        if let Some(error) = out.function_error() {
            return Err(Error::new(
                ErrorKind::StepFailed,
                format!("bare lambda baseline: the function failed: {error}"),
            ));
        }
        Ok(out
            .payload()
            .map(|p| Bytes::copy_from_slice(p.as_ref()))
            .unwrap_or_default())
    }
}
