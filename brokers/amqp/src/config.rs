//! [`AmqpBrokerConfig`]: the broker's settings, parsed from its URL.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use weir_core::percent;
use weir_core::redact::redact_url;
use weir_core::url_query::QueryParams;
use weir_core::{Error, ErrorKind, Result};

/// The largest payload the broker can be configured to accept: 128 MiB, RabbitMQ's default
/// `max_message_size` (a larger message would close the publishing channel).
pub const AMQP_MAX_MESSAGE_BYTES: usize = 128 << 20;

/// The default largest payload: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The longest `timeout` (a larger one is refused: deadlines are computed from it).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The default `idle_probe`.
pub const DEFAULT_IDLE_PROBE: Duration = Duration::from_secs(15);

/// The longest `reconnect_max` (reconnection pauses double from 100 ms up to it).
pub(crate) const MAX_RECONNECT: Duration = Duration::from_secs(600);

/// The query parameters weir reads from the URL (everything else is an error).
const PARAMS: &[&str] = &[
    "prefix",
    "prefetch",
    "queue_type",
    "queue_expires",
    "max_message_bytes",
    "timeout",
    "reconnect_max",
    "idle_probe",
    "heartbeat",
    "frame_max",
    "channel_max",
    "ca_file",
];

/// The RabbitMQ queue type of the consumer-group queues (query `queue_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated Raft queues (`x-queue-type: quorum`), the default: they count deliveries
    /// (`x-delivery-count`) and are RabbitMQ's recommended durable queue type.
    Quorum,
    /// Classic durable queues with persistent messages.
    Classic,
}

impl QueueType {
    /// The value of `x-queue-type`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Settings of an [`AmqpBroker`](crate::AmqpBroker), parsed from a URL by
/// [`AmqpBrokerConfig::from_url`]:
///
/// ```text
/// amqp://[user[:password]@]host[:port][/vhost][?prefix=weir&prefetch=64&queue_type=quorum&max_message_bytes=N&timeout=10s&reconnect_max=5s&idle_probe=15s&heartbeat=S&frame_max=N&channel_max=N]
/// amqps://…[&ca_file=/path/ca.pem]   (TLS with rustls)
/// ```
///
/// The vhost is percent-encoded (`/%2f` is the default vhost `/`; an empty path is `/` too).
/// So are the user name and password: a `/`, `?`, `#` or `@` in them must be written `%2F`,
/// `%3F`, `%23`, `%40` (a URL with an `@` after a `/`, `?` or `#` is refused, since where its
/// password ends cannot be told).
/// The fields are public so a program can adjust them after parsing (checked again by
/// [`AmqpBroker::with_config`](crate::AmqpBroker::with_config)); the credentials are private,
/// and `Debug` shows the address with the password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmqpBrokerConfig {
    /// `amqps://` (TLS).
    tls: bool,
    username: String,
    password: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 5672, or 5671 for `amqps://`).
    pub port: u16,
    /// The virtual host (decoded; default `/`).
    pub vhost: String,
    /// Every exchange and queue name of the broker starts with `{prefix}.` or `{prefix}:`
    /// (query `prefix`, default `weir`).
    pub prefix: String,
    /// Unacknowledged deliveries RabbitMQ sends ahead to one subscription (`basic.qos`,
    /// query `prefetch`, default 64, 1..=65535).
    pub prefetch: u16,
    /// The type of the consumer-group queues (query `queue_type`, `quorum` (default) or
    /// `classic`). An existing queue keeps its type: changing it needs the queue deleted.
    pub queue_type: QueueType,
    /// Deletes a group queue unused (no consumer, not re-declared) for this long
    /// (`x-expires`; query `queue_expires`, default none: queues live until deleted). Meant for
    /// tests and short-lived groups: an expired queue loses its messages.
    pub queue_expires: Option<Duration>,
    /// The largest payload `publish` accepts (query `max_message_bytes`, default 64 MiB, at
    /// most 128 MiB).
    pub max_message_bytes: usize,
    /// Connect timeout, and how long `publish` keeps retrying (reconnecting) before it fails
    /// with a retryable error (query `timeout`, default `10s`, 100ms..=1h).
    pub timeout: Duration,
    /// The longest pause between two reconnection attempts; pauses start at 100 ms and
    /// double (query `reconnect_max`, default `5s`, 100ms..=10m).
    pub reconnect_max: Duration,
    /// How long a subscription's `next()` waits without a delivery before it checks that its
    /// channel still answers (a `basic.qos`, bounded by `timeout`); a channel that does not
    /// answer marks the connection dead, and the subscription reconnects (query `idle_probe`,
    /// default `15s`, 100ms..=1h). It catches a consumer that silently stopped receiving (a
    /// connection closed under lapin without the consumer hearing, or a half-open socket
    /// with heartbeats off) well before the heartbeat would.
    pub idle_probe: Duration,
    /// AMQP heartbeat in seconds (query `heartbeat`; default: the server's proposal, 60 s).
    pub heartbeat: Option<u16>,
    /// Largest AMQP frame (query `frame_max`; default: the server's proposal).
    pub frame_max: Option<u32>,
    /// Most channels on the connection (query `channel_max`; default: the server's).
    pub channel_max: Option<u16>,
    /// For `amqps://`: a PEM file of the CA(s) to trust instead of the system store (query
    /// `ca_file`).
    pub ca_file: Option<PathBuf>,
}

