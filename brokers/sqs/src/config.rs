//! [`SqsBrokerConfig`]: the broker's settings, parsed from its URL.

use std::fmt;
use std::time::Duration;

use weir_core::redact::redact_url;
use weir_core::url_query::QueryParams;
use weir_core::{Error, ErrorKind, Result};

/// SQS's largest message (body and attributes together): 256 KiB.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 << 10;

/// What the driver keeps of a message's 256 KiB for the key and the attribute names: 1 KiB.
/// Payloads may use the rest (`max_message_bytes` = 255 KiB).
pub const ENVELOPE_RESERVE: usize = 1 << 10;

/// The longest key a message may carry (it travels in the reserved [`ENVELOPE_RESERVE`]).
pub const MAX_KEY_BYTES: usize = 512;

/// The longest prefix accepted (queue names are at most 80 characters).
pub const MAX_PREFIX_LEN: usize = 24;

/// The query parameters weir reads from the URL (everything else is an error).
const PARAMS: &[&str] = &[
    "region",
    "endpoint",
    "fifo",
    "wait",
    "visibility",
    "refresh",
    "ack_linger",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// Settings of an [`SqsBroker`](crate::SqsBroker), parsed from a URL by
/// [`SqsBrokerConfig::from_url`]:
///
/// ```text
/// sqs://[prefix]?region=us-east-1&endpoint=http://127.0.0.1:5000&fifo=false&wait=20s&visibility=30s&refresh=10s&ack_linger=5ms
/// ```
///
/// Credentials come from the usual AWS chain (environment, profile, web identity, container
/// and instance metadata) unless `access_key_id` and `secret_access_key` are given (meant for
/// local emulators; `Debug` shows them as `***`). `AWS_ENDPOINT_URL` (or
/// `AWS_ENDPOINT_URL_SQS`) is honoured when `endpoint` is not given, and `AWS_REGION` /
/// the profile's region when `region` is not.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqsBrokerConfig {
    /// Every queue name starts with `{prefix}_` (the URL's host part, default `weir`;
    /// letters, digits and `-`, at most [`MAX_PREFIX_LEN`] characters).
    pub prefix: String,
    /// The AWS region (query `region`); `None`: the AWS chain's (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// The SQS endpoint (query `endpoint`, e.g. a local moto server); `None`: the AWS
    /// chain's (`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL`, profile), else the region's.
    pub endpoint: Option<String>,
    /// FIFO queues (query `fifo`, default `false`): ordered per key, deduplicated.
    pub fifo: bool,
    /// Longest single long poll, `WaitTimeSeconds` (query `wait`, default `20s`, at most
    /// 20 s, whole seconds). A poll returns as soon as a message is there.
    pub wait: Duration,
    /// Visibility timeout of a received message (query `visibility`, default `30s`, 1 s to
    /// 12 h, whole seconds): how long a delivery of a consumer that died stays invisible
    /// before another consumer gets it. A live subscription extends it while it holds the
    /// delivery.
    pub visibility: Duration,
    /// How long the list of a topic's group queues (`ListQueues`) is cached by `publish`
    /// (query `refresh`, default `10s`); also how often a subscription moves the messages
    /// published before any group existed into the group queues.
    pub refresh: Duration,
    /// How long an ack waits for others to share its `DeleteMessageBatch` (query `ack_linger`,
    /// default `5ms`, at most 1 s).
    pub ack_linger: Duration,
    /// Static credentials (queries `access_key_id`, `secret_access_key`, `session_token`).
    credentials: Option<StaticCredentials>,
}

