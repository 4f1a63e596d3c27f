//! The SQS calls the driver makes, each mapped to weir errors.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use bytes::Bytes;
use weir_core::{Error, ErrorKind, Result};

use crate::error::{classify_code, sqs_error};
use crate::names::message_group_id;
use crate::wire::{self, Received};

/// Messages are kept 14 days (the SQS maximum; the default is 4), so a group that lags does
/// not lose messages after 4 days.
const RETENTION_SECONDS: &str = "1209600";

/// SQS's most entries in one batch call.
pub(crate) const BATCH: usize = 10;

/// Creates queue `name` if missing (idempotent) and returns its URL.
pub(crate) async fn ensure_queue(client: &Client, name: &str, fifo: bool) -> Result<String> {
    let mut create = client.create_queue().queue_name(name).attributes(
        QueueAttributeName::MessageRetentionPeriod,
        RETENTION_SECONDS,
    );
    if fifo {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    match create.send().await {
        Ok(out) => out
            .queue_url()
            .map(str::to_owned)
            .ok_or_else(|| Error::internal("sqs broker: CreateQueue returned no URL")),
        // Created before with other attributes (by hand, or an older weir): use it as it is.
        Err(e)
            if e.code().is_some_and(|c| {
                c.contains("QueueAlreadyExists") || c.contains("QueueNameExists")
            }) =>
        {
            queue_url(client, name)
                .await?
                .ok_or_else(|| Error::internal("sqs broker: queue exists but has no URL"))
        }
        Err(e) => Err(sqs_error("CreateQueue", e).with_context("queue", name)),
    }
}

/// The URL of queue `name`, `None` when it does not exist.
pub(crate) async fn queue_url(client: &Client, name: &str) -> Result<Option<String>> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url().map(str::to_owned)),
        Err(e) => {
            let e = sqs_error("GetQueueUrl", e).with_context("queue", name);
            if e.kind() == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Every queue URL whose name starts with `prefix` (all pages).
pub(crate) async fn list_queues(client: &Client, prefix: &str) -> Result<Vec<String>> {
    let mut urls = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .list_queues()
            .queue_name_prefix(prefix)
            .max_results(1000)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| sqs_error("ListQueues", e).with_context("prefix", prefix))?;
        urls.extend(out.queue_urls().iter().cloned());
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(urls),
        }
    }
}

/// One message to send: key, payload and (FIFO) deduplication id.
pub(crate) struct Outgoing<'a> {
    pub(crate) key: &'a str,
    pub(crate) payload: &'a Bytes,
    pub(crate) dedup: String,
}

/// A fresh FIFO deduplication id.
pub(crate) fn dedup_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sends `messages` to `url` with `SendMessageBatch`, in batches of at most 10 entries and
/// 256 KiB (on a FIFO queue at most one message per key), one batch after the other; entries
/// that fail for a passing reason are sent again once.
pub(crate) async fn send_all(
    client: &Client,
    url: &str,
    fifo: bool,
    messages: &[Outgoing<'_>],
) -> Result<()> {
    let mut start = 0;
    while start < messages.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < messages.len() && end - start < BATCH {
            let size = wire::wire_size(messages[end].key, messages[end].payload);
            if end > start && bytes + size > crate::config::SQS_MAX_MESSAGE_BYTES {
                break;
            }
            // FIFO: one message per key in a batch, so a failed entry retried cannot land
            // after a later message of its key (the next batch goes once this one is done).
            if fifo
                && messages[start..end]
                    .iter()
                    .any(|m| m.key == messages[end].key)
            {
                break;
            }
            bytes += size;
            end += 1;
        }
        send_batch(client, url, fifo, &messages[start..end]).await?;
        start = end;
    }
    Ok(())
}

