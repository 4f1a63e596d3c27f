//! The engine: ingest → router → executor → scheduler, over the driver traits (see
//! docs/architecture.md, *Engine*).
//!
//! - [`Engine::ingest_body`] validates and stores events, then publishes them on `events`.
//! - The router consumes `events`, matches triggers, creates runs idempotently and enqueues
//!   the root steps on `steps`.
//! - The executor consumes `steps`, runs an attempt on its runtime driver, records the result,
//!   resolves the outgoing edges (join / skip semantics) and finishes the run.
//! - The scheduler fires due timers (retry backoffs onto `steps`, delayed redeliveries, cron
//!   ticks) and deletes finished runs past the run retention.

mod backoff;
mod catalog;
mod dead;
mod deploy;
mod executor;
mod ingest;
mod registry;
mod retention;
mod router;
mod scheduler;
pub mod sweeper;
mod versions;
mod waits;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::driver::DriverSet;
use crate::error::Result;
use crate::events::EventStore;
use crate::metrics::Metrics;
use crate::run::{Run, RunStatus};
use crate::state::StateStore;

pub use backoff::retry_delay;
pub use catalog::{
    Breakage, DEFAULT_SCHEMA_CHECK, MAX_SCHEMA_CHECK, PutSchemaOptions, PutSchemaOutcome,
    PutSchemaReport,
};
pub use dead::MAX_DEAD_LETTER_AFTER;
pub use deploy::{CanaryPolicy, DeployOptions, Deployed};
pub use executor::Executed;
pub use ingest::MAX_INGEST_DEADLINE;
pub use ingest::{parse_body, parse_body_checked};
pub use registry::{CanaryVersion, FunctionRegistry, canary_bucket};
pub use retention::sweep_interval;
pub use versions::VersionReport;
pub use waits::LOOKBACK_LIMIT;

/// Tunables of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest accepted event (JSON bytes): 512 KiB.
    pub max_event_bytes: usize,
    /// Largest accepted request body: 3 MiB.
    pub max_request_bytes: usize,
    /// Step attempts one process runs at once.
    pub executor_concurrency: usize,
    /// Events one process routes at once.
    pub router_concurrency: usize,
    /// How often the scheduler looks for due timers.
    pub scheduler_tick: Duration,
    /// First retry delay (doubled each attempt, with jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Cap on a step's stdout / response body.
    pub max_output_bytes: usize,
    /// How long a running attempt is held without renewal before another node may take it
    /// over (renewed every third of it while the attempt runs).
    pub step_lease: Duration,
    /// How long an `events` or `steps` message waits before it is handled again after the
    /// engine failed on it with an error that retrying soon will not cure (a publish the
    /// broker refuses, a record the state store rejects): the message is kept, and an error
    /// logged each time, until the cause is fixed; the run stays `running` meanwhile.
    /// Transient errors (a store or broker unreachable) are retried after
    /// [`TRANSIENT_ERROR_DELAY`].
    pub stuck_message_delay: Duration,
    /// How long a finished run (its steps' outputs, logs and timeline) is kept before the
    /// scheduler role deletes it; `None` keeps runs for good. Default 7 days, as the Redis
    /// event store keeps events.
    pub run_retention: Option<Duration>,
    /// How often a running attempt checks that its run was not cancelled (renewing its lease
    /// at the same time): a cancelled run's running steps stop within this. Default 1 s.
    pub cancel_check: Duration,
    /// How long ingest keeps trying a store or broker that answers a retryable error (a
    /// restart, a failover) before it answers the producer with it. Default 10 s.
    pub ingest_deadline: Duration,
    /// Strict events: an event whose name has no schema is refused (see [`crate::schema`]).
    /// Default `false`: such events pass unchecked.
    pub strict_events: bool,
    /// After how many failures on one message with an error that is neither retryable nor
    /// "not loaded here" the engine gives up on it: a dead letter, and its run failed (see
    /// `crate::dead`). A message that cannot be decoded is given up on at once. Default 5.
    pub dead_letter_after: u32,
    /// How long a running run may show no progress, with nothing live that would move it on,
    /// before the sweeper enqueues its steps again (see `sweeper`). Default 10 minutes.
    pub stuck_run_grace: Duration,
    /// How often the sweeper runs (on one node at a time). Default 1 minute.
    pub sweep_every: Duration,
    /// How often a node checks whether the catalog (pushed event schemas) changed. Default 1
    /// second: a schema pushed to one node applies on the others within it.
    pub catalog_poll: Duration,
    /// Where versions fetched from the catalog are written to run from (one directory per
    /// function and version, created readable by this user only). Default:
    /// `$HOME/.cache/weir/versions` (without `HOME`, `weir-versions` in the temporary
    /// directory).
    pub versions_dir: std::path::PathBuf,
    /// When a canary is rolled back automatically. Default: after 20 runs, a failure rate 20
    /// points above the live version's.
    pub canary_policy: CanaryPolicy,
}

