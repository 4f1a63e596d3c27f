//! The Celery adapter on kombu's Redis transport: `celery+redis://HOST:PORT/DB?queue=weir&results=…`.
//!
//! It takes the tasks of one queue ([`RedisQueue`]), turns each into its event and ingests it,
//! and acks the message once the event is stored; a message it cannot take (pickle, protocol 1,
//! …) gets a FAILURE result naming why and is acked. When a run of a `celery/…` event finishes
//! in this process, its result is written to the Redis result backend ([`RedisResults`]), so
//! the client's `AsyncResult.get()` returns it.

use std::time::Duration;

use async_trait::async_trait;
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::engine::Engine;
use weir_core::event::now_ms;
use weir_core::{Error, Event, Result};

use crate::chain::Routes;
use crate::finished::{self, Answerers, FollowUps, Results, Sender, task_id_of};
use crate::intake::{self, Ingested, Intake, Unhandled};
use crate::message::Refused;
use crate::redis_envelope;
use crate::redis_queue::{RedisQueue, Taken};
use crate::results::{DEFAULT_RESULT_EXPIRES, RedisResults};
use crate::settings::{ResultsSetting, Settings, Transport};

/// How long a consumer's heartbeat lasts: a node that died holding messages has them handed
/// back this long after its last beat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease accepted: a heartbeat every second.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// How often a failed ack is tried before it is left.
const WRITE_TRIES: u32 = 3;

/// The adapter of `celery+redis://` (and `celery+rediss://`) URLs.
#[derive(Debug)]
pub struct CeleryRedisAdapter {
    queue: RedisQueue,
    results: Option<Results>,
    unhandled: Unhandled,
    routes: Routes,
    track_started: bool,
    lease: Duration,
}

impl CeleryRedisAdapter {
    /// Opens the adapter of `url`: `celery+redis://[:PASSWORD@]HOST[:PORT][/DB]?queue=Q` with
    /// `results=redis://…` (percent-encoded; the Redis result backend the clients read) or
    /// `results=none`, and `lease=30s`.
    pub async fn open(url: &str) -> Result<Self> {
        let mut lease = DEFAULT_LEASE;
        let transport = Transport {
            schemes: &["redis", "rediss"],
            example: "celery+redis://HOST[:PORT][/DB]?queue=…",
            params: &["lease"],
            rpc: false,
        };
        let settings = Settings::parse(url, &transport, |param| {
            lease = param.duration()?;
            if lease < MIN_LEASE {
                return Err(param.invalid(format_args!(
                    "must be at least {MIN_LEASE:?}: a node beats every third of it"
                )));
            }
            Ok(())
        })?;
        let Settings {
            broker,
            queue,
            results,
            unhandled,
            routes,
            track_started,
        } = settings;
        let results = match results {
            ResultsSetting::None => None,
            // Refused by `Settings::parse` for this transport already.
            ResultsSetting::Rpc => {
                return Err(Error::config(
                    "celery adapter: results=rpc needs RabbitMQ (celery+amqp://)",
                ));
            }
            ResultsSetting::Redis(url) => Some(Results::Redis(
                RedisResults::connect(&url, DEFAULT_RESULT_EXPIRES).await?,
            )),
        };
        let consumer = format!("weir-{}", ulid::Ulid::new());
        Ok(CeleryRedisAdapter {
            queue: RedisQueue::connect(&broker, &queue, &consumer).await?,
            results,
            unhandled,
            routes,
            track_started,
            lease,
        })
    }

    /// Does what [`intake::decide`] says with the task of `taken`, then acks it: its event is
    /// ingested (to run now or at its eta), or the message goes to the Celery workers' queue,
    /// or the task gets its FAILURE/REVOKED result. A task whose ingest keeps failing (the
    /// state store or the broker down) goes back to the queue. Never leaves a message held.
    async fn handle(&self, engine: &Engine, taken: &Taken, shutdown: &Shutdown) {
        let decoded = redis_envelope::decode(&taken.entry);
        let max = engine.config().max_event_bytes;
        let intake = intake::decide(
            engine,
            decoded,
            self.queue.name(),
            &self.unhandled,
            max,
            now_ms(),
        );
        match intake {
            Intake::Run { event, due_ms } => {
                self.ingest(engine, taken, event, due_ms, shutdown).await;
            }
            Intake::Requeue { task_id, queue } => match self.queue.requeue(taken, &queue).await {
                Ok(true) => {
                    tracing::debug!(
                        task_id,
                        queue,
                        "celery adapter: no weir function handles the task; moved to the Celery workers' queue"
                    );
                }
                Ok(false) => {
                    tracing::warn!(
                        task_id,
                        "celery adapter: the task was handed back before it was moved (this node's lease had lapsed); it will be taken again"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, task_id, "celery adapter: cannot move the task to the Celery workers' queue; it goes back to weir's");
                    self.release(taken, &task_id).await;
                }
            },
            answer @ Intake::Answer { .. } => self.answer(taken, answer).await,
        }
    }

