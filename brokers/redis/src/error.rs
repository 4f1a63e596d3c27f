//! Redis errors as weir [`Error`]s: connection trouble is [`ErrorKind::Unavailable`] (retryable).

use redis::{RedisError, ServerErrorKind};
use weir_core::{Error, ErrorKind};

/// Maps a Redis error of operation `what` to weir's error type.
///
/// I/O errors, timeouts, dropped or refused connections, a server still loading its data set,
/// a read-only replica, `OOM` or `BUSY` are `Unavailable` (retryable); bad credentials or
/// permissions are `Config`; anything else (a reply of the wrong shape, a script error) is
/// `Internal` and permanent.
pub(crate) fn redis_error(what: &'static str, e: RedisError) -> Error {
    let kind = classify(&e);
    Error::new(kind, format!("redis broker: {what} failed"))
        .with_context("redis", e.category().to_owned())
        .with_source(e)
}

fn classify(e: &RedisError) -> ErrorKind {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    match e.kind() {
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly,
        ) => ErrorKind::Unavailable,
        redis::ErrorKind::AuthenticationFailed
        | redis::ErrorKind::InvalidClientConfig
        | redis::ErrorKind::Server(ServerErrorKind::NoPerm) => ErrorKind::Config,
        _ if has_code(e, "OOM") || has_code(e, "BUSY") || has_code(e, "LOADING") => {
            ErrorKind::Unavailable
        }
        _ if has_code(e, "NOAUTH") || has_code(e, "WRONGPASS") => ErrorKind::Config,
        _ => ErrorKind::Internal,
    }
}

/// Whether the server answered with error code `code` (also inside a pipeline's errors).
pub(crate) fn has_code(e: &RedisError, code: &str) -> bool {
    if e.code() == Some(code) {
        return true;
    }
    e.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, err)| err.code() == code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = redis_error("publish", RedisError::from(io));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(
            e.to_string().starts_with("redis broker: publish failed"),
            "{e}"
        );
    }
}
