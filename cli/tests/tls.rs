//! `rediss://`: the Redis state, event store and broker pass their conformance suites over
//! TLS against a redis-server of the test's own (its CA made here with the `openssl` CLI), and
//! a server whose certificate is not trusted is refused.
#![cfg(all(feature = "state-redis", feature = "broker-redis"))]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir::core::broker::Broker;
use weir::core::events::EventStore;
use weir::core::state::StateStore;
use weir::core::testkit::Factory;

/// A redis-server listening only on TLS, with a certificate signed by a CA of the test's own.
struct TlsRedis {
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        weir::core::testkit::tls::make_test_certificates(d);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let status = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .args(["--pidfile", "redis.pid", "--logfile", "redis.log"])
            .current_dir(d)
            .status()
            .expect("redis-server");
        assert!(status.success(), "redis-server with TLS did not start");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TlsRedis { port, dir };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server with TLS did not listen on {port}");
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A `rediss://` URL trusting the test CA, with a fresh key prefix and `extra` parameters.
    fn url(&self, extra: &str) -> String {
        format!(
            "rediss://127.0.0.1:{}?ca_file={}&prefix=weirtls-{}{extra}",
            self.port,
            self.ca().display(),
            ulid::Ulid::new()
        )
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Only where the suite has Redis (`WEIR_TEST_REDIS_URL`; under CI=true its absence fails).
fn tls_redis() -> Option<TlsRedis> {
    weir::core::testkit::service_url("WEIR_TEST_REDIS_URL")?;
    Some(TlsRedis::start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_event_stores_pass_conformance_over_tls() {
    let Some(redis) = tls_redis() else {
        return;
    };
    let redis = Arc::new(redis);
    let r = redis.clone();
    weir::core::testkit::state::run_all(&move || {
        let url = r.url("");
        Box::pin(async move {
            Arc::new(
                weir_state_redis::RedisStateStore::connect(&url)
                    .await
                    .expect("connect over TLS"),
            ) as Arc<dyn StateStore>
        })
    })
    .await;
    let r = redis.clone();
    weir::core::testkit::events::run_all(&move || {
        let url = r.url("");
        Box::pin(async move {
            Arc::new(
                weir_state_redis::RedisEventStore::connect(&url)
                    .await
                    .expect("connect over TLS"),
            ) as Arc<dyn EventStore>
        })
    })
    .await;
}

struct TlsBrokers(Arc<TlsRedis>);

#[async_trait]
impl Factory<dyn Broker> for TlsBrokers {
    async fn make(&self) -> Arc<dyn Broker> {
        let url = self.0.url("&lease=2s&block=250ms");
        Arc::new(
            weir_broker_redis::RedisBroker::connect(&url)
                .await
                .expect("connect over TLS"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_passes_conformance_over_tls() {
    let Some(redis) = tls_redis() else {
        return;
    };
    weir::core::testkit::broker::run_all(&TlsBrokers(Arc::new(redis))).await;
}

#[tokio::test]
async fn a_certificate_the_client_does_not_trust_is_refused() {
    let Some(redis) = tls_redis() else {
        return;
    };
    // Without ca_file the system store is used, which does not hold the test CA.
    let untrusted = format!("rediss://127.0.0.1:{}?prefix=weirtls", redis.port);
    let err = weir_state_redis::RedisStateStore::connect(&untrusted)
        .await
        .expect_err("an untrusted certificate must be refused");
    assert_eq!(err.kind(), weir::core::ErrorKind::Unavailable, "{err:?}");
    assert!(
        format!("{err:#}").contains("certificate"),
        "says why: {err:#}"
    );
    // A CA file that does not exist is a configuration error that names it.
    let missing = format!(
        "rediss://127.0.0.1:{}?ca_file=/nonexistent/ca.pem",
        redis.port
    );
    let err = weir_state_redis::RedisStateStore::connect(&missing)
        .await
        .expect_err("missing CA file");
    assert_eq!(err.kind(), weir::core::ErrorKind::Config);
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
