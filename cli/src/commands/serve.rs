//! `weir serve`: production mode — state, broker and roles chosen by configuration.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use weir_core::engine::{EngineConfig, Roles};
use weir_core::{Error, ErrorKind};

use crate::adapters::{AdapterArgs, OpenAdapters};
use crate::api::{ApiKeys, EventKeys};
use crate::config::ServeConfig;
use crate::embedded::EngineOptions;
use weir_core::redact::redact_url;

/// Arguments of `weir serve`; each also reads a `WEIR_*` variable, and overrides the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (keys as the long flags, with `_`: `event_keys`, …).
    #[arg(long, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of function directories [default: .].
    #[arg(long, env = "WEIR_FUNCTIONS")]
    pub functions: Option<PathBuf>,
    /// State store URL: memory:// or redis://… [default: memory://].
    #[arg(long, env = "WEIR_STATE", hide_env_values = true)]
    pub state: Option<String>,
    /// Broker URL: memory:// or redis://… [default: memory://].
    #[arg(long, env = "WEIR_BROKER", hide_env_values = true)]
    pub broker: Option<String>,
    /// An accepted event key (repeat the flag; WEIR_EVENT_KEYS takes a comma-separated list).
    #[arg(
        long = "event-key",
        env = "WEIR_EVENT_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub event_keys: Vec<String>,
    /// Address of the HTTP API [default: 127.0.0.1:8288].
    #[arg(long, env = "WEIR_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Roles to run, comma-separated: api, router, executor, scheduler [default: all].
    #[arg(long = "role", env = "WEIR_ROLE", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Key signing HTTP step requests (X-Weir-Signature).
    #[arg(long, env = "WEIR_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Step attempts this process runs at once [default: 256].
    #[arg(long, env = "WEIR_EXECUTOR_CONCURRENCY")]
    pub executor_concurrency: Option<usize>,
    /// How long SIGTERM waits for steps in flight before handing them back [default: 30s].
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// How long a running step is held without renewal before another node takes it over
    /// [default: 30s].
    #[arg(long, env = "WEIR_STEP_LEASE")]
    pub step_lease: Option<String>,
    /// How long a message the engine failed on with an error retrying soon will not cure (a
    /// refused publish) waits before it is handled again [default: 30s].
    #[arg(long, env = "WEIR_STUCK_MESSAGE_DELAY")]
    pub stuck_message_delay: Option<String>,
    /// How long ingest keeps trying a store or broker that fails with a retryable error before
    /// it takes the request back and answers with the error [default: 10s].
    #[arg(long, env = "WEIR_INGEST_DEADLINE")]
    pub ingest_deadline: Option<String>,
    /// Refuse events whose name has no schema in the functions' `schemas/` folder
    /// [default: false].
    #[arg(long, env = "WEIR_STRICT_EVENTS")]
    pub strict_events: Option<bool>,
    /// After how many failures on one message (with an error retrying soon will not cure) the
    /// engine gives up on it: a dead letter, and its run failed [default: 5].
    #[arg(long, env = "WEIR_DEAD_LETTER_AFTER", value_parser = clap::value_parser!(u32).range(1..))]
    pub dead_letter_after: Option<u32>,
    /// How long a running run may show no progress, with nothing live that would move it on,
    /// before the sweeper enqueues its steps again [default: 10m].
    #[arg(long, env = "WEIR_STUCK_RUN_GRACE")]
    pub stuck_run_grace: Option<String>,
    /// How often the sweeper looks for stuck runs, across all nodes [default: 1m].
    #[arg(long, env = "WEIR_SWEEP_EVERY")]
    pub sweep_every: Option<String>,
    /// Where function versions fetched from the state store are written to run from
    /// [default: $HOME/.cache/weir/versions].
    #[arg(long, env = "WEIR_VERSIONS_DIR")]
    pub versions_dir: Option<PathBuf>,
    /// How long finished runs are kept before they are deleted, or `forever` [default: 7d].
    #[arg(long, env = "WEIR_RUN_RETENTION")]
    pub run_retention: Option<String>,
    /// A key the /v1 API (runs, events) requires as `Authorization: Bearer KEY` (repeatable;
    /// WEIR_API_KEYS is comma-separated). Without one the API is open to whoever reaches it.
    #[arg(
        long = "api-key",
        env = "WEIR_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Adapters to run.
    #[command(flatten)]
    pub adapters: AdapterArgs,
}

impl ServeArgs {
    fn as_config(&self) -> ServeConfig {
        ServeConfig {
            functions: self.functions.clone(),
            state: self.state.clone(),
            broker: self.broker.clone(),
            listen: self.listen,
            event_keys: given(&self.event_keys),
            roles: (!self.roles.is_empty()).then(|| self.roles.clone()),
            signing_key: self.signing_key.clone(),
            executor_concurrency: self.executor_concurrency,
            shutdown_grace: self.shutdown_grace.clone(),
            step_lease: self.step_lease.clone(),
            stuck_message_delay: self.stuck_message_delay.clone(),
            ingest_deadline: self.ingest_deadline.clone(),
            strict_events: self.strict_events,
            dead_letter_after: self.dead_letter_after,
            stuck_run_grace: self.stuck_run_grace.clone(),
            sweep_every: self.sweep_every.clone(),
            versions_dir: self.versions_dir.clone(),
            run_retention: self.run_retention.clone(),
            api_keys: given(&self.api_keys),
            adapters: self.adapters.urls(),
        }
    }
}

