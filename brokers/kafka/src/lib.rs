//! weir-broker-kafka: weir's [`Broker`] on Apache Kafka, through librdkafka (`kafka://…`).
//!
//! Each weir topic is one Kafka topic, `{prefix}.{topic}` (created on demand with
//! `partitions` partitions); each weir consumer group of it is one Kafka consumer group,
//! `{prefix}.{topic}.{group}`, so every group gets every message and the consumers of one
//! group share the partitions. The message key is the weir key: one key's messages stay in one
//! partition, in publish order.
//!
//! Offsets are committed by hand, only up to the contiguous prefix of acked messages of each
//! partition (acks come out of order). Kafka cannot deliver one message again, so a nack
//! *republishes* the message at the end of its topic, for its group only, and counts the
//! original acked; there is no native delay (the engine keeps delays in its own timers). See
//! the README for the guarantees and the limits.
//!
//! ```no_run
//! # async fn demo() -> weir_core::Result<()> {
//! use std::sync::Arc;
//! use weir_broker_kafka::KafkaBroker;
//! use weir_core::broker::Broker;
//!
//! let broker: Arc<dyn Broker> =
//!     Arc::new(KafkaBroker::connect("kafka://127.0.0.1:9092?prefix=weir&partitions=8").await?);
//! # Ok(()) }
//! ```

mod acker;
mod config;
mod error;
mod mock;
mod subscription;
#[cfg(test)]
mod tests;
mod tracker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weir_core::broker::{Broker, BrokerCapabilities, Subscription};
use weir_core::{Error, ErrorKind, Result};

pub use config::{
    DEFAULT_MAX_MESSAGE_BYTES, KafkaBrokerConfig, MAX_MAX_MESSAGE_BYTES, MESSAGE_OVERHEAD_BYTES,
    TopicCreation,
};
pub use mock::MockKafka;

use crate::error::kafka_error;
use crate::subscription::{Context, KafkaSubscription, Shared};

/// weir's broker on Kafka.
///
/// One idempotent producer (shared by publishes and the republishes of nacks) and one admin
/// client; each subscription runs a librdkafka consumer on a thread of its own.
///
/// Capabilities: no native delay (`max_native_delay: None`); payloads up to the configured
/// `max_message_bytes` (1 MiB by default); ordered by key; redelivery on nack (by
/// republishing, see [`KafkaBroker::capabilities`]).
pub struct KafkaBroker {
    config: KafkaBrokerConfig,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Kafka topics known to exist.
    topics: Mutex<HashSet<String>>,
    /// The subscriptions of each Kafka group made here (a new one waits for those being
    /// dropped to commit and leave first).
    groups: Mutex<HashMap<String, Vec<Weak<Shared>>>>,
    /// The cluster does not offer the admin API's `CreateTopics`: `topic_creation=admin` acts
    /// as `auto`.
    admin_unsupported: AtomicBool,
    /// The mock cluster of a `kafka+mock://` broker, stopped with the broker and its consumers.
    mock: Option<Arc<MockKafka>>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaBroker {
    /// Parses `url` (see [`KafkaBrokerConfig`]) and connects.
    ///
    /// `kafka+mock://[?brokers=N&…]` first starts librdkafka's mock cluster in this process
    /// (see [`MockKafka`]; other parameters as for `kafka://`) and connects to it; the cluster
    /// stops when the broker is dropped.
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(mock) = mock::mock_url(url) {
            let (brokers, kafka_url) = mock?;
            // Starting the cluster waits for its thread: not on a runtime worker.
            let cluster = tokio::task::spawn_blocking(move || MockKafka::start(brokers))
                .await
                .map_err(|e| Error::internal(format!("kafka+mock: starting task failed: {e}")))??;
            let config = KafkaBrokerConfig::from_url(&kafka_url(cluster.bootstrap_servers()))?;
            let mut broker = Self::with_config(config).await?;
            broker.mock = Some(Arc::new(cluster));
            return Ok(broker);
        }
        Self::with_config(KafkaBrokerConfig::from_url(url)?).await
    }

