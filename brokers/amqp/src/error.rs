//! lapin errors as weir [`Error`]s: connection trouble is [`ErrorKind::Unavailable`] (retryable).

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use weir_core::{Error, ErrorKind};

/// Maps a lapin error of operation `what` to weir's error type.
///
/// I/O errors, missed heartbeats, closed channels or connections, `CONNECTION_FORCED` (an
/// operator closed the connection), resource alarms and locks, `NOT_FOUND` (an exchange or
/// queue deleted under the broker, declared again on a retry) are `Unavailable` (retryable);
/// `ACCESS_REFUSED`, `NOT_ALLOWED` (e.g. a vhost the user may not use), `PRECONDITION_FAILED`
/// (a queue or exchange declared with other arguments), an untrusted TLS certificate and an
/// auth provider failure are `Config` (permanent); `CONTENT_TOO_LARGE` is `TooLarge`; anything else is `Internal`.
pub(crate) fn amqp_error(what: &'static str, e: lapin::Error) -> Error {
    let kind = classify(&e);
    let mut error = Error::new(kind, format!("amqp broker: {what} failed"));
    if kind != ErrorKind::Unavailable {
        error = error.permanent();
    }
    error.with_source(e)
}

fn classify(e: &lapin::Error) -> ErrorKind {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
            | AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH) => ErrorKind::Config,
            AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => ErrorKind::TooLarge,
            // An exchange or queue deleted under the broker: declared again on the retry.
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
            | AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED)
            | AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
            | AMQPErrorKind::Hard(AMQPHardError::RESOURCEERROR) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        lapin::ErrorKind::AuthProviderError(_) | lapin::ErrorKind::InvalidProtocolVersion(_) => {
            ErrorKind::Config
        }
        // TLS: the server's certificate is not trusted (unknown CA, wrong name, expired).
        lapin::ErrorKind::IOError(io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && io.to_string().contains("certificate") =>
        {
            ErrorKind::Config
        }
        lapin::ErrorKind::ChannelsLimitReached
        | lapin::ErrorKind::InvalidChannel(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::RuntimeShutdownError(_)
        | lapin::ErrorKind::ParsingError(_)
        | lapin::ErrorKind::SerialisationError(_)
        | lapin::ErrorKind::MissingHeartbeatError => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// A retryable error for a channel or connection that went away under an operation.
pub(crate) fn gone(what: &str) -> Error {
    Error::unavailable(format!(
        "amqp broker: {what}: the channel or connection closed"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn io_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = amqp_error(
            "publish",
            lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(io))),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(
            e.to_string().starts_with("amqp broker: publish failed"),
            "{e}"
        );
        let e = amqp_error(
            "connecting",
            lapin::Error::from(lapin::ErrorKind::AuthProviderError("no".into())),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.is_retryable());
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let e = amqp_error(
            "connecting",
            lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(tls))),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}
