//! State-store conformance for dead letters (see `crate::dead`), failure counts, failing and
//! reopening a run without reading its state, and what the sweeper reads and writes. Part of
//! [`super::state::run_all`].

use std::time::Duration;

use super::Factory;
use super::state::sample_run;
use super::unique;
use crate::dead::DeadLetter;
use crate::event::now_ms;
use crate::run::{RunFilter, RunStatus};
use crate::state::StateStore;

/// Runs the dead-letter cases.
pub async fn run_all(factory: &dyn Factory<dyn StateStore>) {
    dead_letters_are_kept_listed_and_dropped(factory).await;
    failures_are_counted_per_message(factory).await;
    a_run_is_failed_and_reopened_without_its_state(factory).await;
    running_runs_are_listed_oldest_first_for_the_sweeper(factory).await;
}

/// `running_runs` pages through running runs created before a time, oldest first (ties by
/// id), leaving finished ones out; `append_timeline` writes to running runs only.
pub async fn running_runs_are_listed_oldest_first_for_the_sweeper(
    factory: &dyn Factory<dyn StateStore>,
) {
    let store = factory.make().await;
    let function = unique("fn");
    let mut made = Vec::new();
    for (user, created_at) in [
        ("u1", 2000),
        ("u2", 1000),
        ("u3", 1000),
        ("u4", 5000),
        ("u5", 1500),
    ] {
        let mut run = sample_run(&function, user);
        run.created_at = created_at;
        store.create_run(&run).await.expect("create");
        made.push(run);
    }
    store
        .fail_run(&made[4].id, "finished", now_ms())
        .await
        .expect("fail");
    let mut ties = [made[1].id.clone(), made[2].id.clone()];
    ties.sort();
    let first = store.running_runs(3000, None, 2).await.expect("list");
    let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [ties[0].as_str(), ties[1].as_str()],
        "oldest first, ties by id"
    );
    assert_eq!(first[0].created_at, 1000);
    let second = store
        .running_runs(3000, first.last(), 2)
        .await
        .expect("list");
    let ids: Vec<&str> = second.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [made[0].id.as_str()],
        "the finished run and the one created after are left out"
    );
    assert!(
        store
            .running_runs(3000, second.last(), 2)
            .await
            .expect("list")
            .is_empty()
    );

    let entry = crate::run::HistoryEntry::now("run.swept").detail("enqueued again a");
    assert!(
        store
            .append_timeline(&made[0].id, &entry)
            .await
            .expect("append")
    );
    let run = store.get_run(&made[0].id).await.expect("get").expect("run");
    assert_eq!(run.history.last(), Some(&entry));
    assert!(
        !store
            .append_timeline(&made[4].id, &entry)
            .await
            .expect("append"),
        "a finished run's timeline is closed"
    );
}

/// Dead letters: recorded once per id, listed newest first a page at a time, read, deleted.
pub async fn dead_letters_are_kept_listed_and_dropped(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let mut letters = Vec::new();
    for i in 0..3u8 {
        let mut dead = DeadLetter::new(
            "steps",
            &format!("k{i}"),
            &[b'{', b'}', 0xff - i],
            format!("reason {i}"),
            5,
        );
        dead.run_id = Some(format!("run-{i}"));
        // ULIDs made in one millisecond may not sort in the order they were made.
        dead.id = format!("01J{i:023}");
        store.put_dead_letter(&dead).await.expect("put");
        letters.push(dead);
    }
    let mut changed = letters[0].clone();
    changed.reason = "changed".into();
    store.put_dead_letter(&changed).await.expect("put again");
    assert_eq!(
        store.get_dead_letter(&letters[0].id).await.expect("get"),
        Some(letters[0].clone()),
        "a known id keeps its first record"
    );
    let first = store.list_dead_letters(None, 2).await.expect("list");
    let ids: Vec<&str> = first.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [letters[2].id.as_str(), letters[1].id.as_str()],
        "newest first"
    );
    assert_eq!(first.next.as_deref(), Some(letters[1].id.as_str()));
    let second = store
        .list_dead_letters(first.next.as_deref(), 2)
        .await
        .expect("list");
    assert_eq!(second.items, vec![letters[0].clone()]);
    assert_eq!(second.next, None);
    assert!(
        store
            .delete_dead_letter(&letters[1].id)
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_dead_letter(&letters[1].id)
            .await
            .expect("delete again")
    );
    assert_eq!(
        store.get_dead_letter(&letters[1].id).await.expect("get"),
        None
    );
    let all = store.list_dead_letters(None, 10).await.expect("list");
    assert_eq!(all.items.len(), 2);
    assert_eq!(
        all.items[0].payload_bytes().expect("bytes"),
        [b'{', b'}', 0xfd],
        "a payload that is not UTF-8 comes back as it was"
    );
}