    /// Connects with `config`: creates the producer and the admin client and fetches the
    /// cluster's metadata once. Fails with [`ErrorKind::Unavailable`] (retryable) when no
    /// broker answers within `timeout`, [`ErrorKind::Config`] on bad settings or credentials.
    pub async fn with_config(config: KafkaBrokerConfig) -> Result<Self> {
        config.validate().map_err(|message| {
            Error::new(ErrorKind::Config, message)
                .permanent()
                .with_context("url", config.redacted_url())
        })?;
        let record_limit = config.record_limit().to_string();
        let mut producer_config = client_config(&config);
        producer_config
            .set("message.max.bytes", &record_limit)
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", config.timeout.as_millis().to_string());
        apply_extras(&mut producer_config, &config);
        let producer: FutureProducer = producer_config
            .create()
            .map_err(|e| kafka_error("creating the producer", e))?;
        let mut admin_config = client_config(&config);
        apply_extras(&mut admin_config, &config);
        // Its metadata requests tell whether a topic exists; they must not create it.
        admin_config.set("allow.auto.create.topics", "false");
        let admin: AdminClient<DefaultClientContext> = admin_config
            .create()
            .map_err(|e| kafka_error("creating the admin client", e))?;
        let broker = KafkaBroker {
            config,
            producer,
            admin: Arc::new(admin),
            topics: Mutex::new(HashSet::new()),
            groups: Mutex::new(HashMap::new()),
            admin_unsupported: AtomicBool::new(false),
            mock: None,
        };
        broker.check_connection().await?;
        Ok(broker)
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaBrokerConfig {
        &self.config
    }

    /// Fetches the cluster's metadata: proves a broker answers (and the credentials work).
    async fn check_connection(&self) -> Result<()> {
        let producer = self.producer.clone();
        let timeout = self.config.timeout;
        let url = self.config.redacted_url();
        tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, timeout).map(|_| ())
        })
        .await
        .map_err(|e| Error::internal(format!("kafka broker: metadata task failed: {e}")))?
        .map_err(|e| kafka_error("connecting", e).with_context("url", url))
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        if payload.len() > self.config.max_message_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "message too large for the Kafka broker",
            )
            .with_context("bytes", payload.len())
            .with_context("max_bytes", self.config.max_message_bytes));
        }
        Ok(())
    }

    /// Makes sure Kafka topic `name` exists, as `topic_creation` says (see
    /// [`TopicCreation`]). Topics found are remembered.
    async fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.known(name) {
            return Ok(());
        }
        let mode = match self.config.topic_creation {
            TopicCreation::Admin if self.admin_unsupported.load(Ordering::SeqCst) => {
                TopicCreation::Auto
            }
            mode => mode,
        };
        match mode {
            TopicCreation::Admin => {
                if !self.topic_exists(name).await? {
                    self.create_topic(name).await?;
                }
            }
            TopicCreation::Auto => self.topic_by_metadata(name).await?,
            _ => {
                if !self.topic_exists(name).await? {
                    return Err(Error::unavailable(
                        "kafka broker: the topic does not exist (topic_creation=none: create it outside weir)",
                    )
                    .with_context("topic", name));
                }
            }
        }
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        Ok(())
    }

    /// Creates `name` with the admin API. Falls back to automatic creation only when the
    /// cluster does not offer the request (from then on) or the principal may not create
    /// topics; a refusal of the settings (replication, partitions, a policy…) is a permanent
    /// [`ErrorKind::Config`] error, and anything else (a timeout…) an error as
    /// [`error::classify`] says (retryable when transient; tried again on the next call).
    async fn create_topic(&self, name: &str) -> Result<()> {
        let record_limit = self.config.record_limit().to_string();
        let topic = NewTopic::new(
            name,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication),
        )
        .set("max.message.bytes", &record_limit);
        let options = AdminOptions::new()
            .request_timeout(Some(self.config.timeout))
            .operation_timeout(Some(self.config.timeout));
        let created = match self.admin.create_topics([&topic], &options).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) => Ok(true),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
                Some(Err((_, code))) => Err(code),
                None => Err(RDKafkaErrorCode::Fail),
            },
            Err(KafkaError::AdminOp(code)) => Err(code),
            Err(e) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        let code = match created {
            Ok(true) => {
                info!(
                    topic = name,
                    partitions = self.config.partitions,
                    "kafka broker: created topic"
                );
                return Ok(());
            }
            Ok(false) => return Ok(()),
            Err(code) => code,
        };
        match admin_failure(code) {
            AdminFailure::Unsupported => {
                self.admin_unsupported.store(true, Ordering::SeqCst);
                warn!(topic = name, error = %code, "kafka broker: the cluster does not offer the admin API's CreateTopics; relying on its automatic topic creation from now on");
                self.topic_by_metadata(name).await
            }
            AdminFailure::NotAllowed => {
                warn!(topic = name, error = %code, "kafka broker: not allowed to create the topic with the admin API; relying on the cluster's automatic topic creation");
                self.topic_by_metadata(name).await
            }
            AdminFailure::Refused => Err(Error::new(
                ErrorKind::Config,
                "kafka broker: the cluster refused to create the topic with these settings \
                 (check replication, partitions, max_message_bytes against the cluster)",
            )
            .permanent()
            .with_context("topic", name)
            .with_context("partitions", self.config.partitions)
            .with_context("replication", self.config.replication)
            .with_context("kafka", code)),
            AdminFailure::Other(kind) => Err(Error::new(
                kind,
                "kafka broker: creating the topic with the admin API failed",
            )
            .with_context("topic", name)
            .with_context("kafka", code)),
        }
    }

    /// Whether `name` exists (the admin client's metadata, which never creates topics).
    async fn topic_exists(&self, name: &str) -> Result<bool> {
        let metadata = self.metadata(name, false).await?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty()))
    }

    /// Asks for `name`'s metadata with the producer (which may create topics automatically);
    /// fails when the topic still has no partitions.
    async fn topic_by_metadata(&self, name: &str) -> Result<()> {
        let metadata = self.metadata(name, true).await?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        if found.is_none() {
            return Err(Error::unavailable(
                "kafka broker: the topic does not exist and the cluster did not create it (no automatic topic creation?)",
            )
            .with_context("topic", name));
        }
        Ok(())
    }

    /// The metadata of topic `name`, by the producer (`create`: may create it) or the admin
    /// client (never creates it).
    async fn metadata(&self, name: &str, create: bool) -> Result<rdkafka::metadata::Metadata> {
        let timeout = self.config.timeout;
        let topic = name.to_owned();
        let result = if create {
            let producer = self.producer.clone();
            tokio::task::spawn_blocking(move || {
                producer.client().fetch_metadata(Some(&topic), timeout)
            })
            .await
        } else {
            let admin = self.admin.clone();
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&topic), timeout))
                .await
        };
        result
            .map_err(|e| Error::internal(format!("kafka broker: metadata task failed: {e}")))?
            .map_err(|e| kafka_error("reading topic metadata", e).with_context("topic", name))
    }

    /// Waits (bounded) until the dropped subscriptions of `kafka_group` made by this broker
    /// have committed and left the group: a consumer joining first would start from offsets
    /// they have not committed yet (and a rebalance in progress refuses their commit on some
    /// brokers).
    async fn wait_for_closing(&self, kafka_group: &str) {
        let closing: Vec<tokio::sync::watch::Receiver<bool>> = {
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            let Some(list) = groups.get_mut(kafka_group) else {
                return;
            };
            list.retain(|s| s.strong_count() > 0);
            list.iter()
                .filter_map(Weak::upgrade)
                .filter(|s| s.stop.load(Ordering::SeqCst))
                .map(|s| s.closed.subscribe())
                .collect()
        };
        let bound = self.config.revoke_grace * 2 + self.config.timeout;
        for mut closed in closing {
            if tokio::time::timeout(bound, closed.wait_for(|c| *c))
                .await
                .is_err()
            {
                debug!(
                    group = kafka_group,
                    "kafka broker: a dropped subscription is still closing; joining anyway"
                );
            }
        }
    }

    fn known(&self, name: &str) -> bool {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// The settings every client of `config` shares.
fn client_config(config: &KafkaBrokerConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "weir");
    c
}

