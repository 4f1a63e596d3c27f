//! Jobs kept for workers outside weir (an adapter's: Faktory workers that FETCH them), in the
//! state store, so that every node sees the same jobs and a node's death loses none.
//!
//! A capability of a state store: [`crate::state::StateStore::jobs`] hands out a [`JobStore`]
//! when the store has one (memory and Redis do). The model is Faktory's: named queues served
//! in the order a worker lists them, each first in first out; a job taken from a queue is
//! reserved until a time, and a reservation that runs out is found by [`JobStore::expired`];
//! and three sets of jobs ordered by a time: scheduled (due then), retries (due then), dead
//! (kept until then). Every move of a job from one place to another is one atomic step, so a
//! job is always in exactly one place, whichever node moves it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// A job: an id (unique among the jobs kept; no `\n`), its queue, how long a worker may hold
/// it, and its payload (opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// The job's id (Faktory's `jid`).
    pub id: String,
    /// The queue it is served from.
    pub queue: String,
    /// How long a reservation of it lasts, in milliseconds.
    pub reserve_ms: u64,
    /// What the worker gets.
    pub payload: Bytes,
}

/// The sets of jobs waiting for a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobSet {
    /// Jobs to enqueue at their time.
    Scheduled,
    /// Failed jobs to enqueue again at their time.
    Retries,
    /// Jobs that failed for good, kept until their time.
    Dead,
}

impl JobSet {
    /// Every set.
    pub const ALL: [JobSet; 3] = [JobSet::Scheduled, JobSet::Retries, JobSet::Dead];

    /// The set's name: `scheduled`, `retries`, `dead`.
    pub fn name(self) -> &'static str {
        match self {
            JobSet::Scheduled => "scheduled",
            JobSet::Retries => "retries",
            JobSet::Dead => "dead",
        }
    }
}

/// Where a job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The end of its queue (with this payload).
    Queue(Bytes),
    /// A set, at a time (epoch ms), with this payload.
    Set(JobSet, i64, Bytes),
    /// Nowhere: the job is deleted.
    Gone,
}

/// Where [`JobStore::move_from_set`] moves jobs (each keeps its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// To the end of its queue.
    ToQueue,
    /// To a set, at a time (epoch ms).
    ToSet(JobSet, i64),
    /// Nowhere: deleted.
    Delete,
}

/// A reserved job and when its reservation runs out (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The job, as it was taken.
    pub job: QueuedJob,
    /// When the reservation runs out.
    pub expires_ms: i64,
}

/// How many jobs are where, and the running totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Jobs waiting in each queue known (a queue is known once a job was put on it).
    pub queues: BTreeMap<String, u64>,
    /// Jobs in each set.
    pub sets: BTreeMap<JobSet, u64>,
    /// Jobs reserved by workers.
    pub reserved: u64,
    /// Paused queues.
    pub paused: Vec<String>,
    /// Jobs processed (acknowledged or failed), in all.
    pub processed: u64,
    /// Jobs failed, in all.
    pub failures: u64,
}

