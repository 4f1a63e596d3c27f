//! The `Adapter` trait: a shim that turns another queue's jobs into weir events.
//!
//! An adapter (a shim for another queue's protocol, such as Celery's or Faktory's, built in or a
//! third party's) is chosen by the URL scheme of `--adapter URL` (see [`crate::registry`]),
//! opened when the server starts (so a port it cannot bind or a broker it cannot reach fails
//! the start), then [run](Adapter::run) with a handle to the engine until the server shuts
//! down.

use async_trait::async_trait;

use crate::engine::Engine;
use crate::error::Result;

/// A shim that feeds another system's jobs into the engine as events.
///
/// Contract:
/// - [`run`](Adapter::run) ingests through [`Engine::ingest_body`] (JSON, checked and limited
///   exactly as an HTTP body is) or [`Engine::ingest`] (events already checked: parse them with
///   [`crate::engine::parse_body`] and the engine's limits), and acknowledges a job to its
///   source only after that returned `Ok` (the event is then stored and published). A job
///   ingested twice (a redelivery) must carry the same event id, so that it starts no second
///   run.
/// - It returns when `shutdown` fires, after handing back to its source whatever it took and
///   did not ingest, and ends the work it started (connections it serves, tasks it spawned).
///   Returning (or panicking) before that is a failure of the server: `weir serve` logs it and
///   stops with exit code 1.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// A short name for logs (`celery`, `faktory`).
    fn name(&self) -> &str;

    /// Feeds jobs into `engine` until `shutdown` fires.
    async fn run(&self, engine: Engine, shutdown: Shutdown) -> Result<()>;
}

/// The server's shutdown signal, as an adapter watches it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    signal: tokio::sync::watch::Receiver<bool>,
}

/// Raises a [`Shutdown`]; dropping it raises it too.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: tokio::sync::watch::Sender<bool>,
}

impl Shutdown {
    /// A signal and the trigger that raises it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, signal) = tokio::sync::watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { signal })
    }

    /// Whether shutdown has begun.
    pub fn is_raised(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has). Cancel-safe.
    pub async fn raised(&mut self) {
        let _ = self.signal.wait_for(|raised| *raised).await;
    }
}

impl ShutdownTrigger {
    /// Raises the signal.
    pub fn raise(&self) {
        let _ = self.sender.send(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.raise();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_is_seen_by_every_clone_and_when_the_trigger_is_dropped() {
        let (trigger, mut shutdown) = Shutdown::new();
        let mut other = shutdown.clone();
        assert!(!shutdown.is_raised());
        let waiter = tokio::spawn(async move { other.raised().await });
        trigger.raise();
        waiter.await.expect("the clone saw it");
        shutdown.raised().await;
        assert!(shutdown.is_raised());

        let (trigger, mut shutdown) = Shutdown::new();
        drop(trigger);
        shutdown.raised().await;
        assert!(shutdown.is_raised());
    }
}