/// The default [`EngineConfig::versions_dir`]: under the user's cache directory, not a
/// shared temporary directory where another user could plant a version.
fn default_versions_dir() -> std::path::PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => {
            std::path::PathBuf::from(home).join(".cache/weir/versions")
        }
        _ => std::env::temp_dir().join("weir-versions"),
    }
}

/// How long a finished run is kept by default: 7 days.
pub const DEFAULT_RUN_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How long a message waits before it is handled again after a transient engine error.
pub const TRANSIENT_ERROR_DELAY: Duration = Duration::from_millis(500);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_event_bytes: 512 * 1024,
            max_request_bytes: 3 * 1024 * 1024,
            executor_concurrency: 256,
            router_concurrency: 64,
            scheduler_tick: Duration::from_millis(10),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_output_bytes: crate::driver::DEFAULT_MAX_OUTPUT_BYTES,
            step_lease: Duration::from_secs(30),
            stuck_message_delay: Duration::from_secs(30),
            run_retention: Some(DEFAULT_RUN_RETENTION),
            cancel_check: Duration::from_secs(1),
            ingest_deadline: Duration::from_secs(10),
            strict_events: false,
            dead_letter_after: 5,
            stuck_run_grace: Duration::from_secs(600),
            sweep_every: Duration::from_secs(60),
            catalog_poll: Duration::from_secs(1),
            versions_dir: default_versions_dir(),
            canary_policy: CanaryPolicy::default(),
        }
    }
}

/// Which loops a process runs (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Consume `events`.
    pub router: bool,
    /// Consume `steps`.
    pub executor: bool,
    /// Fire due timers, and delete finished runs past the run retention.
    pub scheduler: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles {
        router: true,
        executor: true,
        scheduler: true,
    };
}

/// A run reached a final state (broadcast to local listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFinished {
    /// The run.
    pub run_id: String,
    /// Its function (listeners that care about some functions only need not load the run).
    pub function_id: String,
    /// Its final status.
    pub status: RunStatus,
}

/// A step attempt started, or a step failed an attempt and waits for its retry (broadcast to
/// local listeners, only when there are some: adapters that report progress, such as a Celery
/// task's STARTED and RETRY states).
#[derive(Debug, Clone, PartialEq)]
pub struct StepProgress {
    /// The run.
    pub run_id: String,
    /// Its function.
    pub function_id: String,
    /// The step.
    pub step_id: String,
    /// The attempt that started, or that failed.
    pub attempt: u32,
    /// The id of the run's triggering event.
    pub event_id: String,
    /// Its name (a listener that cares about some events only loads those).
    pub event_name: String,
    /// What happened.
    pub kind: StepProgressKind,
}

/// What a [`StepProgress`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepProgressKind {
    /// The attempt started.
    Started,
    /// The attempt failed with `error`; the step is retried after its backoff.
    WaitingRetry {
        /// The attempt's error.
        error: String,
    },
}

/// The pieces an engine is built from.
pub struct EngineParts {
    /// Runs and timers.
    pub state: Arc<dyn StateStore>,
    /// Accepted events.
    pub events: Arc<dyn EventStore>,
    /// Transport of events and steps.
    pub broker: Arc<dyn Broker>,
    /// Runtime drivers.
    pub drivers: DriverSet,
    /// Tunables.
    pub config: EngineConfig,
}

