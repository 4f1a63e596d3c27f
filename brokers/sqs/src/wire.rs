//! How a weir message travels in SQS: a fixed body and up to two binary message attributes.
//!
//! SQS bodies must be XML-safe text, but weir payloads are arbitrary bytes; base64 would cost a
//! third of the 256 KiB. So the body is the constant `weir`, the key travels in the binary
//! attribute `k` and the payload in the binary attribute `p` (SQS counts attributes at their
//! raw size). SQS refuses an attribute with an empty value, so an empty key is sent without
//! `k`, and an empty payload without `p` and with the body `weir0` instead. A message with
//! neither `p` nor the body `weir0` (sent by another tool) is delivered with its body as the
//! payload.

use std::collections::HashMap;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use bytes::Bytes;
use weir_core::{Error, Result};

/// The body of a message with a payload (in attribute `p`).
pub(crate) const BODY: &str = "weir";
/// The body of a message with an empty payload (no attribute `p`).
pub(crate) const BODY_EMPTY: &str = "weir0";
/// The attribute holding the key (absent when the key is empty).
pub(crate) const ATTR_KEY: &str = "k";
/// The attribute holding the payload (absent when the payload is empty).
pub(crate) const ATTR_PAYLOAD: &str = "p";

/// SQS's size of a message: body plus each attribute's name, type and value.
pub(crate) fn wire_size(key: &str, payload: &[u8]) -> usize {
    let attribute = |value: usize| {
        if value == 0 {
            0
        } else {
            1 + "Binary".len() + value
        }
    };
    BODY_EMPTY.len() + attribute(key.len()) + attribute(payload.len())
}

fn binary(bytes: impl Into<Vec<u8>>) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("Binary")
        .binary_value(Blob::new(bytes))
        .build()
        .map_err(|e| Error::internal("sqs broker: building a message attribute").with_source(e))
}

/// A message ready to send: its body and its attributes.
pub(crate) struct Encoded {
    pub(crate) body: &'static str,
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
}

/// The body and attributes of a message with `key` and `payload` (no empty attribute).
pub(crate) fn encode(key: &str, payload: &[u8]) -> Result<Encoded> {
    let mut attributes = HashMap::new();
    if !key.is_empty() {
        attributes.insert(ATTR_KEY.to_owned(), binary(key.as_bytes())?);
    }
    let body = if payload.is_empty() {
        BODY_EMPTY
    } else {
        attributes.insert(ATTR_PAYLOAD.to_owned(), binary(payload)?);
        BODY
    };
    Ok(Encoded { body, attributes })
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
        let body = message.body().unwrap_or_default();
        let payload = match attr(ATTR_PAYLOAD) {
            Some(p) => Bytes::from(p),
            None if body == BODY_EMPTY => Bytes::new(),
            None => Bytes::from(body.as_bytes().to_vec()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQS would hand back for an encoded message.
    fn as_received(encoded: Encoded) -> Received {
        let message = Message::builder()
            .receipt_handle("r")
            .message_id("m")
            .body(encoded.body)
            .set_message_attributes(Some(encoded.attributes))
            .build();
        Received::decode(message).expect("decoded")
    }

    /// SQS refuses empty attribute values (moto does not): an empty key or payload travels
    /// without its attribute, and every combination decodes to what was sent.
    #[test]
    fn empty_key_and_payload_have_no_empty_attribute() {
        for (key, payload) in [("", ""), ("", "x"), ("k", ""), ("k", "x")] {
            let encoded = encode(key, payload.as_bytes()).expect("encode");
            for (name, value) in &encoded.attributes {
                let bytes = value.binary_value().expect("binary").as_ref();
                assert!(
                    !bytes.is_empty(),
                    "{key:?}/{payload:?}: empty attribute {name}"
                );
            }
            assert_eq!(encoded.attributes.contains_key(ATTR_KEY), !key.is_empty());
            assert_eq!(
                encoded.attributes.contains_key(ATTR_PAYLOAD),
                !payload.is_empty()
            );
            assert!(
                wire_size(key, payload.as_bytes())
                    >= encoded.body.len() + key.len() + payload.len()
            );
            let got = as_received(encoded);
            assert_eq!(got.key, key);
            assert_eq!(&got.payload[..], payload.as_bytes());
        }
    }

    /// A message sent by another tool (no `p`): its body is the payload.
    #[test]
    fn foreign_message_body_is_the_payload() {
        let message = Message::builder().receipt_handle("r").body("hello").build();
        let got = Received::decode(message).expect("decoded");
        assert_eq!(&got.payload[..], b"hello");
        assert_eq!(got.key, "");
        assert_eq!(got.redeliveries, 0);
    }
}