/// Jobs kept for outside workers (see the module docs).
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Puts `job` at the end of its queue.
    async fn enqueue(&self, job: &QueuedJob) -> Result<()>;

    /// Puts `job` in `set` at `at_ms` (a job with its id already in the set is replaced).
    async fn add_to_set(&self, set: JobSet, job: &QueuedJob, at_ms: i64) -> Result<()>;

    /// Takes the first job of the first queue of `queues` that has one and is not paused, and
    /// reserves it until `now_ms` plus its `reserve_ms`; `None` when they are all empty (or
    /// paused).
    async fn reserve(&self, queues: &[String], now_ms: i64) -> Result<Option<QueuedJob>>;

    /// The reservation of the job `id`, if it is reserved.
    async fn reservation(&self, id: &str) -> Result<Option<Reservation>>;

    /// Ends the reservation of `id` and puts the job at `then` (acknowledged: [`Place::Gone`]);
    /// false when `id` is not reserved (another call ended it first: of two at once, one
    /// wins).
    async fn settle(&self, id: &str, then: Place) -> Result<bool>;

    /// The jobs waiting in `queue`, oldest first, skipping `offset`, at most `limit` (for
    /// listings; a job may be taken meanwhile).
    async fn queue_jobs(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<QueuedJob>>;

    /// The reservations, earliest expiry first, skipping `offset`, at most `limit` (for
    /// listings).
    async fn reservations(&self, offset: usize, limit: usize) -> Result<Vec<Reservation>>;

    /// Reservations that ran out by `now_ms`, earliest first, at most `limit` (they stay
    /// reserved until [`JobStore::settle`] moves them).
    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Reservation>>;

    /// Moves the jobs of `set` whose time is at or before `now_ms` (at most `limit`): from
    /// scheduled and retries to the end of their queues, from dead to nowhere. Returns how many
    /// moved.
    async fn promote_due(&self, set: JobSet, now_ms: i64, limit: usize) -> Result<usize>;

    /// The jobs of `set` with their times, earliest first, skipping `offset`, at most `limit`.
    async fn set_jobs(
        &self,
        set: JobSet,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(QueuedJob, i64)>>;

    /// Moves the jobs `ids` of `set` to `to`; ids not in the set are skipped. Returns how many
    /// moved.
    async fn move_from_set(&self, set: JobSet, ids: &[String], to: Move) -> Result<usize>;

    /// Deletes every job of `set`.
    async fn clear_set(&self, set: JobSet) -> Result<()>;

    /// Pauses (`true`) or resumes a queue: a paused queue keeps its jobs but serves none.
    async fn pause(&self, queue: &str, paused: bool) -> Result<()>;

    /// Deletes a queue and its waiting jobs.
    async fn remove_queue(&self, queue: &str) -> Result<()>;

    /// Counts jobs by place, and the totals.
    async fn counts(&self) -> Result<JobCounts>;

    /// Adds to the totals: jobs processed and jobs failed.
    async fn record(&self, processed: u64, failures: u64) -> Result<()>;

    /// Deletes every job, queue, pause and total.
    async fn flush(&self) -> Result<()>;
}

/// What an operator told an outside worker (Faktory's "quiet" and "stop" buttons): the
/// worker hears it at its next heartbeat, from whichever node it is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerOrder {
    /// Finish the jobs held, take no more.
    Quiet,
    /// Stop.
    Terminate,
}

impl WorkerOrder {
    /// `quiet` or `terminate`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerOrder::Quiet => "quiet",
            WorkerOrder::Terminate => "terminate",
        }
    }

    /// The order named `name`.
    pub fn parse(name: &str) -> Option<WorkerOrder> {
        match name {
            "quiet" => Some(WorkerOrder::Quiet),
            "terminate" => Some(WorkerOrder::Terminate),
            _ => None,
        }
    }
}

/// How long an order to a worker is kept after it was given or last heard (each BEAT that
/// hears it keeps it this long again).
pub const WORKER_ORDER_KEPT: std::time::Duration = std::time::Duration::from_secs(86_400);

/// What the blob holds once an order was taken back.
const NO_ORDER: &[u8] = b"running";

/// The blob that holds the order to the worker `wid`.
fn worker_order_blob(wid: &str) -> String {
    format!("worker-order:{wid}")
}

/// Gives the worker `wid` an order, for [`WORKER_ORDER_KEPT`]. An order only moves forward
/// (a terminated worker is not made quiet again), as Faktory's states do.
pub async fn order_worker(
    state: &dyn crate::state::StateStore,
    wid: &str,
    order: WorkerOrder,
) -> Result<()> {
    if order == WorkerOrder::Quiet
        && worker_order(state, wid).await? == Some(WorkerOrder::Terminate)
    {
        return Ok(());
    }
    state
        .put_blob(
            &worker_order_blob(wid),
            Bytes::from_static(order.as_str().as_bytes()),
            WORKER_ORDER_KEPT,
        )
        .await
}

/// Takes back the order given to the worker `wid` (it runs again from its next BEAT).
pub async fn clear_worker_order(state: &dyn crate::state::StateStore, wid: &str) -> Result<()> {
    state
        .put_blob(
            &worker_order_blob(wid),
            Bytes::from_static(NO_ORDER),
            WORKER_ORDER_KEPT,
        )
        .await
}

/// Keeps the order of the worker `wid` for [`WORKER_ORDER_KEPT`] more (a BEAT heard it).
pub async fn keep_worker_order(
    state: &dyn crate::state::StateStore,
    wid: &str,
    order: WorkerOrder,
) -> Result<()> {
    state
        .put_blob(
            &worker_order_blob(wid),
            Bytes::from_static(order.as_str().as_bytes()),
            WORKER_ORDER_KEPT,
        )
        .await
}

/// The order given to the worker `wid`, if any.
pub async fn worker_order(
    state: &dyn crate::state::StateStore,
    wid: &str,
) -> Result<Option<WorkerOrder>> {
    let blob = state.get_blob(&worker_order_blob(wid)).await?;
    Ok(blob
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(WorkerOrder::parse))
}
