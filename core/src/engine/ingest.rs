//! Ingest: size, JSON and name checks, then store, then publish.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use serde::Deserializer as _;
use serde::de::{SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::Engine;
use crate::broker::TOPIC_EVENTS;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::schema::{DETAILED_EVENT_BYTES, EventSchemas, ViolationList};
use crate::state::{Republish, Timer, TimerAction};

/// Parses a request body holding one event object or an array of them, enforcing
/// `max_event_bytes` per event and `max_request_bytes` per body. All-or-nothing: the first
/// problem rejects the whole body. Errors give the line and column in the body, and in a batch
/// start with the index of the event they are in (`[3]: …`).
pub fn parse_body(
    body: &[u8],
    max_event_bytes: usize,
    max_request_bytes: usize,
) -> Result<Vec<Event>> {
    parse_body_checked(
        body,
        max_event_bytes,
        max_request_bytes,
        &EventSchemas::new(),
    )
}

/// [`parse_body`], checking each event against its schema in `schemas` (as sent, except that
/// a missing or `null` `data` or `user` counts as `{}`, as it is stored): one violation
/// anywhere refuses the whole body, with the violations of every event listed (at most
/// [`crate::schema::MAX_VIOLATIONS`]; [`crate::schema::SchemaViolations`], the error's source). An event
/// that is not an event at all (no `name`, an unknown key, too large) is reported first, on
/// its own.
pub fn parse_body_checked(
    body: &[u8],
    max_event_bytes: usize,
    max_request_bytes: usize,
    schemas: &EventSchemas,
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
        Some(b'[') => batch_elements(body)?,
        Some(_) => vec![
            serde_json::from_slice::<&RawValue>(body)
                .map_err(|e| json_error(&e, "", e.line(), e.column()))?,
        ],
    };
    if raws.is_empty() {
        return Err(Error::invalid("empty array: send at least one event"));
    }
    let batch = first == Some(&b'[');
    parse_events(body, &raws, batch, max_event_bytes, schemas)
}

/// Collects the raw elements of a JSON array, counting them as they come, so that a syntax
/// error can name the element it is in.
struct Elements<'c> {
    parsed: &'c Cell<usize>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            out.push(raw);
            self.parsed.set(out.len());
        }
        Ok(out)
    }
}

/// The elements of a body that is a JSON array.
fn batch_elements(body: &[u8]) -> Result<Vec<&RawValue>> {
    let parsed = Cell::new(0);
    let mut de = serde_json::Deserializer::from_slice(body);
    match de.deserialize_seq(Elements { parsed: &parsed }) {
        Ok(raws) => {
            de.end()
                .map_err(|e| json_error(&e, "", e.line(), e.column()))?;
            Ok(raws)
        }
        Err(e) => Err(json_error(
            &e,
            &format!("[{}]: ", parsed.get()),
            e.line(),
            e.column(),
        )),
    }
}

/// Parses the raw events of `body` (see [`parse_body`]).
fn parse_events(
    body: &[u8],
    raws: &[&RawValue],
    batch: bool,
    max_event_bytes: usize,
    schemas: &EventSchemas,
) -> Result<Vec<Event>> {
    let mut events = Vec::with_capacity(raws.len());
    let mut violations = ViolationList::default();
    for (i, raw) in raws.iter().enumerate() {
        let at = if batch {
            format!("[{i}]")
        } else {
            String::new()
        };
        let prefix = if batch {
            format!("{at}: ")
        } else {
            String::new()
        };
        let text = raw.get();
        if text.len() > max_event_bytes {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "{prefix}event is {} bytes; the limit is {max_event_bytes}",
                    text.len()
                ),
            ));
        }
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            // What the array's parse let through (nesting depth, number range): positions
            // count from the event's start, so move them to the body's.
            let (line, column) = position_in_body(body, text, e.line(), e.column());
            json_error(&e, &prefix, line, column)
        })?;
        let name = value.get("name").and_then(serde_json::Value::as_str);
        if name.is_some_and(|n| schemas.applies_to(n)) {
            default_objects(&mut value);
            violations.check(schemas, i, &value, text.len() <= DETAILED_EVENT_BYTES);
        }
        events.push(Event::from_json(value, &at)?);
    }
    violations.into_result()?;
    Ok(events)
}

