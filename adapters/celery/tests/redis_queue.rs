//! Taking messages a real Celery 5.7 producer pushed into kombu's Redis lists: priority 0
//! first, nothing lost when a consumer dies holding one (it is handed back and taken again),
//! nothing handed back from a live consumer.
//!
//! Needs a Redis (`WEIR_TEST_REDIS_URL`) and a Python with Celery (`WEIR_TEST_CELERY_PYTHON`).

use std::time::Duration;

use weir_adapter_celery::redis_envelope;
use weir_adapter_celery::redis_queue::RedisQueue;
use weir_core::testkit::{service_url, unique};

/// Sends tasks to queue argv[2] on broker argv[1], one per priority in argv[3..]; prints the
/// task ids, one per line.
const PRODUCER: &str = r#"
import sys
from celery import Celery
app = Celery("tasks", broker=sys.argv[1])
app.conf.task_routes = {"*": {"queue": sys.argv[2]}}
for priority in sys.argv[3:]:
    print(app.send_task("tasks.add", (1, 2), priority=int(priority)).id)
"#;

fn produce(python: &str, redis: &str, queue: &str, priorities: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(python)
        .args(["-c", PRODUCER, redis, queue])
        .args(priorities)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

async fn take_id(queue: &RedisQueue) -> (String, weir_adapter_celery::redis_queue::Taken) {
    let taken = queue
        .take(Duration::from_secs(5))
        .await
        .expect("take")
        .expect("a message");
    let message = redis_envelope::decode(&taken.entry).expect("decodes");
    (message.id, taken)
}

#[tokio::test]
async fn priority_0_first_and_nothing_lost_to_a_dead_consumer() {
    let (Some(redis), Some(python)) = (
        service_url("WEIR_TEST_REDIS_URL"),
        service_url("WEIR_TEST_CELERY_PYTHON"),
    ) else {
        return;
    };
    let queue = unique("celery");
    let ids = produce(&python, &redis, &queue, &["0", "6", "0"]);
    assert_eq!(ids.len(), 3);

    // A takes the oldest priority-0 task, then dies without acking it (no heartbeat).
    let dead = RedisQueue::connect(&redis, &queue, &unique("dead"))
        .await
        .expect("connect");
    let (first, _lost) = take_id(&dead).await;
    assert_eq!(first, ids[0]);

    let live = RedisQueue::connect(&redis, &queue, &unique("live"))
        .await
        .expect("connect");
    live.heartbeat(Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(
        live.recover().await.expect("recover"),
        1,
        "the dead consumer's task"
    );
    // The handed-back task comes next, then the other priority-0 task, then priority 6.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (id, taken) = take_id(&live).await;
        assert!(live.ack(&taken).await.expect("ack"), "it was held");
        seen.push(id);
    }
    assert_eq!(seen, [ids[0].clone(), ids[2].clone(), ids[1].clone()]);
    assert!(
        live.take(Duration::from_millis(300))
            .await
            .expect("take")
            .is_none(),
        "every task was taken once"
    );

    // A live consumer keeps what it holds.
    let more = produce(&python, &redis, &queue, &["0"]);
    let (id, held) = take_id(&live).await;
    assert_eq!(id, more[0]);
    assert_eq!(live.recover().await.expect("recover"), 0);
    assert!(live.ack(&held).await.expect("ack"));
    assert!(!live.ack(&held).await.expect("ack"), "acked once only");
    assert_eq!(
        live.recover().await.expect("recover"),
        0,
        "acked: nothing to hand back"
    );

    // A released task is back at once; leaving hands back what is still held.
    let more = produce(&python, &redis, &queue, &["0"]);
    let (id, held) = take_id(&live).await;
    assert_eq!(id, more[0]);
    assert!(live.release(&held).await.expect("release"));
    assert!(
        !live.release(&held).await.expect("release"),
        "not held any more"
    );
    let (again, _held) = take_id(&live).await;
    assert_eq!(again, id, "taken again");
    assert_eq!(live.release_all().await.expect("leave"), 1);
    let next = RedisQueue::connect(&redis, &queue, &unique("next"))
        .await
        .expect("connect");
    let (again, taken) = take_id(&next).await;
    assert_eq!(again, id, "what the leaver held is the next to take");
    assert!(next.ack(&taken).await.expect("ack"));

    // A dead consumer of another queue whose name starts with this one's is not this queue's.
    let other = format!("{queue}:b");
    let more = produce(&python, &redis, &other, &["0"]);
    let dead_other = RedisQueue::connect(&redis, &other, &unique("dead"))
        .await
        .expect("connect");
    let (id, _lost) = take_id(&dead_other).await;
    assert_eq!(id, more[0]);
    assert_eq!(
        live.recover().await.expect("recover"),
        0,
        "not this queue's consumer"
    );
    let other_live = RedisQueue::connect(&redis, &other, &unique("live"))
        .await
        .expect("connect");
    other_live
        .heartbeat(Duration::from_secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(other_live.recover().await.expect("recover"), 1);
    let (id, taken) = take_id(&other_live).await;
    assert_eq!(id, more[0]);
    assert!(other_live.ack(&taken).await.expect("ack"));
}
