//! weir-core: the model, expressions, driver traits, engine and errors of weir.
//!
//! Drivers (state stores, brokers, runtimes) live in their own crates and implement the traits
//! of [`state`], [`events`], [`broker`] and [`driver`]; the `testkit` feature holds the
//! conformance suites each of them runs.

pub mod duration;
pub mod error;
pub mod event;
pub mod expr;

pub use error::{Error, ErrorKind, Result};
pub use event::Event;
pub mod adapter;
pub mod broker;
pub mod catalog;
pub mod claim_check;
pub mod dead;
pub mod driver;
pub mod engine;
pub mod events;
pub mod function;
pub mod jobs;
pub mod metrics;
pub mod pause;
pub mod percent;
pub mod protocol;
pub mod redact;
pub mod registry;
pub mod run;
pub mod schema;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod timeline;
pub mod url_query;