/// The values a list flag or variable gave, without the empty one an empty variable gives.
fn given(keys: &[String]) -> Vec<String> {
    keys.iter().filter(|k| !k.is_empty()).cloned().collect()
}

/// Keys as configured, without surrounding spaces (`WEIR_API_KEYS="a, b"` means `a` and `b`);
/// an empty one is a configuration error naming `setting`.
fn key_set(keys: &[String], setting: &str) -> weir_core::Result<HashSet<String>> {
    keys.iter()
        .map(|k| match k.trim() {
            "" => Err(Error::new(
                ErrorKind::Config,
                format!("{setting}: a key is empty"),
            )),
            k => Ok(k.to_string()),
        })
        .collect()
}

/// The roles a process runs: the engine's loops, and whether it serves the API.
fn parse_roles(roles: Option<&[String]>) -> weir_core::Result<(Roles, bool)> {
    let Some(roles) = roles else {
        return Ok((Roles::ALL, true));
    };
    let mut engine = Roles {
        router: false,
        executor: false,
        scheduler: false,
    };
    let mut api = false;
    for role in roles {
        match role.trim() {
            "api" => api = true,
            "router" => engine.router = true,
            "executor" => engine.executor = true,
            "scheduler" => engine.scheduler = true,
            other => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("unknown role {other:?} (roles: api, router, executor, scheduler)"),
                ));
            }
        }
    }
    Ok((engine, api))
}

pub(super) async fn serve(app: &crate::App, args: ServeArgs) -> weir_core::Result<i32> {
    let file = match &args.config {
        Some(path) => ServeConfig::from_file(path)?,
        None => ServeConfig::default(),
    };
    serve_config(app, file.overlay(args.as_config())).await
}

