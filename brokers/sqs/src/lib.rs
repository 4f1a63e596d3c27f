//! weir-broker-sqs: weir's [`Broker`] on Amazon SQS (`sqs://…`).
//!
//! SQS has no consumer groups, so each (topic, group) pair is a queue of its own,
//! `{prefix}_{topic}_{group}` (`.fifo` for FIFO queues), created by `subscribe`; `publish`
//! sends a copy to every group queue of the topic, found with `ListQueues` by the name prefix
//! `{prefix}_{topic}_` (cached for `refresh`). What is published while a topic has no group
//! queue waits in the topic's holding queue `{prefix}_{topic}`, and the subscriptions of the
//! topic move it into the group queues. Each [`Subscription`] long-polls its group queue;
//! acks are deleted in batches (`DeleteMessageBatch`), held deliveries have their visibility
//! timeout extended (a heartbeat), a nack makes the message visible again after its delay
//! (`ChangeMessageVisibility`), and a delivery of a consumer that died comes back after the
//! visibility timeout. See the README for the design, guarantees, limits and costs.
//!
//! ```no_run
//! # async fn demo() -> weir_core::Result<()> {
//! use std::sync::Arc;
//! use weir_broker_sqs::SqsBroker;
//! use weir_core::broker::Broker;
//!
//! let broker: Arc<dyn Broker> =
//!     Arc::new(SqsBroker::connect("sqs://weir?region=eu-west-1&visibility=30s").await?);
//! # Ok(()) }
//! ```

mod acker;
mod config;
mod error;
mod names;
mod ops;
mod subscription;
mod tracker;
mod wire;

/// The tests' TCP proxy (swallows or slows requests), for unit tests of the calls.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/common/proxy.rs"]
mod test_proxy;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Credentials, Region};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;
use weir_core::broker::{Broker, BrokerCapabilities, Subscription};
use weir_core::{Error, ErrorKind, Result};

pub use config::{
    ENVELOPE_RESERVE, MAX_KEY_BYTES, MAX_PREFIX_LEN, SQS_MAX_MESSAGE_BYTES, SqsBrokerConfig,
};

use crate::names::TopicNames;
use crate::ops::Outgoing;

/// The longest nack delay (`max_native_delay`): 15 minutes, SQS's longest message delay. A
/// longer delay is applied as 15 minutes and the nack returns an `InvalidInput` error saying
/// so (weir's engine keeps longer delays in its state store instead).
pub const MAX_NATIVE_DELAY: Duration = Duration::from_secs(15 * 60);

/// The largest payload accepted (`max_message_bytes`): 255 KiB, SQS's 256 KiB less
/// [`ENVELOPE_RESERVE`] for the key and the attribute names. Larger payloads fail with
/// `TooLarge`; weir's claim check stores them in the state store instead.
pub const MAX_MESSAGE_BYTES: usize = SQS_MAX_MESSAGE_BYTES - ENVELOPE_RESERVE;

/// weir's broker on Amazon SQS (or an SQS-compatible endpoint such as moto).
///
/// Capabilities: native delay up to [`MAX_NATIVE_DELAY`]; payloads up to
/// [`MAX_MESSAGE_BYTES`]; ordered by key with `fifo=true` only; redelivery on nack.
#[derive(Clone)]
pub struct SqsBroker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SqsBrokerConfig,
    pub(crate) client: Client,
    topics: Mutex<HashMap<String, TopicState>>,
    /// Per group queue: the ids of the messages this process's subscriptions hold.
    in_flight: Mutex<HashMap<String, InFlight>>,
}

/// Message ids held or just acked by the subscriptions of one process on one queue.
pub(crate) type InFlight = Arc<Mutex<tracker::Tracker>>;

/// What `publish` knows of a topic's queues.
#[derive(Default)]
struct TopicState {
    /// Group queues found by the last `ListQueues`, and when.
    listed: BTreeSet<String>,
    listed_at: Option<Instant>,
    /// Group queues this process's subscriptions use (`ListQueues` may not show a new queue
    /// yet), with how many subscriptions use each.
    known: HashMap<String, usize>,
    /// The holding queue's URL, once created or found.
    holding: Option<String>,
}

impl TopicState {
    /// Listed and known group queues.
    fn targets(&self) -> Vec<String> {
        let mut all = self.listed.clone();
        all.extend(self.known.keys().cloned());
        all.into_iter().collect()
    }
}

