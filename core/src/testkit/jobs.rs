//! JobStore conformance suite: every state driver that keeps jobs runs [`run_all`] with a
//! [`Factory<dyn JobStore>`](Factory). The cases use queue names of their own and compare
//! totals before and after, so a store shared by every case works too.

use std::collections::HashSet;

use bytes::Bytes;

use super::{Factory, unique};
use crate::event::now_ms;
use crate::jobs::{JobSet, JobStore, Move, Place, QueuedJob};

/// Runs every JobStore conformance test.
pub async fn run_all(factory: &dyn Factory<dyn JobStore>) {
    queues_are_served_in_the_order_listed_and_first_in_first_out(factory).await;
    paused_queues_keep_their_jobs_and_serve_none(factory).await;
    settling_ends_a_reservation_once(factory).await;
    concurrent_reserves_hand_each_job_out_once(factory).await;
    expired_reservations_are_found_until_settled(factory).await;
    set_jobs_wait_for_their_time(factory).await;
    jobs_move_between_sets_by_id(factory).await;
    counts_totals_and_removal(factory).await;
    limits_and_offsets_are_kept(factory).await;
    queues_and_reservations_are_listed(factory).await;
}

/// A job `id` on `queue`, reserved for a minute at a time, whose payload names it.
fn job(queue: &str, id: &str) -> QueuedJob {
    QueuedJob {
        id: id.to_string(),
        queue: queue.to_string(),
        reserve_ms: 60_000,
        payload: Bytes::from(format!("{{\"jid\":\"{id}\"}}")),
    }
}

/// The first queue listed that has a job serves it; within a queue, the oldest first; a job
/// comes back with its payload byte for byte.
pub async fn queues_are_served_in_the_order_listed_and_first_in_first_out(
    factory: &dyn Factory<dyn JobStore>,
) {
    let store = factory.make().await;
    let (low, high) = (unique("low"), unique("high"));
    for id in ["a1", "a2"] {
        store.enqueue(&job(&low, id)).await.expect("enqueue");
    }
    let unicode = QueuedJob {
        payload: Bytes::from("{\"x\":\"é\\u0000\"}\n\r\n"),
        ..job(&high, "b1")
    };
    store.enqueue(&unicode).await.expect("enqueue");
    let order = [high.clone(), low.clone()];
    let mut got = Vec::new();
    while let Some(job) = store.reserve(&order, now_ms()).await.expect("reserve") {
        got.push(job);
    }
    let ids: Vec<&str> = got.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["b1", "a1", "a2"]);
    assert_eq!(got[0], unicode, "the job comes back as it went in");
    assert_eq!(got[1].queue, low);
    let unknown = [unique("none")];
    assert_eq!(
        store.reserve(&unknown, now_ms()).await.expect("reserve"),
        None
    );
}

/// A paused queue serves nothing and keeps its jobs; resumed, it serves them.
pub async fn paused_queues_keep_their_jobs_and_serve_none(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let (paused, open) = (unique("paused"), unique("open"));
    store.enqueue(&job(&paused, "p1")).await.expect("enqueue");
    store.enqueue(&job(&open, "o1")).await.expect("enqueue");
    store.pause(&paused, true).await.expect("pause");
    let both = [paused.clone(), open.clone()];
    let first = store.reserve(&both, now_ms()).await.expect("reserve");
    assert_eq!(
        first.map(|j| j.id),
        Some("o1".into()),
        "the paused queue is skipped"
    );
    assert_eq!(store.reserve(&both, now_ms()).await.expect("reserve"), None);
    let counts = store.counts().await.expect("counts");
    assert!(counts.paused.contains(&paused), "{counts:?}");
    assert_eq!(counts.queues.get(&paused), Some(&1), "{counts:?}");
    store.pause(&paused, false).await.expect("resume");
    let resumed = store.reserve(&both, now_ms()).await.expect("reserve");
    assert_eq!(resumed.map(|j| j.id), Some("p1".into()));
}

