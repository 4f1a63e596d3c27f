//! Helpers shared by the integration tests: one librdkafka mock cluster per test process (the
//! broker helpers are weir-core's `testkit::broker`).
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::mocking::MockCluster;

/// How long a delivery that should come may take on the mock cluster (a consumer-group join
/// takes seconds there), for weir-core's `testkit::broker::{recv_within, take_within}`.
pub const WAIT: Duration = Duration::from_secs(15);

/// The bootstrap servers of this process's mock cluster (started on first use, one broker,
/// kept until the process exits).
pub fn mock_servers() -> &'static str {
    static SERVERS: OnceLock<String> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let cluster = MockCluster::new(1).expect("start the librdkafka mock cluster");
        let servers = cluster.bootstrap_servers();
        // The cluster must outlive every client of the process.
        std::mem::forget(cluster);
        servers
    })
}

/// A `kafka://` URL of the mock cluster with `params` appended.
pub fn url_with(params: &str) -> String {
    format!("kafka://{}?{params}", mock_servers())
}
