//! Configuration from a URL: `redis://[user:pass@]host:port/db?prefix=weir&retention=7d`.

use std::fmt;
use std::time::Duration;

use weir_core::redact::redact_url;
use weir_core::url_query::QueryParams;
use weir_core::{Error, ErrorKind, Result};

/// The query parameters weir reads from the URL (the others go to the Redis client).
const PARAMS: &[&str] = &[
    "prefix",
    "retention",
    "ca_file",
    "timeout",
    "connect_timeout",
];

/// The default of [`RedisStateConfig::timeout`]: long enough for a busy Redis on a loaded
/// machine (the client library's own default, 500 ms, failed calls on a loaded 2-core
/// machine), short enough that a hung call is noticed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default of [`RedisStateConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `timeout` and `connect_timeout` allowed.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the state lives and how it is laid out.
#[derive(Clone)]
pub struct RedisStateConfig {
    /// The Redis URL without weir's own query parameters (holds the password, if any).
    pub redis_url: String,
    /// Prefix of every key (default `weir`).
    pub prefix: String,
    /// How long accepted events are kept for replay (default 7 days).
    pub event_retention: Duration,
    /// For `rediss://`: a PEM file of the CA(s) to trust instead of the system store (query
    /// `ca_file`), e.g. a private Redis's own CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long every Redis call waits for its answer before it fails with a retryable error
    /// naming the call (query `timeout`, default 2 s, 10 ms … 60 s).
    pub timeout: Duration,
    /// How long connecting (and reconnecting) may take (query `connect_timeout`, default
    /// 5 s, 10 ms … 60 s).
    pub connect_timeout: Duration,
}

impl fmt::Debug for RedisStateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStateConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("event_retention", &self.event_retention)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl RedisStateConfig {
    /// Parses `redis://…` or `rediss://…` (TLS), taking weir's query parameters `prefix`,
    /// `retention`, `ca_file`, `timeout` and `connect_timeout` out and leaving the rest to the
    /// Redis client. The values of
    /// `prefix` and `ca_file` are taken as written (not percent-decoded).
    pub fn from_url(url: &str) -> Result<Self> {
        let config_err = |m: String| Error::new(ErrorKind::Config, m);
        let (scheme, _) = url
            .split_once("://")
            .ok_or_else(|| config_err(format!("{:?} is not a redis:// URL", redact_url(url))))?;
        if scheme != "redis" && scheme != "rediss" {
            return Err(config_err(format!(
                "expected redis:// or rediss://, got {scheme}://"
            )));
        }
        // A `#fragment` (`#insecure`: the client skips certificate checks) is the client's;
        // it comes after the query and goes back on the URL the client gets.
        let (url_without_fragment, fragment) = match url.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (url, None),
        };
        let (base, query) = url_without_fragment
            .split_once('?')
            .unwrap_or((url_without_fragment, ""));
        let mut prefix = "weir".to_string();
        let mut retention = Duration::from_secs(7 * 86_400);
        let mut ca_file = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
        let mut passed = Vec::new();
        let params = QueryParams::new("redis state", query, PARAMS).with_url(url);
        for param in &params {
            match param.name() {
                "prefix" => {
                    let v = param.raw_value();
                    if v.is_empty() || v.contains(['{', '}', ' ']) {
                        return Err(param.invalid("must be non-empty, without '{', '}' or ' '"));
                    }
                    prefix = v.to_string();
                }
                "retention" => retention = param.duration()?,
                "timeout" | "connect_timeout" => {
                    let value = param.duration()?;
                    if !(Duration::from_millis(10)..=MAX_TIMEOUT).contains(&value) {
                        return Err(param.invalid("must be within 10ms..=60s"));
                    }
                    if param.name() == "timeout" {
                        timeout = value;
                    } else {
                        connect_timeout = value;
                    }
                }
                "ca_file" if scheme == "rediss" => {
                    ca_file = Some(std::path::PathBuf::from(param.raw_value()));
                }
                "ca_file" => return Err(param.invalid("needs a rediss:// (TLS) URL")),
                _ => passed.push(param.raw()),
            }
        }
        let mut redis_url = if passed.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        if let Some(fragment) = fragment {
            redis_url = format!("{redis_url}#{fragment}");
        }
        Ok(RedisStateConfig {
            redis_url,
            prefix,
            event_retention: retention,
            ca_file,
            timeout,
            connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_and_retention_and_keeps_the_rest() {
        let c = RedisStateConfig::from_url(
            "redis://u:secret@h:6379/2?prefix=app&retention=1d&protocol=resp3",
        )
        .unwrap();
        assert_eq!(c.prefix, "app");
        assert_eq!(c.event_retention, Duration::from_secs(86_400));
        assert_eq!(c.redis_url, "redis://u:secret@h:6379/2?protocol=resp3");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let debug = format!("{c:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("u:***@h:6379"), "{debug}");
    }

    #[test]
    fn a_fragment_stays_the_clients_and_out_of_the_parameters() {
        let c = RedisStateConfig::from_url("rediss://h:6380?prefix=p#insecure").unwrap();
        assert_eq!(c.prefix, "p");
        assert_eq!(c.redis_url, "rediss://h:6380#insecure");
        let c = RedisStateConfig::from_url("rediss://h:6380/1?prefix=p&protocol=resp3#insecure")
            .unwrap();
        assert_eq!(c.redis_url, "rediss://h:6380/1?protocol=resp3#insecure");
    }

    #[test]
    fn rejects_other_schemes_and_bad_values() {
        assert!(RedisStateConfig::from_url("http://x").is_err());
        assert!(RedisStateConfig::from_url("redis://h?retention=soon").is_err());
        assert!(RedisStateConfig::from_url("redis://h?prefix={x}").is_err());
        assert!(RedisStateConfig::from_url("redis://h?ca_file=/ca.pem").is_err());
        assert!(RedisStateConfig::from_url("redis://h?timeout=0s").is_err());
        assert!(RedisStateConfig::from_url("redis://h?connect_timeout=2m").is_err());
        let c = RedisStateConfig::from_url("redis://h?timeout=250ms&connect_timeout=3s").unwrap();
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.redis_url, "redis://h");
        let tls =
            RedisStateConfig::from_url("rediss://h:6380?ca_file=/etc/ca.pem&prefix=p").unwrap();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(tls.redis_url, "rediss://h:6380");
        let err = RedisStateConfig::from_url("redis://:pw@h?retention=soon").expect_err("bad");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message()
                .starts_with("redis state: parameter retention="),
            "{err}"
        );
        assert!(!format!("{err:?}").contains("pw"), "{err:?}");
    }
}
