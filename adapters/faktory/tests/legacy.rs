//! Faktory's failure rules on a real job store (the memory state store's): a reservation that
//! runs out is a failure; `retry` decides between the retries, the dead set and nothing.

use serde_json::Value;
use weir_adapter_faktory::job::Job;
use weir_adapter_faktory::legacy::{self, FailReport, Failed};
use weir_core::jobs::{JobSet, JobStore};
use weir_core::state::StateStore;
use weir_state_memory::MemoryStateStore;

fn job(jid: &str, extra: &str) -> Job {
    let mut job =
        Job::parse(format!(r#"{{"jid":"{jid}","jobtype":"t","args":[]{extra}}}"#).as_bytes())
            .expect("json");
    job.validate(0).expect("valid");
    job
}

async fn set_job(store: &dyn JobStore, set: JobSet, jid: &str) -> Option<(Value, i64)> {
    store
        .set_jobs(set, 0, 100)
        .await
        .expect("jobs")
        .into_iter()
        .find(|(j, _)| j.id == jid)
        .map(|(j, at)| (serde_json::from_slice(&j.payload).expect("json"), at))
}

#[tokio::test]
async fn a_reservation_that_runs_out_is_a_failure_then_retried() {
    let state = MemoryStateStore::new();
    let store = state.jobs().expect("jobs");
    let now = weir_core::event::now_ms();
    legacy::keep(
        store.as_ref(),
        &job("jid-expire", r#","reserve_for":120"#),
        None,
    )
    .await
    .expect("keep");
    let queues = ["default".to_string()];
    store
        .reserve(&queues, now)
        .await
        .expect("reserve")
        .expect("job");
    // Before its 120 s, nothing happens; after, it is failed into the retries.
    legacy::maintain(store.as_ref(), now + 119_000)
        .await
        .expect("maintain");
    assert!(store.reservation("jid-expire").await.expect("r").is_some());
    legacy::maintain(store.as_ref(), now + 121_000)
        .await
        .expect("maintain");
    assert!(store.reservation("jid-expire").await.expect("r").is_none());
    let (retried, at) = set_job(store.as_ref(), JobSet::Retries, "jid-expire")
        .await
        .expect("in the retries");
    assert_eq!(retried["failure"]["errtype"], "ReservationExpired");
    assert_eq!(retried["failure"]["retry_count"], 0);
    let wait = at - (now + 121_000);
    assert!((15_000..=44_000).contains(&wait), "backoff {wait} ms");
    // Once due, it is back on its queue with its failure.
    legacy::maintain(store.as_ref(), at)
        .await
        .expect("maintain");
    let back = store
        .reserve(&queues, at)
        .await
        .expect("reserve")
        .expect("job");
    let back: Value = serde_json::from_slice(&back.payload).expect("json");
    assert_eq!(
        back["failure"]["message"],
        "Faktory job reservation expired"
    );
    let counts = store.counts().await.expect("counts");
    assert_eq!((counts.processed, counts.failures), (1, 1));
}

#[tokio::test]
async fn retry_decides_between_retries_dead_and_nothing() {
    let state = MemoryStateStore::new();
    let store = state.jobs().expect("jobs");
    let now = weir_core::event::now_ms();
    for (jid, extra) in [
        ("jid-retry0", r#","retry":0"#),
        ("jid-retry-1", r#","retry":-1"#),
        ("jid-retry2", r#","retry":2"#),
    ] {
        legacy::keep(store.as_ref(), &job(jid, extra), None)
            .await
            .expect("keep");
    }
    let queues = ["default".to_string()];
    for _ in 0..3 {
        store.reserve(&queues, now).await.expect("reserve");
    }
    let report = |jid: &str| FailReport {
        jid: jid.into(),
        errtype: "E".into(),
        message: "boom".into(),
        backtrace: None,
    };
    let fail = |jid: &'static str| {
        let store = store.clone();
        async move {
            legacy::fail(store.as_ref(), report(jid), now)
                .await
                .expect("fail")
        }
    };
    assert_eq!(fail("jid-retry0").await, Failed::Dropped);
    assert_eq!(fail("jid-retry-1").await, Failed::Dead);
    assert!(matches!(fail("jid-retry2").await, Failed::Retry(_)));
    assert_eq!(
        fail("jid-retry2").await,
        Failed::NotFound,
        "no longer reserved"
    );
    assert!(
        set_job(store.as_ref(), JobSet::Dead, "jid-retry-1")
            .await
            .is_some()
    );
    assert!(
        set_job(store.as_ref(), JobSet::Dead, "jid-retry0")
            .await
            .is_none()
    );
    assert!(
        set_job(store.as_ref(), JobSet::Retries, "jid-retry0")
            .await
            .is_none()
    );
    // jid-retry2 fails twice more: retried once more, then dead.
    for expected in ["retry", "dead"] {
        store
            .move_from_set(
                JobSet::Retries,
                &["jid-retry2".into()],
                weir_core::jobs::Move::ToQueue,
            )
            .await
            .expect("requeue");
        store
            .reserve(&queues, now)
            .await
            .expect("reserve")
            .expect("job");
        let outcome = fail("jid-retry2").await;
        match expected {
            "retry" => assert!(matches!(outcome, Failed::Retry(_)), "{outcome:?}"),
            _ => assert_eq!(outcome, Failed::Dead),
        }
    }
    let (dead, _) = set_job(store.as_ref(), JobSet::Dead, "jid-retry2")
        .await
        .expect("dead");
    assert_eq!(dead["failure"]["retry_count"], 2);
    assert_eq!(dead["failure"]["remaining"], 0);
}