/// A reservation is ended once: acknowledged, it is gone; a second settle of it says false;
/// settled to a set, the job is there with the new payload.
pub async fn settling_ends_a_reservation_once(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("settle");
    let (acked, failed) = (unique("acked"), unique("failed"));
    store.enqueue(&job(&queue, &acked)).await.expect("enqueue");
    store.enqueue(&job(&queue, &failed)).await.expect("enqueue");
    let queues = [queue.clone()];
    let now = now_ms();
    let expires = now + 60_000;
    for _ in 0..2 {
        store.reserve(&queues, now).await.expect("reserve");
    }
    let reservation = store
        .reservation(&acked)
        .await
        .expect("reservation")
        .expect("reserved");
    assert_eq!(reservation.expires_ms, expires);
    assert_eq!(reservation.job, job(&queue, &acked));
    let settles = (0..8).map(|_| store.settle(&acked, Place::Gone));
    let won = futures::future::join_all(settles)
        .await
        .into_iter()
        .map(|r| r.expect("settle"))
        .filter(|won| *won)
        .count();
    assert_eq!(won, 1, "of eight settles at once, one ends the reservation");
    assert_eq!(store.reservation(&acked).await.expect("reservation"), None);

    let at = now_ms() + 600_000;
    let retried = Bytes::from_static(b"{\"failure\":1}");
    assert!(
        store
            .settle(&failed, Place::Set(JobSet::Retries, at, retried.clone()))
            .await
            .expect("settle")
    );
    let retries = store
        .set_jobs(JobSet::Retries, 0, 10_000)
        .await
        .expect("set jobs");
    let found = retries
        .iter()
        .find(|(j, _)| j.id == failed)
        .expect("in retries");
    assert_eq!(found.1, at);
    assert_eq!(found.0.payload, retried);
    assert_eq!(found.0.queue, queue);
    store
        .move_from_set(JobSet::Retries, std::slice::from_ref(&failed), Move::Delete)
        .await
        .expect("clean up");
}

/// Eight reservers taking from one queue at once get each of its 40 jobs exactly once.
pub async fn concurrent_reserves_hand_each_job_out_once(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("race");
    for i in 0..40 {
        store
            .enqueue(&job(&queue, &format!("{queue}-{i}")))
            .await
            .expect("enqueue");
    }
    let queues = vec![queue.clone()];
    let reservers = (0..8).map(|_| {
        let (store, queues) = (store.clone(), queues.clone());
        async move {
            let mut got = Vec::new();
            while let Some(job) = store.reserve(&queues, now_ms()).await.expect("reserve") {
                got.push(job.id);
            }
            got
        }
    });
    let all: Vec<String> = futures::future::join_all(reservers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 40, "every job handed out");
    assert_eq!(distinct.len(), 40, "none twice");
    for id in &all {
        store.settle(id, Place::Gone).await.expect("ack");
    }
}

/// A reservation past its expiry is found by `expired` (earliest first) until it is settled.
pub async fn expired_reservations_are_found_until_settled(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("expiry");
    let (late, later, live) = (unique("late"), unique("later"), unique("live"));
    // Reserved for no time, from 2 s and 1 s ago; and for ten minutes from now.
    for (id, reserve_ms) in [(&late, 0), (&later, 0), (&live, 600_000)] {
        let job = QueuedJob {
            reserve_ms,
            ..job(&queue, id)
        };
        store.enqueue(&job).await.expect("enqueue");
    }
    let queues = [queue.clone()];
    let now = now_ms();
    store.reserve(&queues, now - 2_000).await.expect("reserve");
    store.reserve(&queues, now - 1_000).await.expect("reserve");
    store.reserve(&queues, now).await.expect("reserve");
    let expired = store.expired(now, 10_000).await.expect("expired");
    let mine: Vec<&str> = expired
        .iter()
        .filter(|r| r.job.queue == queue)
        .map(|r| r.job.id.as_str())
        .collect();
    assert_eq!(
        mine,
        [late.as_str(), later.as_str()],
        "earliest first, the live one not"
    );
    assert!(
        store
            .settle(&late, Place::Queue(Bytes::from_static(b"again")))
            .await
            .expect("settle")
    );
    let expired = store.expired(now, 10_000).await.expect("expired");
    assert!(!expired.iter().any(|r| r.job.id == late), "settled");
    let back = store
        .reserve(&queues, now_ms())
        .await
        .expect("reserve")
        .expect("requeued");
    assert_eq!(
        (back.id.as_str(), &back.payload[..]),
        (late.as_str(), &b"again"[..])
    );
    for id in [&late, &later, &live] {
        store.settle(id, Place::Gone).await.expect("ack");
    }
}

