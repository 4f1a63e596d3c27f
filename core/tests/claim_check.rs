//! The claim check on the embedded drivers: a payload over the broker's limit is stored in the
//! state store, the broker carries a reference, and a subscriber gets the payload back.

use std::sync::Arc;

use bytes::Bytes;
use weir_broker_memory::MemoryBroker;
use weir_core::broker::Broker;
use weir_core::claim_check::{ClaimCheck, MARKER};
use weir_core::state::StateStore;
use weir_state_memory::MemoryStateStore;

#[tokio::test]
async fn large_payloads_travel_by_reference_and_come_back_whole() {
    let inner: Arc<dyn Broker> = Arc::new(MemoryBroker::with_max_message_bytes(1024));
    let state: Arc<dyn StateStore> = Arc::new(MemoryStateStore::new());
    let broker = ClaimCheck::new(inner.clone(), state);
    let mut checked = broker.subscribe("t", "app").await.expect("subscribe");
    let mut raw = inner.subscribe("t", "raw").await.expect("subscribe raw");

    let large = Bytes::from(vec![b'{'; 10_000]);
    let small = Bytes::from_static(b"{\"small\":true}");
    broker
        .publish_batch(
            "t",
            vec![("k1".into(), large.clone()), ("k2".into(), small.clone())],
        )
        .await
        .expect("publish through the claim check");

    // What travelled through the broker: a reference for the large one, the small one as is.
    let r1 = raw.next().await.expect("raw 1");
    assert!(r1.payload.starts_with(MARKER), "a reference travelled");
    assert!(
        r1.payload.len() < 100,
        "{} bytes travelled",
        r1.payload.len()
    );
    let r2 = raw.next().await.expect("raw 2");
    assert_eq!(r2.payload, small);

    // What the subscriber gets: both payloads whole, keys intact; the ack acks the original.
    let d1 = checked.next().await.expect("checked 1");
    assert_eq!(d1.key, "k1");
    assert_eq!(d1.payload, large);
    d1.ack().await.expect("ack");
    let d2 = checked.next().await.expect("checked 2");
    assert_eq!(d2.payload, small);
    d2.ack().await.expect("ack");

    // Without the claim check the broker refuses the large payload.
    let err = inner.publish("t", "k", large).await.expect_err("too large");
    assert_eq!(err.kind(), weir_core::ErrorKind::TooLarge);
}
