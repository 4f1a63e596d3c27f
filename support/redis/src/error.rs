//! Redis errors as weir [`ErrorKind`]s: one rule for the state store and the broker.

use redis::RedisError;
use weir_core::ErrorKind;

/// Server answers that a retry can cure: still loading the data set, a script running
/// (`BUSY`), out of memory, a cluster or replica in transition, a script missing after a
/// restart, writes refused while a snapshot fails (`MISCONF`) or too few replicas
/// (`NOREPLICAS`), a blocking read cut off by a failover (`UNBLOCKED`).
const RETRYABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "OOM",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "NOSCRIPT",
    "MISCONF",
    "NOREPLICAS",
    "UNBLOCKED",
];

/// Server answers that refuse the credentials or the permissions.
const CONFIG_CODES: &[&str] = &["NOAUTH", "WRONGPASS", "NOPERM"];

/// The weir [`ErrorKind`] of a Redis error.
///
/// - [`ErrorKind::Unavailable`] (retryable): the connection failed, dropped, was refused or
///   timed out (I/O errors); or the server answered, to the command or to any command of a
///   pipeline or transaction, `LOADING` (loading its data set), `BUSY` (a script running),
///   `OOM`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY` (a replica, e.g. during a
///   failover), `NOSCRIPT` (a script missing after a restart or `SCRIPT FLUSH`: the next
///   call loads it again), `MISCONF`, `NOREPLICAS` or `UNBLOCKED`.
/// - [`ErrorKind::Config`] (permanent): invalid client settings (`InvalidClientConfig`, e.g.
///   `rediss://` without TLS support; a server without RESP3 for a `protocol=resp3` URL),
///   failed authentication, or a `NOAUTH`, `WRONGPASS` or
///   `NOPERM` (ACL) answer to any command. Checked before the retryable answers: a pipeline
///   with a command refused for its credentials stays refused however often it is retried.
/// - [`ErrorKind::Internal`] (permanent): anything else, e.g. `WRONGTYPE`, a script error or a
///   reply of an unexpected type.
pub fn classify(e: &RedisError) -> ErrorKind {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    let config = matches!(
        e.kind(),
        redis::ErrorKind::AuthenticationFailed
            | redis::ErrorKind::InvalidClientConfig
            | redis::ErrorKind::RESP3NotSupported
    );
    if config || has_any_code(e, CONFIG_CODES) {
        return ErrorKind::Config;
    }
    if has_any_code(e, RETRYABLE_CODES) {
        return ErrorKind::Unavailable;
    }
    ErrorKind::Internal
}

/// Whether the server answered with error code `code` (`NOGROUP`, `OOM`…), to the command or
/// to any command of a pipeline or transaction.
pub fn has_code(e: &RedisError, code: &str) -> bool {
    has_any_code(e, &[code])
}

/// `NOSCRIPT`: the server does not have the script (it restarted, or its cache was flushed).
pub fn is_noscript(e: &RedisError) -> bool {
    has_code(e, "NOSCRIPT")
}

/// Whether the server answered with one of `codes`, to the command or to any command of a
/// pipeline or transaction.
fn has_any_code(e: &RedisError, codes: &[&str]) -> bool {
    // `code()` covers a single answer (and a pipeline's first); the pipeline's or the aborted
    // transaction's other answers are in `into_server_errors`.
    if e.code().is_some_and(|code| codes.contains(&code)) {
        return true;
    }
    e.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, err)| codes.contains(&err.code())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ServerErrorKind as S;

    fn server(kind: S, text: &'static str) -> RedisError {
        RedisError::from((redis::ErrorKind::Server(kind), text))
    }

    fn extension(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    /// A reply parsed as the server sends it (`-CODE detail`), as an error.
    fn reply(wire: &str) -> RedisError {
        let value = redis::parse_redis_value(wire.as_bytes()).expect("parses");
        value.extract_error().expect_err("an error reply")
    }

    #[test]
    fn errors_a_retry_can_cure_are_retryable() {
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let io = RedisError::from(std::io::Error::new(kind, "down"));
            assert_eq!(classify(&io), ErrorKind::Unavailable, "{kind:?}");
        }
        for kind in [
            S::BusyLoading,
            S::TryAgain,
            S::MasterDown,
            S::ClusterDown,
            S::ReadOnly,
            S::NoScript,
        ] {
            assert_eq!(
                classify(&server(kind, "x")),
                ErrorKind::Unavailable,
                "{kind:?}"
            );
        }
        for code in ["OOM", "BUSY", "LOADING"] {
            assert_eq!(classify(&extension(code)), ErrorKind::Unavailable, "{code}");
        }
        assert_eq!(
            classify(&reply("-NOSCRIPT No matching script.\r\n")),
            ErrorKind::Unavailable
        );
        for wire in [
            "-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.\r\n",
            "-NOREPLICAS Not enough good replicas to write.\r\n",
            "-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
        ] {
            assert_eq!(classify(&reply(wire)), ErrorKind::Unavailable, "{wire}");
        }
        assert_eq!(
            classify(&reply("-OOM command not allowed\r\n")),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn refused_credentials_and_bad_settings_are_config() {
        assert_eq!(
            classify(&RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "bad password"
            ))),
            ErrorKind::Config
        );
        assert_eq!(
            classify(&RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no TLS"
            ))),
            ErrorKind::Config
        );
        assert_eq!(classify(&server(S::NoPerm, "x")), ErrorKind::Config);
        assert_eq!(
            classify(&RedisError::from((
                redis::ErrorKind::RESP3NotSupported,
                "old server"
            ))),
            ErrorKind::Config
        );
        for wire in [
            "-NOAUTH Authentication required.\r\n",
            "-WRONGPASS invalid username-password pair\r\n",
            "-NOPERM User has no permissions\r\n",
        ] {
            assert_eq!(classify(&reply(wire)), ErrorKind::Config, "{wire}");
        }
    }

    #[test]
    fn anything_else_is_internal() {
        for wire in [
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-ERR Error running script\r\n",
        ] {
            assert_eq!(classify(&reply(wire)), ErrorKind::Internal, "{wire}");
        }
        let parse = RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a map"));
        assert_eq!(classify(&parse), ErrorKind::Internal);
    }

    #[test]
    fn codes_are_found_as_answers_and_by_kind() {
        assert!(has_code(&reply("-NOGROUP No such key\r\n"), "NOGROUP"));
        assert!(!has_code(&reply("-NOGROUP No such key\r\n"), "OOM"));
        assert!(has_code(&server(S::NoScript, "x"), "NOSCRIPT"));
        assert!(is_noscript(&server(S::NoScript, "x")));
        assert!(is_noscript(&reply("-NOSCRIPT No matching script.\r\n")));
        assert!(!is_noscript(&extension("OOM")));
        let io = RedisError::from(std::io::Error::other("x"));
        assert!(!has_code(&io, "OOM"));
    }
}