#[derive(Clone, PartialEq, Eq)]
struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl SqsBrokerConfig {
    /// Parses `sqs://[prefix][?param=value&…]` (see the type's documentation).
    ///
    /// Fails with [`ErrorKind::Config`] on another scheme, an unknown or malformed parameter,
    /// or a value out of range; the message names the parameter.
    pub fn from_url(url: &str) -> Result<Self> {
        let config_error = |message: String| {
            Error::new(ErrorKind::Config, message)
                .permanent()
                .with_context("url", redact_url(url))
        };
        let Some(rest) = url.strip_prefix("sqs://") else {
            return Err(config_error(
                "an SQS broker URL starts with sqs:// (sqs://[prefix]?region=…&endpoint=…)".into(),
            ));
        };
        let (prefix, query) = rest.split_once('?').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains(['@', ':']) {
            // Neither the URL nor its host is repeated: `sqs://KEY_ID:SECRET@prefix` would put
            // a secret in the message (and `sqs://prefix:SECRET` is no userinfo to redact).
            return Err(Error::new(
                ErrorKind::Config,
                "the host part of an sqs:// URL is the queue-name prefix and cannot hold '@' or ':' \
                 (no credentials or port there: give access_key_id= and secret_access_key= as \
                 query parameters, or use the AWS chain)",
            )
            .permanent());
        }
        let mut config = SqsBrokerConfig {
            prefix: if prefix.is_empty() { "weir" } else { prefix }.to_owned(),
            region: None,
            endpoint: None,
            fifo: false,
            wait: Duration::from_secs(20),
            visibility: Duration::from_secs(30),
            refresh: Duration::from_secs(10),
            ack_linger: Duration::from_millis(5),
            credentials: None,
        };
        let (mut key_id, mut secret, mut token) = (None, None, None);
        let params = QueryParams::new("SQS broker", query, PARAMS).with_url(url);
        for param in &params {
            match param.name() {
                "region" => config.region = Some(param.value()?).filter(|v| !v.is_empty()),
                "endpoint" => config.endpoint = Some(param.value()?).filter(|v| !v.is_empty()),
                "fifo" => config.fifo = param.bool()?,
                "wait" => config.wait = param.duration()?,
                "visibility" => config.visibility = param.duration()?,
                "refresh" => config.refresh = param.duration()?,
                "ack_linger" => config.ack_linger = param.duration()?,
                "access_key_id" => key_id = Some(param.value()?),
                "secret_access_key" => secret = Some(param.value()?),
                "session_token" => token = Some(param.value()?),
                _ => return Err(param.unknown()),
            }
        }
        config.credentials = match (key_id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(StaticCredentials {
                access_key_id,
                secret_access_key,
                session_token: token,
            }),
            (None, None) if token.is_none() => None,
            _ => {
                return Err(config_error(
                    "access_key_id and secret_access_key go together (session_token needs both)"
                        .into(),
                ));
            }
        };
        config.validate().map_err(config_error)?;
        Ok(config)
    }

    /// Checks the limits of every setting; the message names the offending one.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.prefix.contains(['@', ':']) {
            // Not repeated: it may hold credentials (`KEY_ID:SECRET@prefix`).
            return Err(format!(
                "prefix must be 1..={MAX_PREFIX_LEN} letters, digits or '-' (it holds '@' or ':'; \
                 credentials go in access_key_id= and secret_access_key=)"
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX_LEN
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "prefix {:?} must be 1..={MAX_PREFIX_LEN} letters, digits or '-'",
                self.prefix
            ));
        }
        // 0 s would make every poll of an idle queue return at once: a busy loop.
        if self.wait < Duration::from_secs(1)
            || self.wait > Duration::from_secs(20)
            || self.wait.subsec_nanos() != 0
        {
            return Err(format!(
                "wait {:?} must be whole seconds within 1s..=20s",
                self.wait
            ));
        }
        if self.visibility < Duration::from_secs(1)
            || self.visibility > Duration::from_secs(12 * 3600)
            || self.visibility.subsec_nanos() != 0
        {
            return Err(format!(
                "visibility {:?} must be whole seconds within 1s..=12h",
                self.visibility
            ));
        }
        if self.refresh < Duration::from_millis(100) {
            return Err(format!("refresh {:?} is below 100ms", self.refresh));
        }
        if self.ack_linger > Duration::from_secs(1) {
            return Err(format!("ack_linger {:?} is above 1s", self.ack_linger));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        Ok(())
    }

    /// Static credentials given in the URL: (access key id, secret, session token).
    pub(crate) fn static_credentials(&self) -> Option<(&str, &str, Option<&str>)> {
        self.credentials.as_ref().map(|c| {
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref(),
            )
        })
    }
}