/// `weir serve` with a configuration (file, variables and flags merged).
pub(crate) async fn serve_config(app: &crate::App, config: ServeConfig) -> weir_core::Result<i32> {
    let (roles, api) = parse_roles(config.roles.as_deref())?;
    let event_keys = key_set(&config.event_keys, "event_keys")?;
    let api_keys = key_set(&config.api_keys, "api_keys")?;
    if api && event_keys.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "weir serve needs at least one event key: --event-key KEY, WEIR_EVENT_KEYS or event_keys in the config file",
        ));
    }
    let grace = config.shutdown_grace.as_deref().unwrap_or("30s");
    let grace = weir_core::duration::parse_duration(grace)
        .map_err(|m| Error::new(ErrorKind::Config, format!("shutdown_grace: {m}")))?;
    let step_lease = config.step_lease.as_deref().unwrap_or("30s");
    let step_lease = weir_core::duration::parse_duration(step_lease)
        .map_err(|m| Error::new(ErrorKind::Config, format!("step_lease: {m}")))?;
    let stuck_message_delay = config.stuck_message_delay.as_deref().unwrap_or("30s");
    let stuck_message_delay = weir_core::duration::parse_duration(stuck_message_delay)
        .map_err(|m| Error::new(ErrorKind::Config, format!("stuck_message_delay: {m}")))?;
    let dead_letter_after = config.dead_letter_after.unwrap_or(5);
    if !(1..=weir_core::engine::MAX_DEAD_LETTER_AFTER).contains(&dead_letter_after) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "dead_letter_after: {dead_letter_after} is not between 1 and {}",
                weir_core::engine::MAX_DEAD_LETTER_AFTER
            ),
        ));
    }
    let sweep_every = config.sweep_every.as_deref().unwrap_or("1m");
    let sweep_every = weir_core::duration::parse_duration(sweep_every)
        .map_err(|m| Error::new(ErrorKind::Config, format!("sweep_every: {m}")))?;
    if sweep_every < std::time::Duration::from_secs(1) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("sweep_every: {sweep_every:?} is below 1s"),
        ));
    }
    let stuck_run_grace = config.stuck_run_grace.as_deref().unwrap_or("10m");
    let stuck_run_grace = weir_core::duration::parse_duration(stuck_run_grace)
        .map_err(|m| Error::new(ErrorKind::Config, format!("stuck_run_grace: {m}")))?;
    if stuck_run_grace <= step_lease {
        return Err(Error::new(
            ErrorKind::Config,
            "stuck_run_grace must be longer than step_lease: a run whose step holds a lease is not stuck",
        ));
    }
    let ingest_deadline = config.ingest_deadline.as_deref().unwrap_or("10s");
    let ingest_deadline = weir_core::duration::parse_duration(ingest_deadline)
        .map_err(|m| Error::new(ErrorKind::Config, format!("ingest_deadline: {m}")))?;
    if ingest_deadline > weir_core::engine::MAX_INGEST_DEADLINE {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "ingest_deadline: at most {} (a producer waits that long for an answer)",
                humantime::format_duration(weir_core::engine::MAX_INGEST_DEADLINE)
            ),
        ));
    }
    let run_retention =
        crate::config::parse_run_retention(config.run_retention.as_deref().unwrap_or("7d"))?;
    if run_retention.is_some_and(|r| r < std::time::Duration::from_secs(3600)) {
        eprintln!(
            "weir serve: warning: run_retention under an hour: an event redelivered, or a cron tick fired again, after its run was deleted starts a new run"
        );
    }
    let options = EngineOptions {
        state_url: config.state.clone().unwrap_or_else(|| "memory://".into()),
        broker_url: config.broker.clone().unwrap_or_else(|| "memory://".into()),
        signing_key: config.signing_key.clone(),
        config: EngineConfig {
            executor_concurrency: config.executor_concurrency.unwrap_or(256),
            step_lease,
            stuck_message_delay,
            ingest_deadline,
            strict_events: config.strict_events.unwrap_or(false),
            dead_letter_after,
            stuck_run_grace,
            sweep_every,
            run_retention,
            versions_dir: config
                .versions_dir
                .clone()
                .unwrap_or_else(|| EngineConfig::default().versions_dir),
            ..EngineConfig::default()
        },
    };
    let engine = app.build_engine(&options).await?;
    let functions = config
        .functions
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let mut loaded = crate::functions::load_all(&functions, engine.drivers());
    crate::functions::prepare(engine.drivers(), &mut loaded).await;
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        eprintln!(
            "weir serve: {} function or schema file(s) did not load; fix them or remove them",
            loaded.errors.len()
        );
        return Ok(2);
    }
    for f in &loaded.functions {
        eprintln!(
            "loaded {} ({} steps) from {}",
            f.id,
            f.steps.len(),
            f.dir.display()
        );
    }
    // A routed version that cannot be had now: the node runs its files' versions meanwhile,
    // and the catalog poll tries again.
    if let Err(e) = engine.load_functions(loaded.functions, "weir serve").await {
        eprintln!("weir serve: warning: cannot apply the deployed versions yet: {e}");
    }
    if let Some(schemas) = loaded.schemas.take() {
        if !schemas.is_empty() {
            eprintln!(
                "loaded {} event schema(s) from {}",
                schemas.len(),
                functions.join(crate::functions::SCHEMAS_DIR).display()
            );
        }
        engine.set_event_schemas(schemas);
    }
    // The schemas pushed to the catalog apply from the first request.
    if let Err(e) = engine.refresh_catalog().await {
        eprintln!("weir serve: warning: cannot read the pushed event schemas yet: {e}");
    }
    // Everything that can fail at start (an adapter's URL or source, the listening address)
    // fails before the engine and the adapters run.
    let opened = OpenAdapters::open(app.registry(), &config.adapters).await?;
    let listener = match api {
        true => {
            let listen = config
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8288)));
            Some(tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                Error::unavailable(format!("cannot listen on {listen}")).with_source(e)
            })?)
        }
        false => None,
    };
    let handle = engine.start(roles).await?;
    let adapters = opened.run(&engine);
    eprintln!(
        "weir serve: state {}, broker {}, roles {}{}{}{}",
        redact_url(&options.state_url),
        redact_url(&options.broker_url),
        if api { "api " } else { "" },
        if roles.router { "router " } else { "" },
        if roles.executor { "executor " } else { "" },
        if roles.scheduler { "scheduler" } else { "" },
    );
    if let Some(listener) = listener {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal("no local address").with_source(e))?;
        eprintln!("weir serve listening on http://{addr}");
        let keys = EventKeys::Only(Arc::new(event_keys));
        let api_keys = if api_keys.is_empty() {
            if !addr.ip().is_loopback() {
                eprintln!(
                    "weir serve: warning: the /v1 API (runs, events and their users' data; cancelling runs; orders to workers) is open to anyone reaching {addr}; set api_keys (--api-key, WEIR_API_KEYS)"
                );
            }
            ApiKeys::Any
        } else {
            ApiKeys::Only(Arc::new(api_keys))
        };
        axum::serve(
            listener,
            crate::api::secured_router(engine.clone(), keys, api_keys),
        )
        .with_graceful_shutdown(super::dev::shutdown_or_failure(adapters.failure()))
        .await
        .map_err(|e| Error::internal("server failed").with_source(e))?;
    } else {
        super::dev::shutdown_or_failure(adapters.failure()).await;
    }
    let failed = adapters.failed();
    eprintln!("weir serve: stopping; waiting up to {grace:?} for adapters and steps in flight");
    // One grace for both: the engine stops taking work while the adapters stop feeding it.
    let (adapters_drained, steps_drained) =
        tokio::join!(adapters.stop(grace), handle.shutdown_gracefully(grace));
    if !adapters_drained {
        eprintln!("weir serve: adapters still running after {grace:?} were stopped");
    }
    if !steps_drained {
        eprintln!("weir serve: steps still in flight were handed back to the broker");
    }
    Ok(super::dev::exit_code_after(failed))
}
