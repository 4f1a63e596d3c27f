//! Conformance suites every driver crate runs (feature `testkit`).
//!
//! A driver's test calls the suite's `run_all` (or the individual test functions) with a factory
//! for its implementation; a third-party driver runs the very same suite.

pub mod broker;
pub mod driver;
pub mod events;
pub mod state;
pub mod tls;

/// The URL of a test service from the environment variable `var` (e.g.
/// `WEIR_TEST_REDIS_URL`, which `scripts/test.sh` sets).
///
/// When it is missing: under `CI=true` this **panics** (a test must never pass because its
/// service is absent); otherwise it prints why the test is skipped and returns `None`.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{var} is not set under CI=true: scripts/test.sh starts the service and sets it")
        }
        _ => {
            eprintln!("skipping: {var} is not set (run scripts/test.sh, which starts the service)");
            None
        }
    }
}