impl std::fmt::Debug for SqsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsBroker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SqsBroker {
    /// Parses `url` (see [`SqsBrokerConfig`]) and connects.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(SqsBrokerConfig::from_url(url)?).await
    }

    /// Builds the SQS client from `config` and the AWS chain, and checks it with one
    /// `ListQueues`. Fails with [`ErrorKind::Unavailable`] (retryable) when SQS cannot be
    /// reached, [`ErrorKind::Config`] on bad settings, no region, or missing or refused
    /// credentials.
    pub async fn with_config(config: SqsBrokerConfig) -> Result<Self> {
        // The message names the prefix when it is safe to show (never one holding '@' or ':').
        config
            .validate()
            .map_err(|message| Error::new(ErrorKind::Config, message).permanent())?;
        let sdk = sdk_loader(&config).load().await;
        if sdk.region().is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "sqs broker: no AWS region (set region= in the URL, AWS_REGION, or a profile's region)",
            )
            .permanent());
        }
        let client = Client::new(&sdk);
        // One cheap call: is SQS there, and are the credentials good?
        ops::list_queues(&client, &format!("{}_", config.prefix))
            .await
            .map_err(|e| e.with_context("checking", "connect"))?;
        Ok(SqsBroker {
            inner: Arc::new(Inner {
                config,
                client,
                topics: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SqsBrokerConfig {
        &self.inner.config
    }

    /// The SQS client (for tests and tools: inspect or delete the broker's queues).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The name of the queue of `group` of `topic` (created by `subscribe`).
    pub fn queue_name(&self, topic: &str, group: &str) -> String {
        self.inner.names(topic).group(group)
    }

    /// The name of `topic`'s holding queue (what is published while it has no group queue).
    pub fn holding_queue_name(&self, topic: &str) -> String {
        self.inner.names(topic).holding
    }

    fn check(&self, key: &str, payload: &Bytes) -> Result<()> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(
                Error::new(ErrorKind::TooLarge, "message too large for the SQS broker")
                    .permanent()
                    .with_context("bytes", payload.len())
                    .with_context("max_bytes", MAX_MESSAGE_BYTES),
            );
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::invalid("key too long for the SQS broker")
                .with_context("bytes", key.len())
                .with_context("max_bytes", MAX_KEY_BYTES));
        }
        Ok(())
    }

    /// Sends `messages` to every group queue of `topic` (or to its holding queue).
    async fn send(&self, topic: &str, messages: &[Outgoing<'_>]) -> Result<()> {
        let inner = &self.inner;
        let targets = inner.targets(topic, false).await?;
        if !inner.fan_out(topic, &targets, messages).await? {
            // No group queue (or every one was gone): keep them for the next group.
            inner.send_to_holding(topic, messages).await?;
        }
        Ok(())
    }
}

/// The SDK's hyper client with rustls on *ring* (no aws-lc build).
fn http_client() -> aws_sdk_sqs::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The AWS SDK configuration loader for `config`: rustls on *ring*, the timeouts, and what the
/// URL sets (region, endpoint, static credentials); the rest comes from the AWS chain.
fn sdk_loader(config: &SqsBrokerConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // A long poll takes up to `wait` (at most 20 s). Calls that keep a message
                // (heartbeat, nack, hand-back) have a shorter bound of their own.
                .operation_attempt_timeout(config.wait + Duration::from_secs(15))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret, token)) = config.static_credentials() {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            token.map(str::to_owned),
            None,
            "weir-sqs-url",
        ));
    }
    loader
}

impl Inner {
    pub(crate) fn names(&self, topic: &str) -> TopicNames {
        TopicNames::new(&self.config.prefix, topic, self.config.fifo)
    }

    /// The group queues of `topic`: the cached `ListQueues` result (refreshed after `refresh`,
    /// or now when `fresh`) together with the queues this process subscribed to.
    pub(crate) async fn targets(&self, topic: &str, fresh: bool) -> Result<Vec<String>> {
        if !fresh {
            let topics = self.topics.lock();
            if let Some(state) = topics.get(topic)
                && state
                    .listed_at
                    .is_some_and(|at| at.elapsed() < self.config.refresh)
            {
                return Ok(state.targets());
            }
        }
        let names = self.names(topic);
        let listed: BTreeSet<String> = ops::list_queues(&self.client, &names.group_prefix)
            .await?
            .into_iter()
            .filter(|url| names.is_group_queue(url))
            .collect();
        let mut topics = self.topics.lock();
        let state = topics.entry(topic.to_owned()).or_default();
        state.listed = listed;
        state.listed_at = Some(Instant::now());
        Ok(state.targets())
    }