/// `data` and `user` as they are stored: `{}` when missing or `null`.
fn default_objects(value: &mut serde_json::Value) {
    if let Some(object) = value.as_object_mut() {
        for key in ["data", "user"] {
            match object.get(key) {
                None | Some(serde_json::Value::Null) => {
                    object.insert(key.into(), serde_json::Value::Object(Default::default()));
                }
                Some(_) => {}
            }
        }
    }
}

/// Where `(line, column)` of `part` (a slice of `body`) is in `body`.
fn position_in_body(body: &[u8], part: &str, line: usize, column: usize) -> (usize, usize) {
    let Some(offset) = (part.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .filter(|o| *o <= body.len())
    else {
        return (line, column);
    };
    let before = &body[..offset];
    let part_line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let part_column = offset - line_start + 1;
    if line <= 1 {
        (part_line, part_column + column.saturating_sub(1))
    } else {
        (part_line + line - 1, column)
    }
}

/// serde_json's nesting limit: deeper JSON is refused.
const MAX_JSON_DEPTH: usize = 128;

/// A JSON error at `line`, `column` of the body; `at` (`"[2]: "`) names a batch's element.
fn json_error(e: &serde_json::Error, at: &str, line: usize, column: usize) -> Error {
    let what = e.to_string();
    let what = what
        .rsplit_once(" at line ")
        .map_or(what.as_str(), |(message, _)| message);
    if what.starts_with("recursion limit exceeded") {
        return Error::invalid(format!(
            "{at}JSON nested deeper than {MAX_JSON_DEPTH} levels (line {line}, column {column})"
        ));
    }
    Error::invalid(format!(
        "{at}malformed JSON at line {line}, column {column}: {what}"
    ))
}

impl Engine {
    /// Validates a request body of events, stores them and publishes them; returns their ids.
    /// Nothing is stored when any event of the body is invalid.
    pub async fn ingest_body(&self, body: &[u8]) -> Result<Vec<String>> {
        let cfg = &self.inner.config;
        let schemas = self.event_schemas();
        let events = parse_body_checked(body, cfg.max_event_bytes, cfg.max_request_bytes, &schemas)
            .inspect_err(|e| self.inner.metrics.events_rejected(e.kind()))?;
        self.ingest_checked(events).await
    }

    /// Checks events built in process (adapters, `ingest`) against their schemas, as
    /// [`parse_body_checked`] does for a request body.
    fn check_schemas(&self, events: &[Event]) -> Result<()> {
        let schemas = self.event_schemas();
        if !schemas.checks_anything() {
            return Ok(());
        }
        let mut violations = ViolationList::default();
        for (i, event) in events.iter().enumerate() {
            if schemas.applies_to(&event.name) {
                violations.check(&schemas, i, &serde_json::to_value(event)?, true);
            }
        }
        violations
            .into_result()
            .inspect_err(|e| self.inner.metrics.events_rejected(e.kind()))
    }

    /// Stores, then publishes already-validated events; returns their ids once both
    /// succeeded. The answer is all or nothing: `Ok` means every event is stored and on its
    /// way to its runs; `Err` means that none of them is stored — or says otherwise: that this
    /// is unknown (the store could not be reached even to take the request back), or that the
    /// events are stored but some may not be routed (publishing failed for good after they
    /// were stored). Both name the ids to send again.
    ///
    /// - Storing is one atomic append of the whole batch, named by a fresh request id. A
    ///   retryable failure (a restart, a failover, a reply that timed out: the append may
    ///   have happened) is tried again until `EngineConfig::ingest_deadline`; appends are
    ///   idempotent by event id.
    /// - Publishing is tried again the same way. If the broker stays away, the events' routing
    ///   is handed to the scheduler instead (a timer per event in the state store, due now:
    ///   the outbox pattern), and the request succeeds: its runs start once the broker is
    ///   back. A re-routed event id starts no second run.
    /// - When it gives up storing, ingest takes the request back (`EventStore::undo_append`,
    ///   which also fences an append still in flight) before answering with the error. Once
    ///   stored, nothing is taken back: a failed publish may have sent part of the batch.
    ///
    /// Storing before publishing also means that a pause registered after the router missed
    /// an event finds it in the store (see `waits.rs`).
    pub async fn ingest(&self, events: Vec<Event>) -> Result<Vec<String>> {
        self.check_schemas(&events)?;
        self.ingest_checked(events).await
    }

    /// [`ingest`](Self::ingest) of events already checked against their schemas.
    async fn ingest_checked(&self, events: Vec<Event>) -> Result<Vec<String>> {
        let _in_flight = self.ingest_started();
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let deadline = self.store_or_take_back(&events).await?;
        // Stored: from here on nothing is taken back, since a failed publish may have sent
        // some of the messages (a batch is not atomic on every broker) and their runs start.
        let messages = event_messages(&events)?;
        let published = retry_until(deadline, "publishing events", || {
            self.inner
                .broker
                .publish_batch(TOPIC_EVENTS, messages.clone())
        })
        .await;
        // Not published (the broker away, or refusing the batch: the scheduler publishes one
        // event at a time): routed through the state store instead.
        let routed = match published {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "ingest: the broker did not take the events; the scheduler publishes them");
                let grace = Instant::now() + FINISH_GRACE;
                self.schedule_routes(&events, crate::event::now_ms(), grace)
                    .await
            }
        };
        self.answer(&events, routed)
    }

    /// Appends `events` as one request under a fresh id, trying a retryable failure again
    /// until `ingest_deadline`; when it fails for good, takes the request back and answers the
    /// error (counted). Returns the deadline, for what follows the storing.
    async fn store_or_take_back(&self, events: &[Arc<Event>]) -> Result<Instant> {
        let deadline = Instant::now() + self.inner.config.ingest_deadline;
        let batch = ulid::Ulid::new().to_string();
        let stored = retry_until(deadline, "storing events", || {
            self.inner.events.append_batch(&batch, events)
        })
        .await;
        if let Err(e) = stored {
            let e = self.take_back(&batch, events, e).await;
            self.inner.metrics.events_rejected(e.kind());
            return Err(e);
        }
        Ok(deadline)
    }

    /// The answer for stored `events` once their routing was `routed`: their ids, or the
    /// stored-but-not-routed error (both counted).
    fn answer(&self, events: &[Arc<Event>], routed: Result<()>) -> Result<Vec<String>> {
        if let Err(e) = routed {
            let e = stored_but_not_routed(e, events);
            self.inner.metrics.events_rejected(e.kind());
            return Err(e);
        }
        self.inner.metrics.events_accepted(events.len());
        Ok(events.iter().map(|e| e.id.clone()).collect())
    }

    /// Hands the routing of `events` to the scheduler: a timer per event due at `due_ms` that
    /// publishes it alone (idempotent: the timer's id names the event), tried until
    /// `deadline`.
    async fn schedule_routes(
        &self,
        events: &[Arc<Event>],
        due_ms: i64,
        deadline: Instant,
    ) -> Result<()> {
        let timers = route_timers(events, due_ms)?;
        let state = &self.inner.state;
        retry_until(deadline, "scheduling the events' routing", || {
            futures::future::try_join_all(timers.iter().map(|t| state.schedule_timer(t)))
        })
        .await
        .map(|_| ())
    }

    /// Takes back the request `batch` whose storing failed with `cause` (tried for
    /// `FINISH_GRACE`; nothing of it was published or scheduled) and returns the error to
    /// answer: `cause`, saying that nothing was stored, or that this is unknown when the store
    /// could not take the request back.
    async fn take_back(&self, batch: &str, events: &[Arc<Event>], cause: Error) -> Error {
        let n = events.len();
        let undone = retry_until(Instant::now() + FINISH_GRACE, "taking back events", || {
            self.inner.events.undo_append(batch, events)
        })
        .await;
        match undone {
            Ok(_) => {
                let message = format!("{cause}; this request stored none of its {n} event(s)");
                Error::new(cause.kind(), message)
            }
            Err(undo) => {
                tracing::error!(error = %cause, undo = %undo, events = n, "ingest: a failed request could not be taken back: its events may be stored");
                let message = format!(
                    "{cause}; whether the {n} event(s) were stored is unknown (taking them back failed: {undo}): send them again with the same ids, which are stored once: {}",
                    ids_of(events)
                );
                // Retryable only when the cause is: a request refused for good stays refused.
                Error::new(cause.kind(), message)
            }
        }
    }

    /// Stores already-validated events now and starts their runs at `due_ms` (epoch
    /// milliseconds) instead of at once: the delay is a timer in the state store, so it
    /// survives restarts and fires on whichever node's scheduler is up (a Celery `countdown`,
    /// a Faktory `at`). A due time already past ingests at once. All or nothing and
    /// idempotent like [`ingest`]: the timer's id names the event, so sending the same event
    /// again keeps one timer, and a re-routed event id starts no second run.
    ///
    /// [`ingest`]: Engine::ingest
    pub async fn ingest_at(&self, events: Vec<Event>, due_ms: i64) -> Result<Vec<String>> {
        self.check_schemas(&events)?;
        if due_ms <= crate::event::now_ms() {
            return self.ingest_checked(events).await;
        }
        let _in_flight = self.ingest_started();
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let deadline = self.store_or_take_back(&events).await?;
        // Stored: not taken back, since some of the timers may be scheduled.
        let scheduled = self.schedule_routes(&events, due_ms, deadline).await;
        self.answer(&events, scheduled)
    }
}

