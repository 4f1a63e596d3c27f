//! [`KafkaBrokerConfig`]: the broker's settings, parsed from its URL.

use std::fmt;
use std::time::Duration;

use weir_core::redact::redact_url;
use weir_core::url_query::QueryParams;
use weir_core::{Error, ErrorKind, Result};

/// The default largest payload: 1 MiB (what Kafka's default `message.max.bytes` of
/// 1 MiB + 12 bytes lets through, rounded down to the payload).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Room for the key, the headers and the record-batch framing on top of the payload: the
/// producer's `message.max.bytes` and the topic's `max.message.bytes` (on topics this broker
/// creates) are `max_message_bytes + MESSAGE_OVERHEAD_BYTES`.
pub const MESSAGE_OVERHEAD_BYTES: usize = 64 << 10;

/// The largest `max_message_bytes` accepted: librdkafka's ceiling for `message.max.bytes`
/// (1,000,000,000) less [`MESSAGE_OVERHEAD_BYTES`].
pub const MAX_MAX_MESSAGE_BYTES: usize = 1_000_000_000 - MESSAGE_OVERHEAD_BYTES;

/// The query parameters weir reads itself; every other one goes to librdkafka.
const PARAMS: &[&str] = &[
    "prefix",
    "partitions",
    "replication",
    "max_message_bytes",
    "commit_interval",
    "prefetch",
    "revoke_grace",
    "timeout",
    "topic_creation",
];

/// librdkafka settings weir sets itself (a URL may not override them: the driver's
/// guarantees rest on them).
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "message.max.bytes",
];

/// librdkafka settings a URL may not set although weir leaves them at librdkafka's defaults:
/// its rebalance handling needs the classic group protocol with an eager assignor (every
/// partition revoked before a new assignment), not cooperative or KIP-848 assignment.
const GROUP_PROTOCOL: &[&str] = &["partition.assignment.strategy", "group.protocol"];

/// Why a URL may not set librdkafka setting `key`, if it may not.
fn refused(key: &str) -> Option<&'static str> {
    if RESERVED.contains(&key) {
        Some("set by weir itself")
    } else if GROUP_PROTOCOL.contains(&key) {
        Some("left at librdkafka's default: weir's rebalance handling needs eager assignment")
    } else {
        None
    }
}

/// Whether `name` is non-empty and only `[A-Za-z0-9._-]` (what Kafka topic and group names
/// allow).
pub(crate) fn kafka_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// How topics come to exist (query `topic_creation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicCreation {
    /// `admin` (the default): created with the admin API (`CreateTopics`) with `partitions`,
    /// `replication` and a `max.message.bytes` fitting `max_message_bytes`; when the cluster
    /// does not offer that request (an old or partial Kafka protocol implementation), the
    /// broker acts as `auto` from then on; when the principal may not create topics
    /// (`TopicAuthorizationFailed`, `ClusterAuthorizationFailed`), it relies on `auto` for
    /// that topic. A refusal of the settings (`InvalidReplicationFactor` — e.g. `replication`
    /// above the broker count —, `InvalidPartitions`, `PolicyViolation`, `InvalidConfig`…)
    /// is a permanent [`ErrorKind::Config`] error, and a timeout a retryable `Unavailable`
    /// (tried again by the next publish or subscribe): neither creates the topic otherwise.
    Admin,
    /// `auto`: a metadata request of the producer creates the topic, on clusters that create
    /// topics automatically (`auto.create.topics.enable`; with the cluster's default partition
    /// count). librdkafka's mock cluster works this way.
    Auto,
    /// `none`: topics are managed outside weir and must exist.
    None,
}

