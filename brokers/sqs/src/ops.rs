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
/// 256 KiB; entries that fail once are sent again once.
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
            bytes += size;
            end += 1;
        }
        send_batch(client, url, fifo, &messages[start..end]).await?;
        start = end;
    }
    Ok(())
}

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
            let m = &messages[i];
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
        if out.failed().is_empty() {
            return Ok(());
        }
        let failed = &out.failed()[0];
        let kind = if failed.sender_fault() {
            ErrorKind::Internal
        } else {
            ErrorKind::Unavailable
        };
        if attempt == 1 || kind != ErrorKind::Unavailable {
            return Err(
                Error::new(kind, "sqs broker: SendMessageBatch entries failed")
                    .with_context("queue", url)
                    .with_context("failed", out.failed().len())
                    .with_context("code", failed.code())
                    .with_context("message", failed.message().unwrap_or_default()),
            );
        }
        pending = out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse().ok())
            .collect();
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

/// `ChangeMessageVisibilityBatch` of receipt handles (any number, in batches of 10).
pub(crate) async fn change_visibility_all(
    client: &Client,
    url: &str,
    receipts: &[String],
    timeout: Duration,
) -> Result<Outcomes> {
    let mut outcomes = Vec::with_capacity(receipts.len());
    for chunk in receipts.chunks(BATCH) {
        let entries = chunk
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
            .map_err(|e| {
                Error::internal("sqs broker: building a visibility entry").with_source(e)
            })?;
        let out = client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", e).with_context("queue", url))?;
        outcomes.extend(batch_outcomes(
            chunk.len(),
            out.failed(),
            "ChangeMessageVisibilityBatch",
        ));
    }
    Ok(outcomes)
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
