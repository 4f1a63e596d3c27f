//! weir: the event-driven queue and durable workflow engine.
//!
//! This crate is the `weir` binary and the facade library: [`App`] holds the drivers (weir's
//! built-in ones, [`registry`], and a custom build's own), builds an
//! [`Engine`](weir_core::engine::Engine), serves the HTTP API ([`api`]) and runs the commands
//! ([`commands`]). A custom weir with drivers of its own is `weir::App::builder()…run_cli()`.

pub mod adapters;
pub mod api;
mod app;
pub mod commands;
pub mod config;
pub mod embedded;
pub mod functions;
pub mod jobs;
pub mod registry;
pub mod view;

pub use app::{App, AppBuilder};
pub use weir_core as core;