/// The longest `ingest_deadline`: stores fence a request taken back for far longer (an hour;
/// see `EventStore::undo_append`), so an append still in flight cannot outlive the fence.
pub const MAX_INGEST_DEADLINE: Duration = Duration::from_secs(60);

/// How long ingest keeps trying to finish or take back a request after its deadline.
const FINISH_GRACE: Duration = Duration::from_secs(2);

/// The error of a request whose events are stored but whose publishing (or scheduling) failed
/// with `cause`, some of it perhaps done: sending the same ids again completes it.
fn stored_but_not_routed(cause: Error, events: &[Arc<Event>]) -> Error {
    tracing::error!(error = %cause, events = events.len(), "ingest: events stored but not all published");
    let message = format!(
        "{cause}; the {} event(s) are stored, but some may start no run until they are sent again: send the request again with the same ids (an id is stored and routed once): {}",
        events.len(),
        ids_of(events)
    );
    // Unavailable (503), whatever the cause: sending the same ids again is what completes it.
    Error::new(ErrorKind::Unavailable, message)
}

/// The ids of `events`, comma-separated: all of them (a producer needs each to send again).
fn ids_of(events: &[Arc<Event>]) -> String {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    format!("ids {}", ids.join(","))
}

/// Calls `attempt` until it succeeds, fails with an error that is not retryable, or `deadline`
/// would pass before the next try (50 ms doubling to 1 s between tries); at least once.
async fn retry_until<T, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(e) if e.is_retryable() && Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, retry_in = ?delay, "ingest: {what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Timers that publish each of `events` at `due_ms`.
fn route_timers(events: &[Arc<Event>], due_ms: i64) -> Result<Vec<Timer>> {
    events
        .iter()
        .map(|e| {
            Ok(Timer {
                id: delayed_route_timer_id(&e.id),
                due_ms,
                action: TimerAction::Republish(Republish {
                    topic: TOPIC_EVENTS.to_string(),
                    key: e.id.clone(),
                    payload: serde_json::to_string(&**e)?,
                }),
            })
        })
        .collect()
}

