//! Keeps a task's progress reports (STARTED, RETRY) from overtaking its final state in this
//! process. The Redis result backend refuses a late progress report itself (see
//! [`crate::results::RedisResults::store`]); `rpc://` replies are messages, and a client that reads
//! `.state` takes the last one it got, so a STARTED sent after the SUCCESS would undo it.
//!
//! A report holds the task's gate open (shared) while it is sent; the final state closes it
//! for good: it waits for the reports under way and refuses later ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// How long a task's gate is kept after it was opened: reports come within moments of the
/// step that makes them, so a gate this old is of no use.
const KEPT: Duration = Duration::from_secs(120);

/// Gates kept at most (the oldest go first past this).
const MOST: usize = 100_000;

/// The gates of the tasks answered in this process, by task id; or no gates at all
/// ([`ProgressGate::off`]) where the results themselves keep the order.
#[derive(Debug, Clone)]
pub struct ProgressGate {
    inner: Option<Arc<Mutex<Gates>>>,
}

#[derive(Debug, Default)]
struct Gates {
    by_task: HashMap<String, Arc<Gate>>,
    /// Task ids in the order their gates were made, for pruning.
    order: VecDeque<(Instant, String)>,
}

#[derive(Debug, Default)]
struct Gate {
    /// Set once the final state is about to be sent.
    closed: std::sync::atomic::AtomicBool,
    /// Reports hold it shared; the final state takes it alone.
    sending: Arc<RwLock<()>>,
}

/// Held while a progress report is sent: the task's final state waits for it.
#[derive(Debug)]
pub struct ReportPass {
    _held: Option<OwnedRwLockReadGuard<()>>,
}

impl ProgressGate {
    /// Gates that keep the order (for `rpc://` replies).
    pub fn on() -> Self {
        ProgressGate {
            inner: Some(Arc::default()),
        }
    }

    /// No gates: every report passes, closing waits for nothing (the Redis result backend
    /// refuses a late report by itself).
    pub fn off() -> Self {
        ProgressGate { inner: None }
    }

    /// A pass to send a progress report of `task_id`, or `None` when its final state is sent
    /// or being sent (the report would come after it).
    pub async fn report(&self, task_id: &str) -> Option<ReportPass> {
        let Some(gate) = self.gate(task_id) else {
            return Some(ReportPass { _held: None });
        };
        if gate.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let held = gate.sending.clone().read_owned().await;
        // Closed while this report waited: the final state went first.
        if gate.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(ReportPass { _held: Some(held) })
    }

    /// Closes `task_id`'s gate and waits for the reports being sent: once this returns, the
    /// final state can be sent and no report of this process follows it.
    pub async fn close(&self, task_id: &str) {
        let Some(gate) = self.gate(task_id) else {
            return;
        };
        gate.closed
            .store(true, std::sync::atomic::Ordering::Release);
        // The exclusive lock is had once every pass taken before the close is dropped.
        drop(gate.sending.write().await);
    }

    /// The gate of `task_id`, made if it has none (`None` when gates are off); prunes gates
    /// older than [`KEPT`].
    fn gate(&self, task_id: &str) -> Option<Arc<Gate>> {
        let mut gates = self
            .inner
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(gate) = gates.by_task.get(task_id) {
            return Some(gate.clone());
        }
        let now = Instant::now();
        while let Some((made, _)) = gates.order.front() {
            if now.duration_since(*made) < KEPT && gates.order.len() < MOST {
                break;
            }
            let Some((_, id)) = gates.order.pop_front() else {
                break;
            };
            // A gate in use (a report being sent, a close waiting) stays, as if made now.
            let in_use = gates
                .by_task
                .get(&id)
                .is_some_and(|g| Arc::strong_count(g) > 1 || Arc::strong_count(&g.sending) > 1);
            if in_use {
                gates.order.push_back((now, id));
                break;
            }
            gates.by_task.remove(&id);
        }
        let gate = Arc::new(Gate::default());
        gates.by_task.insert(task_id.to_string(), gate.clone());
        gates.order.push_back((now, task_id.to_string()));
        Some(gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_report_after_the_final_state_is_refused() {
        let gate = ProgressGate::on();
        assert!(gate.report("t").await.is_some(), "open before the end");
        gate.close("t").await;
        assert!(gate.report("t").await.is_none(), "closed after the end");
        assert!(gate.report("other").await.is_some(), "gates are per task");
    }

    #[tokio::test]
    async fn the_final_state_waits_for_the_report_being_sent() {
        let gate = ProgressGate::on();
        let pass = gate.report("t").await.expect("open");
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close("t").await }
        });
        // The close cannot finish while the pass is held.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "close waited for the report");
        drop(pass);
        closing
            .await
            .expect("close finishes once the report is sent");
        assert!(gate.report("t").await.is_none());
    }

    #[tokio::test]
    async fn gates_that_are_off_pass_everything() {
        let gate = ProgressGate::off();
        let _pass = gate.report("t").await.expect("passes");
        gate.close("t").await;
        assert!(gate.report("t").await.is_some());
    }
}
