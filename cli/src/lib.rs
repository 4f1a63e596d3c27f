//! weir: the event-driven queue and durable workflow engine.
//!
//! This crate is the `weir` binary and the facade library: it picks drivers by URL scheme
//! ([`registry`]), builds an [`Engine`](weir_core::engine::Engine), serves the HTTP API
//! ([`api`]) and implements the commands ([`commands`]).

pub mod api;
pub mod commands;
pub mod config;
pub mod embedded;
pub mod functions;
pub mod registry;
pub mod view;

pub use weir_core as core;