/// The engine; cheap to clone (shared inside).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<dyn StateStore>,
    events: Arc<dyn EventStore>,
    broker: Arc<dyn Broker>,
    drivers: DriverSet,
    functions: FunctionRegistry,
    config: EngineConfig,
    finished: broadcast::Sender<RunFinished>,
    progress: broadcast::Sender<StepProgress>,
    metrics: Arc<Metrics>,
    /// Set once the state store answered that it cannot be swept (`running_runs` unsupported):
    /// no more sweep timers.
    unsweepable: std::sync::atomic::AtomicBool,
    /// Ingests in progress ([`Engine::ingest`]): a graceful shutdown waits for them, since one
    /// cut off half-way leaves events stored and not routed.
    ingests: tokio::sync::watch::Sender<usize>,
    /// The event schemas ingest checks events against (none: every event passes): this
    /// node's files merged with the pushed ones (see `catalog`).
    schemas: parking_lot::RwLock<Arc<crate::schema::EventSchemas>>,
    /// This node's schema files.
    file_schemas: parking_lot::RwLock<Arc<crate::schema::EventSchemas>>,
    /// The pushed schemas last read from the catalog.
    catalog_view: parking_lot::Mutex<catalog::CatalogView>,
    /// Held while the schemas in use are rebuilt.
    schemas_rebuild: parking_lot::Mutex<()>,
    /// Held while the catalog is read again.
    catalog_refresh: tokio::sync::Mutex<()>,
    /// Held while a version is fetched from the catalog.
    version_fetch: tokio::sync::Mutex<()>,
    /// Held while the catalog's routing is applied.
    routing_apply: tokio::sync::Mutex<()>,
    /// The functions this node loaded from its files.
    local_functions: parking_lot::Mutex<Vec<Arc<crate::function::Function>>>,
    /// What this node last stored for each function from its files.
    synced: parking_lot::Mutex<versions::Synced>,
    /// Version numbers by function id, then content hash.
    numbers: parking_lot::RwLock<
        std::collections::HashMap<String, std::collections::HashMap<String, u64>>,
    >,
    /// This node's functions that could not be stored as versions: they run from its files.
    unroutable: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Runs that ended, by version, not yet counted in the catalog.
    tally: parking_lot::Mutex<versions::Tally>,
}

/// One ingest in progress, counted in `Inner::ingests` until dropped.
pub(crate) struct IngestInFlight<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for IngestInFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("functions", &self.inner.functions)
            .field("drivers", &self.inner.drivers)
            .finish()
    }
}

impl Engine {
    /// Builds an engine; call [`Engine::start`] to run its loops.
    pub fn new(parts: EngineParts) -> Engine {
        let (finished, _) = broadcast::channel(4096);
        let (progress, _) = broadcast::channel(4096);
        let metrics = Arc::new(Metrics::new());
        let strict_events = parts.config.strict_events;
        Engine {
            inner: Arc::new(Inner {
                // Payloads too large for the broker go through the state store.
                broker: Arc::new(crate::claim_check::ClaimCheck::new(
                    parts.broker,
                    parts.state.clone(),
                )),
                state: parts.state,
                events: parts.events,
                drivers: parts.drivers,
                functions: FunctionRegistry::with_metrics(metrics.clone()),
                config: parts.config,
                finished,
                progress,
                metrics,
                unsweepable: std::sync::atomic::AtomicBool::new(false),
                ingests: tokio::sync::watch::Sender::new(0),
                schemas: parking_lot::RwLock::new(Arc::new(
                    crate::schema::EventSchemas::new().with_strict(strict_events),
                )),
                file_schemas: parking_lot::RwLock::default(),
                catalog_view: parking_lot::Mutex::default(),
                schemas_rebuild: parking_lot::Mutex::default(),
                catalog_refresh: tokio::sync::Mutex::default(),
                version_fetch: tokio::sync::Mutex::default(),
                routing_apply: tokio::sync::Mutex::default(),
                local_functions: parking_lot::Mutex::default(),
                synced: parking_lot::Mutex::default(),
                unroutable: parking_lot::Mutex::default(),
                numbers: parking_lot::RwLock::default(),
                tally: parking_lot::Mutex::default(),
            }),
        }
    }

    /// The loaded functions.
    pub fn functions(&self) -> &FunctionRegistry {
        &self.inner.functions
    }

