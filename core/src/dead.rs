//! Dead letters: messages the engine gave up on, kept in the state store with why.
//!
//! A message the engine cannot handle (one that cannot be decoded, or one it failed on with an
//! error that is neither retryable nor "not loaded here" `EngineConfig::dead_letter_after`
//! times) is not redelivered for good: it is recorded as a [`DeadLetter`], its run (if it has
//! one) is failed with a timeline entry naming the cause, and the message is acknowledged.
//! `weir dead list|show|retry|drop` and `GET /v1/dead` show and handle them.

use serde::{Deserialize, Serialize};

/// A message the engine gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id (a ULID: sorts by time).
    pub id: String,
    /// The topic it came from (`events` or `steps`).
    pub topic: String,
    /// The message's key (an event id, a run id).
    pub key: String,
    /// The run it belongs to, when that is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The event it carries or started from, when that is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Why the engine gave up: the last error.
    pub reason: String,
    /// How many times the engine failed on it.
    pub deliveries: u32,
    /// When it was recorded (epoch ms).
    pub at_ms: i64,
    /// The message as it came: UTF-8 text, or base64 when `base64` (a message that is not
    /// UTF-8).
    pub payload: String,
    /// Whether `payload` is base64.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

impl DeadLetter {
    /// A dead letter recorded now for `payload` from `topic` under `key`.
    pub fn new(topic: &str, key: &str, payload: &[u8], reason: String, deliveries: u32) -> Self {
        let (payload, base64) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (base64_encode(payload), true),
        };
        DeadLetter {
            id: ulid::Ulid::new().to_string(),
            topic: topic.to_owned(),
            key: key.to_owned(),
            run_id: None,
            event_id: None,
            reason,
            deliveries,
            at_ms: crate::event::now_ms(),
            payload,
            base64,
        }
    }

    /// The message's bytes, as they came.
    pub fn payload_bytes(&self) -> crate::Result<Vec<u8>> {
        if self.base64 {
            base64_decode(&self.payload).ok_or_else(|| {
                crate::Error::invalid(format!("dead letter {}: payload is not base64", self.id))
            })
        } else {
            Ok(self.payload.clone().into_bytes())
        }
    }
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    /// The dead letters of the page.
    pub items: Vec<DeadLetter>,
    /// Give this as `before` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How many dead letters a store keeps at most: the oldest go first (as Sidekiq's dead set).
pub const MAX_DEAD_LETTERS: usize = 10_000;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; `None` when it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (at, chunk) in text.chunks(4).enumerate() {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, c) in chunk.iter().enumerate() {
            let v = match c {
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => ALPHABET.iter().position(|a| a == c)? as u32,
            };
            n = (n << 6) | v;
        }
        if pad > 0 && at + 1 < chunks {
            return None;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_that_are_not_utf8_round_trip_as_base64() {
        for bytes in [
            &b""[..],
            b"\xff",
            b"\xff\x00",
            b"\xff\x00\x80",
            b"{\"a\":1}\xfe",
        ] {
            let dead = DeadLetter::new("steps", "k", bytes, "r".into(), 1);
            assert_eq!(dead.base64, std::str::from_utf8(bytes).is_err());
            assert_eq!(dead.payload_bytes().unwrap(), bytes);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert!(base64_decode("aGV=bG8=").is_none());
        assert!(base64_decode("abc").is_none());
    }
}
