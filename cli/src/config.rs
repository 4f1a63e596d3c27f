//! `weir serve` configuration: a TOML file, overridden by `WEIR_*` environment variables,
//! overridden by flags. Secrets (event keys, the signing key, URL passwords) never show in
//! `Debug`.
//!
//! ```toml
//! functions = "./functions"
//! state = "redis://127.0.0.1:6379/0?prefix=weir"
//! broker = "redis://127.0.0.1:6379/0"
//! listen = "0.0.0.0:8288"
//! event_keys = ["a-long-random-key"]
//! roles = ["api", "router", "executor", "scheduler"]
//! signing_key = "hmac-secret-for-http-steps"
//! executor_concurrency = 256
//! shutdown_grace = "30s"
//! step_lease = "30s"
//! stuck_message_delay = "30s"
//! ingest_deadline = "10s"
//! strict_events = false
//! dead_letter_after = 5
//! stuck_run_grace = "10m"
//! sweep_every = "1m"
//! versions_dir = "/var/lib/weir/versions"
//! run_retention = "7d"
//! api_keys = ["a-key-for-the-v1-api"]
//! adapters = []
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir_core::redact::redact_url;
use weir_core::{Error, ErrorKind, Result};

/// Every setting of `weir serve`; absent ones take the defaults noted.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Directory of function directories (default `.`).
    pub functions: Option<PathBuf>,
    /// State store URL (default `memory://`).
    pub state: Option<String>,
    /// Broker URL (default `memory://`).
    pub broker: Option<String>,
    /// Address of the HTTP API (default `127.0.0.1:8288`).
    pub listen: Option<SocketAddr>,
    /// Accepted event keys; `weir serve` with the api role requires at least one.
    #[serde(default)]
    pub event_keys: Vec<String>,
    /// Roles of this process: `api`, `router`, `executor`, `scheduler` (default: all).
    pub roles: Option<Vec<String>>,
    /// Key signing HTTP step requests.
    pub signing_key: Option<String>,
    /// Step attempts this process runs at once (default 256).
    pub executor_concurrency: Option<usize>,
    /// How long SIGTERM waits for steps in flight (default `30s`).
    pub shutdown_grace: Option<String>,
    /// How long a running step is held without renewal before another node takes it over
    /// (default `30s`; renewed every third of it while the step runs).
    pub step_lease: Option<String>,
    /// How long a message the engine failed on with an error retrying soon will not cure waits
    /// before it is handled again (default `30s`; see docs/architecture.md).
    pub stuck_message_delay: Option<String>,
    /// How long ingest keeps trying a store or broker that fails with a retryable error before
    /// it takes the request back and answers with the error (default `10s`).
    pub ingest_deadline: Option<String>,
    /// Refuse events whose name has no schema in `schemas/` (default `false`: they pass
    /// unchecked; docs/event-schemas.md).
    pub strict_events: Option<bool>,
    /// After how many failures on one message (with an error retrying soon will not cure) the
    /// engine gives up on it: a dead letter, and its run failed (default 5).
    pub dead_letter_after: Option<u32>,
    /// How long a running run may show no progress, with nothing live that would move it on,
    /// before the sweeper enqueues its steps again (default `10m`; more than `step_lease`).
    pub stuck_run_grace: Option<String>,
    /// How often the sweeper looks for stuck runs, across all nodes (default `1m`, at least
    /// `1s`).
    pub sweep_every: Option<String>,
    /// Where function versions fetched from the state store are written to run from
    /// (default: `$HOME/.cache/weir/versions`).
    pub versions_dir: Option<PathBuf>,
    /// How long finished runs are kept before they are deleted (default `7d`; `forever` keeps
    /// them for good).
    pub run_retention: Option<String>,
    /// Keys the `/v1` API (runs, events) requires as `Authorization: Bearer KEY`; none: the API
    /// is open to whoever reaches `listen`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Adapters to run, by URL (another queue's jobs become events); `weir --help` lists the
    /// adapters of the build.
    #[serde(default)]
    pub adapters: Vec<String>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("functions", &self.functions)
            .field("state", &self.state.as_deref().map(redact_url))
            .field("broker", &self.broker.as_deref().map(redact_url))
            .field("listen", &self.listen)
            .field(
                "event_keys",
                &format_args!("<{} redacted>", self.event_keys.len()),
            )
            .field("roles", &self.roles)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("executor_concurrency", &self.executor_concurrency)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("step_lease", &self.step_lease)
            .field("stuck_message_delay", &self.stuck_message_delay)
            .field("ingest_deadline", &self.ingest_deadline)
            .field("strict_events", &self.strict_events)
            .field("dead_letter_after", &self.dead_letter_after)
            .field("stuck_run_grace", &self.stuck_run_grace)
            .field("sweep_every", &self.sweep_every)
            .field("versions_dir", &self.versions_dir)
            .field("run_retention", &self.run_retention)
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field(
                "adapters",
                &self
                    .adapters
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ServeConfig {
    /// Reads a TOML file; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorKind::Config, format!("cannot read {}", path.display())).with_source(e)
        })?;
        toml::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("{}: {}", path.display(), e.message().trim()),
            )
        })
    }

    /// Values of `other` replace those of `self` where set. `other` is destructured in full,
    /// so a new setting cannot be left out (it would be silently ignored).
    pub fn overlay(self, other: ServeConfig) -> Self {
        let ServeConfig {
            functions,
            state,
            broker,
            listen,
            event_keys,
            roles,
            signing_key,
            executor_concurrency,
            shutdown_grace,
            step_lease,
            stuck_message_delay,
            ingest_deadline,
            strict_events,
            dead_letter_after,
            stuck_run_grace,
            sweep_every,
            versions_dir,
            run_retention,
            api_keys,
            adapters,
        } = other;
        ServeConfig {
            functions: functions.or(self.functions),
            state: state.or(self.state),
            broker: broker.or(self.broker),
            listen: listen.or(self.listen),
            event_keys: unless_empty(event_keys, self.event_keys),
            roles: roles.or(self.roles),
            signing_key: signing_key.or(self.signing_key),
            executor_concurrency: executor_concurrency.or(self.executor_concurrency),
            shutdown_grace: shutdown_grace.or(self.shutdown_grace),
            step_lease: step_lease.or(self.step_lease),
            stuck_message_delay: stuck_message_delay.or(self.stuck_message_delay),
            ingest_deadline: ingest_deadline.or(self.ingest_deadline),
            strict_events: strict_events.or(self.strict_events),
            dead_letter_after: dead_letter_after.or(self.dead_letter_after),
            stuck_run_grace: stuck_run_grace.or(self.stuck_run_grace),
            sweep_every: sweep_every.or(self.sweep_every),
            versions_dir: versions_dir.or(self.versions_dir),
            run_retention: run_retention.or(self.run_retention),
            api_keys: unless_empty(api_keys, self.api_keys),
            adapters: unless_empty(adapters, self.adapters),
        }
    }
}