/// Scheduled and retried jobs go to the end of their queues once due, not before; dead ones
/// are deleted once due.
pub async fn set_jobs_wait_for_their_time(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("sched");
    let now = now_ms();
    let (due, not_yet, retry, dead) = (
        unique("due"),
        unique("notyet"),
        unique("retry"),
        unique("dead"),
    );
    store.enqueue(&job(&queue, "first")).await.expect("enqueue");
    store
        .add_to_set(JobSet::Scheduled, &job(&queue, &due), now - 10)
        .await
        .expect("add");
    store
        .add_to_set(JobSet::Scheduled, &job(&queue, &not_yet), now + 600_000)
        .await
        .expect("add");
    store
        .add_to_set(JobSet::Retries, &job(&queue, &retry), now - 5)
        .await
        .expect("add");
    store
        .add_to_set(JobSet::Dead, &job(&queue, &dead), now - 1)
        .await
        .expect("add");
    assert!(
        store
            .promote_due(JobSet::Scheduled, now, 10_000)
            .await
            .expect("promote")
            >= 1
    );
    assert!(
        store
            .promote_due(JobSet::Retries, now, 10_000)
            .await
            .expect("promote")
            >= 1
    );
    assert!(
        store
            .promote_due(JobSet::Dead, now, 10_000)
            .await
            .expect("promote")
            >= 1
    );
    let queues = [queue.clone()];
    let mut got = Vec::new();
    while let Some(job) = store.reserve(&queues, now_ms()).await.expect("reserve") {
        got.push(job.id);
    }
    assert_eq!(
        got,
        ["first".to_string(), due, retry],
        "due jobs join the end of the queue"
    );
    for id in &got {
        store.settle(id, Place::Gone).await.expect("ack");
    }
    let scheduled = store
        .set_jobs(JobSet::Scheduled, 0, 10_000)
        .await
        .expect("jobs");
    assert!(
        scheduled.iter().any(|(j, _)| j.id == not_yet),
        "not due yet"
    );
    let dead_jobs = store.set_jobs(JobSet::Dead, 0, 10_000).await.expect("jobs");
    assert!(
        !dead_jobs.iter().any(|(j, _)| j.id == dead),
        "a dead job past its time goes"
    );
    store
        .move_from_set(JobSet::Scheduled, &[not_yet], Move::Delete)
        .await
        .expect("clean up");
}

/// Jobs move out of a set by id: to their queue, to another set, or nowhere; a set lists its
/// jobs earliest first and is cleared whole.
pub async fn jobs_move_between_sets_by_id(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("mutate");
    let ids: Vec<String> = (0..4).map(|i| format!("{queue}-{i}")).collect();
    let base = now_ms() + 600_000;
    for (i, id) in ids.iter().enumerate().rev() {
        store
            .add_to_set(JobSet::Retries, &job(&queue, id), base + i as i64)
            .await
            .expect("add");
    }
    let listed: Vec<String> = store
        .set_jobs(JobSet::Retries, 0, 10_000)
        .await
        .expect("jobs")
        .into_iter()
        .filter(|(j, _)| j.queue == queue)
        .map(|(j, _)| j.id)
        .collect();
    assert_eq!(listed, ids, "earliest first");
    let moved = store
        .move_from_set(
            JobSet::Retries,
            &[ids[0].clone(), "nobody".into()],
            Move::ToQueue,
        )
        .await
        .expect("move");
    assert_eq!(moved, 1, "an id not in the set is skipped");
    let killed = store
        .move_from_set(JobSet::Retries, &ids[1..2], Move::ToSet(JobSet::Dead, base))
        .await
        .expect("kill");
    assert_eq!(killed, 1);
    let dead = store.set_jobs(JobSet::Dead, 0, 10_000).await.expect("jobs");
    assert!(dead.iter().any(|(j, at)| j.id == ids[1] && *at == base));
    let queues = [queue.clone()];
    let back = store
        .reserve(&queues, now_ms())
        .await
        .expect("reserve")
        .expect("requeued");
    assert_eq!(back, job(&queue, &ids[0]));
    store.settle(&back.id, Place::Gone).await.expect("ack");
    store.clear_set(JobSet::Retries).await.expect("clear");
    let left = store
        .set_jobs(JobSet::Retries, 0, 10_000)
        .await
        .expect("jobs");
    assert!(!left.iter().any(|(j, _)| j.queue == queue), "cleared");
    store
        .move_from_set(JobSet::Dead, &ids[1..2], Move::Delete)
        .await
        .expect("clean up");
}