/// The URL's librdkafka settings (they override weir's defaults, not its reserved ones).
fn apply_extras(c: &mut ClientConfig, config: &KafkaBrokerConfig) {
    for (key, value) in &config.client {
        c.set(key, value);
    }
}

/// Checks a weir topic or group name: part of Kafka topic and group names, so only
/// `[A-Za-z0-9._-]`, 1..=200 bytes.
fn check_name(what: &str, name: &str) -> Result<()> {
    if config::kafka_name(name) && name.len() <= 200 {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "kafka broker: {what} name {name:?} must be 1..=200 characters of [A-Za-z0-9._-]"
    )))
}

/// What a failed `CreateTopics` means for `topic_creation=admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminFailure {
    /// The cluster does not offer the request: rely on automatic creation, for good.
    Unsupported,
    /// The principal may not create topics: rely on automatic creation (for this topic).
    NotAllowed,
    /// The cluster refuses the topic's settings: a configuration error, not retried.
    Refused,
    /// Anything else (timeouts, a controller moving…): an error of this kind.
    Other(ErrorKind),
}

fn admin_failure(code: RDKafkaErrorCode) -> AdminFailure {
    use RDKafkaErrorCode as C;
    match code {
        C::UnsupportedFeature | C::UnsupportedVersion => AdminFailure::Unsupported,
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => AdminFailure::NotAllowed,
        C::InvalidReplicationFactor
        | C::InvalidPartitions
        | C::InvalidReplicaAssignment
        | C::InvalidConfig
        | C::InvalidTopic
        | C::InvalidRequest
        | C::PolicyViolation
        | C::InvalidArgument => AdminFailure::Refused,
        code => AdminFailure::Other(match error::classify(code) {
            ErrorKind::Internal => ErrorKind::Unavailable,
            kind => kind,
        }),
    }
}