/// One `SendMessageBatch` of `messages`, the failed entries sent again once when their
/// failure is passing (classified by code, as [`batch_outcomes`] does).
async fn send_batch(
    client: &Client,
    url: &str,
    fifo: bool,
    messages: &[Outgoing<'_>],
) -> Result<()> {
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    for attempt in 0..2 {
        let mut entries = Vec::with_capacity(pending.len());
        for &i in &pending {
            let Some(m) = messages.get(i) else { continue };
            let encoded = wire::encode(m.key, m.payload)?;
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(encoded.body)
                .set_message_attributes(Some(encoded.attributes));
            if fifo {
                entry = entry
                    .message_group_id(message_group_id(m.key))
                    .message_deduplication_id(&m.dedup);
            }
            entries.push(entry.build().map_err(|e| {
                Error::internal("sqs broker: building a batch entry").with_source(e)
            })?);
        }
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                sqs_error("SendMessageBatch", e)
                    .with_context("queue", url)
                    .with_context("messages", pending.len())
            })?;
        let Some(failed) = out.failed().first() else {
            return Ok(());
        };
        let kind_of = |f: &aws_sdk_sqs::types::BatchResultErrorEntry| {
            classify_code(Some(f.code()), if f.sender_fault() { 400 } else { 500 })
        };
        // The worst failure decides: a permanent one is not retried.
        let permanent = out
            .failed()
            .iter()
            .find(|f| !kind_of(f).default_retryable());
        let failed = permanent.unwrap_or(failed);
        let kind = kind_of(failed);
        if attempt == 1 || !kind.default_retryable() {
            return Err(
                Error::new(kind, "sqs broker: SendMessageBatch entries failed")
                    .with_context("queue", url)
                    .with_context("failed", out.failed().len())
                    .with_context("code", failed.code())
                    .with_context("message", failed.message().unwrap_or_default()),
            );
        }
        let mut again: Vec<usize> = out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse().ok())
            .filter(|i| *i < messages.len())
            .collect();
        again.sort_unstable();
        if again.is_empty() {
            // Failures naming no entry we sent: nothing to send again.
            return Err(
                Error::new(kind, "sqs broker: SendMessageBatch entries failed")
                    .with_context("queue", url)
                    .with_context("failed", out.failed().len())
                    .with_context("code", failed.code()),
            );
        }
        pending = again;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Sends one message with `SendMessage`.
pub(crate) async fn send_one(
    client: &Client,
    url: &str,
    fifo: bool,
    message: &Outgoing<'_>,
) -> Result<()> {
    let encoded = wire::encode(message.key, message.payload)?;
    let mut send = client
        .send_message()
        .queue_url(url)
        .message_body(encoded.body)
        .set_message_attributes(Some(encoded.attributes));
    if fifo {
        send = send
            .message_group_id(message_group_id(message.key))
            .message_deduplication_id(&message.dedup);
    }
    send.send()
        .await
        .map(|_| ())
        .map_err(|e| sqs_error("SendMessage", e).with_context("queue", url))
}

/// One long poll: up to 10 messages, waiting up to `wait` for the first.
pub(crate) async fn receive(
    client: &Client,
    url: &str,
    wait: Duration,
    visibility: Duration,
) -> Result<Vec<Received>> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(BATCH as i32)
        .wait_time_seconds(secs(wait))
        .visibility_timeout(secs(visibility))
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(|e| sqs_error("ReceiveMessage", e).with_context("queue", url))?;
    Ok(out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(Received::decode)
        .collect())
}

/// `call` bounded to `limit` (retries of the SDK included): an SQS call that hangs, on a
/// connection that died silently say, fails with a retryable `Timeout` instead of waiting for
/// the SDK's attempt timeout (`wait + 15 s`, three attempts).
pub(crate) async fn within<T>(
    limit: Duration,
    what: &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(
            Error::new(ErrorKind::Timeout, format!("sqs broker: {what} timed out"))
                .retryable()
                .with_context("limit_ms", limit.as_millis()),
        ),
    }
}

