//! Ingest: size, JSON and name checks, then store, then publish.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::Engine;
use crate::broker::TOPIC_EVENTS;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;

/// Parses a request body holding one event object or an array of them, enforcing
/// `max_event_bytes` per event and `max_request_bytes` per body. All-or-nothing: the first
/// problem rejects the whole body.
pub fn parse_body(
    body: &[u8],
    max_event_bytes: usize,
    max_request_bytes: usize,
) -> Result<Vec<Event>> {
    if body.len() > max_request_bytes {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "request body is {} bytes; the limit is {max_request_bytes}",
                body.len()
            ),
        ));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let raws: Vec<&RawValue> = match first {
        None => {
            return Err(Error::invalid(
                "empty body: send one event object or an array of events",
            ));
        }
        Some(b'[') => serde_json::from_slice(body).map_err(|e| json_error(e, ""))?,
        Some(_) => vec![serde_json::from_slice::<&RawValue>(body).map_err(|e| json_error(e, ""))?],
    };
    if raws.is_empty() {
        return Err(Error::invalid("empty array: send at least one event"));
    }
    let batch = first == Some(&b'[');
    parse_events(&raws, batch, max_event_bytes)
}

/// Parses raw JSON events (see [`parse_body`]).
pub fn parse_events(raws: &[&RawValue], batch: bool, max_event_bytes: usize) -> Result<Vec<Event>> {
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let at = if batch {
            format!("[{i}]")
        } else {
            String::new()
        };
        let text = raw.get();
        if text.len() > max_event_bytes {
            let at = if batch {
                format!("{at}: ")
            } else {
                String::new()
            };
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "{at}event is {} bytes; the limit is {max_event_bytes}",
                    text.len()
                ),
            ));
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            // Only a batch's element can fail here (the body parsed): say which one.
            json_error(
                e,
                &if batch {
                    format!("{at}: ")
                } else {
                    String::new()
                },
            )
        })?;
        events.push(Event::from_json(value, &at)?);
    }
    Ok(events)
}

/// serde_json's nesting limit: deeper JSON is refused.
const MAX_JSON_DEPTH: usize = 128;

/// A JSON error with where it is; `at` (`"[2]: "`) names a batch's element, whose line and
/// column count from the start of that element.
fn json_error(e: serde_json::Error, at: &str) -> Error {
    let (line, column) = (e.line(), e.column());
    let within = if at.is_empty() { "" } else { " of the event" };
    let what = e.to_string();
    if what.starts_with("recursion limit exceeded") {
        return Error::invalid(format!(
            "{at}JSON nested deeper than {MAX_JSON_DEPTH} levels (at line {line}, column {column}{within})"
        ));
    }
    Error::invalid(format!(
        "{at}malformed JSON at line {line}, column {column}{within}: {e}"
    ))
}

impl Engine {
    /// Validates a request body of events, stores them and publishes them; returns their ids.
    /// Nothing is stored when any event of the body is invalid.
    pub async fn ingest_body(&self, body: &[u8]) -> Result<Vec<String>> {
        let cfg = &self.inner.config;
        let events = parse_body(body, cfg.max_event_bytes, cfg.max_request_bytes)?;
        self.ingest(events).await
    }

    /// Stores and publishes already-validated events, both at once; returns their ids once
    /// both succeeded. Storing and publishing are independent writes (the router reads the
    /// event from the message), so they run concurrently: one round trip less between an
    /// event and its runs. Either failing fails the request, and the producer sends again:
    /// events are at least once, and a re-sent event id starts no second run.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<Vec<String>> {
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut messages = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        for e in &events {
            let payload = Bytes::from(serde_json::to_vec(&**e)?);
            messages.push((e.id.clone(), payload));
            ids.push(e.id.clone());
        }
        let (stored, published) = futures::join!(
            self.inner.events.append(&events),
            self.inner.broker.publish_batch(TOPIC_EVENTS, messages)
        );
        stored?;
        published?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch() {
        let one = parse_body(br#"{"name":"a"}"#, 1000, 10_000).unwrap();
        assert_eq!(one.len(), 1);
        let two = parse_body(br#" [{"name":"a"},{"name":"b","id":"x"}]"#, 1000, 10_000).unwrap();
        assert_eq!(two[1].id, "x");
    }

    #[test]
    fn errors_say_where() {
        let e = parse_body(b"{\"name\": }", 1000, 10_000).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed JSON at line 1, column 10"),
            "{e}"
        );
        let e = parse_body(br#"[{"name":"a"},{"data":{}}]"#, 1000, 10_000).unwrap_err();
        assert_eq!(e.to_string(), "[1]: missing event \"name\"");
        // An element nested too deeply is named, and the limit said as such.
        let deep = format!(
            "[{{\"name\":\"a\"}},\n {{\"name\":\"b\",\"data\":{}1{}}}]",
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = parse_body(deep.as_bytes(), 10_000, 10_000).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("[1]: JSON nested deeper than 128 levels (at line 1, column"),
            "{e}"
        );
        assert!(e.to_string().ends_with("of the event)"), "{e}");
        let deep_single = format!(
            "{{\"name\":\"a\",\"data\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let e = parse_body(deep_single.as_bytes(), 10_000, 10_000).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("JSON nested deeper than 128 levels"),
            "{e}"
        );
        assert!(parse_body(b"[]", 1000, 10_000).is_err());
        assert!(parse_body(b"  ", 1000, 10_000).is_err());
    }

    #[test]
    fn limits() {
        let big = format!(r#"{{"name":"a","data":{{"x":"{}"}}}}"#, "y".repeat(2000));
        assert_eq!(
            parse_body(big.as_bytes(), 1000, 10_000).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
        assert_eq!(
            parse_body(big.as_bytes(), 10_000, 1000).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
    }
}
