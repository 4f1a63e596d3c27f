//! AWS SDK errors as weir [`Error`]s: throttling, server errors and connection trouble are
//! [`ErrorKind::Unavailable`] (retryable).

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use weir_core::{Error, ErrorKind};

/// Error codes SQS (and the AWS front end) use for throttling and passing trouble.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "RequestThrottledException",
    "OverLimit",
    // SSE-KMS queues: the codes as AWS sends them (`x-amzn-query-error`), and as the SDK
    // names them when only a JSON `__type` came (emulators).
    "KMS.ThrottlingException",
    "KmsThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    // CreateQueue within 60 s of deleting a queue of the same name.
    "AWS.SimpleQueueService.QueueDeletedRecently",
    "QueueDeletedRecently",
];

/// Error codes of missing or refused credentials and permissions.
const CONFIG_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "InvalidSecurity",
    // SSE-KMS queues whose key cannot be used: fixed by the operator, not by a retry.
    "KMS.AccessDeniedException",
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "KMS.InvalidStateException",
    "KMS.OptInRequired",
    "KMS.InvalidKeyUsageException",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
    "KmsInvalidState",
    "KmsOptInRequired",
    "KmsInvalidKeyUsage",
];

/// Error codes of a queue that does not exist (deleted under us).
const NOT_FOUND_CODES: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// Maps an SDK error of operation `what` to weir's error type.
///
/// Timeouts, dispatch (connection) failures, unreadable responses, HTTP 5xx and throttling are
/// `Unavailable` (retryable); credential and permission errors (refused by SQS, or none found by
/// the credential chain) and a request the SDK could not build are `Config`; a missing queue is
/// `NotFound`; anything else is `Internal`.
pub(crate) fn sqs_error<E>(what: &'static str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, code) = classify(&e);
    let mut error = Error::new(kind, format!("sqs broker: {what} failed"))
        .with_context("error", DisplayErrorContext(&e));
    if let Some(code) = code {
        error = error.with_context("code", code);
    }
    error.with_source(e)
}

fn classify<E>(e: &SdkError<E, HttpResponse>) -> (ErrorKind, Option<String>)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        // Credentials are resolved before the request is sent, so "no credentials" arrives
        // as a dispatch failure; it is a setting to fix, not a passing outage.
        SdkError::DispatchFailure(_) if credentials_missing(e) => (ErrorKind::Config, None),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (ErrorKind::Unavailable, None)
        }
        SdkError::ConstructionFailure(_) => (ErrorKind::Config, None),
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let status = service.raw().status().as_u16();
            (classify_code(code.as_deref(), status), code)
        }
        _ => (ErrorKind::Internal, e.code().map(str::to_owned)),
    }
}

/// Whether the source chain of `e` holds a credential provider's verdict that no credentials
/// can be had: none configured anywhere in the chain (`CredentialsNotLoaded`) or a broken
/// configuration (`InvalidConfiguration`). A provider that timed out or failed (STS down, a
/// file it could not read) stays `Unavailable`.
fn credentials_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(current) = next {
        if let Some(credentials) = current.downcast_ref::<CredentialsError>() {
            return matches!(
                credentials,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            );
        }
        next = current.source();
    }
    false
}

/// The kind of a service error from its code and HTTP status.
pub(crate) fn classify_code(code: Option<&str>, status: u16) -> ErrorKind {
    match code {
        Some(c) if RETRYABLE_CODES.contains(&c) => ErrorKind::Unavailable,
        Some(c) if CONFIG_CODES.contains(&c) => ErrorKind::Config,
        Some(c) if NOT_FOUND_CODES.contains(&c) => ErrorKind::NotFound,
        _ if status >= 500 || status == 429 => ErrorKind::Unavailable,
        _ if status == 403 => ErrorKind::Config,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::error::ConnectorError;

    use super::*;

    #[test]
    fn codes() {
        let kind = classify_code(Some("RequestThrottled"), 400);
        assert_eq!(kind, ErrorKind::Unavailable);
        assert!(Error::new(kind, "x").is_retryable());
        assert_eq!(classify_code(None, 503), ErrorKind::Unavailable);
        assert_eq!(
            classify_code(Some("InvalidClientTokenId"), 403),
            ErrorKind::Config
        );
        assert_eq!(
            classify_code(Some("AWS.SimpleQueueService.NonExistentQueue"), 400),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify_code(Some("InvalidParameterValue"), 400),
            ErrorKind::Internal
        );
        assert_eq!(
            classify_code(Some("AWS.SimpleQueueService.QueueDeletedRecently"), 400),
            ErrorKind::Unavailable
        );
    }

    /// KMS errors come with HTTP 400 and the codes the SDK reports (`KMS.…`), not its type
    /// names (`KmsThrottled`): throttling is passing, an unusable key is the operator's.
    #[test]
    fn kms_codes() {
        let throttled = classify_code(Some("KMS.ThrottlingException"), 400);
        assert_eq!(throttled, ErrorKind::Unavailable);
        assert_eq!(
            classify_code(Some("KmsThrottled"), 400),
            ErrorKind::Unavailable
        );
        assert!(Error::new(throttled, "x").is_retryable());
        for code in [
            "KMS.AccessDeniedException",
            "KMS.DisabledException",
            "KMS.NotFoundException",
            "KMS.InvalidStateException",
            "KMS.OptInRequired",
            "KMS.InvalidKeyUsageException",
            "KmsAccessDenied",
        ] {
            assert_eq!(classify_code(Some(code), 400), ErrorKind::Config, "{code}");
        }
    }

    fn dispatch_failure(credentials: CredentialsError) -> SdkError<Unhandled, HttpResponse> {
        SdkError::dispatch_failure(ConnectorError::other(Box::new(credentials), None))
    }

    type Unhandled = aws_sdk_sqs::operation::list_queues::ListQueuesError;

    /// No credentials anywhere, or a broken credential configuration: `Config`, permanent. A
    /// provider that timed out or failed: `Unavailable`, like any connection trouble.
    #[test]
    fn credential_chain_verdicts() {
        let kind = |e: CredentialsError| sqs_error("ListQueues", dispatch_failure(e));
        let e = kind(CredentialsError::not_loaded("no provider had credentials"));
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(!e.is_retryable());
        let e = kind(CredentialsError::invalid_configuration("bad profile"));
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        let e = kind(CredentialsError::provider_timed_out(
            std::time::Duration::from_secs(5),
        ));
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable());
        let e = kind(CredentialsError::provider_error("STS said 503"));
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = sqs_error::<Unhandled>(
            "ListQueues",
            SdkError::dispatch_failure(ConnectorError::io(Box::new(io))),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
}
