//! Conformance suites every driver crate runs (feature `testkit`), and helpers for drivers'
//! own tests.
//!
//! Every suite is called the same way: its `run_all` (or one of its test functions) takes a
//! [`Factory`] of the implementation under test. A closure returning a future is a factory, and
//! so is any type that implements the trait. A third-party driver runs the very same suites.
//!
//! ```
//! use std::sync::Arc;
//!
//! use weir_core::broker::Broker;
//! use weir_core::testkit::Factory;
//! use weir_broker_memory::MemoryBroker;
//!
//! /// A fresh broker for every test.
//! struct Fresh;
//!
//! #[async_trait::async_trait]
//! impl Factory<dyn Broker> for Fresh {
//!     async fn make(&self) -> Arc<dyn Broker> {
//!         Arc::new(MemoryBroker::new())
//!     }
//! }
//!
//! // One broker shared by every test: a closure.
//! let shared: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
//! let shared = move || std::future::ready(shared.clone());
//! let factories: [&dyn Factory<dyn Broker>; 2] = [&Fresh, &shared];
//! # let _ = factories;
//! ```

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

pub mod broker;
pub mod catalog;
pub mod dead;
pub mod driver;
pub mod events;
pub mod jobs;
pub mod pauses;
pub mod stall;
pub mod state;
pub mod tls;

/// Gives each test of a suite the implementation under test: a fresh one, or one shared
/// by every test (the suites' tests use names of their own).
///
/// Implemented by closures `Fn() -> impl Future<Output = Arc<T>>` (e.g.
/// `|| async { Arc::new(MemoryStateStore::new()) as Arc<dyn StateStore> }`), and by any type of
/// a driver's tests that implements it.
#[async_trait]
pub trait Factory<T: ?Sized>: Send + Sync {
    /// The implementation for one test.
    async fn make(&self) -> Arc<T>;
}

#[async_trait]
impl<T, F, Fut> Factory<T> for F
where
    T: ?Sized,
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Arc<T>> + Send,
{
    async fn make(&self) -> Arc<T> {
        self().await
    }
}

/// A name unique to this test run, safe as a topic, group, queue or function name on every
/// broker and runtime: `weir-conf-{what}-{16 random hex digits}`.
pub fn unique(what: &str) -> String {
    format!("weir-conf-{what}-{:016x}", rand::random::<u64>())
}

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

/// [`service_url`] with `params` (`a=1&b=2`) appended as query parameters: see [`url_with`].
/// `None` (skip) and the panic under `CI=true` are as [`service_url`]'s.
pub fn service_url_with(var: &str, params: &str) -> Option<String> {
    service_url(var).map(|base| url_with(&base, params))
}

/// `base` with `params` (`a=1&b=2`; a leading `?` or `&` is dropped) appended as query
/// parameters: after `?` when `base` has no query yet, after `&` when it has one, before a
/// `#fragment`. Empty `params` leave `base` as it is. A password holding `?` or `#` must be
/// percent-encoded in `base` (`%3F`, `%23`), or those characters are taken for the query or
/// the fragment.
///
/// ```
/// use weir_core::testkit::url_with;
///
/// assert_eq!(url_with("redis://h:6379", "prefix=t"), "redis://h:6379?prefix=t");
/// assert_eq!(url_with("redis://h?db=1", "&prefix=t"), "redis://h?db=1&prefix=t");
/// assert_eq!(url_with("sqs://p?", "wait=1s"), "sqs://p?wait=1s");
/// assert_eq!(url_with("amqp://h", ""), "amqp://h");
/// ```
pub fn url_with(base: &str, params: &str) -> String {
    let params = params.trim_start_matches(['?', '&']);
    if params.is_empty() {
        return base.to_string();
    }
    let (url, fragment) = base
        .split_once('#')
        .map_or((base, None), |(url, fragment)| (url, Some(fragment)));
    let sep = match url.split_once('?') {
        None => "?",
        Some((_, "")) => "",
        Some((_, query)) if query.ends_with('&') => "",
        Some(_) => "&",
    };
    let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
    format!("{url}{sep}{params}{fragment}")
}