    /// Writes the result of a task weir does not run (when results are written), then acks
    /// it; a result that cannot be written leaves the task to be taken again.
    async fn answer(&self, taken: &Taken, answer: Intake) {
        let Intake::Answer {
            task_id,
            state,
            reason,
        } = answer
        else {
            return;
        };
        tracing::warn!(task_id, reason, "celery task not run");
        if let (Some(results), Some(task_id)) = (&self.results, &task_id)
            && !finished::store(results, task_id, None, &state).await
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.release(taken, task_id).await;
            return;
        }
        self.ack(taken, task_id.as_deref()).await;
    }

    /// Hands `taken` back to the queue, to be taken again.
    async fn release(&self, taken: &Taken, task_id: &str) {
        if let Err(e) = self.queue.release(taken).await {
            tracing::warn!(error = %e, task_id, "celery adapter: cannot hand the task back; it returns when this node's lease lapses");
        }
    }

    /// Ingests `event` (at `due_ms` when given; see [`intake::ingest`]), then acks `taken`;
    /// at shutdown, with the engine still failing, the task goes back to the queue. An event
    /// refused for its own fault gets a FAILURE.
    async fn ingest(
        &self,
        engine: &Engine,
        taken: &Taken,
        event: Event,
        due_ms: Option<i64>,
        shutdown: &Shutdown,
    ) {
        // Stored (and published, or its timer set) before the ack: a crash in between takes
        // the task again, and its event id starts no second run.
        let task_id = task_id_of(&event);
        match intake::ingest(engine, std::slice::from_ref(&event), due_ms, shutdown).await {
            Ingested::Stored => self.ack(taken, Some(&task_id)).await,
            Ingested::Refused(error) => {
                let answer = Intake::refused(Refused {
                    task_id: Some(task_id.clone()),
                    task: None,
                    reason: format!("weir did not accept the task's event: {error}"),
                });
                self.answer(taken, answer).await;
            }
            Ingested::Stopping => self.release(taken, &task_id).await,
        }
    }

    /// Acks `taken`, trying again on errors; a message it cannot ack is handed back when this
    /// node's lease lapses (its event id keeps it from starting a second run).
    async fn ack(&self, taken: &Taken, task_id: Option<&str>) {
        for tries in 1..=WRITE_TRIES {
            match self.queue.ack(taken).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        task_id,
                        "celery adapter: the task was handed back before its ack (this node's lease had lapsed); it will be taken again"
                    );
                    return;
                }
                Err(e) if tries < WRITE_TRIES => {
                    tracing::debug!(error = %e, task_id, "celery adapter: ack failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, task_id, "celery adapter: cannot ack the task");
                }
            }
        }
    }
}

/// Beats every third of the lease and hands back dead consumers' tasks once per lease, until
/// shutdown; a failure is logged and tried again at the next beat.
async fn keep_alive(queue: RedisQueue, lease: Duration, mut shutdown: Shutdown) {
    let mut beats = tokio::time::interval(lease / 3);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.raised() => return,
            _ = beats.tick() => {}
        }
        if let Err(e) = queue.heartbeat(lease).await {
            tracing::warn!(error = %e, "celery adapter: heartbeat failed");
        }
        if count.is_multiple_of(3)
            && let Err(e) = queue.recover().await
        {
            tracing::warn!(error = %e, "celery adapter: handing back dead consumers' tasks failed");
        }
        count += 1;
    }
}

#[async_trait]
impl Adapter for CeleryRedisAdapter {
    fn name(&self) -> &str {
        "celery"
    }

    async fn run(&self, engine: Engine, shutdown: Shutdown) -> Result<()> {
        self.queue.heartbeat(self.lease).await?;
        if let Err(e) = self.queue.recover().await {
            tracing::warn!(error = %e, "celery adapter: handing back dead consumers' tasks failed");
        }
        let keeper = tokio::spawn(keep_alive(self.queue.clone(), self.lease, shutdown.clone()));
        let follow_ups = FollowUps {
            queue: self.queue.name().to_string(),
            sender: Sender::Redis(Box::new(self.queue.clone())),
            routes: self.routes.clone(),
        };
        let answerers = Answerers::start(
            &engine,
            self.results.clone(),
            follow_ups,
            self.track_started,
            &shutdown,
        );
        // A take is never cut short (what it moved would be held by nobody): shutdown is
        // looked at between takes, which wait at most a second.
        while !shutdown.is_raised() {
            match self.queue.take(Duration::from_secs(1)).await {
                Ok(Some(taken)) => self.handle(&engine, &taken, &shutdown).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "celery adapter: taking from Redis failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let _ = keeper.await;
        match self.queue.release_all().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "celery adapter: tasks handed back at shutdown"),
            Err(e) => {
                tracing::warn!(error = %e, "celery adapter: cannot hand back at shutdown; the tasks return when the lease lapses")
            }
        }
        answerers.join().await;
        Ok(())
    }
}
