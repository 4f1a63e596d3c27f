//! How a weir message travels in SQS: a fixed body and two binary message attributes.
//!
//! SQS bodies must be XML-safe text, but weir payloads are arbitrary bytes; base64 would cost a
//! third of the 256 KiB. So the body is the constant `weir`, the key travels in the binary
//! attribute `k` and the payload in the binary attribute `p` (SQS counts attributes at their
//! raw size). A message without `p` (sent by another tool) is delivered with its body as the
//! payload and an empty key.

use std::collections::HashMap;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use bytes::Bytes;
use weir_core::{Error, Result};

/// The body of every message the driver sends.
pub(crate) const BODY: &str = "weir";
/// The attribute holding the key.
pub(crate) const ATTR_KEY: &str = "k";
/// The attribute holding the payload.
pub(crate) const ATTR_PAYLOAD: &str = "p";

/// SQS's size of a message: body plus each attribute's name, type and value.
pub(crate) fn wire_size(key: &str, payload: &[u8]) -> usize {
    BODY.len() + 2 * (1 + "Binary".len()) + key.len() + payload.len()
}

fn binary(bytes: impl Into<Vec<u8>>) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("Binary")
        .binary_value(Blob::new(bytes))
        .build()
        .map_err(|e| Error::internal("sqs broker: building a message attribute").with_source(e))
}

/// The attributes of a message with `key` and `payload`.
pub(crate) fn attributes(
    key: &str,
    payload: &[u8],
) -> Result<HashMap<String, MessageAttributeValue>> {
    Ok(HashMap::from([
        (ATTR_KEY.to_owned(), binary(key.as_bytes())?),
        (ATTR_PAYLOAD.to_owned(), binary(payload)?),
    ]))
}

/// A message as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) receipt: String,
    pub(crate) message_id: String,
    pub(crate) key: String,
    pub(crate) payload: Bytes,
    /// `ApproximateReceiveCount - 1`.
    pub(crate) redeliveries: u32,
}

impl Received {
    /// Decodes a received message; `None` when it has no receipt handle (never seen).
    pub(crate) fn decode(message: Message) -> Option<Received> {
        let receipt = message.receipt_handle()?.to_owned();
        let attr = |name: &str| {
            message
                .message_attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.binary_value())
                .map(|b| b.as_ref().to_vec())
        };
        let key = attr(ATTR_KEY)
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .unwrap_or_default();
        let payload = match attr(ATTR_PAYLOAD) {
            Some(p) => Bytes::from(p),
            None => Bytes::from(message.body().unwrap_or_default().as_bytes().to_vec()),
        };
        let receives = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(1);
        Some(Received {
            receipt,
            message_id: message.message_id().unwrap_or_default().to_owned(),
            key,
            payload,
            redeliveries: receives.saturating_sub(1),
        })
    }
}