/// Settings of a [`KafkaBroker`](crate::KafkaBroker), parsed from a URL by
/// [`KafkaBrokerConfig::from_url`]:
///
/// ```text
/// kafka://host:port[,host:port…][?prefix=weir&partitions=8&replication=-1&max_message_bytes=N
///     &commit_interval=1s&prefetch=256&revoke_grace=5s&timeout=10s&topic_creation=admin
///     &<librdkafka.key>=<value>…]
/// ```
///
/// Every query key not listed above is handed to librdkafka as a client setting, e.g.
/// `security.protocol=SASL_SSL&sasl.mechanism=PLAIN&sasl.username=…&sasl.password=…`
/// (values percent-decoded). `Debug` and every error show the values of secret settings
/// (`sasl.password`, `ssl.key.password`, any key containing `password` or `secret`) as `***`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaBrokerConfig {
    /// The bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Kafka topics are `{prefix}.{topic}`, consumer groups `{prefix}.{topic}.{group}`
    /// (query `prefix`, default `weir`).
    pub prefix: String,
    /// Partitions of a topic this broker creates (query `partitions`, default 8). The most
    /// consumers of one group that get work at once.
    pub partitions: i32,
    /// Replication factor of a topic this broker creates (query `replication`, default `-1`:
    /// the cluster's `default.replication.factor`).
    pub replication: i32,
    /// The largest payload `publish` accepts (query `max_message_bytes`, default 1 MiB).
    pub max_message_bytes: usize,
    /// How often a subscription commits the acked prefix of its partitions (query
    /// `commit_interval`, default `1s`). Acks of the last interval are lost with a process that
    /// dies, and those messages are delivered again.
    pub commit_interval: Duration,
    /// Messages a subscription takes from librdkafka ahead of `next()` (query `prefetch`,
    /// default 256); librdkafka buffers more itself, up to `queued.max.messages.kbytes`.
    pub prefetch: usize,
    /// How long a subscription losing a partition in a rebalance waits for the handler to ack
    /// what it holds of it before committing (query `revoke_grace`, default `5s`).
    pub revoke_grace: Duration,
    /// Timeout of a publish (until Kafka acknowledged it), of topic creation and of offset
    /// look-ups (query `timeout`, default `10s`).
    pub timeout: Duration,
    /// How topics come to exist (query `topic_creation`: `admin`, `auto` or `none`; default
    /// `admin`).
    pub topic_creation: TopicCreation,
    /// librdkafka settings from the URL, in order (secret values included: never print them
    /// directly; `Debug` redacts them).
    pub client: Vec<(String, String)>,
}

