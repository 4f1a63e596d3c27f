//! Jobs for outside workers, in memory (see `weir_core::jobs`): every move happens under one
//! lock, so each is atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_core::Result;
use weir_core::jobs::{JobCounts, JobSet, JobStore, Move, Place, QueuedJob, Reservation};

/// The jobs of a [`crate::MemoryStateStore`].
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    inner: Mutex<Jobs>,
}

#[derive(Debug, Default)]
struct Jobs {
    /// Waiting jobs by queue, oldest first; a queue is known once a job was put on it.
    queues: BTreeMap<String, VecDeque<QueuedJob>>,
    paused: BTreeSet<String>,
    /// Reserved jobs by id, and their expiry.
    reserved: HashMap<String, Reservation>,
    /// Reservations by expiry, for [`JobStore::expired`].
    expiring: BTreeSet<(i64, String)>,
    /// The sets: jobs by id with their time, and (time, id) in order.
    sets: BTreeMap<JobSet, Set>,
    processed: u64,
    failures: u64,
}

#[derive(Debug, Default)]
struct Set {
    jobs: HashMap<String, (QueuedJob, i64)>,
    order: BTreeSet<(i64, String)>,
}

impl Set {
    fn insert(&mut self, job: QueuedJob, at_ms: i64) {
        self.remove(&job.id);
        self.order.insert((at_ms, job.id.clone()));
        self.jobs.insert(job.id.clone(), (job, at_ms));
    }

    fn remove(&mut self, id: &str) -> Option<(QueuedJob, i64)> {
        let (job, at) = self.jobs.remove(id)?;
        self.order.remove(&(at, id.to_string()));
        Some((job, at))
    }
}

impl Jobs {
    fn set(&mut self, set: JobSet) -> &mut Set {
        self.sets.entry(set).or_default()
    }