impl fmt::Debug for SqsBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsBrokerConfig")
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("fifo", &self.fifo)
            .field("wait", &self.wait)
            .field("visibility", &self.visibility)
            .field("refresh", &self.refresh)
            .field("ack_linger", &self.ack_linger)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map_or("from the AWS chain", |_| "***"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parameters() {
        let c = SqsBrokerConfig::from_url("sqs://").expect("parse");
        assert_eq!(c.prefix, "weir");
        assert_eq!(c.region, None);
        assert_eq!(c.endpoint, None);
        assert!(!c.fifo);
        assert_eq!(c.wait, Duration::from_secs(20));
        assert_eq!(c.visibility, Duration::from_secs(30));
        assert_eq!(c.refresh, Duration::from_secs(10));
        assert!(c.static_credentials().is_none());

        let c = SqsBrokerConfig::from_url(
            "sqs://app-1?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A5000&fifo=true&wait=1s&visibility=3s&refresh=500ms&ack_linger=0ms&access_key_id=test&secret_access_key=test",
        )
        .expect("parse");
        assert_eq!(c.prefix, "app-1");
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(c.fifo);
        assert_eq!(c.wait, Duration::from_secs(1));
        assert_eq!(c.visibility, Duration::from_secs(3));
        assert_eq!(c.refresh, Duration::from_millis(500));
        assert_eq!(c.ack_linger, Duration::ZERO);
        assert_eq!(c.static_credentials(), Some(("test", "test", None)));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "redis://h",
            "sqs:/x",
            "sqs://a_b",
            "sqs://this-prefix-is-much-too-long-for-sqs",
            "sqs://w?wait=21s",
            "sqs://w?wait=500ms",
            "sqs://w?wait=0s",
            "sqs://w?visibility=0s",
            "sqs://w?visibility=1500ms",
            "sqs://w?fifo=maybe",
            "sqs://w?endpoint=localhost:5000",
            "sqs://w?access_key_id=a",
            "sqs://w?regoin=us-east-1",
            "sqs://w?refresh=1ms",
        ] {
            let err = SqsBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
        }
        let err = SqsBrokerConfig::from_url("sqs://w?regoin=x").expect_err("unknown");
        assert!(err.to_string().contains("\"regoin\""), "{err}");
        assert!(err.to_string().contains("known: region, endpoint"), "{err}");
    }

    #[test]
    fn secrets_never_show() {
        let url = "sqs://w?access_key_id=AKIDEXAMPLE&secret_access_key=s3cret&session_token=t0ken";
        let c = SqsBrokerConfig::from_url(url).expect("parse");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        assert!(!shown.contains("AKIDEXAMPLE"), "{shown}");
        let err = SqsBrokerConfig::from_url(&format!("{url}&nope=1")).expect_err("unknown");
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0ken"),
            "{shown}"
        );
        let err = SqsBrokerConfig::from_url("sqs://w?secret_access_key=%zz").expect_err("escape");
        assert!(!format!("{err:?}").contains("%zz"), "{err:?}");
        let err = SqsBrokerConfig::from_url("sqs://w?x-password=%zz").expect_err("escape");
        assert!(!format!("{err:?}").contains("%zz"), "{err:?}");
    }

    /// Credentials written as URL userinfo (`sqs://KEY_ID:SECRET@prefix`) are refused without
    /// being repeated, in the message or the context.
    #[test]
    fn userinfo_is_refused_without_showing_it() {
        for url in [
            "sqs://AKIDEXAMPLE:s3cret@weir?region=us-east-1",
            "sqs://s3cret@weir",
            "sqs://weir:s3cret",
        ] {
            let err = SqsBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cret"), "{url}: {shown}");
            assert!(shown.contains("access_key_id="), "{shown}");
        }
        let mut c = SqsBrokerConfig::from_url("sqs://w").expect("parse");
        c.prefix = "AKID:s3cret@w".into();
        let message = c.validate().expect_err("invalid prefix");
        assert!(!message.contains("s3cret"), "{message}");
    }
}