    /// Sends `messages` to each of `targets` (group queues of `topic`): one `SendMessage`
    /// for a single message, else `SendMessageBatch` calls. A queue that no longer exists is
    /// forgotten (its group is retired). Returns whether any queue got them. Shared by
    /// `publish` and the holding-queue mover.
    pub(crate) async fn fan_out(
        &self,
        topic: &str,
        targets: &[String],
        messages: &[Outgoing<'_>],
    ) -> Result<bool> {
        let fifo = self.config.fifo;
        let mut delivered = false;
        for url in targets {
            let sent = match messages {
                [one] => ops::send_one(&self.client, url, fifo, one).await,
                _ => ops::send_all(&self.client, url, fifo, messages).await,
            };
            match sent {
                Ok(()) => delivered = true,
                // The group's queue was deleted: the group is retired.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::info!(queue = %url, "sqs broker: group queue gone; forgetting it");
                    self.forget(topic, url);
                }
                Err(e) => return Err(e.with_context("topic", topic)),
            }
        }
        Ok(delivered)
    }

    /// Sends `messages` to `topic`'s holding queue; when its cached URL no longer exists (the
    /// queue was deleted), creates the queue again and sends once more.
    async fn send_to_holding(&self, topic: &str, messages: &[Outgoing<'_>]) -> Result<()> {
        let fifo = self.config.fifo;
        let url = self.holding(topic).await?;
        match ops::send_all(&self.client, &url, fifo, messages).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!(queue = %url, "sqs broker: holding queue gone; creating it again");
                self.forget_holding(topic);
                let url = self.holding(topic).await?;
                ops::send_all(&self.client, &url, fifo, messages).await
            }
            sent => sent,
        }
        .map_err(|e| e.with_context("topic", topic))
    }

    /// The ids of the messages of queue `url` held by this process's subscriptions.
    pub(crate) fn in_flight(&self, url: &str) -> InFlight {
        self.in_flight
            .lock()
            .entry(url.to_owned())
            .or_default()
            .clone()
    }

    /// Records a group queue a subscription of this process uses (until [`Inner::unremember`]).
    pub(crate) fn remember(&self, topic: &str, url: &str) {
        let mut topics = self.topics.lock();
        *topics
            .entry(topic.to_owned())
            .or_default()
            .known
            .entry(url.to_owned())
            .or_default() += 1;
    }

    /// Records again a group queue a subscription created anew (after it was deleted and
    /// forgotten), without counting one more subscription.
    pub(crate) fn rejoin(&self, topic: &str, url: &str) {
        let mut topics = self.topics.lock();
        let known = &mut topics.entry(topic.to_owned()).or_default().known;
        known.entry(url.to_owned()).or_insert(1);
    }

    /// A subscription of `url` was dropped: when it was the last one of this process, the
    /// queue is known again only through `ListQueues`.
    pub(crate) fn unremember(&self, topic: &str, url: &str) {
        if let Some(state) = self.topics.lock().get_mut(topic)
            && let Some(count) = state.known.get_mut(url)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.known.remove(url);
            }
        }
    }

    fn forget(&self, topic: &str, url: &str) {
        if let Some(state) = self.topics.lock().get_mut(topic) {
            state.listed.remove(url);
            state.known.remove(url);
        }
    }

    fn forget_holding(&self, topic: &str) {
        if let Some(state) = self.topics.lock().get_mut(topic) {
            state.holding = None;
        }
    }

    /// The holding queue of `topic`, created when missing.
    async fn holding(&self, topic: &str) -> Result<String> {
        if let Some(url) = self
            .topics
            .lock()
            .get(topic)
            .and_then(|s| s.holding.clone())
        {
            return Ok(url);
        }
        let names = self.names(topic);
        let url = ops::ensure_queue(&self.client, &names.holding, self.config.fifo).await?;
        self.topics
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .holding = Some(url.clone());
        Ok(url)
    }

    /// Moves up to 100 messages of `topic`'s holding queue (if it exists) into its group
    /// queues: receive, send a copy to each group queue ([`Inner::fan_out`]), delete. Returns
    /// how many moved.
    pub(crate) async fn drain_holding(&self, topic: &str) -> Result<usize> {
        let names = self.names(topic);
        let cached = self
            .topics
            .lock()
            .get(topic)
            .and_then(|s| s.holding.clone());
        let url = match cached {
            Some(url) => url,
            None => match ops::queue_url(&self.client, &names.holding).await? {
                Some(url) => {
                    // Known from now on: the next rounds make no `GetQueueUrl`.
                    self.topics
                        .lock()
                        .entry(topic.to_owned())
                        .or_default()
                        .holding = Some(url.clone());
                    url
                }
                None => return Ok(0),
            },
        };
        // Longer than a move can take (the sends of each group, each up to the SDK's three
        // attempts of `wait + 15 s`), so another subscription's mover does not move the same
        // messages again meanwhile.
        let hidden = (self.config.wait + Duration::from_secs(15)) * 3;
        let mut moved = 0;
        while moved < 100 {
            let batch = match ops::receive(&self.client, &url, Duration::ZERO, hidden).await {
                Ok(batch) => batch,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    // Deleted: nothing waits there; `publish` creates it again if needed.
                    self.forget_holding(topic);
                    break;
                }
                Err(e) => return Err(e),
            };
            if batch.is_empty() {
                break;
            }
            let targets = self.targets(topic, true).await?;
            let outgoing: Vec<Outgoing<'_>> = batch
                .iter()
                .map(|m| Outgoing {
                    key: &m.key,
                    payload: &m.payload,
                    // The same id on a repeated move: FIFO queues drop the duplicate.
                    dedup: m.message_id.clone(),
                })
                .collect();
            let receipts: Vec<String> = batch.iter().map(|m| m.receipt.clone()).collect();
            if !self.fan_out(topic, &targets, &outgoing).await? {
                // No group after all (or every one was gone): let them come back at once.
                let limit = self.config.wait + Duration::from_secs(15);
                let outcomes = ops::change_visibility_all(
                    &self.client,
                    &url,
                    &receipts,
                    Duration::ZERO,
                    limit,
                )
                .await;
                if let Some(e) = outcomes.into_iter().find_map(Result::err) {
                    return Err(e);
                }
                break;
            }
            let deleted = ops::delete_batch(&self.client, &url, &receipts).await?;
            let not_deleted: Vec<Error> = deleted.into_iter().filter_map(Result::err).collect();
            if let Some(first) = not_deleted.first() {
                // Moved, but still held: they are moved again later (a duplicate in each
                // group on a standard queue; FIFO queues drop it by its deduplication id).
                tracing::warn!(topic, failed = not_deleted.len(), error = %first, "sqs broker: deleting moved messages from the holding queue failed");
            }
            moved += batch.len();
        }
        if moved > 0 {
            tracing::debug!(
                topic,
                moved,
                "sqs broker: moved held messages into group queues"
            );
        }
        Ok(moved)
    }
}

