//! Conformance suites every driver crate runs (feature `testkit`).
//!
//! A driver's test calls the suite's `run_all` (or the individual test functions) with a factory
//! for its implementation; a third-party driver runs the very same suite.

pub mod broker;
pub mod driver;
pub mod events;
pub mod state;
