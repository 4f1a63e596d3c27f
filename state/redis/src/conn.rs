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

/// Maps a Redis error: connection trouble is retryable ([`ErrorKind::Unavailable`]).
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        Error::new(ErrorKind::Unavailable, "redis is unavailable").with_source(e)
    } else {
        Error::new(ErrorKind::Internal, "redis command failed").with_source(e)
    }
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
        let client = redis::Client::open(info).map_err(invalid)?;
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
        invocation.invoke_async(&mut con).await.map_err(map_err)
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
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
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