impl AmqpBrokerConfig {
    /// Parses `amqp://…` or `amqps://…` (see the type's documentation for the parameters).
    ///
    /// Fails with [`ErrorKind::Config`] (permanent) on another scheme, a missing host, a bad
    /// port or percent-encoding, an `@` after the authority, or an unknown or malformed
    /// parameter. No error message holds a piece of the user name or password.
    pub fn from_url(url: &str) -> Result<Self> {
        // Errors show the URL redacted, or nothing of it when the redaction could miss the
        // password (no `scheme://`, or an `@` after the end of the authority).
        let unshown = |message: &str| Error::new(ErrorKind::Config, message).permanent();
        let Some((scheme, rest)) = url.split_once("://").filter(|(scheme, _)| {
            scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }) else {
            return Err(unshown(
                "an AMQP broker URL starts with amqp:// or amqps://",
            ));
        };
        // The authority ends at the first `/`, `?` or `#`. An `@` after that comes from an
        // unencoded `/`, `?` or `#` in the user name or password (or an unencoded `@` in the
        // vhost or a parameter): where the password ends cannot be told, so the URL is refused
        // with a message that shows none of its pieces.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[authority_end..].contains('@') {
            return Err(unshown(
                "the AMQP broker URL has an '@' after a '/', '?' or '#': percent-encode '/', '?', '#' and '@' in the user name and password (%2F, %3F, %23, %40), and '@' in the vhost and parameters (%40)",
            ));
        }
        let shown = redact_url(url);
        let config_error = |message: String| {
            Error::new(ErrorKind::Config, message)
                .permanent()
                .with_context("url", &shown)
        };
        let tls = match scheme {
            "amqp" => false,
            "amqps" => true,
            _ => {
                return Err(config_error(format!(
                    "unsupported scheme {scheme:?} for the AMQP broker (expected amqp:// or amqps://)"
                )));
            }
        };
        let (authority, tail) = rest.split_at(authority_end);
        let tail = tail.split_once('#').map_or(tail, |(tail, _)| tail);
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let path = path.strip_prefix('/').unwrap_or(path);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => ("guest".to_owned(), "guest".to_owned()),
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user =
                    percent::decode(user).map_err(|e| config_error(format!("user name: {e}")))?;
                let pass =
                    percent::decode(pass).map_err(|e| config_error(format!("password: {e}")))?;
                (user, pass)
            }
        };
        let (host, port) = split_host_port(hostport).map_err(config_error)?;
        let port = match port {
            Some(port) => port,
            None if tls => 5671,
            None => 5672,
        };
        let vhost = if path.is_empty() {
            "/".to_owned()
        } else {
            percent::decode(path).map_err(|e| config_error(format!("vhost: {e}")))?
        };

        let mut config = AmqpBrokerConfig {
            tls,
            username,
            password,
            host,
            port,
            vhost,
            prefix: "weir".into(),
            prefetch: 64,
            queue_type: QueueType::Quorum,
            queue_expires: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timeout: Duration::from_secs(10),
            reconnect_max: Duration::from_secs(5),
            idle_probe: DEFAULT_IDLE_PROBE,
            heartbeat: None,
            frame_max: None,
            channel_max: None,
            ca_file: None,
        };
        let params = QueryParams::new("AMQP broker", query, PARAMS).with_url(url);
        for param in &params {
            match param.name() {
                "prefix" => config.prefix = param.value()?,
                "prefetch" => config.prefetch = param.number()?,
                "queue_type" => {
                    config.queue_type = param.one_of(&[
                        ("quorum", QueueType::Quorum),
                        ("classic", QueueType::Classic),
                    ])?
                }
                "queue_expires" => config.queue_expires = Some(param.duration()?),
                "max_message_bytes" => config.max_message_bytes = param.usize()?,
                "timeout" => config.timeout = param.duration()?,
                "reconnect_max" => config.reconnect_max = param.duration()?,
                "idle_probe" => config.idle_probe = param.duration()?,
                "heartbeat" => config.heartbeat = Some(param.number()?),
                "frame_max" => config.frame_max = Some(param.number()?),
                "channel_max" => config.channel_max = Some(param.number()?),
                "ca_file" if tls => config.ca_file = Some(param.value()?.into()),
                "ca_file" => return Err(param.invalid("needs an amqps:// (TLS) URL")),
                _ => return Err(param.unknown()),
            }
        }
        config.validate().map_err(config_error)?;
        Ok(config)
    }

    /// Checks the limits of every setting; the message names the offending one.
    fn validate(&self) -> std::result::Result<(), String> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 100
            && !self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if !prefix_ok {
            return Err(format!(
                "prefix {:?} must be 1..=100 bytes, without whitespace",
                self.prefix
            ));
        }
        if self.prefetch == 0 {
            return Err("prefetch must be at least 1".into());
        }
        if !(1..=AMQP_MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(format!(
                "max_message_bytes {} is not within 1..={AMQP_MAX_MESSAGE_BYTES} (128 MiB, RabbitMQ's default max_message_size)",
                self.max_message_bytes
            ));
        }
        if self
            .queue_expires
            .is_some_and(|d| d < Duration::from_secs(1) || d.as_millis() > u128::from(u32::MAX))
        {
            return Err(format!(
                "queue_expires {:?} is not within 1s..=49d",
                self.queue_expires
            ));
        }
        if !(Duration::from_millis(100)..=MAX_TIMEOUT).contains(&self.timeout) {
            return Err(format!(
                "timeout {:?} is not within 100ms..=1h",
                self.timeout
            ));
        }
        if !(Duration::from_millis(100)..=MAX_TIMEOUT).contains(&self.idle_probe) {
            return Err(format!(
                "idle_probe {:?} is not within 100ms..=1h",
                self.idle_probe
            ));
        }
        if !(Duration::from_millis(100)..=MAX_RECONNECT).contains(&self.reconnect_max) {
            return Err(format!(
                "reconnect_max {:?} is not within 100ms..=10m",
                self.reconnect_max
            ));
        }
        Ok(())
    }

    /// Checks every setting (for a configuration whose public fields a program changed):
    /// a permanent [`ErrorKind::Config`] error naming the offending one.
    pub(crate) fn check(&self) -> Result<()> {
        self.validate().map_err(|message| {
            Error::new(ErrorKind::Config, message)
                .permanent()
                .with_context("url", self.redacted_url())
        })
    }

    /// The broker's address as a URL, built from the current fields, with the password
    /// replaced by `***` (for logs and errors): `amqp[s]://user:***@host:port/vhost`, the user
    /// name hidden too (`***@`) when the password is empty (it may be a password written
    /// alone). weir's parameters are left out (`Debug` shows them).
    pub fn redacted_url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let userinfo = if self.password.is_empty() {
            "***".to_owned()
        } else {
            format!("{}:***", percent::encode(&self.username))
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            percent::encode(&self.host)
        };
        format!(
            "{scheme}://{userinfo}@{host}:{}/{}",
            self.port,
            percent::encode(&self.vhost)
        )
    }

    /// Whether the URL is `amqps://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The parsed URI handed to lapin (holds the password).
    pub(crate) fn amqp_uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                frame_max: self.frame_max,
                channel_max: self.channel_max,
                heartbeat: self.heartbeat,
                connection_timeout: Some(
                    u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                ),
                auth_mechanism: None,
            },
        }
    }

    /// The user name (for tests).
    #[cfg(test)]
    pub(crate) fn credentials(&self) -> (&str, &str) {
        (&self.username, &self.password)
    }

    /// The exchange of `topic`: `{prefix}.{topic}`.
    pub(crate) fn exchange(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }

    /// The queue of `group` on `topic`: `{prefix}.{topic}.{group}`.
    pub(crate) fn queue(&self, topic: &str, group: &str) -> String {
        format!("{}.{topic}.{group}", self.prefix)
    }

    /// The headers exchange in front of the delay queues: `{prefix}:delay`.
    pub(crate) fn delay_exchange(&self) -> String {
        format!("{}:delay", self.prefix)
    }

    /// The delay queue of bucket `ceiling_ms`: `{prefix}:delay:{ceiling_ms}`.
    pub(crate) fn delay_queue(&self, ceiling_ms: u64) -> String {
        format!("{}:delay:{ceiling_ms}", self.prefix)
    }
}

