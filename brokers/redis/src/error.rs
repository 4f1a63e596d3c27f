//! Redis errors as weir [`Error`]s: the kinds are [`weir_support_redis::classify`]'s
//! (connection trouble is [`ErrorKind::Unavailable`], retryable); the messages say which
//! operation of the broker failed.

use redis::RedisError;
use weir_core::Error;

/// Maps a Redis error of operation `what` to weir's error type: `"redis broker: {what}
/// failed"`, of the kind [`weir_support_redis::classify`] gives it (I/O errors, timeouts, a
/// server loading its data set, a read-only replica, `OOM`, `BUSY`, `NOSCRIPT`… are
/// `Unavailable`; refused credentials or permissions and invalid client settings are
/// `Config`; anything else, e.g. a reply of the wrong shape or a script error, is `Internal`),
/// with the Redis error category as context `redis`.
pub(crate) fn redis_error(what: &'static str, e: RedisError) -> Error {
    let kind = weir_support_redis::classify(&e);
    Error::new(kind, format!("redis broker: {what} failed"))
        .with_context("redis", e.category().to_owned())
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ErrorKind;

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
