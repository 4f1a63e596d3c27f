//! The drivers built into weir, each registered once, through the same API a custom build uses
//! for its own (see [`crate::App`] and docs/writing-a-driver.md).
//!
//! A driver behind a Cargo feature is registered with `builtin!`: in a build with the feature
//! its constructor is registered; without it, its names are registered as absent, so that
//! `kafka://` in a build without `broker-kafka` says which feature brings it in, and
//! `weir --help` lists it. Adding a built-in driver is one more `builtin!` line here.

use weir_core::Result;
use weir_core::registry::{BrokerScheme, Registry, RuntimeType, StateScheme};
use weir_core::url_query::QueryParams;

/// Registers a driver that the Cargo feature `$feature` of weir compiles in:
/// `builtin!(registry, "feature", Kind::new(&["scheme", …], constructor))`, or
/// `builtin!(registry, "feature", RuntimeType::new("type", constructor))`.
macro_rules! builtin {
    (@gate $registry:ident, $feature:literal, $kind:ident, [$($name:literal),+], $entry:expr) => {{
        #[cfg(feature = $feature)]
        $registry.add($entry);
        #[cfg(not(feature = $feature))]
        $registry.add($kind::absent(
            &[$($name),+],
            concat!("the `", $feature, "` Cargo feature of weir"),
        ));
    }};
    ($registry:ident, $feature:literal, RuntimeType::new($name:literal, $open:expr $(,)?)) => {
        builtin!(@gate $registry, $feature, RuntimeType, [$name], RuntimeType::new($name, $open))
    };
    ($registry:ident, $feature:literal, $kind:ident::new(&[$($name:literal),+ $(,)?], $open:expr $(,)?)) => {
        builtin!(@gate $registry, $feature, $kind, [$($name),+], $kind::new(&[$($name),+], $open))
    };
}

/// Adds an entry of any kind to a [`Registry`] (what `builtin!` calls).
trait Add<E> {
    fn add(&mut self, entry: E);
}

impl Add<StateScheme> for Registry {
    fn add(&mut self, entry: StateScheme) {
        self.state(entry);
    }
}

impl Add<BrokerScheme> for Registry {
    fn add(&mut self, entry: BrokerScheme) {
        self.broker(entry);
    }
}

impl Add<RuntimeType> for Registry {
    fn add(&mut self, entry: RuntimeType) {
        self.runtime(entry);
    }
}

