//! The connection: a reconnecting multiplexed connection whose every call has a deadline, a
//! round-trip counter, and the mapping of Redis errors onto weir's error kinds (naming the
//! call that failed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, ScriptInvocation};
use weir_core::redact::redact_url;
use weir_core::{Error, ErrorKind, Result};
use weir_support_redis::{classify, is_noscript};

use crate::config::RedisStateConfig;

/// A shared connection to Redis that reconnects by itself and counts round trips.
#[derive(Clone)]
pub struct RedisConn {
    manager: ConnectionManager,
    round_trips: Arc<AtomicU64>,
    /// How long a call waits for Redis's answer (the URL's `timeout`).
    timeout: Duration,
    /// How long a call may take in all, reconnecting included ([`RedisConn::bounded`]).
    reach: Duration,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

/// Maps a Redis error of the call `op` by [`weir_support_redis::classify`]: connection
/// trouble, a call without an answer within `timeout`, a server loading its data or out of
/// memory, and a script missing after a restart are retryable ([`ErrorKind::Unavailable`]);
/// refused credentials or invalid client settings are [`ErrorKind::Config`]; anything else is
/// [`ErrorKind::Internal`]. The error names the call (`op`: a command, the commands of a
/// pipeline, or a script's name).
pub(crate) fn map_err(op: &str, timeout: Duration, e: redis::RedisError) -> Error {
    let kind = classify(&e);
    let message = if e.is_timeout() {
        format!("redis did not answer {op} within {timeout:?} (the URL's timeout)")
    } else {
        let what = match kind {
            ErrorKind::Unavailable => "redis is unavailable",
            ErrorKind::Config => "redis refused the credentials or the client settings",
            _ => "redis command failed",
        };
        format!("{what} ({op})")
    };
    Error::new(kind, message)
        .with_context("op", op)
        .with_source(e)
}

/// A command's name (its first argument), e.g. `HGETALL`.
fn command_name(cmd: &Cmd) -> String {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => "a command".into(),
    }
}

/// A pipeline's commands by name, at most four (`EVALSHA` for a script in it), e.g.
/// `pipeline of 3: HSET, ZADD, EXPIRE`.
fn pipeline_name(pipe: &Pipeline) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut count = 0;
    for cmd in pipe.cmd_iter() {
        count += 1;
        let name = command_name(cmd);
        if names.len() < 4 && !names.contains(&name) {
            names.push(name);
        }
    }
    format!("pipeline of {count}: {}", names.join(", "))
}

impl RedisConn {
    /// Connects (the password never appears in errors or logs). Fails with
    /// [`ErrorKind::Config`] on a bad URL, `ca_file` or credentials, with
    /// [`ErrorKind::Unavailable`] (retryable) when Redis cannot be reached.
    pub async fn connect(config: &RedisStateConfig) -> Result<Self> {
        let client = weir_support_redis::client(&config.redis_url, config.ca_file.as_deref())?;
        // Reconnecting: two more attempts, at most a second apart (the library's default, six
        // with growing pauses, would hold calls for tens of seconds).
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| {
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
            timeout: config.timeout,
            reach: config.timeout * 3 + config.connect_timeout,
        })
    }

    /// `call` (a command, pipeline or script, `op` naming it when it fails), bounded in all:
    /// a call made while the connection is being re-established first waits for that, which
    /// the response `timeout` does not bound. `3 × timeout + connect_timeout` (a script's
    /// `NOSCRIPT` path makes three calls). Dropping a request is safe: the manager discards
    /// its late answer.
    async fn bounded<T>(
        &self,
        op: impl FnOnce() -> String,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.reach, call).await {
            Ok(result) => result,
            Err(_) => {
                let op = op();
                Err(Error::unavailable(format!(
                    "redis could not be reached for {op} within {:?} (reconnecting; timeout × 3 + connect_timeout)",
                    self.reach
                ))
                .with_context("op", op))
            }
        }
    }

    /// Round trips made so far (a pipeline or a script counts once).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Runs the script called `name` (loading it on `NOSCRIPT`, e.g. after a Redis restart).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        name: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        // Named only when it failed: the hot path formats nothing.
        let error = |e| map_err(&format!("script {name}"), self.timeout, e);
        let call = async {
            match invocation.invoke_async(&mut con).await {
                // `invoke_async` loads the script on NOSCRIPT and retries once; across a Redis
                // restart the load can reach the old server and the retry the new one: load
                // again.
                Err(e) if is_noscript(&e) => {
                    self.round_trips.fetch_add(2, Ordering::Relaxed);
                    invocation.load_async(&mut con).await.map_err(&error)?;
                    invocation.invoke_async(&mut con).await.map_err(&error)
                }
                other => other.map_err(&error),
            }
        };
        self.bounded(|| format!("script {name}"), call).await
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
        let call = async {
            match pipe.query_async(&mut con).await {
                Err(e) if is_noscript(&e) => {
                    self.round_trips
                        .fetch_add(1 + invocations.len() as u64, Ordering::Relaxed);
                    let error = |e| map_err(&pipeline_name(pipe), self.timeout, e);
                    for invocation in invocations {
                        invocation.load_async(&mut con).await.map_err(&error)?;
                    }
                    pipe.query_async(&mut con).await.map_err(&error)
                }
                other => other.map_err(|e| map_err(&pipeline_name(pipe), self.timeout, e)),
            }
        };
        self.bounded(|| pipeline_name(pipe), call).await
    }

    /// Runs a pipeline of plain commands in one round trip.
    pub(crate) async fn pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        let call = async {
            let result = pipe.query_async(&mut con).await;
            result.map_err(|e| map_err(&pipeline_name(pipe), self.timeout, e))
        };
        self.bounded(|| pipeline_name(pipe), call).await
    }

    /// Runs one command.
    pub(crate) async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut con = self.manager.clone();
        let call = async {
            let result = cmd.query_async(&mut con).await;
            result.map_err(|e| map_err(&command_name(cmd), self.timeout, e))
        };
        self.bounded(|| command_name(cmd), call).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{map_err, pipeline_name};
    use weir_core::ErrorKind;

    const TIMEOUT: Duration = Duration::from_secs(2);

    /// The kinds are `weir_support_redis::classify`'s (tested there); the messages are ours.
    #[test]
    fn errors_a_retry_can_cure_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = map_err("GET", TIMEOUT, redis::RedisError::from(io));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), "redis is unavailable (GET)");
        let noscript = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoScript),
            "NOSCRIPT No matching script",
        ));
        let e = map_err("script create_run", TIMEOUT, noscript);
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
        assert!(e.is_retryable());
        let auth = redis::RedisError::from((redis::ErrorKind::AuthenticationFailed, "bad"));
        assert_eq!(map_err("GET", TIMEOUT, auth).kind(), ErrorKind::Config);
    }

    #[test]
    fn a_timeout_is_retryable_and_names_the_call_and_the_deadline() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let e = map_err("script claim_timers", TIMEOUT, redis::RedisError::from(io));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(
            e.message(),
            "redis did not answer script claim_timers within 2s (the URL's timeout)"
        );
    }

    #[test]
    fn a_pipeline_is_named_by_its_commands() {
        let mut pipe = redis::pipe();
        pipe.hset("h", "f", 1)
            .zadd("z", "m", 1)
            .hset("h", "g", 2)
            .expire("h", 5);
        assert_eq!(pipeline_name(&pipe), "pipeline of 4: HSET, ZADD, EXPIRE");
    }
}