    fn put(&mut self, job: QueuedJob, place: Move) {
        match place {
            Move::ToQueue => self
                .queues
                .entry(job.queue.clone())
                .or_default()
                .push_back(job),
            Move::ToSet(set, at) => self.set(set).insert(job, at),
            Move::Delete => {}
        }
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn enqueue(&self, job: &QueuedJob) -> Result<()> {
        self.inner.lock().put(job.clone(), Move::ToQueue);
        Ok(())
    }

    async fn add_to_set(&self, set: JobSet, job: &QueuedJob, at_ms: i64) -> Result<()> {
        self.inner.lock().set(set).insert(job.clone(), at_ms);
        Ok(())
    }

    async fn reserve(&self, queues: &[String], now_ms: i64) -> Result<Option<QueuedJob>> {
        let mut jobs = self.inner.lock();
        for name in queues {
            if jobs.paused.contains(name) {
                continue;
            }
            let Some(job) = jobs.queues.get_mut(name).and_then(|q| q.pop_front()) else {
                continue;
            };
            let expires_ms = now_ms.saturating_add(job.reserve_ms.min(i64::MAX as u64) as i64);
            // The same id reserved twice (pushed twice): the older reservation (and its
            // expiry) goes first, so that the new expiry stays even when both are the same.
            if let Some(old) = jobs.reserved.remove(&job.id) {
                jobs.expiring.remove(&(old.expires_ms, old.job.id));
            }
            jobs.expiring.insert((expires_ms, job.id.clone()));
            jobs.reserved.insert(
                job.id.clone(),
                Reservation {
                    job: job.clone(),
                    expires_ms,
                },
            );
            return Ok(Some(job));
        }
        Ok(None)
    }

    async fn reservation(&self, id: &str) -> Result<Option<Reservation>> {
        Ok(self.inner.lock().reserved.get(id).cloned())
    }

    async fn settle(&self, id: &str, then: Place) -> Result<bool> {
        let mut jobs = self.inner.lock();
        let Some(reservation) = jobs.reserved.remove(id) else {
            return Ok(false);
        };
        jobs.expiring
            .remove(&(reservation.expires_ms, id.to_string()));
        let job = reservation.job;
        match then {
            Place::Queue(payload) => jobs.put(QueuedJob { payload, ..job }, Move::ToQueue),
            Place::Set(set, at, payload) => {
                jobs.put(QueuedJob { payload, ..job }, Move::ToSet(set, at))
            }
            Place::Gone => {}
        }
        Ok(true)
    }

    async fn queue_jobs(&self, queue: &str, offset: usize, limit: usize) -> Result<Vec<QueuedJob>> {
        let jobs = self.inner.lock();
        Ok(jobs
            .queues
            .get(queue)
            .map(|q| q.iter().skip(offset).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn reservations(&self, offset: usize, limit: usize) -> Result<Vec<Reservation>> {
        let jobs = self.inner.lock();
        Ok(jobs
            .expiring
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, id)| jobs.reserved.get(id).cloned())
            .collect())
    }

    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<Reservation>> {
        let jobs = self.inner.lock();
        Ok(jobs
            .expiring
            .iter()
            .take_while(|(expires, _)| *expires <= now_ms)
            .take(limit)
            .filter_map(|(_, id)| jobs.reserved.get(id).cloned())
            .collect())
    }

    async fn promote_due(&self, set: JobSet, now_ms: i64, limit: usize) -> Result<usize> {
        let mut jobs = self.inner.lock();
        let due: Vec<String> = jobs
            .set(set)
            .order
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let to = match set {
            JobSet::Dead => Move::Delete,
            JobSet::Scheduled | JobSet::Retries => Move::ToQueue,
        };
        for id in &due {
            if let Some((job, _)) = jobs.set(set).remove(id) {
                jobs.put(job, to);
            }
        }
        Ok(due.len())
    }

    async fn set_jobs(
        &self,
        set: JobSet,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(QueuedJob, i64)>> {
        let mut jobs = self.inner.lock();
        let set = jobs.set(set);
        Ok(set
            .order
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|(_, id)| set.jobs.get(id).cloned())
            .collect())
    }

    async fn move_from_set(&self, set: JobSet, ids: &[String], to: Move) -> Result<usize> {
        let mut jobs = self.inner.lock();
        let mut moved = 0;
        for id in ids {
            if let Some((job, _)) = jobs.set(set).remove(id) {
                jobs.put(job, to);
                moved += 1;
            }
        }
        Ok(moved)
    }

    async fn clear_set(&self, set: JobSet) -> Result<()> {
        self.inner.lock().sets.remove(&set);
        Ok(())
    }

    async fn pause(&self, queue: &str, paused: bool) -> Result<()> {
        let mut jobs = self.inner.lock();
        if paused {
            jobs.paused.insert(queue.to_string());
        } else {
            jobs.paused.remove(queue);
        }
        Ok(())
    }

    async fn remove_queue(&self, queue: &str) -> Result<()> {
        let mut jobs = self.inner.lock();
        jobs.queues.remove(queue);
        jobs.paused.remove(queue);
        Ok(())
    }

    async fn counts(&self) -> Result<JobCounts> {
        let jobs = self.inner.lock();
        Ok(JobCounts {
            queues: jobs
                .queues
                .iter()
                .map(|(name, q)| (name.clone(), q.len() as u64))
                .collect(),
            sets: JobSet::ALL
                .iter()
                .map(|set| (*set, jobs.sets.get(set).map_or(0, |s| s.jobs.len() as u64)))
                .collect(),
            reserved: jobs.reserved.len() as u64,
            paused: jobs.paused.iter().cloned().collect(),
            processed: jobs.processed,
            failures: jobs.failures,
        })
    }

    async fn record(&self, processed: u64, failures: u64) -> Result<()> {
        let mut jobs = self.inner.lock();
        jobs.processed += processed;
        jobs.failures += failures;
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        *self.inner.lock() = Jobs::default();
        Ok(())
    }
}