/// `keys` when some are given, else `fallback` (a list setting overrides only when set).
fn unless_empty(keys: Vec<String>, fallback: Vec<String>) -> Vec<String> {
    if keys.is_empty() { fallback } else { keys }
}

/// Reads a run retention: a duration (`7d`, `12h`), or `forever` to keep runs for good.
pub fn parse_run_retention(value: &str) -> Result<Option<std::time::Duration>> {
    if value.trim() == "forever" {
        return Ok(None);
    }
    match weir_core::duration::parse_duration(value) {
        Ok(d) if d.is_zero() => Err(Error::new(
            ErrorKind::Config,
            "run_retention: 0 would delete every run as it ends; give a duration or `forever`",
        )),
        Ok(d) => Ok(Some(d)),
        Err(m) => Err(Error::new(
            ErrorKind::Config,
            format!("run_retention: {m} (or `forever`)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "state = \"redis://:pw@h:6379/0\"\nevent_keys = [\"k1\"]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let base = ServeConfig::from_file(&file).unwrap();
        assert_eq!(base.event_keys, vec!["k1"]);
        let merged = base.overlay(ServeConfig {
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Default::default()
        });
        assert_eq!(merged.listen, Some("127.0.0.1:9001".parse().unwrap()));
        assert_eq!(merged.state.as_deref(), Some("redis://:pw@h:6379/0"));
        let debug = format!("{merged:?}");
        assert!(!debug.contains("pw") && !debug.contains("k1"), "{debug}");
        let with_api_key = ServeConfig {
            api_keys: vec!["api-secret".into()],
            ..Default::default()
        };
        let debug = format!("{with_api_key:?}");
        assert!(!debug.contains("api-secret"), "{debug}");
    }

    #[test]
    fn every_setting_is_overridden() {
        // `weir serve --step-lease 2s` (or WEIR_STEP_LEASE) was dropped here, so the engine ran
        // with the default 30 s lease: a step whose node lost Redis was taken over 30 s late.
        let flags = ServeConfig {
            functions: Some("fns".into()),
            state: Some("redis://h/0".into()),
            broker: Some("redis://h/1?lease=2s".into()),
            listen: Some("127.0.0.1:9001".parse().unwrap()),
            event_keys: vec!["k2".into()],
            roles: Some(vec!["executor".into()]),
            signing_key: Some("s2".into()),
            executor_concurrency: Some(32),
            shutdown_grace: Some("5s".into()),
            step_lease: Some("2s".into()),
            stuck_message_delay: Some("1s".into()),
            ingest_deadline: Some("3s".into()),
            strict_events: Some(true),
            dead_letter_after: Some(2),
            stuck_run_grace: Some("20m".into()),
            sweep_every: Some("10s".into()),
            versions_dir: Some("/v2".into()),
            run_retention: Some("1d".into()),
            api_keys: vec!["a2".into()],
            adapters: vec!["celery+amqp://h/2".into()],
        };
        let file = ServeConfig {
            functions: Some("other".into()),
            state: Some("memory://".into()),
            broker: Some("memory://".into()),
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            event_keys: vec!["k1".into()],
            roles: Some(vec!["api".into()]),
            signing_key: Some("s1".into()),
            executor_concurrency: Some(256),
            shutdown_grace: Some("30s".into()),
            step_lease: Some("30s".into()),
            stuck_message_delay: Some("30s".into()),
            ingest_deadline: Some("10s".into()),
            strict_events: Some(false),
            dead_letter_after: Some(5),
            stuck_run_grace: Some("10m".into()),
            sweep_every: Some("1m".into()),
            versions_dir: Some("/v1".into()),
            run_retention: Some("7d".into()),
            api_keys: vec!["a1".into()],
            adapters: vec!["celery+amqp://h/1".into()],
        };
        assert_eq!(file.clone().overlay(flags.clone()), flags);
        assert_eq!(ServeConfig::default().overlay(flags.clone()), flags);
        assert_eq!(file.clone().overlay(ServeConfig::default()), file);
    }

    #[test]
    fn run_retention_is_a_duration_or_forever() {
        use std::time::Duration;
        assert_eq!(
            parse_run_retention("7d").unwrap(),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_run_retention("90m").unwrap(),
            Some(Duration::from_secs(5_400))
        );
        assert_eq!(parse_run_retention("forever").unwrap(), None);
        for bad in ["0s", "soon", ""] {
            let err = parse_run_retention(bad).unwrap_err().to_string();
            assert!(err.contains("run_retention"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "stat = \"memory://\"\n").unwrap();
        let err = ServeConfig::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("weir.toml") && err.contains("stat"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("amqp://guest:secret@h:5672/vh"),
            "amqp://guest:***@h:5672/vh"
        );
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(
            redact_url("sqs://p?region=r&access_key_id=AK&secret_access_key=S3&session_token=T"),
            "sqs://p?region=r&access_key_id=AK&secret_access_key=***&session_token=***"
        );
        assert_eq!(
            redact_url("kafka://h:9092?sasl.username=u&sasl.password=pw"),
            "kafka://h:9092?sasl.username=u&sasl.password=***"
        );
        assert_eq!(
            redact_url("redis://:pw@h:6379/0?prefix=x"),
            "redis://:***@h:6379/0?prefix=x"
        );
    }
}