impl KafkaBrokerConfig {
    /// Parses `kafka://…` (see the type's documentation for the parameters).
    ///
    /// Fails with [`ErrorKind::Config`] on another scheme, a missing host, a malformed weir
    /// parameter, or a librdkafka setting weir sets itself.
    pub fn from_url(url: &str) -> Result<Self> {
        let config_error = |message: String| {
            Error::new(ErrorKind::Config, message)
                .permanent()
                .with_context("url", redact_url(url))
        };
        let Some(rest) = url.strip_prefix("kafka://") else {
            return Err(config_error(
                "a Kafka broker URL starts with kafka://".into(),
            ));
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() || hosts.split(',').any(|h| h.trim().is_empty()) {
            return Err(config_error("the Kafka broker URL has no host".into()));
        }
        if hosts.contains(['/', '@', ' ']) {
            return Err(config_error(
                "the Kafka broker URL's hosts are host:port[,host:port…] (credentials go in \
                 sasl.username / sasl.password parameters)"
                    .into(),
            ));
        }
        let mut config = Self::new(hosts);
        let params = QueryParams::new("Kafka broker", query, PARAMS).with_url(url);
        for param in &params {
            let name = param.decoded_name()?;
            if let Some(why) = refused(&name) {
                return Err(param.invalid(format!(
                    "{why} (weir's own parameters: {})",
                    PARAMS.join(", ")
                )));
            }
            match name.as_str() {
                "prefix" => config.prefix = param.value()?,
                "partitions" => config.partitions = param.number()?,
                "replication" => config.replication = param.number()?,
                "max_message_bytes" => config.max_message_bytes = param.usize()?,
                "prefetch" => config.prefetch = param.usize()?,
                "commit_interval" => config.commit_interval = param.duration()?,
                "revoke_grace" => config.revoke_grace = param.duration()?,
                "timeout" => config.timeout = param.duration()?,
                "topic_creation" => {
                    config.topic_creation = param.one_of(&[
                        ("admin", TopicCreation::Admin),
                        ("auto", TopicCreation::Auto),
                        ("none", TopicCreation::None),
                    ])?
                }
                other if !other.contains('.') => {
                    return Err(params.error(format!(
                        "unknown parameter {other:?} (weir's: {}; librdkafka settings contain a dot)",
                        PARAMS.join(", ")
                    )));
                }
                _ => config.client.push((name, param.value()?)),
            }
        }
        config.validate().map_err(config_error)?;
        Ok(config)
    }

    /// A configuration for `bootstrap_servers` with every default (no librdkafka extras).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaBrokerConfig {
            bootstrap_servers: bootstrap_servers.into(),
            prefix: "weir".into(),
            partitions: 8,
            replication: -1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            commit_interval: Duration::from_secs(1),
            prefetch: 256,
            revoke_grace: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            topic_creation: TopicCreation::Admin,
            client: Vec::new(),
        }
    }

    /// Checks the limits of every setting; the message names the offending one.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if !kafka_name(&self.prefix) || self.prefix.len() > 100 {
            return Err(format!(
                "prefix {:?} must be 1..=100 characters of [A-Za-z0-9._-] (a Kafka topic name)",
                self.prefix
            ));
        }
        if !(1..=10_000).contains(&self.partitions) {
            return Err(format!(
                "partitions {} is not within 1..=10000",
                self.partitions
            ));
        }
        if self.replication == 0 || self.replication < -1 {
            return Err(format!(
                "replication {} must be -1 (the cluster's default) or at least 1",
                self.replication
            ));
        }
        if !(1..=MAX_MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(format!(
                "max_message_bytes {} is not within 1..={MAX_MAX_MESSAGE_BYTES}",
                self.max_message_bytes
            ));
        }
        if self.commit_interval < Duration::from_millis(10)
            || self.commit_interval > Duration::from_secs(60)
        {
            return Err(format!(
                "commit_interval {:?} is not within 10ms..=60s",
                self.commit_interval
            ));
        }
        if !(1..=100_000).contains(&self.prefetch) {
            return Err(format!(
                "prefetch {} is not within 1..=100000",
                self.prefetch
            ));
        }
        if self.revoke_grace > Duration::from_secs(300) {
            return Err(format!(
                "revoke_grace {:?} is above 300s (the consumer would be expelled)",
                self.revoke_grace
            ));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(format!("timeout {:?} is below 100ms", self.timeout));
        }
        if let Some((key, why)) = self
            .client
            .iter()
            .find_map(|(key, _)| Some((key, refused(key)?)))
        {
            return Err(format!("librdkafka setting {key}: {why}"));
        }
        Ok(())
    }

    /// Bytes of one record the producer and the topics must allow (payload plus framing).
    pub(crate) fn record_limit(&self) -> usize {
        self.max_message_bytes + MESSAGE_OVERHEAD_BYTES
    }

    /// The Kafka topic of weir topic `topic`.
    pub fn kafka_topic(&self, topic: &str) -> String {
        format!("{}.{topic}", self.prefix)
    }

    /// The Kafka consumer group of weir group `group` of `topic`.
    pub fn kafka_group(&self, topic: &str, group: &str) -> String {
        format!("{}.{topic}.{group}", self.prefix)
    }

    /// The URL again, with secret values replaced by `***` (for logs).
    pub fn redacted_url(&self) -> String {
        let mut url = format!(
            "kafka://{}?prefix={}&partitions={}",
            self.bootstrap_servers, self.prefix, self.partitions
        );
        for (key, value) in &self.client {
            let value = if is_secret(key) { "***" } else { value };
            url.push_str(&format!("&{key}={value}"));
        }
        url
    }
}

impl fmt::Debug for KafkaBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let client: Vec<(&str, &str)> = self
            .client
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaBrokerConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("commit_interval", &self.commit_interval)
            .field("prefetch", &self.prefetch)
            .field("revoke_grace", &self.revoke_grace)
            .field("timeout", &self.timeout)
            .field("topic_creation", &self.topic_creation)
            .field("client", &client)
            .finish()
    }
}

