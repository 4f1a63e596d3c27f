//! The driver registry: which state stores, brokers, runtimes and adapters a weir build has,
//! and how to open each.
//!
//! Every driver is declared once, as an [`Entry`]: the names it serves (URL schemes such as
//! `redis` and `rediss`, or a `runtime.type` such as `docker`), a one-line description, and a
//! constructor from its URL (or, for runtimes, from [`RuntimeSettings`]). An entry may instead
//! be *known but absent*: weir knows the name, this build lacks the code, and the entry says
//! how to get it (`the broker-kafka Cargo feature of weir`). The `weir` crate registers its
//! built-in drivers this way, and a third party's crate registers its own through the very
//! same calls (`weir::App::builder().broker_scheme(…)`); see docs/writing-a-driver.md.
//!
//! ```
//! use std::sync::Arc;
//! use weir_core::registry::{BrokerScheme, Registry};
//!
//! let mut registry = Registry::new();
//! registry.broker(
//!     BrokerScheme::new(&["memory"], |_url| async {
//!         Ok(weir_broker_memory::MemoryBroker::new())
//!     })
//!     .about("in-process; lost on exit"),
//! );
//! registry.broker(BrokerScheme::absent(&["kafka"], "the `broker-kafka` Cargo feature of weir"));
//! let listed: Vec<_> = registry.brokers().map(|b| b.names()[0].clone()).collect();
//! assert_eq!(listed, ["memory", "kafka"]);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::adapter::Adapter;
use crate::broker::Broker;
use crate::driver::{Driver, DriverSet};
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventStore;
use crate::state::StateStore;

/// A boxed, sendable future of a `Result`: what constructors return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// A constructor: from a URL (`String`) or [`RuntimeSettings`] to the opened driver.
type Open<A, T> = Arc<dyn Fn(A) -> BoxFuture<T> + Send + Sync>;

/// The state store and event store behind one state URL (one service usually holds both).
#[derive(Clone)]
pub struct Stores {
    /// Runs and timers.
    pub state: Arc<dyn StateStore>,
    /// Accepted events.
    pub events: Arc<dyn EventStore>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stores")
    }
}

/// What runtime drivers are built with: settings of the process that apply to several drivers.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RuntimeSettings {
    /// Key signing HTTP step requests (`X-Weir-Signature`); none = unsigned.
    pub signing_key: Option<String>,
}

impl RuntimeSettings {
    /// Settings with `signing_key` set.
    pub fn with_signing_key(mut self, key: Option<String>) -> Self {
        self.signing_key = key;
        self
    }
}

impl fmt::Debug for RuntimeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeSettings")
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One driver as the registry knows it: its names, a description, and its constructor (or
/// how to get it, when this build lacks it).
pub struct Entry<A, T> {
    names: Vec<String>,
    about: String,
    open: std::result::Result<Open<A, T>, String>,
}

impl<A, T> Clone for Entry<A, T> {
    fn clone(&self) -> Self {
        Entry {
            names: self.names.clone(),
            about: self.about.clone(),
            open: self.open.clone(),
        }
    }
}

impl<A, T> fmt::Debug for Entry<A, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("names", &self.names)
            .field("available", &self.open.is_ok())
            .finish()
    }
}

/// A state store served under URL schemes (`redis`, `rediss`).
pub type StateScheme = Entry<String, Stores>;
/// A broker served under URL schemes (`amqp`, `amqps`).
pub type BrokerScheme = Entry<String, Arc<dyn Broker>>;
/// A runtime driver serving one `runtime.type` (`docker`).
pub type RuntimeType = Entry<RuntimeSettings, Arc<dyn Driver>>;
/// An adapter served under URL schemes (`celery+amqp`).
pub type AdapterScheme = Entry<String, Arc<dyn Adapter>>;

impl<A, T> Entry<A, T> {
    fn with(names: &[&str], open: Open<A, T>) -> Self {
        assert!(!names.is_empty(), "a registry entry needs a name");
        Entry {
            names: names.iter().map(|n| n.to_string()).collect(),
            about: String::new(),
            open: Ok(open),
        }
    }

