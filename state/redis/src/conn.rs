//! The connection: a reconnecting multiplexed connection, a round-trip counter, and the mapping
//! of Redis errors onto weir's error kinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Pipeline, ScriptInvocation};
use weir_core::{Error, ErrorKind, Result};

use crate::config::{RedisStateConfig, redact};

/// A shared connection to Redis that reconnects by itself and counts round trips.
#[derive(Clone)]
pub struct RedisConn {
    manager: ConnectionManager,
    round_trips: Arc<AtomicU64>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

/// Maps a Redis error: connection trouble, a server loading its data or out of memory, and a
/// script missing after a restart are retryable ([`ErrorKind::Unavailable`]); bad credentials
/// are [`ErrorKind::Config`]; anything else is [`ErrorKind::Internal`].
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    use redis::ServerErrorKind as S;
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || is_noscript(&e)
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(S::BusyLoading | S::TryAgain | S::MasterDown | S::ReadOnly)
        )
        || ["OOM", "BUSY", "LOADING"].iter().any(|c| has_code(&e, c));
    if transient {
        return Error::new(ErrorKind::Unavailable, "redis is unavailable").with_source(e);
    }
    let config = matches!(
        e.kind(),
        redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::Server(S::NoPerm)
    ) || ["NOAUTH", "WRONGPASS"].iter().any(|c| has_code(&e, c));
    if config {
        return Error::new(ErrorKind::Config, "redis refused the credentials").with_source(e);
    }
    Error::new(ErrorKind::Internal, "redis command failed").with_source(e)
}

/// Whether the server answered with error code `code` (also inside a pipeline's errors).
fn has_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, err)| err.code() == code))
}

/// `NOSCRIPT`: the server does not have the script (it restarted, or its cache was flushed).
fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        || has_code(e, "NOSCRIPT")
}

impl RedisConn {
    /// Connects (the password never appears in errors or logs).
    pub async fn connect(config: &RedisStateConfig) -> Result<Self> {
        let invalid = |e: redis::RedisError| {
            Error::new(
                ErrorKind::Config,
                format!("invalid redis URL {}", redact(&config.redis_url)),
            )
            .with_source(e)
        };
        // TCP_NODELAY: many tasks pipeline small commands on this one connection, and Nagle's
        // algorithm would hold each behind the acknowledgement of the previous one.
        let info = redis::IntoConnectionInfo::into_connection_info(config.redis_url.as_str())
            .map_err(invalid)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = match &config.ca_file {
            None => redis::Client::open(info).map_err(invalid)?,
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("cannot read ca_file {}: {e}", path.display()),
                    )
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                redis::Client::build_with_tls(info, certs).map_err(invalid)?
            }
        };
        let manager = ConnectionManager::new(client).await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot connect to {}", redact(&config.redis_url)),
            )
            .with_source(e)
        })?;
        Ok(RedisConn {
            manager,
            round_trips: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Round trips made so far (a pipeline or a script counts once).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Runs a script (loading it on `NOSCRIPT`, e.g. after a Redis restart).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        match invocation.invoke_async(&mut con).await {
            // `invoke_async` loads the script on NOSCRIPT and retries once; across a Redis
            // restart the load can reach the old server and the retry the new one: load again.
            Err(e) if is_noscript(&e) => {
                self.round_trips.fetch_add(2, Ordering::Relaxed);
                invocation.load_async(&mut con).await.map_err(map_err)?;
                invocation.invoke_async(&mut con).await.map_err(map_err)
            }
            other => other.map_err(map_err),
        }
    }

    /// Runs a pipeline whose commands include `invocation` (added with
    /// `Pipeline::invoke_script`) in one round trip; on `NOSCRIPT` loads the script and runs
    /// the whole pipeline again, so its other commands must be idempotent.
    pub(crate) async fn pipe_with_script<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        match pipe.query_async(&mut con).await {
            Err(e) if is_noscript(&e) => {
                self.round_trips.fetch_add(2, Ordering::Relaxed);
                invocation.load_async(&mut con).await.map_err(map_err)?;
                pipe.query_async(&mut con).await.map_err(map_err)
            }
            other => other.map_err(map_err),
        }
    }

    /// Runs a pipeline of plain commands in one round trip.
    pub(crate) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        pipe.query_async(&mut con).await.map_err(map_err)
    }

    /// Runs one command.
    pub(crate) async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        cmd.query_async(&mut con).await.map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::map_err;
    use weir_core::ErrorKind;

    #[test]
    fn errors_a_retry_can_cure_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            map_err(redis::RedisError::from(io)).kind(),
            ErrorKind::Unavailable
        );
        let noscript = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
            "NOSCRIPT No matching script",
        ));
        let e = map_err(noscript);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
        assert!(e.is_retryable());
    }
}