#[async_trait]
impl Broker for SqsBroker {
    fn capabilities(&self) -> BrokerCapabilities {
        BrokerCapabilities::new(
            Some(MAX_NATIVE_DELAY),
            MAX_MESSAGE_BYTES,
            self.inner.config.fifo,
            true,
        )
    }

    /// One `SendMessage` per group queue of the topic (to the holding queue when it has none).
    async fn publish(&self, topic: &str, key: &str, payload: Bytes) -> Result<()> {
        self.check(key, &payload)?;
        let message = Outgoing {
            key,
            payload: &payload,
            dedup: ops::dedup_id(),
        };
        self.send(topic, std::slice::from_ref(&message)).await
    }

    /// `SendMessageBatch` calls of up to 10 messages (and 256 KiB) per group queue. Sizes are
    /// checked before anything is sent; a failure part-way leaves the earlier batches sent.
    async fn publish_batch(&self, topic: &str, messages: Vec<(String, Bytes)>) -> Result<()> {
        for (key, payload) in &messages {
            self.check(key, payload)?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let outgoing: Vec<Outgoing<'_>> = messages
            .iter()
            .map(|(key, payload)| Outgoing {
                key,
                payload,
                dedup: ops::dedup_id(),
            })
            .collect();
        self.send(topic, &outgoing).await
    }

    /// Creates the group's queue (idempotent), registers it for this process's publishes, and
    /// starts the subscription's ack batcher, visibility heartbeat and holding-queue mover.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let name = self.inner.names(topic).group(group);
        let url = ops::ensure_queue(&self.inner.client, &name, self.inner.config.fifo)
            .await
            .map_err(|e| e.with_context("topic", topic).with_context("group", group))?;
        self.inner.remember(topic, &url);
        Ok(Box::new(subscription::SqsSubscription::start(
            self.inner.clone(),
            topic,
            name,
            url,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credential chain finds nothing (here the profile it is told to use does not
    /// exist): a `Config` error, not a retryable outage, although the SDK reports it as a
    /// dispatch failure. Nothing listens at the endpoint, so a request that went out would be
    /// `Unavailable`.
    #[tokio::test]
    async fn missing_credentials_are_a_config_error() {
        let config =
            SqsBrokerConfig::from_url("sqs://w?region=us-east-1&endpoint=http://127.0.0.1:9")
                .expect("parse");
        let provider_config = aws_config::provider_config::ProviderConfig::without_region()
            .with_http_client(http_client());
        let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_name(format!(
                "weir-no-such-profile-{:08x}",
                rand::random::<u32>()
            ))
            .build();
        let sdk = sdk_loader(&config)
            .credentials_provider(provider)
            .load()
            .await;
        let err = ops::list_queues(&Client::new(&sdk), "w_")
            .await
            .expect_err("no credentials");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(!err.is_retryable(), "{err}");
    }
}
