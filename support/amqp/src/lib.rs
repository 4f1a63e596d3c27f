//! weir-support-amqp: what weir's RabbitMQ broker (`weir-broker-amqp`) and the Celery
//! adapter's RabbitMQ transport (`weir-adapter-celery`) share, written once: the mapping of
//! lapin errors onto weir's [`ErrorKind`]s ([`classify`]).
//!
//! Each crate keeps its own messages around it (`amqp broker: publish failed`).

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use weir_core::ErrorKind;

/// The weir error kind of a lapin error.
///
/// I/O errors, missed heartbeats, closed channels or connections, `CONNECTION_FORCED` (an
/// operator closed the connection), `INTERNAL_ERROR` (541, e.g. a vhost that is down),
/// `NOT_ALLOWED` saying a vhost is down or a connection limit is reached, resource alarms and
/// locks, `NOT_FOUND` (an exchange or queue deleted under the client, declared again on a
/// retry) are `Unavailable` (retryable); `ACCESS_REFUSED`, any other `NOT_ALLOWED` (e.g. a
/// vhost the user may not use), `PRECONDITION_FAILED` (a queue or exchange declared with other
/// arguments), `INVALID_PATH`, an untrusted TLS certificate and an auth provider failure are
/// `Config` (permanent); `CONTENT_TOO_LARGE` is `TooLarge`; anything else is `Internal`.
pub fn classify(e: &lapin::Error) -> ErrorKind {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            // Temporary: the vhost's processes are restarting, or too many connections now.
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
                if is_temporary_refusal(amqp.get_message().as_str()) =>
            {
                ErrorKind::Unavailable
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
            | AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH) => ErrorKind::Config,
            AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => ErrorKind::TooLarge,
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
            | AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED)
            | AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
            | AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR)
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

/// Whether a `NOT_ALLOWED` refusal's text tells of a passing condition: "vhost '…' is down",
/// "connection limit (…) is reached".
fn is_temporary_refusal(message: &str) -> bool {
    message.contains("is down") || message.contains("limit")
}

/// Whether the error is RabbitMQ's `NOT_FOUND` (a queue or exchange that does not exist).
pub fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}