/// Whole seconds of `d`, rounded up (SQS counts in seconds).
pub(crate) fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

/// Per-entry outcome of a batch call: `Ok` or the entry's error.
pub(crate) type Outcomes = Vec<Result<()>>;

fn batch_outcomes(
    n: usize,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    what: &'static str,
) -> Outcomes {
    let mut outcomes: Outcomes = (0..n).map(|_| Ok(())).collect();
    for f in failed {
        if let Some(slot) = f
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| outcomes.get_mut(i))
        {
            let status = if f.sender_fault() { 400 } else { 500 };
            *slot = Err(Error::new(
                classify_code(Some(f.code()), status),
                format!("sqs broker: {what} entry failed"),
            )
            .with_context("code", f.code())
            .with_context("message", f.message().unwrap_or_default()));
        }
    }
    outcomes
}

/// `DeleteMessageBatch` of up to 10 receipt handles.
pub(crate) async fn delete_batch(
    client: &Client,
    url: &str,
    receipts: &[String],
) -> Result<Outcomes> {
    let entries = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .build()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::internal("sqs broker: building a delete entry").with_source(e))?;
    let out = client
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| sqs_error("DeleteMessageBatch", e).with_context("queue", url))?;
    Ok(batch_outcomes(
        receipts.len(),
        out.failed(),
        "DeleteMessageBatch",
    ))
}

/// Visibility calls of one round in flight at once.
const VISIBILITY_CALLS: usize = 16;

/// `ChangeMessageVisibilityBatch` of receipt handles, any number: one call per 10, up to
/// [`VISIBILITY_CALLS`] at once, the whole round bounded to `limit`. One outcome per receipt,
/// in order: an entry SQS refused carries SQS's error; the entries of a call that failed as a
/// whole, timed out or was never made in time carry a *retryable* error (nothing refused them:
/// try again), and the other calls' entries are unaffected (a slow or failing call costs its
/// own ten, not the round).
pub(crate) async fn change_visibility_all(
    client: &Client,
    url: &str,
    receipts: &[String],
    timeout: Duration,
    limit: Duration,
) -> Outcomes {
    let deadline = tokio::time::Instant::now() + limit;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(VISIBILITY_CALLS));
    let mut calls = tokio::task::JoinSet::new();
    for (n, chunk) in receipts.chunks(BATCH).enumerate() {
        let (client, url, chunk) = (client.clone(), url.to_owned(), chunk.to_vec());
        let slots = slots.clone();
        calls.spawn(async move {
            let call = async {
                let _slot = slots.acquire().await;
                change_visibility_batch(&client, &url, &chunk, timeout).await
            };
            let outcomes = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(e)) => chunk
                    .iter()
                    .map(|_| Err(copy_error(&e).retryable()))
                    .collect(),
                Err(_) => chunk
                    .iter()
                    .map(|_| {
                        Err(Error::new(
                            ErrorKind::Timeout,
                            "sqs broker: ChangeMessageVisibilityBatch timed out",
                        )
                        .retryable()
                        .with_context("limit_ms", limit.as_millis()))
                    })
                    .collect(),
            };
            (n, outcomes)
        });
    }
    let mut by_call: Vec<Option<Outcomes>> =
        (0..receipts.len().div_ceil(BATCH)).map(|_| None).collect();
    while let Some(joined) = calls.join_next().await {
        if let Ok((n, outcomes)) = joined {
            by_call[n] = Some(outcomes);
        }
    }
    let mut outcomes = Vec::with_capacity(receipts.len());
    for (n, chunk) in receipts.chunks(BATCH).enumerate() {
        match by_call[n].take() {
            Some(call) => outcomes.extend(call),
            None => outcomes.extend(chunk.iter().map(|_| {
                Err(Error::internal("sqs broker: a visibility call's task failed").retryable())
            })),
        }
    }
    outcomes
}