/// Failures are counted per message key and forgotten after their time to live.
pub async fn failures_are_counted_per_message(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let (a, b) = (unique("msg-a"), unique("msg-b"));
    let hour = Duration::from_secs(3600);
    for n in 1..=3 {
        assert_eq!(store.count_failure(&a, hour).await.expect("count"), n);
    }
    assert_eq!(store.count_failure(&b, hour).await.expect("count"), 1);
    let short = Duration::from_millis(30);
    assert_eq!(store.count_failure(&b, short).await.expect("count"), 2);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        store.count_failure(&b, hour).await.expect("count"),
        1,
        "a count past its time to live starts again"
    );
}

/// `fail_run` fails a running run with the cause in its timeline and files it as failed;
/// `reopen_run` makes it running again; each applies once.
pub async fn a_run_is_failed_and_reopened_without_its_state(factory: &dyn Factory<dyn StateStore>) {
    let store = factory.make().await;
    let function = unique("fn");
    let run = sample_run(&function, "u1");
    store.create_run(&run).await.expect("create");
    let listed = |status| {
        let store = &store;
        let function = function.clone();
        async move {
            store
                .list_runs(&RunFilter {
                    function_id: Some(function),
                    status: Some(status),
                    ..RunFilter::default()
                })
                .await
                .expect("list")
                .len()
        }
    };
    let at = now_ms();
    assert!(
        store
            .fail_run(&run.id, "dead letter 01J: corrupt", at)
            .await
            .expect("fail")
    );
    assert!(
        !store
            .fail_run(&run.id, "again", at)
            .await
            .expect("fail again")
    );
    let failed = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.ended_at, Some(at));
    let last = failed.history.last().expect("an entry");
    assert_eq!(last.kind, "run.failed");
    assert_eq!(last.detail.as_deref(), Some("dead letter 01J: corrupt"));
    assert_eq!(listed(RunStatus::Failed).await, 1);
    assert_eq!(listed(RunStatus::Running).await, 0);
    let outline = store
        .get_run_outline(&run.id)
        .await
        .expect("outline")
        .expect("a run");
    assert_eq!(outline.status, Some(RunStatus::Failed));
    assert_eq!(outline.created_at, Some(run.created_at));
    assert_eq!(outline.ended_at, Some(at));
    assert_eq!(outline.history, failed.history);
    assert_eq!(
        store.get_run_outline("no-such-run").await.expect("outline"),
        None
    );

    assert!(
        !store
            .reopen_run(&run.id, "dead letter 01K:", "retried", at + 1)
            .await
            .expect("reopen"),
        "a run failed by another cause stays failed"
    );
    assert!(
        store
            .reopen_run(&run.id, "dead letter 01J:", "retried", at + 1)
            .await
            .expect("reopen")
    );
    assert!(
        !store
            .reopen_run(&run.id, "dead letter 01J:", "again", at + 1)
            .await
            .expect("reopen again")
    );
    let reopened = store.get_run(&run.id).await.expect("get").expect("run");
    assert_eq!(reopened.status, RunStatus::Running);
    assert_eq!(reopened.ended_at, None);
    assert_eq!(
        reopened.history.last().map(|e| e.kind.as_str()),
        Some("run.reopened")
    );
    assert_eq!(listed(RunStatus::Running).await, 1);
    assert_eq!(listed(RunStatus::Failed).await, 0);
    store
        .delete_finished_runs(now_ms() + 60_000, 100)
        .await
        .expect("delete");
    assert!(
        store.get_run(&run.id).await.expect("get").is_some(),
        "a reopened run is no longer filed as finished: the retention keeps it"
    );

    let missing = store
        .fail_run("no-such-run", "x", at)
        .await
        .expect_err("no run");
    assert_eq!(missing.kind(), crate::ErrorKind::NotFound);
}
