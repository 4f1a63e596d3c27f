//! lapin errors as weir [`Error`]s: connection trouble is [`ErrorKind::Unavailable`] (retryable).

use weir_core::{Error, ErrorKind};

/// Maps a lapin error of operation `what` to weir's error type.
///
/// I/O errors, missed heartbeats, closed channels or connections, `CONNECTION_FORCED` (an
/// operator closed the connection), `INTERNAL_ERROR` (541, e.g. a vhost that is down),
/// `NOT_ALLOWED` saying a vhost is down or a connection limit is reached, resource alarms and
/// locks, `NOT_FOUND` (an exchange or delay queue deleted under the broker, declared again on
/// a retry — a topic exchange without the bindings of its group queues, which only their
/// subscriptions make again: see the README's limits) are `Unavailable` (retryable);
/// `ACCESS_REFUSED`, any other `NOT_ALLOWED` (e.g. a vhost the user may not use),
/// `PRECONDITION_FAILED` (a queue or exchange declared with other arguments), an untrusted TLS
/// certificate and an auth provider failure are `Config` (permanent); `CONTENT_TOO_LARGE` is
/// `TooLarge`; anything else is `Internal`.
///
/// Not for acks and nacks: whatever makes one fail, the channel is gone and RabbitMQ requeues
/// the message ([`settle_error`]).
pub(crate) fn amqp_error(what: &'static str, e: lapin::Error) -> Error {
    let kind = weir_support_amqp::classify(&e);
    let mut error = Error::new(kind, format!("amqp broker: {what} failed"));
    if kind != ErrorKind::Unavailable {
        error = error.permanent();
    }
    error.with_source(e)
}

/// A retryable error for a channel or connection that went away under an operation.
pub(crate) fn gone(what: &str) -> Error {
    Error::unavailable(format!(
        "amqp broker: {what}: the channel or connection closed"
    ))
}

/// The error of a failed `basic.ack` / `basic.nack`: whatever the cause (a dropped
/// connection, a channel closed by `consumer_timeout` with `PRECONDITION_FAILED`, …), the
/// channel is gone and RabbitMQ redelivers the message, so it is [`gone`] (retryable).
pub(crate) fn settle_error(what: &str, e: lapin::Error) -> Error {
    gone(what)
        .with_context("note", "the message is redelivered (RabbitMQ requeued it)")
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

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

    fn protocol(kind: AMQPErrorKind, text: &str) -> lapin::Error {
        lapin::Error::from(lapin::ErrorKind::ProtocolError(
            lapin::protocol::AMQPError::new(kind, text.into()),
        ))
    }

    #[test]
    fn temporary_server_refusals_are_retryable() {
        let hard = |h| AMQPErrorKind::Hard(h);
        for (kind, text) in [
            (hard(AMQPHardError::INTERNALERROR), "INTERNAL_ERROR"),
            (
                hard(AMQPHardError::NOTALLOWED),
                "access to vhost '/' refused for user 'weir': vhost '/' is down",
            ),
            (
                hard(AMQPHardError::NOTALLOWED),
                "access to vhost '/' refused for user 'weir': connection limit (10) is reached",
            ),
        ] {
            let e = amqp_error("connecting", protocol(kind, text));
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{text}");
            assert!(e.is_retryable(), "{text}");
        }
        let e = amqp_error(
            "connecting",
            protocol(
                hard(AMQPHardError::NOTALLOWED),
                "access to vhost 'prod' refused for user 'weir'",
            ),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.is_retryable());
    }

    #[test]
    fn failed_acks_are_retryable_whatever_the_cause() {
        // The channel closed by consumer_timeout: PRECONDITION_FAILED, yet the message is
        // redelivered.
        let timeout = protocol(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "delivery acknowledgement on channel 1 timed out",
        );
        assert_eq!(amqp_error("ack", timeout.clone()).kind(), ErrorKind::Config);
        let e = settle_error("ack", timeout);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("redelivered"), "{e}");
    }
}
