//! [`RedisBrokerConfig`]: the broker's settings, parsed from its URL.

use std::fmt;
use std::time::Duration;

use weir_core::redact::redact_url;
use weir_core::url_query::QueryParams;
use weir_core::{Error, ErrorKind, Result};

/// Redis refuses bulk strings above 512 MiB (`proto-max-bulk-len`), so no payload can be larger.
pub const REDIS_MAX_BULK_BYTES: usize = 512 << 20;

/// The default largest payload: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The query parameters weir reads from the URL (everything else is an error).
const PARAMS: &[&str] = &[
    "prefix",
    "lease",
    "block",
    "count",
    "maxlen",
    "max_message_bytes",
    "timeout",
    "ca_file",
];

/// Settings of a [`RedisBroker`](crate::RedisBroker), parsed from a URL by
/// [`RedisBrokerConfig::from_url`]:
///
/// ```text
/// redis://[user:password@]host[:port][/db][?prefix=weir&lease=30s&block=1s&count=16&maxlen=N&max_message_bytes=N&timeout=5s]
/// rediss://…[&ca_file=/path/ca.pem]
/// rediss://…   (TLS; needs a build of the `redis` crate with a TLS feature)
/// ```
///
/// The fields are public so a program can adjust them after parsing; the connection URL itself
/// (which may hold a password) is private, and `Debug` shows it with the password replaced by
/// `***` (see [`RedisBrokerConfig::redacted_url`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBrokerConfig {
    /// The connection URL handed to the `redis` crate (weir's parameters removed).
    url: String,
    /// Every key of the broker starts with `{prefix}:` (query `prefix`, default `weir`).
    pub prefix: String,
    /// How long an entry taken by a consumer that stopped renewing it (a dead process) stays
    /// with it before another consumer of the group reclaims it (query `lease`, default `30s`).
    pub lease: Duration,
    /// The longest one blocking `XREADGROUP` waits before `next()` loops to its periodic work
    /// (query `block`, default `1s`). Also the worst-case lateness of a delayed redelivery whose
    /// nacking process died.
    pub block: Duration,
    /// Entries read per `XREADGROUP` / `XAUTOCLAIM` and buffered by a subscription
    /// (query `count`, default 16).
    pub count: usize,
    /// `XADD … MAXLEN ~ maxlen` caps each topic stream (query `maxlen`, default none). Trimming
    /// by length can drop entries a slow group has not read yet: see the README.
    pub maxlen: Option<usize>,
    /// The largest payload `publish` accepts (query `max_message_bytes`, default 64 MiB,
    /// at most 512 MiB, the Redis limit).
    pub max_message_bytes: usize,
    /// Response timeout of a Redis command and connect timeout (query `timeout`, default `5s`).
    pub timeout: Duration,
    /// For `rediss://`: a PEM file of the CA(s) to trust instead of the system store (query
    /// `ca_file`), e.g. a private Redis's own CA.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisBrokerConfig {
    /// Parses `redis://…` or `rediss://…` (see the type's documentation for the parameters).
    ///
    /// Fails with [`ErrorKind::Config`] on another scheme, an unknown or malformed parameter,
    /// a URL the `redis` crate rejects, or `rediss://` when this build has no TLS support.
    pub fn from_url(url: &str) -> Result<Self> {
        let config_error = |message: String| {
            Error::new(ErrorKind::Config, message).with_context("url", redact_url(url))
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(config_error(
                "a Redis broker URL starts with redis:// or rediss://".into(),
            ));
        };
        if scheme != "redis" && scheme != "rediss" {
            return Err(config_error(format!(
                "unsupported scheme {scheme:?} for the Redis broker (expected redis:// or rediss://)"
            )));
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        if base.is_empty() || base.starts_with('/') {
            return Err(config_error("the Redis broker URL has no host".into()));
        }

        let mut config = RedisBrokerConfig {
            url: match fragment {
                Some(fragment) => format!("{scheme}://{base}#{fragment}"),
                None => format!("{scheme}://{base}"),
            },
            prefix: "weir".into(),
            lease: Duration::from_secs(30),
            block: Duration::from_secs(1),
            count: 16,
            maxlen: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timeout: Duration::from_secs(5),
            ca_file: None,
        };
        let params = QueryParams::new("redis broker", query, PARAMS).with_url(url);
        for param in &params {
            match param.name() {
                // Taken as written, not percent-decoded (as `ca_file`).
                "prefix" => config.prefix = param.raw_value().to_owned(),
                "lease" => config.lease = param.duration()?,
                "block" => config.block = param.duration()?,
                "timeout" => config.timeout = param.duration()?,
                "count" => config.count = param.usize()?,
                "maxlen" => config.maxlen = Some(param.usize()?),
                "max_message_bytes" => config.max_message_bytes = param.usize()?,
                "ca_file" if scheme == "rediss" => config.ca_file = Some(param.raw_value().into()),
                "ca_file" => return Err(param.invalid("needs a rediss:// (TLS) URL")),
                _ => return Err(param.unknown()),
            }
        }
        config.validate().map_err(config_error)?;
        // The `redis` crate checks host, port, db and credentials (it does not connect here;
        // `ca_file` is read by `client()`, on connect).
        weir_support_redis::client(&config.url, None)?;
        Ok(config)
    }

    /// Checks the limits of every setting; the message names the offending one.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.prefix.is_empty() || self.prefix.chars().any(|c| c.is_whitespace()) {
            return Err(format!(
                "prefix {:?} must be non-empty, without whitespace",
                self.prefix
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(format!("lease {:?} is below 100ms", self.lease));
        }
        if self.block < Duration::from_millis(1) || self.block > Duration::from_secs(60) {
            return Err(format!("block {:?} is not within 1ms..=60s", self.block));
        }
        if self.timeout < Duration::from_millis(10) {
            return Err(format!("timeout {:?} is below 10ms", self.timeout));
        }
        if !(1..=10_000).contains(&self.count) {
            return Err(format!("count {} is not within 1..=10000", self.count));
        }
        if self.maxlen == Some(0) {
            return Err("maxlen must be at least 1".into());
        }
        if !(1..=REDIS_MAX_BULK_BYTES).contains(&self.max_message_bytes) {
            return Err(format!(
                "max_message_bytes {} is not within 1..={REDIS_MAX_BULK_BYTES} (512 MiB, the Redis limit)",
                self.max_message_bytes
            ));
        }
        Ok(())
    }

    /// The connection URL with any password replaced by `***` (for logs and errors).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL handed to the `redis` crate (holds the password, if any).
    #[cfg(test)]
    pub(crate) fn connection_url(&self) -> &str {
        &self.url
    }

    /// A `redis::Client` for this configuration.
    pub(crate) fn client(&self) -> Result<redis::Client> {
        self.validate().map_err(|message| {
            Error::new(ErrorKind::Config, message).with_context("url", self.redacted_url())
        })?;
        weir_support_redis::client(&self.url, self.ca_file.as_deref())
    }
}