impl fmt::Debug for AmqpBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBrokerConfig")
            .field("url", &self.redacted_url())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("queue_type", &self.queue_type)
            .field("queue_expires", &self.queue_expires)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("timeout", &self.timeout)
            .field("reconnect_max", &self.reconnect_max)
            .field("idle_probe", &self.idle_probe)
            .field("heartbeat", &self.heartbeat)
            .field("frame_max", &self.frame_max)
            .field("channel_max", &self.channel_max)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `host[:port]`, `[v6]` or `[v6]:port` → (host, port).
fn split_host_port(hostport: &str) -> std::result::Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("unterminated [ in the host".into());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after the host")),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the AMQP broker URL has no host".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|e| format!("bad port {port:?} ({e})"))?,
        ),
    };
    let host = percent::decode(host).map_err(|e| format!("host: {e}"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parameters() {
        let c = AmqpBrokerConfig::from_url("amqp://127.0.0.1").expect("parse");
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5672);
        assert_eq!(c.vhost, "/");
        assert_eq!(c.credentials(), ("guest", "guest"));
        assert_eq!(c.prefix, "weir");
        assert_eq!(c.prefetch, 64);
        assert_eq!(c.queue_type, QueueType::Quorum);
        assert_eq!(c.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(!c.is_tls());

        let c = AmqpBrokerConfig::from_url(
            "amqp://u%40x:p%2Fw@rabbit:5673/%2f?prefix=app&prefetch=5&queue_type=classic&queue_expires=1m&max_message_bytes=1024&timeout=2s&reconnect_max=1s&idle_probe=3s&heartbeat=10&frame_max=131072&channel_max=64",
        )
        .expect("parse");
        assert_eq!(c.credentials(), ("u@x", "p/w"));
        assert_eq!((c.host.as_str(), c.port), ("rabbit", 5673));
        assert_eq!(c.vhost, "/");
        assert_eq!(c.prefix, "app");
        assert_eq!(c.prefetch, 5);
        assert_eq!(c.queue_type, QueueType::Classic);
        assert_eq!(c.queue_expires, Some(Duration::from_secs(60)));
        assert_eq!(c.max_message_bytes, 1024);
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.reconnect_max, Duration::from_secs(1));
        assert_eq!(c.idle_probe, Duration::from_secs(3));
        assert_eq!(c.heartbeat, Some(10));
        assert_eq!(c.frame_max, Some(131_072));
        assert_eq!(c.channel_max, Some(64));
        let uri = c.amqp_uri();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.host, "rabbit");
        assert_eq!(uri.query.heartbeat, Some(10));

        let c = AmqpBrokerConfig::from_url("amqps://[::1]/prod").expect("parse");
        assert!(c.is_tls());
        assert_eq!((c.host.as_str(), c.port), ("::1", 5671));
        assert_eq!(c.vhost, "prod");
        assert!(matches!(c.amqp_uri().scheme, AMQPScheme::AMQPS));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "redis://h",
            "h:5672",
            "amqp://",
            "amqp:///vhost",
            "amqp://h:port",
            "amqp://h?prefetch=0",
            "amqp://h?prefetch=many",
            "amqp://h?prefech=5",
            "amqp://h?prefix=",
            "amqp://h?queue_type=stream",
            "amqp://h?queue_expires=10ms",
            "amqp://h?max_message_bytes=200000000",
            "amqp://h?timeout=1ms",
            "amqp://h?ca_file=/x.pem",
            "amqp://h/%zz",
            "amqp://h?timeout=2h",
            "amqp://h?timeout=100000000d",
            "amqp://h?reconnect_max=11m",
            "amqp://h?idle_probe=10ms",
        ] {
            let err = AmqpBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
        }
        let err = AmqpBrokerConfig::from_url("amqp://h?prefech=5").expect_err("unknown");
        let shown = err.to_string();
        assert!(shown.contains("\"prefech\""), "{shown}");
        assert!(shown.contains("known: prefix, prefetch"), "{shown}");
    }

    #[test]
    fn passwords_never_show() {
        let c = AmqpBrokerConfig::from_url("amqp://user:s3cret@h:1/v?prefetch=2").expect("parse");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://user:***@h:1/v"), "{shown}");
        assert!(shown.contains("prefetch: 2"), "{shown}");
        assert_eq!(redact_url("amqps://:pw@h"), "amqps://:***@h");
        // A userinfo without `:` may be a password written alone: hidden too (one rule for
        // every weir URL, weir_core::redact).
        assert_eq!(redact_url("amqp://user@h/1"), "amqp://***@h/1");
        assert_eq!(redact_url("amqp://h:1"), "amqp://h:1");
        // Errors carry the redacted URL only.
        for url in [
            "amqp://u:s3cret@h?nope=1",
            "amqp://u:s3cret@h:x",
            "amqp://u:s3cret@h?prefetch=0",
        ] {
            let err = AmqpBrokerConfig::from_url(url).expect_err(url);
            assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        }
    }

    /// Passwords with an unencoded `/`, `?`, `#` or `@`: refused or parsed whole, and no error
    /// or `Debug` output shows a piece of them.
    #[test]
    fn unencoded_passwords_never_show() {
        for (url, secret) in [
            ("amqp://weir:1234/abc@rabbit", "abc"),
            ("amqp://weir:Zm9v/YmFy@h", "Zm9v"),
            ("amqp://weir:Zm9v/YmFy@h", "YmFy"),
            ("amqp://u:ab?cdXY@h", "cdXY"),
            ("amqp://u:ab?cdXY@h", "ab?"),
            ("amqp://u:pq#rsXY@h/v", "rsXY"),
            ("amqp://u:s3cret/x@h:5672/%2f?prefetch=0", "s3cret"),
            ("u:s3cret@h", "s3cret"),
            ("u:s3cret@h://x", "s3cret"),
        ] {
            let err = AmqpBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{url}: {shown}");
        }
        let err = AmqpBrokerConfig::from_url("amqp://weir:1234/abc@rabbit").expect_err("@");
        assert!(err.to_string().contains("percent-encode"), "{err}");
        // Percent-encoded, the same passwords parse, and `@` may stay unencoded.
        let c = AmqpBrokerConfig::from_url("amqp://weir:1234%2Fabc@rabbit/%2f").expect("parse");
        assert_eq!(c.credentials(), ("weir", "1234/abc"));
        assert_eq!(
            (c.host.as_str(), c.port, c.vhost.as_str()),
            ("rabbit", 5672, "/")
        );
        let c = AmqpBrokerConfig::from_url("amqp://u:ab%3Fcd%23e@f@h?prefetch=3").expect("parse");
        assert_eq!(c.credentials(), ("u", "ab?cd#e@f"));
        assert_eq!((c.host.as_str(), c.prefetch), ("h", 3));
        let shown = format!("{c:?} {}", c.redacted_url());
        for piece in ["ab", "cd", "e@f"] {
            assert!(!shown.contains(piece), "{shown}");
        }
        // A bad percent-encoding in the password does not echo it either.
        let err = AmqpBrokerConfig::from_url("amqp://u:s3cret%zz@h").expect_err("%zz");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }

    /// `redacted_url` describes the fields as they are now, not the URL parsed.
    #[test]
    fn redacted_url_follows_the_fields() {
        let mut c =
            AmqpBrokerConfig::from_url("amqp://user:s3cret@h:1/v?prefetch=2").expect("parse");
        assert_eq!(c.redacted_url(), "amqp://user:***@h:1/v");
        c.host = "rabbit.internal".into();
        c.port = 5673;
        c.vhost = "/".into();
        assert_eq!(c.redacted_url(), "amqp://user:***@rabbit.internal:5673/%2F");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("amqp://user:***@rabbit.internal:5673/%2F"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        let c = AmqpBrokerConfig::from_url("amqps://[::1]/prod").expect("parse");
        assert_eq!(c.redacted_url(), "amqps://guest:***@[::1]:5671/prod");
        // A user name without password may be a password written alone: hidden.
        let c = AmqpBrokerConfig::from_url("amqp://lonely@h").expect("parse");
        assert_eq!(c.redacted_url(), "amqp://***@h:5672/%2F");
    }

    /// A program that sets the public fields out of range gets a `Config` error from `check`
    /// (called by `AmqpBroker::with_config`), not a panic computing a deadline.
    #[test]
    fn changed_fields_are_checked_again() {
        let mut c = AmqpBrokerConfig::from_url("amqp://h").expect("parse");
        c.check().expect("defaults");
        c.timeout = Duration::MAX;
        let err = c.check().expect_err("timeout");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("timeout"), "{err}");
        c.timeout = Duration::from_secs(3600);
        c.check().expect("1h");
        c.reconnect_max = Duration::from_secs(601);
        assert!(
            c.check()
                .expect_err("reconnect_max")
                .to_string()
                .contains("reconnect_max")
        );
    }

    #[test]
    fn names() {
        let c = AmqpBrokerConfig::from_url("amqp://h?prefix=p").expect("parse");
        assert_eq!(c.exchange("steps"), "p.steps");
        assert_eq!(c.queue("steps", "executor"), "p.steps.executor");
        assert_eq!(c.delay_exchange(), "p:delay");
        assert_eq!(c.delay_queue(224), "p:delay:224");
    }
}
