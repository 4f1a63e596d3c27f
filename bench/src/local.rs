//! Local servers for the benchmarks: binding, serving a router on 127.0.0.1:0, and
//! [`LocalWeir`], an in-process `weir dev` equivalent.

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;
use weir_core::Error;
use weir_core::engine::{EngineHandle, Roles};

use weir::api::EventKeys;
use weir::embedded::EngineOptions;

/// Binds `addr`; returns the listener and the address it got.
pub(super) async fn bind(
    addr: SocketAddr,
) -> weir_core::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {addr}")).with_source(e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::internal("no local address").with_source(e))?;
    Ok((listener, local))
}

/// Serves `app` on 127.0.0.1:0 in a task; returns its address and the task.
pub(super) async fn serve_local(app: Router) -> weir_core::Result<(SocketAddr, JoinHandle<()>)> {
    let (listener, addr) = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench: local server failed: {e}");
        }
    });
    Ok((addr, task))
}

/// An in-process `weir dev` equivalent: the embedded engine with every role and the API.
pub(super) struct LocalWeir {
    pub(super) url: String,
    pub(super) engine: weir_core::engine::Engine,
    handle: EngineHandle,
    server: JoinHandle<()>,
}

impl LocalWeir {
    /// Starts the engine (with `functions` loaded, if any) and serves the API on 127.0.0.1:0.
    pub(super) async fn start(functions: Option<&std::path::Path>) -> weir_core::Result<LocalWeir> {
        let engine = weir::App::default()
            .build_engine(&EngineOptions::default())
            .await?;
        if let Some(dir) = functions {
            let loaded = weir::functions::load_all(dir, engine.drivers());
            if let Some(e) = loaded.errors.first() {
                return Err(Error::internal(format!(
                    "the bench function did not load: {e}"
                )));
            }
            engine.functions().replace(loaded.functions);
        }
        let handle = engine.start(Roles::ALL).await?;
        let app = weir::api::router(engine.clone(), EventKeys::Any);
        let (addr, server) = serve_local(app).await?;
        Ok(LocalWeir {
            url: format!("http://{addr}"),
            engine,
            handle,
            server,
        })
    }

    pub(super) async fn stop(self) {
        self.server.abort();
        self.handle.shutdown().await;
    }
}
