//! `amqps://`: the broker passes the conformance suite over TLS against a RabbitMQ node of the
//! test's own (a second node on this machine, listening only on TLS, its certificate signed by
//! a CA made here with the `openssl` CLI), and a node whose certificate is not trusted is
//! refused.
//!
//! Runs where the other AMQP tests run (`WEIR_TEST_AMQP_URL` set, as scripts/test.sh does): it
//! needs this machine's `rabbitmq-server` installation, not the shared node.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir_broker_amqp::AmqpBroker;
use weir_core::ErrorKind;
use weir_core::broker::Broker;
use weir_core::testkit::broker::run_all;
use weir_core::testkit::{Factory, unique};

/// The RabbitMQ start script that runs the node in the foreground as the calling user.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A RabbitMQ node listening only on TLS, stopped on drop.
struct TlsRabbit {
    port: u16,
    dir: tempfile::TempDir,
    script: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl TlsRabbit {
    fn start() -> TlsRabbit {
        assert!(
            Path::new(RABBITMQ_SERVER).exists(),
            "{RABBITMQ_SERVER} is missing (scripts/test.sh installs rabbitmq-server)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        weir_core::testkit::tls::make_test_certificates(d);
        let port = free_port();
        let dist_port = free_port();
        let p = |name: &str| d.join(name).display().to_string();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.1 = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 loopback_users = none\n",
                p("ca.pem"),
                p("server.pem"),
                p("server.key"),
            ),
        )
        .expect("write rabbitmq.conf");
        // No plugins: the management plugin of this machine's node would want port 15672.
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let log = std::fs::File::create(d.join("node.log")).expect("node.log");
        let script = Command::new(RABBITMQ_SERVER)
            .current_dir(d)
            // The Erlang cookie is made in $HOME: the test's directory.
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", format!("weir-tls-{port}@localhost"))
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", p("mnesia"))
            .env("RABBITMQ_LOG_BASE", p("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", p("node.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rabbitmq-server");
        let node = TlsRabbit { port, dir, script };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the TLS RabbitMQ node did not listen on {port} within 60 s: {}",
                std::fs::read_to_string(node.dir.path().join("node.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        node
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// An `amqps://` URL of this node with `params` appended.
    fn url(&self, params: &str) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f?{params}", self.port)
    }
}

impl Drop for TlsRabbit {
    fn drop(&mut self) {
        // The script runs the Erlang VM as a child: stop the VM (its pid file), then the script.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("node.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
    }
}

struct TlsBrokers(Arc<TlsRabbit>);

#[async_trait]
impl Factory<dyn Broker> for TlsBrokers {
    async fn make(&self) -> Arc<dyn Broker> {
        let url = self.0.url(&format!(
            "ca_file={}&prefix={}",
            self.0.ca().display(),
            unique("tls")
        ));
        Arc::new(AmqpBroker::connect(&url).await.expect("connect over TLS"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_and_untrusted_certificates_are_refused() {
    // Runs where the other AMQP tests run (under CI=true a missing URL fails).
    if common::url_with("").is_none() {
        return;
    }
    let node = Arc::new(
        tokio::task::spawn_blocking(TlsRabbit::start)
            .await
            .expect("start"),
    );

    // Without the test CA the server's certificate is not trusted: a clear, permanent error.
    let err = AmqpBroker::connect(&node.url("timeout=5s"))
        .await
        .expect_err("an untrusted certificate must be refused");
    let message = err.to_string();
    assert!(
        message.to_lowercase().contains("certificate") || message.contains("tls"),
        "the error says why: {message}"
    );
    assert_ne!(err.kind(), ErrorKind::Internal, "{err}");
    eprintln!("untrusted certificate refused: {err}");

    run_all(&TlsBrokers(node.clone())).await;
}