/// `e`'s kind, retryability, message and context, for each entry of a failed batch call
/// (errors are not `Clone`).
pub(crate) fn copy_error(e: &Error) -> Error {
    let mut copy = Error::new(e.kind(), e.message().to_owned());
    copy = if e.is_retryable() {
        copy.retryable()
    } else {
        copy.permanent()
    };
    for (name, value) in e.context() {
        copy = copy.with_context(name, value);
    }
    copy
}

/// One `ChangeMessageVisibilityBatch` of at most 10 receipt handles.
async fn change_visibility_batch(
    client: &Client,
    url: &str,
    receipts: &[String],
    timeout: Duration,
) -> Result<Outcomes> {
    let entries = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(r)
                .visibility_timeout(secs(timeout))
                .build()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::internal("sqs broker: building a visibility entry").with_source(e))?;
    let out = client
        .change_message_visibility_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", e).with_context("queue", url))?;
    Ok(batch_outcomes(
        receipts.len(),
        out.failed(),
        "ChangeMessageVisibilityBatch",
    ))
}

/// `ChangeMessageVisibility` of one receipt handle.
pub(crate) async fn change_visibility(
    client: &Client,
    url: &str,
    receipt: &str,
    timeout: Duration,
) -> Result<()> {
    client
        .change_message_visibility()
        .queue_url(url)
        .receipt_handle(receipt)
        .visibility_timeout(secs(timeout))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sqs_error("ChangeMessageVisibility", e).with_context("queue", url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqsBroker;
    use crate::test_proxy::Proxy;

    /// One hung `ChangeMessageVisibilityBatch` call (its connection went silent) fails its own
    /// ten entries after the bound; the other calls of the round are made beside it and
    /// succeed. (Calls made one after another, stopping at the first failure, cost every
    /// delivery of the round its renewal.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_visibility_call_costs_only_its_own_entries() {
        let Some(base) = weir_core::testkit::service_url("WEIR_TEST_SQS_URL") else {
            return;
        };
        let rest = base.strip_prefix("sqs://").expect("sqs:// URL");
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let prefix = format!("wv-{:08x}", rand::random::<u32>());
        let url = format!("sqs://{prefix}?{query}");
        let Some(proxy) = Proxy::start(&url, b"AmazonSQS.ChangeMessageVisibilityBatch\r\n").await
        else {
            return;
        };
        let broker = SqsBroker::connect(&proxy.url).await.expect("connect");
        let client = broker.inner.client.clone();
        let queue = ensure_queue(&client, &format!("{prefix}_renew"), false)
            .await
            .expect("queue");
        let payloads: Vec<Bytes> = (0..30).map(|i| Bytes::from(format!("m{i}"))).collect();
        let outgoing: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|payload| Outgoing {
                key: "k",
                payload,
                dedup: dedup_id(),
            })
            .collect();
        send_all(&client, &queue, false, &outgoing)
            .await
            .expect("send");
        let mut receipts = Vec::new();
        for _ in 0..20 {
            if receipts.len() == 30 {
                break;
            }
            let got = receive(
                &client,
                &queue,
                Duration::from_secs(1),
                Duration::from_secs(60),
            )
            .await
            .expect("receive");
            receipts.extend(got.into_iter().map(|m| m.receipt));
        }
        assert_eq!(receipts.len(), 30, "received every message");

        proxy.arm_once();
        // Long enough for the healthy calls on a loaded machine; the hung one uses it all.
        let limit = Duration::from_secs(4);
        let outcomes =
            change_visibility_all(&client, &queue, &receipts, Duration::from_secs(60), limit).await;
        assert_eq!(outcomes.len(), 30);
        assert_eq!(proxy.swallowed(), 1);
        let failed: Vec<&Error> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert_eq!(
            failed.len(),
            10,
            "only the hung call's entries fail: {failed:?}"
        );
        for e in failed {
            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
            assert!(e.is_retryable());
        }
    }
}