/// Every driver built into weir: those of this build with their constructors, the others as
/// absent with the Cargo feature that brings each in.
pub fn builtins() -> Registry {
    let mut registry = Registry::new();
    registry.state(
        StateScheme::new(&["memory"], |url| async move {
            Ok((
                weir_state_memory::MemoryStateStore::new(),
                memory_events(&url)?,
            ))
        })
        .about("in this process; lost on exit"),
    );
    builtin!(
        registry,
        "state-redis",
        StateScheme::new(&["redis", "rediss"], |url| async move {
            weir_state_redis::open(&url).await
        })
    );

    registry.broker(
        BrokerScheme::new(&["memory"], |url| async move { memory_broker(&url) })
            .about("in this process"),
    );
    builtin!(
        registry,
        "broker-redis",
        BrokerScheme::new(&["redis", "rediss"], |url| async move {
            weir_broker_redis::RedisBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-amqp",
        BrokerScheme::new(&["amqp", "amqps"], |url| async move {
            weir_broker_amqp::AmqpBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-sqs",
        BrokerScheme::new(&["sqs"], |url| async move {
            weir_broker_sqs::SqsBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-kafka",
        BrokerScheme::new(&["kafka", "kafka+mock"], |url| async move {
            weir_broker_kafka::KafkaBroker::connect(&url).await
        })
    );

    registry.runtime(RuntimeType::new(weir_driver_process::KIND, |_| async {
        Ok(weir_driver_process::ProcessDriver::new())
    }));
    registry.runtime(RuntimeType::new(
        weir_driver_http::KIND,
        |settings| async move {
            weir_driver_http::HttpDriver::new(weir_driver_http::HttpDriverConfig {
                signing_key: settings.signing_key,
            })
        },
    ));
    // Docker: talks to `DOCKER_HOST` or the default socket, connecting on first use;
    // containers a dead weir left behind are removed now, in the background (a machine
    // without a Docker engine starts as fast as ever).
    builtin!(
        registry,
        "driver-docker",
        RuntimeType::new("docker", |_| async { Ok(docker_driver()) })
    );
    // WASM: modules compiled once and cached on disk (`$WEIR_WASM_CACHE_DIR`, else
    // `~/.cache/weir/wasm`).
    builtin!(
        registry,
        "driver-wasm",
        RuntimeType::new("wasm", |_| async {
            weir_driver_wasm::WasmDriver::new(weir_driver_wasm::WasmDriverConfig::default())
        })
    );
    // Lambda: region, endpoint and credentials from the AWS chain (`AWS_REGION`,
    // `AWS_ENDPOINT_URL`, …); nothing is sent to AWS until a lambda step loads.
    builtin!(
        registry,
        "driver-lambda",
        RuntimeType::new("lambda", |_| async {
            weir_driver_lambda::LambdaDriver::connect(weir_driver_lambda::LambdaDriverConfig::new())
                .await
        })
    );
    registry
}

/// The Docker driver, with a background sweep of the step containers a stopped weir left.
#[cfg(feature = "driver-docker")]
fn docker_driver() -> weir_driver_docker::DockerDriver {
    let config = weir_driver_docker::DockerDriverConfig::default();
    let sweeper = weir_driver_docker::DockerDriver::new(config.clone());
    tokio::spawn(async move {
        match sweeper.remove_orphans().await {
            Ok(removed) if !removed.is_empty() => tracing::warn!(
                containers = removed.len(),
                "removed step containers a stopped weir left behind"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "no Docker engine to sweep for orphans"),
        }
    });
    weir_driver_docker::DockerDriver::new(config)
}

/// The event store of `memory://`, or `memory://?retention=7d` (how long accepted events are
/// kept, as the Redis URL's `retention`).
fn memory_events(url: &str) -> Result<weir_state_memory::MemoryEventStore> {
    let mut retention = weir_state_memory::DEFAULT_EVENT_RETENTION;
    for param in &QueryParams::parse("memory state", url, &["retention"]) {
        match param.name() {
            "retention" => retention = param.duration()?,
            _ => return Err(param.unknown()),
        }
    }
    Ok(weir_state_memory::MemoryEventStore::with_retention(
        retention,
    ))
}

/// `memory://`, or `memory://?max_message_bytes=N` to try a small broker limit locally (larger
/// payloads then go through the state store: the claim check).
fn memory_broker(url: &str) -> Result<weir_broker_memory::MemoryBroker> {
    let mut broker = weir_broker_memory::MemoryBroker::new();
    for param in &QueryParams::parse("memory broker", url, &["max_message_bytes"]) {
        match param.name() {
            "max_message_bytes" => {
                broker = weir_broker_memory::MemoryBroker::with_max_message_bytes(param.usize()?);
            }
            _ => return Err(param.unknown()),
        }
    }
    Ok(broker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::ErrorKind;

    #[tokio::test]
    async fn unknown_schemes_list_what_is_available() {
        let registry = builtins();
        let err = registry
            .open_state("postgres://x")
            .await
            .expect_err("unknown scheme");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("available in this build: memory://"),
            "{err}"
        );
        let err = registry
            .open_broker("nats://localhost:4222")
            .await
            .err()
            .expect("unknown scheme");
        assert!(
            err.to_string().contains("unknown broker scheme \"nats\"")
                && err
                    .to_string()
                    .contains("available in this build: memory://"),
            "{err}"
        );
        // A scheme weir knows but this build lacks names the feature that adds it.
        if !cfg!(feature = "broker-kafka") {
            let err = registry
                .open_broker("kafka://localhost:9092")
                .await
                .err()
                .expect("not compiled in");
            assert!(
                err.to_string().contains("`broker-kafka` Cargo feature"),
                "{err}"
            );
        }
        assert!(registry.open_state("nonsense").await.is_err());
        assert!(registry.open_state("memory://").await.is_ok());
    }

    #[test]
    fn every_builtin_is_listed_with_its_feature_when_absent() {
        let text = builtins().describe();
        for name in ["memory://", "process", "http"] {
            assert!(text.contains(name), "{name}: {text}");
        }
        for (name, feature) in [
            ("redis://", "state-redis"),
            ("amqp://", "broker-amqp"),
            ("kafka://", "broker-kafka"),
            ("sqs://", "broker-sqs"),
            ("docker", "driver-docker"),
            ("wasm", "driver-wasm"),
            ("lambda", "driver-lambda"),
        ] {
            assert!(text.contains(name), "{name}: {text}");
            if !cfg!(feature = "full") {
                assert!(text.contains(&format!("`{feature}`")), "{feature}: {text}");
            }
        }
    }

    #[tokio::test]
    async fn memory_urls_take_their_parameters_and_refuse_others() {
        let registry = builtins();
        assert!(registry.open_state("memory://?retention=1d").await.is_ok());
        assert!(
            registry
                .open_broker("memory://?max_message_bytes=1024")
                .await
                .is_ok()
        );
        for (url, says) in [
            (
                "memory://?retention=soon",
                "memory state: parameter retention=\"soon\"",
            ),
            ("memory://?retension=1d", "\"retension\""),
            ("memory://?retension=1d", "retention"),
        ] {
            let err = registry.open_state(url).await.expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
        let err = registry
            .open_broker("memory://?max_message_bytes=lots")
            .await
            .err()
            .expect("not a number");
        assert!(
            err.to_string()
                .contains("memory broker: parameter max_message_bytes"),
            "{err}"
        );
    }
}