    /// A driver weir knows by `names` but this build lacks; `how` says what brings it in
    /// (`the broker-kafka Cargo feature of weir`). Opening it is a configuration error that
    /// says so.
    pub fn absent(names: &[&str], how: impl Into<String>) -> Self {
        assert!(!names.is_empty(), "a registry entry needs a name");
        Entry {
            names: names.iter().map(|n| n.to_string()).collect(),
            about: String::new(),
            open: Err(how.into()),
        }
    }

    /// Sets the one-line description shown in `weir --help`.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = about.into();
        self
    }

    /// The names served: URL schemes without `://`, or the runtime type.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The one-line description.
    pub fn description(&self) -> &str {
        &self.about
    }

    /// Whether this build has the driver; when not, `Err` says what brings it in.
    pub fn availability(&self) -> std::result::Result<(), &str> {
        self.open.as_ref().map(|_| ()).map_err(String::as_str)
    }

    fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

impl StateScheme {
    /// A state store: `open` gets the whole URL and returns the state store and event store
    /// behind it.
    pub fn new<S, E, F, Fut>(names: &[&str], open: F) -> Self
    where
        S: StateStore,
        E: EventStore,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(S, E)>> + Send + 'static,
    {
        Entry::with(
            names,
            Arc::new(move |url| {
                let opened = open(url);
                Box::pin(async move {
                    let (state, events) = opened.await?;
                    Ok(Stores {
                        state: Arc::new(state),
                        events: Arc::new(events),
                    })
                })
            }),
        )
    }
}

impl BrokerScheme {
    /// A broker: `open` gets the whole URL.
    pub fn new<B, F, Fut>(names: &[&str], open: F) -> Self
    where
        B: Broker,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B>> + Send + 'static,
    {
        Entry::with(
            names,
            Arc::new(move |url| {
                let opened = open(url);
                Box::pin(async move { Ok(Arc::new(opened.await?) as Arc<dyn Broker>) })
            }),
        )
    }
}

impl RuntimeType {
    /// A runtime driver serving `runtime.type` = `name`; `open` builds it from the process's
    /// [`RuntimeSettings`]. The driver's [`Driver::kind`] must be `name`.
    pub fn new<D, F, Fut>(name: &str, open: F) -> Self
    where
        D: Driver,
        F: Fn(RuntimeSettings) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D>> + Send + 'static,
    {
        Entry::with(
            &[name],
            Arc::new(move |settings| {
                let opened = open(settings);
                Box::pin(async move { Ok(Arc::new(opened.await?) as Arc<dyn Driver>) })
            }),
        )
    }
}

impl RuntimeType {
    /// [`RuntimeType::new`] for a constructor that keeps a handle on the driver it returns
    /// (to start background work on it, such as a sweep of what a dead process left).
    pub fn shared<D, F, Fut>(name: &str, open: F) -> Self
    where
        D: Driver,
        F: Fn(RuntimeSettings) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<D>>> + Send + 'static,
    {
        Entry::with(
            &[name],
            Arc::new(move |settings| {
                let opened = open(settings);
                Box::pin(async move { Ok(opened.await? as Arc<dyn Driver>) })
            }),
        )
    }
}

impl AdapterScheme {
    /// An adapter: `open` gets the whole URL, and should bind or connect what it needs (so a
    /// bad URL or an unreachable service fails the server's start), not start consuming.
    pub fn new<D, F, Fut>(names: &[&str], open: F) -> Self
    where
        D: Adapter,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D>> + Send + 'static,
    {
        Entry::with(
            names,
            Arc::new(move |url| {
                let opened = open(url);
                Box::pin(async move { Ok(Arc::new(opened.await?) as Arc<dyn Adapter>) })
            }),
        )
    }
}

/// Every driver a build knows, by kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    states: Vec<StateScheme>,
    brokers: Vec<BrokerScheme>,
    runtimes: Vec<RuntimeType>,
    adapters: Vec<AdapterScheme>,
}

