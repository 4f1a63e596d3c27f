//! Drivers selected by URL scheme (`memory://`, `redis://…`, `amqp://…`, …).
//!
//! An unknown scheme is an error that lists the schemes this build supports and, for schemes
//! weir knows but this build lacks, the Cargo feature that adds them.

use std::sync::Arc;

use weir_core::broker::Broker;
use weir_core::events::EventStore;
use weir_core::state::StateStore;
use weir_core::{Error, ErrorKind, Result};

/// State schemes weir knows, with the Cargo feature that compiles each in.
const KNOWN_STATE: &[(&str, &str)] = &[
    ("memory", "default"),
    ("redis", "state-redis"),
    ("rediss", "state-redis"),
];
/// Broker schemes weir knows, with the Cargo feature that compiles each in.
const KNOWN_BROKERS: &[(&str, &str)] = &[
    ("memory", "default"),
    ("redis", "broker-redis"),
    ("rediss", "broker-redis"),
    ("amqp", "broker-amqp"),
    ("amqps", "broker-amqp"),
    ("kafka", "broker-kafka"),
    ("kafka+mock", "broker-kafka"),
    ("sqs", "broker-sqs"),
];

/// The state store and event store behind one URL.
pub type StateStores = (Arc<dyn StateStore>, Arc<dyn EventStore>);

fn scheme(url: &str) -> Result<&str> {
    url.split_once("://")
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{url:?} is not a URL (expected e.g. memory://)"),
            )
        })
}

fn unknown(what: &str, scheme: &str, known: &[(&str, &str)], available: &[&str]) -> Error {
    let hint = match known.iter().find(|(s, _)| *s == scheme) {
        Some((_, feature)) => format!("; it needs the `{feature}` Cargo feature of weir"),
        None => String::new(),
    };
    Error::new(
        ErrorKind::Config,
        format!(
            "unknown {what} scheme {scheme:?}{hint} (available in this build: {})",
            available.join(", ")
        ),
    )
}

/// State schemes compiled into this build.
fn state_schemes() -> Vec<&'static str> {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "state-redis") {
        schemes.extend(["redis://", "rediss://"]);
    }
    schemes
}

/// Broker schemes compiled into this build.
fn broker_schemes() -> Vec<&'static str> {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "broker-redis") {
        schemes.extend(["redis://", "rediss://"]);
    }
    if cfg!(feature = "broker-amqp") {
        schemes.extend(["amqp://", "amqps://"]);
    }
    if cfg!(feature = "broker-sqs") {
        schemes.push("sqs://");
    }
    if cfg!(feature = "broker-kafka") {
        schemes.extend(["kafka://", "kafka+mock://"]);
    }
    schemes
}

/// Opens the state and event stores named by `url`.
pub async fn open_state(url: &str) -> Result<StateStores> {
    match scheme(url)? {
        "memory" => Ok((
            Arc::new(weir_state_memory::MemoryStateStore::new()),
            Arc::new(memory_events(url)?),
        )),
        #[cfg(feature = "state-redis")]
        "redis" | "rediss" => {
            let (state, events) = weir_state_redis::open(url).await?;
            Ok((Arc::new(state), Arc::new(events)))
        }
        other => Err(unknown("state", other, KNOWN_STATE, &state_schemes())),
    }
}

/// The event store of `memory://`, or `memory://?retention=7d` (how long accepted events are
/// kept, as the Redis URL's `retention`).
fn memory_events(url: &str) -> Result<weir_state_memory::MemoryEventStore> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut retention = weir_state_memory::DEFAULT_EVENT_RETENTION;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("retention", value)) => {
                retention = weir_core::duration::parse_duration(value).map_err(|m| {
                    Error::new(ErrorKind::Config, format!("memory state: retention: {m}"))
                })?;
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("memory state: unknown parameter {pair:?} (known: retention)"),
                ));
            }
        }
    }
    Ok(weir_state_memory::MemoryEventStore::with_retention(
        retention,
    ))
}

/// `memory://`, or `memory://?max_message_bytes=N` to try a small broker limit locally (larger
/// payloads then go through the state store: the claim check).
fn memory_broker(url: &str) -> Result<weir_broker_memory::MemoryBroker> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut broker = weir_broker_memory::MemoryBroker::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("max_message_bytes", n)) => {
                let n = n.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::Config,
                        format!("memory broker: max_message_bytes={n:?} is not a number"),
                    )
                })?;
                broker = weir_broker_memory::MemoryBroker::with_max_message_bytes(n);
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("memory broker: unknown parameter {pair:?} (known: max_message_bytes)"),
                ));
            }
        }
    }
    Ok(broker)
}

/// Opens the broker named by `url`.
pub async fn open_broker(url: &str) -> Result<Arc<dyn Broker>> {
    match scheme(url)? {
        "memory" => Ok(Arc::new(memory_broker(url)?)),
        #[cfg(feature = "broker-redis")]
        "redis" | "rediss" => Ok(Arc::new(
            weir_broker_redis::RedisBroker::connect(url).await?,
        )),
        #[cfg(feature = "broker-amqp")]
        "amqp" | "amqps" => Ok(Arc::new(weir_broker_amqp::AmqpBroker::connect(url).await?)),
        #[cfg(feature = "broker-sqs")]
        "sqs" => Ok(Arc::new(weir_broker_sqs::SqsBroker::connect(url).await?)),
        #[cfg(feature = "broker-kafka")]
        "kafka" | "kafka+mock" => Ok(Arc::new(
            weir_broker_kafka::KafkaBroker::connect(url).await?,
        )),
        other => Err(unknown("broker", other, KNOWN_BROKERS, &broker_schemes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_list_what_is_available() {
        let err = open_state("postgres://x")
            .await
            .err()
            .expect("unknown scheme");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("available in this build: memory://"),
            "{err}"
        );
        let err = open_broker("nats://localhost:4222")
            .await
            .err()
            .expect("unknown scheme");
        assert!(
            err.to_string().contains("unknown broker scheme \"nats\"")
                && err
                    .to_string()
                    .contains("available in this build: memory://"),
            "{err}"
        );
        // A scheme weir knows but this build lacks names the feature that adds it.
        if !cfg!(feature = "broker-kafka") {
            let err = open_broker("kafka://localhost:9092")
                .await
                .err()
                .expect("not compiled in");
            assert!(
                err.to_string().contains("`broker-kafka` Cargo feature"),
                "{err}"
            );
        }
        assert!(open_state("nonsense").await.is_err());
        assert!(open_state("memory://").await.is_ok());
    }

    #[tokio::test]
    async fn memory_state_takes_a_retention_and_refuses_other_parameters() {
        assert!(open_state("memory://?retention=1d").await.is_ok());
        for (url, says) in [
            ("memory://?retention=soon", "retention"),
            (
                "memory://?retension=1d",
                "unknown parameter \"retension=1d\"",
            ),
        ] {
            let err = open_state(url).await.err().expect(url).to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
