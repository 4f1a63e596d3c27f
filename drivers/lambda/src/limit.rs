//! Refusing an Invoke response whose body is over `max_output_bytes` before it is read.
//!
//! The SDK reads a whole response body into memory before the driver sees it. Lambda's answers
//! carry a `Content-Length`, so this interceptor checks it first: a larger body fails the call
//! with [`PayloadTooLarge`] and is never read. (A body without a length is capped by the
//! driver's [`OutputBuffer`](weir_core::driver::output::OutputBuffer) after reading.)

use std::fmt;

use aws_sdk_lambda::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_lambda::config::{ConfigBag, Intercept, RuntimeComponents};

/// An interceptor failing successful responses longer than `max` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PayloadLimit {
    pub max: usize,
}

impl Intercept for PayloadLimit {
    fn name(&self) -> &'static str {
        "WeirLambdaPayloadLimit"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let response = context.response();
        if !response.status().is_success() {
            return Ok(());
        }
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(len) if len > self.max as u64 => Err(Box::new(PayloadTooLarge { len })),
            _ => Ok(()),
        }
    }
}

/// The error of [`PayloadLimit`]: the answer announced `len` bytes.
#[derive(Debug)]
pub(crate) struct PayloadTooLarge {
    pub len: u64,
}

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the Lambda response payload has {} bytes", self.len)
    }
}

impl std::error::Error for PayloadTooLarge {}

/// The [`PayloadTooLarge`] somewhere in `e`'s chain of sources.
pub(crate) fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a PayloadTooLarge> {
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<PayloadTooLarge>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}