/// Whether a librdkafka setting holds a secret ([`weir_core::redact::is_secret_name`]).
pub(crate) fn is_secret(key: &str) -> bool {
    weir_core::redact::is_secret_name(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parameters() {
        let c = KafkaBrokerConfig::from_url("kafka://127.0.0.1:9092").expect("parse");
        assert_eq!(c.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(c.prefix, "weir");
        assert_eq!(c.partitions, 8);
        assert_eq!(c.replication, -1);
        assert_eq!(c.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(c.commit_interval, Duration::from_secs(1));
        assert_eq!(c.prefetch, 256);
        assert!(c.client.is_empty());
        assert_eq!(c.topic_creation, TopicCreation::Admin);
        assert_eq!(c.kafka_topic("steps"), "weir.steps");
        assert_eq!(c.kafka_group("steps", "executor"), "weir.steps.executor");

        let c = KafkaBrokerConfig::from_url(
            "kafka://a:1,b:2/?prefix=app-x&partitions=3&replication=2&max_message_bytes=2048\
             &commit_interval=250ms&prefetch=16&revoke_grace=1s&timeout=3s&topic_creation=auto\
             &security.protocol=SASL_SSL&sasl.mechanism=PLAIN&sasl.username=me&client.id=a%20b",
        )
        .expect("parse");
        assert_eq!(c.bootstrap_servers, "a:1,b:2");
        assert_eq!(c.prefix, "app-x");
        assert_eq!(c.partitions, 3);
        assert_eq!(c.replication, 2);
        assert_eq!(c.max_message_bytes, 2048);
        assert_eq!(c.commit_interval, Duration::from_millis(250));
        assert_eq!(c.prefetch, 16);
        assert_eq!(c.revoke_grace, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.topic_creation, TopicCreation::Auto);
        assert_eq!(
            c.client,
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "me"),
                ("client.id", "a b"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_plus_in_a_value_is_a_plus() {
        // Secrets hold `+` (base64); only `%20` is a space.
        let c = KafkaBrokerConfig::from_url("kafka://h?sasl.password=a+b%2Bc&client.id=x%20y")
            .expect("parse");
        assert_eq!(
            c.client,
            [("sasl.password", "a+b+c"), ("client.id", "x y")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "redis://h",
            "h:9092",
            "kafka://",
            "kafka://?prefix=x",
            "kafka://a:1,,b:2",
            "kafka://user:pw@h:9092",
            "kafka://h?partitions=0",
            "kafka://h?partitions=many",
            "kafka://h?replication=0",
            "kafka://h?prefix=a/b",
            "kafka://h?prefix=",
            "kafka://h?max_message_bytes=0",
            "kafka://h?commit_interval=1ms",
            "kafka://h?prefetch=0",
            "kafka://h?topic_creation=maybe",
            "kafka://h?nope=1",
            "kafka://h?group.id=mine",
            "kafka://h?enable.auto.commit=true",
            "kafka://h?partition.assignment.strategy=cooperative-sticky",
            "kafka://h?group.protocol=consumer",
            "kafka://h?sasl.password=%zz",
        ] {
            let err = KafkaBrokerConfig::from_url(url).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
        }
        let err = KafkaBrokerConfig::from_url("kafka://h?nope=1").expect_err("unknown");
        assert!(
            err.to_string().contains("weir's: prefix, partitions"),
            "{err}"
        );
    }

    #[test]
    fn secrets_never_show() {
        let url = "kafka://h:9092?sasl.username=me&sasl.password=s3cret&ssl.key.password=k3y\
                   &my.client.secret=t0ken";
        let c = KafkaBrokerConfig::from_url(url).expect("parse");
        let shown = format!("{c:?} {}", c.redacted_url());
        for secret in ["s3cret", "k3y", "t0ken"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.username"), "{shown}");
        assert!(shown.contains("\"me\""), "{shown}");
        assert_eq!(
            redact_url(url),
            "kafka://h:9092?sasl.username=me&sasl.password=***&ssl.key.password=***\
             &my.client.secret=***"
        );
        // Errors carry the redacted URL only.
        let err = KafkaBrokerConfig::from_url("kafka://h?sasl.password=s3cret&partitions=x")
            .expect_err("bad");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        let err = KafkaBrokerConfig::from_url("kafka://h?sasl.password=s3cret&group.id=x")
            .expect_err("reserved");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}
