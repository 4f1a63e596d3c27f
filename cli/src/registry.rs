//! The drivers built into weir, each registered once, through the same API a custom build uses
//! for its own (see [`crate::App`] and docs/writing-a-driver.md).
//!
//! A driver behind a Cargo feature is registered with `builtin!`: in a build with the feature
//! its constructor is registered; without it, its names are registered as absent, so that
//! `kafka://` in a build without `broker-kafka` says which feature brings it in, and
//! `weir --help` lists it. Adding a built-in driver is one more `builtin!` line here.

use weir_core::Result;
use weir_core::registry::{AdapterScheme, BrokerScheme, Registry, RuntimeType, StateScheme};
use weir_core::url_query::QueryParams;

/// Registers a driver that the Cargo feature `$feature` of weir compiles in, with a one-line
/// description: `builtin!(registry, "feature", "about", Kind::new(&["scheme", …], open))`, or
/// `builtin!(registry, "feature", "about", RuntimeType::new("type", open))` (`shared` too).
/// Without the feature, the names are registered as absent, with the feature that brings them.
macro_rules! builtin {
    (@gate $registry:ident, $feature:literal, $about:literal, $kind:ident, [$($name:literal),+], $entry:expr) => {{
        #[cfg(feature = $feature)]
        $registry.add($entry.about($about));
        #[cfg(not(feature = $feature))]
        $registry.add(
            $kind::absent(&[$($name),+], concat!("the `", $feature, "` Cargo feature of weir"))
                .about($about),
        );
    }};
    ($registry:ident, $feature:literal, $about:literal, RuntimeType::$new:ident($name:literal, $open:expr $(,)?)) => {
        builtin!(@gate $registry, $feature, $about, RuntimeType, [$name], RuntimeType::$new($name, $open))
    };
    ($registry:ident, $feature:literal, $about:literal, $kind:ident::$new:ident(&[$($name:literal),+ $(,)?], $open:expr $(,)?)) => {
        builtin!(@gate $registry, $feature, $about, $kind, [$($name),+], $kind::$new(&[$($name),+], $open))
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

impl Add<AdapterScheme> for Registry {
    fn add(&mut self, entry: AdapterScheme) {
        self.adapter(entry);
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
        "Redis 6.2+ or Valkey; shared by many nodes",
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
        "Redis streams",
        BrokerScheme::new(&["redis", "rediss"], |url| async move {
            weir_broker_redis::RedisBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-amqp",
        "RabbitMQ (AMQP 0-9-1)",
        BrokerScheme::new(&["amqp", "amqps"], |url| async move {
            weir_broker_amqp::AmqpBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-sqs",
        "Amazon SQS",
        BrokerScheme::new(&["sqs"], |url| async move {
            weir_broker_sqs::SqsBroker::connect(&url).await
        })
    );
    builtin!(
        registry,
        "broker-kafka",
        "Kafka protocol (librdkafka)",
        BrokerScheme::new(&["kafka", "kafka+mock"], |url| async move {
            weir_broker_kafka::KafkaBroker::connect(&url).await
        })
    );

    registry.runtime(
        RuntimeType::new(weir_driver_process::KIND, |_| async {
            Ok(weir_driver_process::ProcessDriver::new())
        })
        .about("a local executable"),
    );
    registry.runtime(
        RuntimeType::new(weir_driver_http::KIND, |settings| async move {
            weir_driver_http::HttpDriver::new(weir_driver_http::HttpDriverConfig {
                signing_key: settings.signing_key,
            })
        })
        .about("an HTTP endpoint"),
    );
    // Docker: talks to `DOCKER_HOST` or the default socket, connecting on first use;
    // containers a dead weir left behind are removed now, in the background (a machine
    // without a Docker engine starts as fast as ever).
    builtin!(
        registry,
        "driver-docker",
        "a Docker container",
        RuntimeType::shared("docker", |_| async { Ok(docker_driver()) })
    );
    // WASM: modules compiled once and cached on disk (`$WEIR_WASM_CACHE_DIR`, else
    // `~/.cache/weir/wasm`).
    builtin!(
        registry,
        "driver-wasm",
        "a WebAssembly (WASI) module",
        RuntimeType::new("wasm", |_| async {
            weir_driver_wasm::WasmDriver::new(weir_driver_wasm::WasmDriverConfig::default())
        })
    );
    // Lambda: region, endpoint and credentials from the AWS chain (`AWS_REGION`,
    // `AWS_ENDPOINT_URL`, …); nothing is sent to AWS until a lambda step loads.
    builtin!(
        registry,
        "driver-lambda",
        "an AWS Lambda function",
        RuntimeType::new("lambda", |_| async {
            weir_driver_lambda::LambdaDriver::connect(weir_driver_lambda::LambdaDriverConfig::new())
                .await
        })
    );
    // Celery tasks from a queue on Redis (kombu's transport) or RabbitMQ (adapters/celery).
    builtin!(
        registry,
        "adapter-celery",
        "Celery tasks from a Redis queue",
        AdapterScheme::new(&["celery+redis", "celery+rediss"], |url| async move {
            weir_adapter_celery::CeleryRedisAdapter::open(&url).await
        })
    );
    builtin!(
        registry,
        "adapter-celery",
        "Celery tasks from a RabbitMQ queue",
        AdapterScheme::new(&["celery+amqp", "celery+amqps"], |url| async move {
            weir_adapter_celery::CeleryAmqpAdapter::open(&url).await
        })
    );
    // A Faktory server: Faktory clients push jobs to weir (adapters/faktory).
    builtin!(
        registry,
        "adapter-faktory",
        "a Faktory server for Faktory clients",
        AdapterScheme::new(&["faktory", "faktory+tls"], |url| async move {
            weir_adapter_faktory::FaktoryAdapter::open(&url).await
        })
    );
    registry
}

/// The Docker driver, sweeping in the background the step containers a stopped weir left (the
/// sweep also connects the driver, so its first step does not wait for it).
#[cfg(feature = "driver-docker")]
fn docker_driver() -> std::sync::Arc<weir_driver_docker::DockerDriver> {
    let driver = std::sync::Arc::new(weir_driver_docker::DockerDriver::new(
        weir_driver_docker::DockerDriverConfig::default(),
    ));
    let sweeper = driver.clone();
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
    driver
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
    fn every_builtin_is_listed_present_or_with_its_feature() {
        let registry = builtins();
        let text = registry.describe();
        for name in ["memory://", "process", "http"] {
            assert!(text.contains(name), "{name}: {text}");
        }
        let absent: Vec<(Vec<String>, String)> =
            registry
                .states()
                .filter_map(|e| Some((e.names().to_vec(), e.availability().err()?.to_string())))
                .chain(registry.brokers().filter_map(|e| {
                    Some((e.names().to_vec(), e.availability().err()?.to_string()))
                }))
                .chain(registry.runtimes().filter_map(|e| {
                    Some((e.names().to_vec(), e.availability().err()?.to_string()))
                }))
                .collect();
        for (feature, name) in [
            ("state-redis", "redis"),
            ("broker-amqp", "amqp"),
            ("broker-kafka", "kafka"),
            ("broker-sqs", "sqs"),
            ("driver-docker", "docker"),
            ("driver-wasm", "wasm"),
            ("driver-lambda", "lambda"),
        ] {
            assert!(text.contains(name), "{name}: {text}");
            let how = absent
                .iter()
                .find(|(names, _)| names.iter().any(|n| n == name))
                .map(|(_, how)| how.as_str());
            let compiled_in = match feature {
                "state-redis" => cfg!(feature = "state-redis"),
                "broker-amqp" => cfg!(feature = "broker-amqp"),
                "broker-kafka" => cfg!(feature = "broker-kafka"),
                "broker-sqs" => cfg!(feature = "broker-sqs"),
                "driver-docker" => cfg!(feature = "driver-docker"),
                "driver-wasm" => cfg!(feature = "driver-wasm"),
                _ => cfg!(feature = "driver-lambda"),
            };
            if compiled_in {
                assert_eq!(how, None, "{name} is in this build");
            } else {
                let how = how.unwrap_or_else(|| panic!("{name} is listed as absent"));
                assert!(how.contains(&format!("`{feature}`")), "{name}: {how}");
                assert!(text.contains(how), "{text}");
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
