//! The connection: a reconnecting multiplexed connection, a round-trip counter, and the mapping
//! of Redis errors onto weir's error kinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Pipeline, ScriptInvocation};
use weir_core::redact::redact_url;
use weir_core::{Error, ErrorKind, Result};
use weir_support_redis::{classify, is_noscript};

use crate::config::RedisStateConfig;

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

/// Maps a Redis error by [`weir_support_redis::classify`]: connection trouble, a server
/// loading its data or out of memory, and a script missing after a restart are retryable
/// ([`ErrorKind::Unavailable`]); refused credentials or invalid client settings are
/// [`ErrorKind::Config`]; anything else is [`ErrorKind::Internal`].
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    let kind = classify(&e);
    let message = match kind {
        ErrorKind::Unavailable => "redis is unavailable",
        ErrorKind::Config => "redis refused the credentials or the client settings",
        _ => "redis command failed",
    };
    Error::new(kind, message).with_source(e)
}

impl RedisConn {
    /// Connects (the password never appears in errors or logs). Fails with
    /// [`ErrorKind::Config`] on a bad URL, `ca_file` or credentials, with
    /// [`ErrorKind::Unavailable`] (retryable) when Redis cannot be reached.
    pub async fn connect(config: &RedisStateConfig) -> Result<Self> {
        let client = weir_support_redis::client(&config.redis_url, config.ca_file.as_deref())?;
        let manager = ConnectionManager::new(client).await.map_err(|e| {
            let message = format!("cannot connect to {}", redact_url(&config.redis_url));
            // A connection set up and refused for a reason retrying will not cure (a database
            // number the server lacks) is the URL's fault, not a bug of weir.
            let kind = match classify(&e) {
                ErrorKind::Internal => ErrorKind::Config,
                kind => kind,
            };
            Error::new(kind, message).with_source(e)
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
        self.pipe_with_scripts(pipe, &[invocation]).await
    }

    /// [`pipe_with_script`](Self::pipe_with_script) with several scripts: on `NOSCRIPT`, loads
    /// them all and runs the pipeline again.
    pub(crate) async fn pipe_with_scripts<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        invocations: &[&ScriptInvocation<'_>],
    ) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        match pipe.query_async(&mut con).await {
            Err(e) if is_noscript(&e) => {
                self.round_trips
                    .fetch_add(1 + invocations.len() as u64, Ordering::Relaxed);
                for invocation in invocations {
                    invocation.load_async(&mut con).await.map_err(map_err)?;
                }
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

    /// The kinds are `weir_support_redis::classify`'s (tested there); the messages are ours.
    #[test]
    fn errors_a_retry_can_cure_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = map_err(redis::RedisError::from(io));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), "redis is unavailable");
        let noscript = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
            "NOSCRIPT No matching script",
        ));
        let e = map_err(noscript);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
        assert!(e.is_retryable());
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "bad"));
        assert_eq!(map_err(auth).kind(), ErrorKind::Config);
    }
}