/// Adds `entry`, removing every earlier entry that serves one of its names (a later
/// registration wins: a custom build may replace a built-in driver). An earlier entry goes
/// whole: replacing `redis` drops the built-in `rediss` too, rather than leave one scheme on
/// each implementation.
fn add<A, T>(entries: &mut Vec<Entry<A, T>>, entry: Entry<A, T>) {
    entries.retain(|earlier| !earlier.names.iter().any(|n| entry.serves(n)));
    entries.push(entry);
}

impl Registry {
    /// A registry with no drivers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a state store.
    pub fn state(&mut self, entry: StateScheme) -> &mut Self {
        add(&mut self.states, entry);
        self
    }

    /// Registers a broker.
    pub fn broker(&mut self, entry: BrokerScheme) -> &mut Self {
        add(&mut self.brokers, entry);
        self
    }

    /// Registers a runtime driver.
    pub fn runtime(&mut self, entry: RuntimeType) -> &mut Self {
        add(&mut self.runtimes, entry);
        self
    }

    /// Registers an adapter.
    pub fn adapter(&mut self, entry: AdapterScheme) -> &mut Self {
        add(&mut self.adapters, entry);
        self
    }

    /// The state stores, in registration order.
    pub fn states(&self) -> impl Iterator<Item = &StateScheme> {
        self.states.iter()
    }

    /// The brokers, in registration order.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerScheme> {
        self.brokers.iter()
    }

    /// The runtime drivers, in registration order.
    pub fn runtimes(&self) -> impl Iterator<Item = &RuntimeType> {
        self.runtimes.iter()
    }

    /// The adapters, in registration order.
    pub fn adapters(&self) -> impl Iterator<Item = &AdapterScheme> {
        self.adapters.iter()
    }

    /// Opens the state and event stores named by `url`.
    pub async fn open_state(&self, url: &str) -> Result<Stores> {
        open_url("state", &self.states, url)?(url.to_string()).await
    }

    /// Opens the broker named by `url`.
    pub async fn open_broker(&self, url: &str) -> Result<Arc<dyn Broker>> {
        open_url("broker", &self.brokers, url)?(url.to_string()).await
    }

    /// Opens the adapter named by `url`.
    pub async fn open_adapter(&self, url: &str) -> Result<Arc<dyn Adapter>> {
        open_url("adapter", &self.adapters, url)?(url.to_string()).await
    }

    /// Builds every runtime driver this build has; the absent ones are recorded in the set so
    /// that a function using one is told what brings it in.
    pub async fn open_runtimes(&self, settings: &RuntimeSettings) -> Result<DriverSet> {
        let mut drivers = DriverSet::new();
        for entry in &self.runtimes {
            let name = &entry.names[0];
            drivers = match &entry.open {
                Ok(open) => {
                    let driver = open(settings.clone()).await?;
                    if driver.kind() != name {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "the runtime registered as {name:?} says its kind is {:?}",
                                driver.kind()
                            ),
                        ));
                    }
                    drivers.with(driver)
                }
                Err(how) => entry
                    .names
                    .iter()
                    .fold(drivers, |drivers, name| drivers.with_absent(name, how)),
            };
        }
        Ok(drivers)
    }

    /// What this build has and lacks, for `weir --help`: one line per kind, then the drivers
    /// weir knows that this build lacks, with what brings each in.
    pub fn describe(&self) -> String {
        let mut text = String::from("Drivers in this build:\n");
        let mut absent = Vec::new();
        describe_kind(&mut text, &mut absent, "state", &self.states, "://");
        describe_kind(&mut text, &mut absent, "brokers", &self.brokers, "://");
        describe_kind(&mut text, &mut absent, "runtimes", &self.runtimes, "");
        describe_kind(&mut text, &mut absent, "adapters", &self.adapters, "://");
        if !absent.is_empty() {
            text.push_str("Known to weir, not in this build:\n");
            for line in absent {
                text.push_str("  ");
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    }
}

fn describe_kind<A, T>(
    text: &mut String,
    absent: &mut Vec<String>,
    kind: &str,
    entries: &[Entry<A, T>],
    suffix: &str,
) {
    let spell = |e: &Entry<A, T>| {
        e.names
            .iter()
            .map(|n| format!("{n}{suffix}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut present = Vec::new();
    for entry in entries {
        match &entry.open {
            Ok(_) if entry.about.is_empty() => present.push(spell(entry)),
            Ok(_) => present.push(format!("{} ({})", spell(entry), entry.about)),
            Err(how) => absent.push(format!("{kind:<9} {} (needs {how})", spell(entry))),
        }
    }
    let listed = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    text.push_str(&format!("  {kind:<9} {listed}\n"));
}

/// The scheme of a `what` URL (before `://`). The error does not show the text, which may
/// hold a password.
fn scheme<'u>(what: &str, url: &'u str) -> Result<&'u str> {
    url.split_once("://")
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the {what} setting is not a URL: it has no `scheme://` (e.g. memory://); not shown, as it may hold a password"
                ),
            )
        })
}