    /// The runtime drivers (also the catalog function validation checks runtimes against).
    pub fn drivers(&self) -> &DriverSet {
        &self.inner.drivers
    }

    /// The state store.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.inner.state
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn crate::broker::Broker> {
        &self.inner.broker
    }

    /// The event store.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.inner.events
    }

    /// The tunables.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// What this engine counts (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Listens for runs finishing in this process.
    pub fn subscribe_finished(&self) -> broadcast::Receiver<RunFinished> {
        self.inner.finished.subscribe()
    }

    /// Listens for step attempts starting and steps waiting for a retry in this process.
    pub fn subscribe_progress(&self) -> broadcast::Receiver<StepProgress> {
        self.inner.progress.subscribe()
    }

    /// Tells the progress listeners, if any (a few ids are copied, only then).
    pub(crate) fn report_progress(
        &self,
        run: &crate::state::RunState,
        step_id: &str,
        attempt: u32,
        kind: StepProgressKind,
    ) {
        if self.inner.progress.receiver_count() == 0 {
            return;
        }
        let _ = self.inner.progress.send(StepProgress {
            run_id: run.id.clone(),
            function_id: run.function_id.clone(),
            step_id: step_id.to_string(),
            attempt,
            event_id: run.event.id.clone(),
            event_name: run.event.name.clone(),
            kind,
        });
    }

    /// Waits until `run_id` has finished (or `timeout` passes) and returns it.
    pub async fn wait_for_run(&self, run_id: &str, timeout: Duration) -> Result<Run> {
        let mut rx = self.subscribe_finished();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.inner.state.get_run(run_id).await?.ok_or_else(|| {
                crate::Error::new(crate::ErrorKind::NotFound, format!("no run {run_id:?}"))
            })?;
            if run.status != RunStatus::Running {
                return Ok(run);
            }
            // Wake on any finish (or lag), re-check; poll at least every 100 ms.
            let wait = tokio::time::timeout(Duration::from_millis(100), rx.recv());
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return Err(crate::Error::new(
                    crate::ErrorKind::Timeout,
                    format!("run {run_id} did not finish within {timeout:?}"),
                ));
            }
        }
    }

    /// Starts the loops of `roles`; they stop when the returned handle is dropped or shut down.
    pub async fn start(&self, roles: Roles) -> Result<EngineHandle> {
        let mut tasks = JoinSet::new();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if roles.router {
            let sub = self
                .inner
                .broker
                .subscribe(crate::broker::TOPIC_EVENTS, "router")
                .await?;
            tasks.spawn(router::run_loop(self.clone(), sub, stopped.clone()));
        }
        if roles.executor {
            let sub = self
                .inner
                .broker
                .subscribe(crate::broker::TOPIC_STEPS, "executor")
                .await?;
            tasks.spawn(executor::run_loop(self.clone(), sub, stopped.clone()));
        }
        if roles.scheduler {
            tasks.spawn(scheduler::run_loop(self.clone(), stopped.clone()));
            tasks.spawn(retention::run_loop(self.clone(), stopped.clone()));
        }
        if self.inner.state.catalog().is_some() {
            tasks.spawn(catalog::run_loop(self.clone(), stopped.clone()));
            tasks.spawn(versions::tally_loop(self.clone(), stopped.clone()));
        }
        Ok(EngineHandle {
            tasks,
            stop,
            ingests: self.inner.ingests.subscribe(),
        })
    }

    /// Counts an ingest in progress until the returned guard is dropped.
    pub(crate) fn ingest_started(&self) -> IngestInFlight<'_> {
        self.inner.ingests.send_modify(|n| *n += 1);
        IngestInFlight(&self.inner.ingests)
    }
}

/// The running loops of an engine; dropping it stops them.
#[derive(Debug)]
pub struct EngineHandle {
    tasks: JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The engine's ingests in progress.
    ingests: tokio::sync::watch::Receiver<usize>,
}

/// A stop signal the loops watch.
pub(crate) type StopSignal = tokio::sync::watch::Receiver<bool>;

