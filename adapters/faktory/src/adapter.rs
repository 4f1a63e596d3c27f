//! The adapter: a listener for Faktory clients inside `weir serve` / `weir dev`.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use weir_core::adapter::{Adapter, Shutdown};
use weir_core::engine::Engine;
use weir_core::{Error, ErrorKind, Result};

use crate::connection;
use crate::server::Server;
use crate::settings::Settings;

/// The adapter of `faktory://` and `faktory+tls://` URLs.
pub struct FaktoryAdapter {
    settings: Settings,
    listener: std::sync::Mutex<Option<TcpListener>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for FaktoryAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaktoryAdapter")
            .field("settings", &self.settings)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl FaktoryAdapter {
    /// Opens the adapter of `url` (see [`Settings::parse`]) and binds its address at once, so
    /// that a port in use (or a TLS file that cannot be read) fails the start.
    pub async fn open(url: &str) -> Result<Self> {
        let settings = Settings::parse(url)?;
        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("faktory adapter: cannot listen on {}", settings.listen),
            )
            .with_source(e)
        })?;
        Ok(FaktoryAdapter {
            settings,
            listener: std::sync::Mutex::new(Some(listener)),
            tls,
        })
    }

    /// The address it listens on (the port the system chose for `:0`).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener
            .lock()
            .ok()?
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }
}

#[async_trait]
impl Adapter for FaktoryAdapter {
    fn name(&self) -> &str {
        "faktory"
    }

    async fn run(&self, engine: Engine, mut shutdown: Shutdown) -> Result<()> {
        let listener = self
            .listener
            .lock()
            .ok()
            .and_then(|mut l| l.take())
            .ok_or_else(|| Error::internal("faktory adapter: run twice"))?;
        let server = Arc::new(Server::new(engine, self.settings.clone()));
        let keeper = server
            .jobs()
            .is_some()
            .then(|| tokio::spawn(keep_jobs_moving(server.clone(), shutdown.clone())));
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        let mut connections = tokio::task::JoinSet::new();
        tracing::info!(listen = %self.settings.listen, "faktory adapter: listening");
        loop {
            // Past the connection limit, clients wait in the listen backlog.
            let slot = tokio::select! {
                _ = shutdown.raised() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.raised() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, go on.
                        tracing::warn!(error = %e, "faktory adapter: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            // A client that vanished (a dropped NAT entry, a killed host) is found by TCP
            // keepalive and frees its slot.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(std::time::Duration::from_secs(60))
                .with_interval(std::time::Duration::from_secs(15));
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            let (server, shutdown) = (server.clone(), shutdown.clone());
            let tls = self.tls.clone();
            connections.spawn(async move {
                let _slot = slot;
                tracing::debug!(%peer, "faktory adapter: connection");
                match tls {
                    None => connection::serve(stream, server, shutdown).await,
                    // The TLS handshake gets the same time as a HELLO, before it.
                    Some(tls) => match tokio::time::timeout(
                        connection::HANDSHAKE_WAIT,
                        tls.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => connection::serve(stream, server, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "faktory adapter: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "faktory adapter: TLS handshake too slow");
                        }
                    },
                }
            });
            while connections.try_join_next().is_some() {}
        }
        // New clients are refused now (they go to another node); the connections end at
        // shutdown, a worker's after its drain (see `connection::DRAIN`).
        drop(listener);
        while connections.join_next().await.is_some() {}
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
        Ok(())
    }
}

/// How often due jobs are moved and expired reservations failed (Faktory: every 5 and 15 s).
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Every [`MAINTAIN_EVERY`] until shutdown: scheduled and retried jobs that came due go to
/// their queues, dead jobs past their time go, and reservations that ran out are failed (see
/// [`crate::legacy::maintain`]). Every node does it; each move is atomic in the store.
async fn keep_jobs_moving(server: Arc<Server>, mut shutdown: Shutdown) {
    let Some(jobs) = server.jobs().cloned() else {
        return;
    };
    let mut every = tokio::time::interval(MAINTAIN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.raised() => return,
            _ = every.tick() => {}
        }
        let now = weir_core::event::now_ms();
        match crate::legacy::maintain(jobs.as_ref(), now).await {
            Ok(failed) => failed
                .into_iter()
                .for_each(|outcome| server.failed(outcome)),
            Err(e) => tracing::warn!(error = %e, "faktory adapter: moving due jobs failed"),
        }
    }
}