/// How long `publish_batch` waits before trying a record again when librdkafka's queue is
/// full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// Produces one record and waits until Kafka acknowledged it.
pub(crate) async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    timeout: Duration,
) -> Result<()> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer
        .send(record, timeout)
        .await
        .map(|_| ())
        .map_err(|(e, _)| kafka_error("publish", e).with_context("topic", topic))
}

#[async_trait]
impl Broker for KafkaBroker {
    /// `max_native_delay: None` — Kafka cannot hold one message back, so the engine keeps
    /// delayed redeliveries in its own timers and acks. `redelivers_on_nack: true` — a nack
    /// republishes the message at the end of its topic (same key, so the same partition) for
    /// the nacking group only, with `redeliveries + 1`, and counts the original acked.
    /// `ordered_by_key: true` — one key's messages are in one partition, which one consumer
    /// reads in order (a republished message comes after what was published before the nack).
    fn capabilities(&self) -> BrokerCapabilities {
        BrokerCapabilities::new(None, self.config.max_message_bytes, true, true)
    }

    /// One record with the weir key as Kafka key; returns once the partition leader (and the
    /// in-sync replicas, `acks=all`, librdkafka's default) has it.
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        check_name("topic", topic)?;
        self.check_size(&payload)?;
        let kafka_topic = self.config.kafka_topic(topic);
        self.ensure_topic(&kafka_topic).await?;
        produce(
            &self.producer,
            &kafka_topic,
            key,
            &payload,
            None,
            self.config.timeout,
        )
        .await
    }

    /// Every record queued in order (when librdkafka's queue is full, the same record is
    /// tried again until it fits, so a key's records are never reordered; the idempotent
    /// producer keeps one partition's records in order), then waits for all. Sizes are
    /// checked before anything is sent. Not atomic: on an error some records may have been
    /// written.
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        check_name("topic", topic)?;
        messages
            .iter()
            .try_for_each(|(_, payload)| self.check_size(payload))?;
        if messages.is_empty() {
            return Ok(());
        }
        let kafka_topic = self.config.kafka_topic(topic);
        self.ensure_topic(&kafka_topic).await?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut queued = Vec::with_capacity(messages.len());
        let mut error = None;
        'messages: for (key, payload) in &messages {
            let mut record = FutureRecord::to(&kafka_topic)
                .key(key)
                .payload(&payload[..]);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        queued.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    Err((e, _)) => {
                        error = Some(kafka_error("publish", e).with_context("topic", &kafka_topic));
                        break 'messages;
                    }
                }
            }
        }
        let not_queued = messages.len() - queued.len();
        let results = futures::future::join_all(queued).await;
        let mut failed = not_queued;
        for result in results {
            let e = match result {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => kafka_error("publish", e).with_context("topic", &kafka_topic),
                Err(_) => Error::unavailable("kafka broker: publish failed: the producer stopped")
                    .with_context("topic", &kafka_topic),
            };
            failed += 1;
            error.get_or_insert(e);
        }
        match error {
            Some(e) => Err(e
                .with_context("failed", failed)
                .with_context("messages", messages.len())),
            None => Ok(()),
        }
    }

    /// Makes sure the topic exists, creates a consumer in group `{prefix}.{topic}.{group}`
    /// (manual commits; a new group starts at the earliest offset, so it gets everything
    /// published after `subscribe` even before its join completes) and starts its thread.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        Ok(Box::new(self.open(topic, group).await?))
    }
}