/// The constructor serving `url`'s scheme, or an error that lists the schemes this build has
/// (and, for a scheme weir knows but this build lacks, what brings it in).
fn open_url<'a, T>(
    what: &str,
    entries: &'a [Entry<String, T>],
    url: &str,
) -> Result<&'a Open<String, T>> {
    let scheme = scheme(what, url)?;
    let available = || {
        let names: Vec<String> = entries
            .iter()
            .filter(|e| e.open.is_ok())
            .flat_map(|e| e.names.iter().map(|n| format!("{n}://")))
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match entries.iter().find(|e| e.serves(scheme)).map(|e| &e.open) {
        Some(Ok(open)) => Ok(open),
        Some(Err(how)) => Err(Error::new(
            ErrorKind::Config,
            format!(
                "{what} scheme {scheme:?} is not in this build: it needs {how} (available in this build: {})",
                available()
            ),
        )),
        None => Err(Error::new(
            ErrorKind::Config,
            format!(
                "unknown {what} scheme {scheme:?} (available in this build: {})",
                available()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{StepRequest, StepResult};
    use crate::function::RuntimeCatalog;

    struct Named(&'static str);

    #[async_trait::async_trait]
    impl Driver for Named {
        fn kind(&self) -> &str {
            self.0
        }
        async fn execute(&self, _request: StepRequest) -> Result<StepResult> {
            Err(Error::internal("not run in these tests"))
        }
    }

    fn runtime(name: &'static str, kind: &'static str) -> RuntimeType {
        RuntimeType::new(name, move |_| async move { Ok(Named(kind)) })
    }

    /// The error of a result whose value is not `Debug` (an `Arc<dyn Broker>`).
    fn error_of<T>(result: Result<T>) -> Error {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_later_entry_replaces_the_names_it_serves() {
        let mut registry = Registry::new();
        registry
            .runtime(runtime("a", "a"))
            .runtime(runtime("b", "b"))
            .runtime(RuntimeType::absent(&["a"], "elsewhere"));
        let names: Vec<_> = registry.runtimes().map(|r| r.names()[0].clone()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(
            registry.runtimes().last().map(|r| r.availability()),
            Some(Err("elsewhere"))
        );
    }

    #[tokio::test]
    async fn replacing_one_name_of_an_entry_drops_the_whole_entry() {
        let mut registry = Registry::new();
        registry
            .broker(BrokerScheme::absent(&["redis", "rediss"], "built in"))
            .broker(BrokerScheme::absent(&["redis"], "mine"));
        let names: Vec<_> = registry.brokers().map(|b| b.names().to_vec()).collect();
        assert_eq!(names, [vec!["redis".to_string()]]);
        let err = error_of(registry.open_broker("rediss://h").await);
        assert!(
            err.to_string().contains("unknown broker scheme \"rediss\""),
            "{err}"
        );
    }

    #[test]
    #[should_panic(expected = "needs a name")]
    fn an_entry_without_a_name_is_refused() {
        let _ = RuntimeType::absent(&[], "nowhere");
    }

    #[tokio::test]
    async fn runtimes_open_and_absent_ones_say_what_brings_them_in() {
        let mut registry = Registry::new();
        registry
            .runtime(runtime("shell", "shell"))
            .runtime(RuntimeType::absent(
                &["docker"],
                "the `driver-docker` feature",
            ));
        let drivers = registry
            .open_runtimes(&RuntimeSettings::default())
            .await
            .expect("opens");
        assert_eq!(drivers.kinds(), ["shell"]);
        assert!(drivers.check("shell", &Default::default(), None).is_ok());
        let err = drivers
            .check("docker", &Default::default(), None)
            .expect_err("absent");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("the `driver-docker` feature"),
            "{err}"
        );
        let err = drivers
            .check("firecracker", &Default::default(), None)
            .expect_err("unknown");
        assert!(
            err.to_string()
                .contains("unknown runtime type \"firecracker\" (available: shell)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_runtime_whose_kind_differs_from_its_name_is_refused() {
        let mut registry = Registry::new();
        registry.runtime(runtime("shell", "sh"));
        let err = registry
            .open_runtimes(&RuntimeSettings::default())
            .await
            .expect_err("mismatch");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("\"shell\""), "{err}");
    }

    #[tokio::test]
    async fn urls_open_by_scheme_and_errors_list_what_this_build_has() {
        let mut registry = Registry::new();
        registry
            .broker(BrokerScheme::new(
                &["spool", "spool+tmp"],
                |url| async move {
                    Err::<weir_broker_memory_stand_in::Never, _>(Error::new(
                        ErrorKind::Config,
                        format!("opened {url}"),
                    ))
                },
            ))
            .broker(BrokerScheme::absent(
                &["kafka"],
                "the `broker-kafka` feature",
            ));
        let err = error_of(registry.open_broker("spool+tmp://x").await);
        assert!(err.to_string().contains("opened spool+tmp://x"), "{err}");
        let err = error_of(registry.open_broker("kafka://h").await);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains(
                "broker scheme \"kafka\" is not in this build: it needs the `broker-kafka` feature (available in this build: spool://, spool+tmp://)"
            ),
            "{err}"
        );
        let err = error_of(registry.open_broker("nats://h").await);
        assert!(
            err.to_string().contains("unknown broker scheme \"nats\""),
            "{err}"
        );
        let err = error_of(registry.open_state("memory://").await);
        assert!(
            err.to_string().contains("(available in this build: none)"),
            "{err}"
        );
        let err = error_of(registry.open_broker("spool").await);
        assert!(
            err.to_string()
                .contains("the broker setting is not a URL: it has no `scheme://`")
                && !err.to_string().contains("spool"),
            "{err}"
        );
    }

    #[test]
    fn describe_lists_present_and_absent_drivers() {
        let mut registry = Registry::new();
        registry
            .runtime(runtime("shell", "shell").about("sh -c"))
            .runtime(RuntimeType::absent(
                &["docker"],
                "the `driver-docker` feature",
            ))
            .broker(BrokerScheme::absent(
                &["kafka", "kafka+mock"],
                "the `broker-kafka` feature",
            ));
        let text = registry.describe();
        assert!(text.contains("  runtimes  shell (sh -c)\n"), "{text}");
        assert!(text.contains("  brokers   none\n"), "{text}");
        assert!(
            text.contains("Known to weir, not in this build:\n  brokers   kafka:// kafka+mock:// (needs the `broker-kafka` feature)\n  runtimes  docker (needs the `driver-docker` feature)\n"),
            "{text}"
        );
    }

    /// A broker type the scheme test never builds (its constructor fails first).
    mod weir_broker_memory_stand_in {
        use crate::broker::{Broker, BrokerCapabilities, Subscription};
        use crate::error::Result;

        pub(super) enum Never {}

        #[async_trait::async_trait]
        impl Broker for Never {
            fn capabilities(&self) -> BrokerCapabilities {
                match *self {}
            }
            async fn publish(&self, _: &str, _: &str, _: bytes::Bytes) -> Result<()> {
                match *self {}
            }
            async fn subscribe(&self, _: &str, _: &str) -> Result<Box<dyn Subscription>> {
                match *self {}
            }
        }
    }
}