/// The `events` messages of `events`, keyed by event id.
fn event_messages(events: &[Arc<Event>]) -> Result<Vec<(String, Bytes)>> {
    events
        .iter()
        .map(|e| Ok((e.id.clone(), Bytes::from(serde_json::to_vec(&**e)?))))
        .collect()
}

/// The id of the timer that routes a delayed event: one per event id.
fn delayed_route_timer_id(event_id: &str) -> String {
    format!("route:{event_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_schema() -> EventSchemas {
        let mut schemas = EventSchemas::new();
        let schema = serde_json::json!({"type": "object", "properties": {
            "data": {"type": "object", "required": ["plan"], "properties": {
                "tags": {"type": "array", "items": {"type": "string"}}
            }}
        }});
        schemas
            .insert("signup", "1", &schema, "test")
            .expect("schema");
        schemas
    }

    /// `data` is checked as stored: a missing one is `{}`, so a required key in it is missing.
    #[test]
    fn a_missing_data_is_checked_as_the_empty_object_it_is_stored_as() {
        let schemas = plan_schema();
        for body in [r#"{"name":"signup"}"#, r#"{"name":"signup","data":null}"#] {
            let e = parse_body_checked(body.as_bytes(), 10_000, 100_000, &schemas).unwrap_err();
            let violations = crate::schema::violations_of(&e).expect("violations");
            assert_eq!(violations[0].pointer, "/data", "{body}: {e}");
        }
        let ok = br#"{"name":"signup","data":{"plan":"pro"}}"#;
        assert!(parse_body_checked(ok, 10_000, 100_000, &schemas).is_ok());
    }

    /// A request lists at most `MAX_VIOLATIONS` violations and says there were more; each
    /// message is short even when the offending value is long.
    #[test]
    fn violations_are_capped_and_messages_short() {
        let schemas = plan_schema();
        let tags: Vec<u32> = (0..150).collect();
        let event = serde_json::json!({"name": "signup", "data": {"plan": "x", "tags": tags}});
        let body = serde_json::to_vec(&event).unwrap();
        let e = parse_body_checked(&body, 100_000, 1_000_000, &schemas).unwrap_err();
        let violations = crate::schema::violations_of(&e).expect("violations");
        assert_eq!(violations.len(), crate::schema::MAX_VIOLATIONS);
        assert!(
            e.message().starts_with("more than 100 schema violations"),
            "{e}"
        );

        let long = "y".repeat(5_000);
        let event =
            serde_json::json!({"name": "signup", "data": {"plan": "x", "tags": [{"k": long}]}});
        let body = serde_json::to_vec(&event).unwrap();
        let e = parse_body_checked(&body, 100_000, 1_000_000, &schemas).unwrap_err();
        let violations = crate::schema::violations_of(&e).expect("violations");
        assert!(violations[0].message.chars().count() <= crate::schema::MAX_MESSAGE_CHARS + 1);
        // A large event reports its first violation only.
        let many: Vec<u32> = (0..5_000).collect();
        let event = serde_json::json!({"name": "signup", "data": {"plan": "x", "tags": many}});
        let body = serde_json::to_vec(&event).unwrap();
        assert!(body.len() > DETAILED_EVENT_BYTES);
        let e = parse_body_checked(&body, 100_000, 1_000_000, &schemas).unwrap_err();
        assert_eq!(
            crate::schema::violations_of(&e).expect("violations").len(),
            1
        );
    }

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
        // In a batch, the element holding the error is named; positions count in the body.
        let e = parse_body(b"[{\"name\":\"a\"},\n {\"name\": }]", 1000, 10_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[1]: malformed JSON at line 2, column 11: expected value"
        );
        let e = parse_body(b"[{\"name\":\"a\"}] x", 1000, 10_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed JSON at line 1, column 16: trailing characters"
        );
        // Too deep: said as such, in the element's place in the body.
        let deep = |prefix: &str| {
            format!(
                "{prefix}{{\"name\":\"b\",\"data\":{}1{}}}",
                "[".repeat(200),
                "]".repeat(200)
            )
        };
        // The column serde_json gives within the element alone, moved to where the element is.
        let alone = serde_json::from_str::<serde_json::Value>(&deep("")).unwrap_err();
        assert_eq!(alone.line(), 1);
        let batch = format!("[{{\"name\":\"a\"}},\n {}]", deep(""));
        let e = parse_body(batch.as_bytes(), 10_000, 10_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "[1]: JSON nested deeper than 128 levels (line 2, column {})",
                alone.column() + 1
            )
        );
        let single = deep("\n\n  ");
        let e = parse_body(single.as_bytes(), 10_000, 10_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "JSON nested deeper than 128 levels (line 3, column {})",
                alone.column() + 2
            )
        );
        assert!(parse_body(b"[]", 1000, 10_000).is_err());
        assert!(parse_body(b"  ", 1000, 10_000).is_err());
    }

    /// Found by `weir-fuzz event-body`: a number with more digits than an f64 holds was read
    /// one unit off (serde_json's fast float parsing), so an accepted event changed on its way
    /// through the broker and the store. Parsed correctly rounded now (`float_roundtrip`).
    #[test]
    fn an_accepted_event_survives_its_own_json() {
        // The fuzzer's input, as found.
        let body = format!(
            r#"{{"data":{{}},"name":"t/u","user":{{"email":{}18446744073709551615}}}}"#,
            "70955161".repeat(24)
        );
        let first = parse_body(body.as_bytes(), 10_000, 10_000).unwrap();
        let again = serde_json::to_vec(&first[0]).unwrap();
        let second = parse_body(&again, 10_000, 10_000).unwrap();
        assert_eq!(first, second);
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