impl KafkaBroker {
    /// [`Broker::subscribe`], with the subscription's type.
    pub(crate) async fn open(&self, topic: &str, group: &str) -> Result<KafkaSubscription> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        let kafka_topic = self.config.kafka_topic(topic);
        let kafka_group = self.config.kafka_group(topic, group);
        self.ensure_topic(&kafka_topic).await?;
        self.wait_for_closing(&kafka_group).await;

        let shared = Arc::new(Shared {
            tracker: Mutex::default(),
            acked: Condvar::new(),
            revoked: tokio::sync::Notify::new(),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            closed: tokio::sync::watch::Sender::new(false),
            committing: AtomicBool::new(false),
            commit_failures: Mutex::new((0, None)),
            producer: self.producer.clone(),
            kafka_topic: kafka_topic.clone(),
            kafka_group: kafka_group.clone(),
            prefetch: self.config.prefetch,
            commit_interval: self.config.commit_interval,
            revoke_grace: self.config.revoke_grace,
            timeout: self.config.timeout,
            _mock: self.mock.clone(),
        });
        let record_limit = self.config.record_limit();
        let mut consumer_config = client_config(&self.config);
        consumer_config
            .set("auto.offset.reset", "earliest")
            .set("max.partition.fetch.bytes", record_limit.to_string())
            .set("fetch.max.bytes", record_limit.max(52_428_800).to_string())
            .set(
                "receive.message.max.bytes",
                (record_limit.max(52_428_800) + 1_000_000)
                    .max(100_000_000)
                    .to_string(),
            );
        apply_extras(&mut consumer_config, &self.config);
        consumer_config
            .set("group.id", &kafka_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<Context> = consumer_config
            .create_with_context(Context {
                shared: shared.clone(),
            })
            .map_err(|e| kafka_error("creating the consumer", e))?;
        consumer
            .subscribe(&[&kafka_topic])
            .map_err(|e| kafka_error("subscribe", e).with_context("topic", &kafka_topic))?;

        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kafka_group)
            .or_default()
            .push(Arc::downgrade(&shared));
        let (tx, rx) = mpsc::unbounded_channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("weir-kafka-{topic}"))
            .spawn(move || subscription::run(consumer, thread_shared, tx))
            .map_err(|e| {
                Error::internal(format!(
                    "kafka broker: cannot start the consumer thread: {e}"
                ))
            })?;
        Ok(KafkaSubscription::new(shared, rx))
    }
}
