//! AWS SDK errors as weir [`Error`]s: throttling, server errors and connection trouble are
//! retryable; a missing function, refused credentials or permissions and invalid requests are
//! permanent.

use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use weir_core::{Error, ErrorKind};

/// Codes of throttling and passing trouble on Lambda's side (and of the AWS front end).
const RETRYABLE_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ServiceException",
    "ResourceConflictException",
    "ResourceNotReadyException",
    "CodeArtifactUserPendingException",
    "EC2ThrottledException",
    "EC2UnexpectedException",
    "ENILimitReachedException",
    "ENINotReadyException",
    "EFSIOException",
    "EFSMountTimeoutException",
    "EFSMountConnectivityException",
    "SubnetIPAddressLimitReachedException",
    "SnapStartNotReadyException",
    "SnapStartTimeoutException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Codes of missing or refused credentials, permissions and function setup that retrying
/// cannot fix.
const CONFIG_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "EC2AccessDeniedException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "InvalidRuntimeException",
    "InvalidZipFileException",
    "InvalidSecurityGroupIDException",
    "InvalidSubnetIDException",
    "EFSMountFailureException",
    "CodeArtifactUserDeletedException",
    "CodeArtifactUserFailedException",
    "CodeStorageExceededException",
    "CodeVerificationFailedException",
    "InvalidCodeSignatureException",
    "ModeNotSupportedException",
    "NoPublishedVersionException",
    "RecursiveInvocationException",
];

/// Codes of a request Lambda refused as it was.
const INVALID_CODES: &[&str] = &[
    "InvalidParameterValueException",
    "InvalidRequestContentException",
    "UnsupportedMediaTypeException",
    "ValidationException",
];

/// Codes of a payload over Lambda's limits.
const TOO_LARGE_CODES: &[&str] = &[
    "RequestTooLargeException",
    "SerializedRequestEntityTooLargeException",
];

/// Maps an SDK error of operation `what` (e.g. `invoke`) to weir's error type.
///
/// A timeout of the SDK (the operation timeout) is [`ErrorKind::Timeout`]; connection failures,
/// unreadable responses, HTTP 5xx and throttling are [`ErrorKind::Unavailable`] (retryable);
/// `ResourceNotFoundException` is [`ErrorKind::NotFound`]; credential, permission and setup
/// errors are [`ErrorKind::Config`]; refused requests are [`ErrorKind::InvalidInput`]; an
/// oversized request is [`ErrorKind::TooLarge`]; anything else is [`ErrorKind::Internal`].
/// Only the first three are retryable. The AWS error code and message are in the context.
pub(crate) fn lambda_error<E>(what: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, code) = classify(&e);
    let mut error = Error::new(kind, format!("lambda driver: {what} failed"));
    if let Some(code) = &code {
        error = error.with_context("code", code);
    }
    error
        .with_context("error", DisplayErrorContext(&e))
        .with_source(e)
}

/// The AWS error code of an SDK error, if the service answered with one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

fn classify<E>(e: &SdkError<E, HttpResponse>) -> (ErrorKind, Option<String>)
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::TimeoutError(_) => (ErrorKind::Timeout, None),
        SdkError::DispatchFailure(failure) if failure.is_user() => (ErrorKind::Config, None),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (ErrorKind::Unavailable, None),
        SdkError::ConstructionFailure(_) => (ErrorKind::Config, None),
        SdkError::ServiceError(service) => {
            let code = service.err().code().map(str::to_owned);
            let status = service.raw().status().as_u16();
            (classify_code(code.as_deref(), status), code)
        }
        _ => (ErrorKind::Internal, None),
    }
}

/// The kind of a service error from its code and HTTP status.
pub(crate) fn classify_code(code: Option<&str>, status: u16) -> ErrorKind {
    match code {
        Some("ResourceNotFoundException") => ErrorKind::NotFound,
        Some(c) if RETRYABLE_CODES.contains(&c) => ErrorKind::Unavailable,
        Some(c) if CONFIG_CODES.contains(&c) => ErrorKind::Config,
        Some(c) if INVALID_CODES.contains(&c) => ErrorKind::InvalidInput,
        Some(c) if TOO_LARGE_CODES.contains(&c) => ErrorKind::TooLarge,
        _ if status >= 500 || status == 429 => ErrorKind::Unavailable,
        _ if status == 401 || status == 403 => ErrorKind::Config,
        _ if status == 404 => ErrorKind::NotFound,
        _ if status == 413 => ErrorKind::TooLarge,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let retryable = |code, status| Error::new(classify_code(code, status), "x").is_retryable();
        for (code, status) in [
            ("TooManyRequestsException", 429),
            ("ServiceException", 500),
            ("ResourceConflictException", 409),
            ("EC2ThrottledException", 502),
        ] {
            assert_eq!(classify_code(Some(code), status), ErrorKind::Unavailable);
            assert!(retryable(Some(code), status), "{code}");
        }
        let permanent = [
            ("ResourceNotFoundException", 404, ErrorKind::NotFound),
            ("AccessDeniedException", 403, ErrorKind::Config),
            ("UnrecognizedClientException", 403, ErrorKind::Config),
            ("KMSAccessDeniedException", 502, ErrorKind::Config),
            (
                "InvalidRequestContentException",
                400,
                ErrorKind::InvalidInput,
            ),
            (
                "InvalidParameterValueException",
                400,
                ErrorKind::InvalidInput,
            ),
            ("RequestTooLargeException", 413, ErrorKind::TooLarge),
        ];
        for (code, status, kind) in permanent {
            assert_eq!(classify_code(Some(code), status), kind, "{code}");
            assert!(!retryable(Some(code), status), "{code}");
        }
        assert_eq!(classify_code(None, 503), ErrorKind::Unavailable);
        assert_eq!(classify_code(None, 403), ErrorKind::Config);
        assert_eq!(
            classify_code(Some("SomethingNew"), 400),
            ErrorKind::Internal
        );
    }
}
