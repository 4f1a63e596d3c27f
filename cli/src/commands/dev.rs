//! `weir dev [DIR]`: the embedded engine with the HTTP API, reloading functions on change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weir_core::Error;
use weir_core::engine::Roles;

use crate::adapters::AdapterArgs;
use crate::api::EventKeys;
use crate::embedded::EngineOptions;

/// Arguments of `weir dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory holding function directories (or one function directory).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8288", env = "WEIR_LISTEN")]
    pub listen: SocketAddr,
    /// Do not reload functions when their files change.
    #[arg(long)]
    pub no_reload: bool,
    /// Refuse events whose name has no schema in `schemas/` (docs/event-schemas.md).
    #[arg(long)]
    pub strict_events: bool,
    /// Adapters to run.
    #[command(flatten)]
    pub adapters: AdapterArgs,
}

pub(super) async fn dev(app: &crate::App, args: DevArgs) -> weir_core::Result<i32> {
    let options = EngineOptions {
        config: weir_core::engine::EngineConfig {
            strict_events: args.strict_events,
            ..Default::default()
        },
        ..EngineOptions::default()
    };
    let engine = app.build_engine(&options).await?;
    let loaded = crate::functions::load_into(&engine, &args.dir).await;
    for f in &loaded.functions {
        eprintln!(
            "loaded {} ({} steps) from {}",
            f.id,
            f.steps.len(),
            f.dir.display()
        );
    }
    // What can fail at start (an adapter's URL or source, the address) fails before anything
    // runs.
    let opened = crate::adapters::OpenAdapters::open(app.registry(), &args.adapters.urls()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            Error::unavailable(format!("cannot listen on {}", args.listen)).with_source(e)
        })?;
    let handle = engine.start(Roles::ALL).await?;
    let adapters = opened.run(&engine);
    let watcher = (!args.no_reload).then(|| {
        tokio::spawn(crate::functions::watch(
            engine.clone(),
            args.dir.clone(),
            Duration::from_millis(500),
        ))
    });
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal("no local address").with_source(e))?;
    eprintln!("weir dev listening on http://{addr} (send events to http://{addr}/e/<any-key>)");
    if !addr.ip().is_loopback() {
        eprintln!(
            "weir dev: warning: {addr} is reachable beyond this machine, and weir dev takes any event key and shows every run and event to anyone; use weir serve (event_keys, api_keys) for that"
        );
    }
    let app = crate::api::router(engine.clone(), EventKeys::Any);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_or_failure(adapters.failure()))
        .await;
    if let Some(w) = watcher {
        w.abort();
    }
    let failed = adapters.failed();
    if !adapters.stop(Duration::from_secs(5)).await {
        eprintln!("weir dev: adapters still running after 5s were stopped");
    }
    handle.shutdown().await;
    served.map_err(|e| Error::internal("server failed").with_source(e))?;
    Ok(exit_code_after(failed))
}

/// Resolves on SIGINT or SIGTERM, or when `failure` does (an adapter stopped: printed).
pub(super) async fn shutdown_or_failure(failure: impl std::future::Future<Output = String>) {
    tokio::select! {
        _ = shutdown_signal() => {}
        why = failure => eprintln!("error: {why}; stopping"),
    }
}

/// The exit code of a server that stopped: 1 when an adapter failed, else 0.
pub(super) fn exit_code_after(adapter_failure: Option<String>) -> i32 {
    if adapter_failure.is_some() { 1 } else { 0 }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(super) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
