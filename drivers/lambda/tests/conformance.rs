//! The runtime-driver conformance suite, every fixture a real invocation at moto (how each
//! fixture's behaviour is produced: `common/harness.rs`).

mod common;

use common::harness::Harness;
use common::{docker_moto, simple_moto};
use weir_core::testkit::driver::run_all;

#[tokio::test]
async fn conformance() {
    let (Some(simple), Some(docker)) = (simple_moto().await, docker_moto().await) else {
        return;
    };
    run_all(&Harness::new(&simple, &docker).await).await;
}