/// The next delivery of `sub` with a concurrency permit for handling it; `None` once the stop
/// signal is raised. Broker errors are logged as `who`'s and retried after a pause.
pub(crate) async fn next_delivery(
    who: &str,
    permits: &Arc<tokio::sync::Semaphore>,
    sub: &mut Box<dyn crate::broker::Subscription>,
    stop: &mut StopSignal,
) -> Option<(tokio::sync::OwnedSemaphorePermit, crate::broker::Delivery)> {
    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(stop) => return None,
            permit = permits.clone().acquire_owned() => permit.ok()?,
        };
        let next = tokio::select! {
            biased;
            _ = stopped(stop) => return None,
            next = sub.next() => next,
        };
        match next {
            Ok(delivery) => return Some((permit, delivery)),
            Err(e) => {
                tracing::warn!(error = %e, "{who}: receiving from the broker failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Engine {
    /// How long a message the engine failed on with `error`, delivered `redeliveries` times
    /// before, waits before it is handled again: [`TRANSIENT_ERROR_DELAY`] for a retryable
    /// error; for `NotFound` (a function version this node has not loaded: in a rolling change
    /// another node has it) 500 ms doubling up to the stuck delay; else the stuck delay.
    pub(crate) fn error_delay(&self, error: &crate::error::Error, redeliveries: u32) -> Duration {
        let stuck = self.inner.config.stuck_message_delay;
        if error.is_retryable() {
            TRANSIENT_ERROR_DELAY
        } else if error.kind() == crate::error::ErrorKind::NotFound {
            backoff::handback_delay(redeliveries, stuck)
        } else {
            stuck
        }
    }

    /// Whether a message waiting `wait` after `error` is still expected to go through soon
    /// (logged as a warning), rather than stuck until someone fixes the cause (an error).
    pub(crate) fn retried_soon(&self, error: &crate::error::Error, wait: Duration) -> bool {
        error.is_retryable() || wait < self.inner.config.stuck_message_delay
    }

    /// Hands `delivery` (from `topic`) back, to be delivered again after `delay`: the broker's
    /// own nack when it redelivers and can wait that long, else a timer in the state store that
    /// publishes the message again, and an ack (Kafka cannot redeliver one message; SQS waits
    /// 15 minutes at most). If the timer cannot be stored, the delivery is dropped unacked,
    /// which the broker redelivers by its own rules.
    pub(crate) async fn redeliver_later(
        &self,
        topic: &str,
        delivery: crate::broker::Delivery,
        delay: Duration,
    ) {
        let caps = self.inner.broker.capabilities();
        if caps.redelivers_on_nack && caps.max_native_delay.is_some_and(|max| max >= delay) {
            let _ = delivery.nack(Some(delay)).await;
            return;
        }
        let Ok(payload) = String::from_utf8(delivery.payload.to_vec()) else {
            tracing::warn!(
                topic,
                "a non-UTF-8 message cannot wait in a timer; nacking it"
            );
            let _ = delivery.nack(Some(delay)).await;
            return;
        };
        let timer = crate::state::Timer {
            id: format!("redeliver:{topic}:{}", ulid::Ulid::new()),
            due_ms: crate::event::now_ms() + delay.as_millis() as i64,
            action: crate::state::TimerAction::Republish(crate::state::Republish {
                topic: topic.to_string(),
                key: delivery.key.clone(),
                payload,
            }),
        };
        match self.inner.state.schedule_timer(&timer).await {
            Ok(()) => {
                let _ = delivery.ack().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, topic, "cannot store a redelivery timer; leaving the message to the broker");
                drop(delivery);
            }
        }
    }
}

/// Resolves once the stop signal is raised (or its sender is gone).
pub(crate) async fn stopped(signal: &mut StopSignal) {
    let _ = signal.wait_for(|stop| *stop).await;
}

impl EngineHandle {
    /// Stops every loop at once, abandoning work in flight (its deliveries are redelivered).
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops taking new work, waits up to `grace` for the steps and ingests in flight to
    /// finish (an ingest cut off half-way would leave events stored and not routed), then
    /// stops what is left (unfinished deliveries are handed back to the broker). Returns
    /// whether everything finished within `grace`.
    pub async fn shutdown_gracefully(mut self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
            let _ = self.ingests.wait_for(|n| *n == 0).await;
        })
        .await
        .is_ok();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        drained
    }
}
