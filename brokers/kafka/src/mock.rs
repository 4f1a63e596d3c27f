//! `kafka+mock://`: a Kafka broker on librdkafka's in-process mock cluster, for trying weir on
//! Kafka (and measuring the driver) without a Kafka cluster.
//!
//! The mock cluster listens on a loopback port and speaks the Kafka protocol, including
//! consumer groups and offset commits, but it keeps everything in this process's memory and
//! creates topics on first use (the broker runs with `topic_creation=auto`). Another process
//! cannot share it: it is for one node only.

use std::sync::mpsc;

use rdkafka::mocking::MockCluster;
use weir_core::{Error, ErrorKind, Result};

/// A running librdkafka mock cluster; dropping it stops the cluster.
///
/// librdkafka's `MockCluster` cannot move between threads, so it lives on a thread of its own
/// that waits for this handle to be dropped.
#[derive(Debug)]
pub struct MockKafka {
    bootstrap_servers: String,
    /// Dropped with the handle: the cluster's thread then destroys the cluster.
    _stop: mpsc::Sender<()>,
}

impl MockKafka {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<std::result::Result<String, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("weir-kafka-mock".into())
            .spawn(move || match MockCluster::new(brokers) {
                Ok(cluster) => {
                    let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                    // Returns when the handle (the only sender) is dropped.
                    let _ = stop_rx.recv();
                    drop(cluster);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("kafka+mock: starting the mock cluster's thread: {e}"),
                )
            })?;
        let bootstrap_servers = ready_rx
            .recv()
            .map_err(|_| {
                Error::new(
                    ErrorKind::Internal,
                    "kafka+mock: the mock cluster's thread ended before the cluster started",
                )
            })?
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("kafka+mock: starting librdkafka's mock cluster: {e}"),
                )
            })?;
        Ok(MockKafka {
            bootstrap_servers,
            _stop: stop_tx,
        })
    }

    /// The cluster's `host:port[,host:port…]`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

/// Splits `kafka+mock://[?brokers=N&…]` into the broker count and the `kafka://` URL of the
/// started cluster's other parameters (given `bootstrap`). `None` when `url` is not
/// `kafka+mock://`.
pub(crate) fn mock_url(url: &str) -> Option<Result<(i32, impl FnOnce(&str) -> String)>> {
    let rest = url.strip_prefix("kafka+mock://")?;
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !host.trim_end_matches('/').is_empty() {
        return Some(Err(Error::new(
            ErrorKind::Config,
            "kafka+mock:// starts a mock cluster in this process and takes no host \
             (write kafka+mock://?brokers=N)",
        )
        .permanent()));
    }
    let mut brokers = 1;
    let mut others = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("brokers", n)) => match n.parse::<i32>() {
                Ok(n) if (1..=16).contains(&n) => brokers = n,
                _ => {
                    return Some(Err(Error::new(
                        ErrorKind::Config,
                        format!("kafka+mock: brokers={n:?}: expected a number from 1 to 16"),
                    )
                    .permanent()));
                }
            },
            Some(("topic_creation", _)) => {
                return Some(Err(Error::new(
                    ErrorKind::Config,
                    "kafka+mock: the mock cluster creates topics on first use \
                     (topic_creation=auto is implied)",
                )
                .permanent()));
            }
            _ => others.push(pair.to_owned()),
        }
    }
    others.push("topic_creation=auto".into());
    let query = others.join("&");
    Some(Ok((brokers, move |bootstrap: &str| {
        format!("kafka://{bootstrap}?{query}")
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_urls_pass_other_parameters_on() {
        let (brokers, url) = mock_url("kafka+mock://?brokers=3&prefix=x")
            .expect("a mock URL")
            .expect("valid");
        assert_eq!(brokers, 3);
        assert_eq!(url("h:1"), "kafka://h:1?prefix=x&topic_creation=auto");
        assert!(mock_url("kafka://h:1").is_none());
        for bad in [
            "kafka+mock://host:9092",
            "kafka+mock://?brokers=0",
            "kafka+mock://?brokers=x",
            "kafka+mock://?topic_creation=admin",
        ] {
            let err = mock_url(bad).expect("a mock URL").err().expect(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }
}