impl fmt::Debug for RedisBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBrokerConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("block", &self.block)
            .field("count", &self.count)
            .field("maxlen", &self.maxlen)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parameters() {
        let c = RedisBrokerConfig::from_url("redis://127.0.0.1:6379").expect("parse");
        assert_eq!(c.prefix, "weir");
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.block, Duration::from_secs(1));
        assert_eq!(c.count, 16);
        assert_eq!(c.maxlen, None);
        assert_eq!(c.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.connection_url(), "redis://127.0.0.1:6379");

        let c = RedisBrokerConfig::from_url(
            "redis://h:1/3?prefix=app:weir&lease=2s&block=250ms&count=4&maxlen=1000&max_message_bytes=1024&timeout=1s",
        )
        .expect("parse");
        assert_eq!(c.prefix, "app:weir");
        assert_eq!(c.lease, Duration::from_secs(2));
        assert_eq!(c.block, Duration::from_millis(250));
        assert_eq!(c.count, 4);
        assert_eq!(c.maxlen, Some(1000));
        assert_eq!(c.max_message_bytes, 1024);
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(c.connection_url(), "redis://h:1/3");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "amqp://h",
            "h:6379",
            "redis://",
            "redis://h?lease=soon",
            "redis://h?count=0",
            "redis://h?leese=2s",
            "redis://h?prefix=",
            "redis://h?max_message_bytes=600000000",
            "redis://h?lease=1ms",
            "redis://h/notadb",
        ] {
            let err = RedisBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
        }
        let err = RedisBrokerConfig::from_url("redis://h?leese=2s").expect_err("unknown");
        assert!(err.to_string().contains("known: prefix, lease"), "{err}");
    }

    #[test]
    fn passwords_never_show() {
        let c = RedisBrokerConfig::from_url("redis://user:s3cret@h:1/0?lease=2s").expect("parse");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://user:***@h:1/0"), "{shown}");
        assert_eq!(redact_url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://pw@h/1"), "redis://***@h/1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        // Errors carry the redacted URL only.
        let err = RedisBrokerConfig::from_url("redis://u:s3cret@h?nope=1").expect_err("unknown");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }

    #[test]
    fn rediss_without_tls_says_so() {
        match RedisBrokerConfig::from_url("rediss://h:6380") {
            // A build with TLS support accepts it.
            Ok(c) => assert_eq!(c.connection_url(), "rediss://h:6380"),
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Config);
                assert!(err.to_string().contains("TLS"), "{err}");
            }
        }
    }
}