/// Counts follow the jobs; totals add up; a removed queue is gone with its jobs.
pub async fn counts_totals_and_removal(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("counted");
    let before = store.counts().await.expect("counts");
    for i in 0..3 {
        store
            .enqueue(&job(&queue, &format!("{queue}-{i}")))
            .await
            .expect("enqueue");
    }
    let reserved = store
        .reserve(std::slice::from_ref(&queue), now_ms())
        .await
        .expect("reserve")
        .expect("a job");
    store.record(2, 1).await.expect("record");
    let counts = store.counts().await.expect("counts");
    assert_eq!(counts.queues.get(&queue), Some(&2));
    assert_eq!(counts.reserved, before.reserved + 1);
    assert_eq!(counts.processed, before.processed + 2);
    assert_eq!(counts.failures, before.failures + 1);
    store.remove_queue(&queue).await.expect("remove");
    let counts = store.counts().await.expect("counts");
    assert_eq!(counts.queues.get(&queue), None, "removed");
    store.settle(&reserved.id, Place::Gone).await.expect("ack");
}

/// `promote_due` and `expired` take at most their limit, earliest first, and leave the rest;
/// `set_jobs` pages by offset. (The times are in 1970, before any other case's.)
pub async fn limits_and_offsets_are_kept(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("limits");
    let ids: Vec<String> = (0..5).map(|i| format!("{queue}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .add_to_set(JobSet::Scheduled, &job(&queue, id), 1 + i as i64)
            .await
            .expect("add");
    }
    let page: Vec<String> = store
        .set_jobs(JobSet::Scheduled, 1, 2)
        .await
        .expect("jobs")
        .into_iter()
        .map(|(j, _)| j.id)
        .collect();
    assert_eq!(page, ids[1..3], "offset 1, limit 2");
    let promoted = store
        .promote_due(JobSet::Scheduled, now_ms(), 2)
        .await
        .expect("promote");
    assert_eq!(promoted, 2, "at most the limit");
    let left: Vec<String> = store
        .set_jobs(JobSet::Scheduled, 0, 3)
        .await
        .expect("jobs")
        .into_iter()
        .map(|(j, _)| j.id)
        .collect();
    assert_eq!(left, ids[2..5], "the rest stay, in order");
    let queues = [queue.clone()];
    let mut reserved = Vec::new();
    // Reserved for no time, in 1970: the earliest expiries of all.
    for at in [1_000, 2_000] {
        let job = store
            .reserve(&queues, at)
            .await
            .expect("reserve")
            .expect("a job");
        reserved.push(job.id);
    }
    assert_eq!(reserved, ids[0..2], "the two promoted, in order");
    assert_eq!(
        store.reserve(&queues, now_ms()).await.expect("reserve"),
        None
    );
    store
        .move_from_set(JobSet::Scheduled, &ids[2..5], Move::ToQueue)
        .await
        .expect("requeue");
    store
        .reserve(&queues, 3_000)
        .await
        .expect("reserve")
        .expect("a job");
    let expired: Vec<String> = store
        .expired(now_ms(), 2)
        .await
        .expect("expired")
        .into_iter()
        .map(|r| r.job.id)
        .collect();
    assert_eq!(
        expired,
        ids[0..3].iter().take(2).cloned().collect::<Vec<_>>(),
        "the two earliest"
    );
    for id in &ids {
        let _ = store.settle(id, Place::Gone).await;
    }
}

/// A queue's waiting jobs are listed oldest first from an offset; reservations earliest
/// expiry first (the times are in 1970, before any other case's).
pub async fn queues_and_reservations_are_listed(factory: &dyn Factory<dyn JobStore>) {
    let store = factory.make().await;
    let queue = unique("listed");
    let ids: Vec<String> = (0..4).map(|i| format!("{queue}-{i}")).collect();
    for id in &ids {
        store.enqueue(&job(&queue, id)).await.expect("enqueue");
    }
    let listed: Vec<String> = store
        .queue_jobs(&queue, 1, 2)
        .await
        .expect("list")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, ids[1..3]);
    assert!(
        store
            .queue_jobs(&unique("none"), 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    let queues = [queue.clone()];
    // Reserved at 2 s and 1 s after the epoch: the second expires first.
    store.reserve(&queues, 2_000).await.expect("reserve");
    store.reserve(&queues, 1_000).await.expect("reserve");
    let first: Vec<(String, i64)> = store
        .reservations(0, 2)
        .await
        .expect("list")
        .into_iter()
        .map(|r| (r.job.id, r.expires_ms))
        .collect();
    assert_eq!(
        first,
        [(ids[1].clone(), 61_000), (ids[0].clone(), 62_000)],
        "earliest expiry first"
    );
    let rest = store.queue_jobs(&queue, 0, 10).await.expect("list");
    assert_eq!(rest.len(), 2, "two left waiting");
    for id in &ids {
        let _ = store.settle(id, Place::Gone).await;
    }
    store.remove_queue(&queue).await.expect("remove");
}
