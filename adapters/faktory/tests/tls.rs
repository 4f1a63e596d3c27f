//! `faktory+tls://`: the real Node client (npm `faktory-worker`, Node's `tls` with the test
//! CA) pushes a handled job over TLS with a password; a plain-text client gets no greeting.
//! The real Rust client and worker (crates.io `faktory`, over a tokio-rustls stream trusting
//! the test CA) push, work and acknowledge a job over TLS.
//!
//! Needs the openssl CLI; the Node test also Node with the package
//! (`WEIR_TEST_FAKTORY_NODE_PATH`).

mod common;

use serde_json::json;
use weir_core::testkit::{service_url, tls::make_test_certificates, unique};

/// argv: port, CA file, password, jid. Pushes one job over TLS and prints the server's INFO
/// description.
const SCRIPT: &str = r#"
const faktory = require("faktory-worker");
const fs = require("fs");
const [port, ca, password, jid] = process.argv.slice(1);
(async () => {
  const client = new faktory.Client({
    url: `tcp://localhost:${port}`, password,
    tlsOptions: { ca: fs.readFileSync(ca), servername: "localhost" },
  });
  await client.push({ jobtype: "send_email", args: [7], jid });
  const info = await client.info();
  await client.close();
  console.log(info.server.description);
})().catch((e) => { console.log(`error: ${e}`); process.exit(1); });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_client_pushes_over_tls() {
    let Some(node_path) = service_url("WEIR_TEST_FAKTORY_NODE_PATH") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    make_test_certificates(dir.path());
    let functions = dir.path().join("functions");
    common::mailer(&functions);
    let (engine, handle) = common::engine(&functions, &["mailer"]).await;
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let adapter = weir_adapter_faktory::FaktoryAdapter::open(&format!(
        "faktory+tls://:tls-pw@127.0.0.1:0?cert={}&key={}",
        cert.display(),
        key.display()
    ))
    .await
    .expect("opens");
    let port = adapter.local_addr().expect("bound").port();
    let (trigger, shutdown) = weir_core::adapter::Shutdown::new();
    let task = tokio::spawn({
        let engine = engine.clone();
        async move {
            use weir_core::adapter::Adapter;
            adapter.run(engine, shutdown).await
        }
    });

    let jid = unique("tls-jid");
    let ca = dir.path().join("ca.pem").to_string_lossy().to_string();
    let stdout = common::node(
        &node_path,
        SCRIPT,
        &[&port.to_string(), &ca, "tls-pw", &jid],
    )
    .await;
    assert_eq!(stdout.trim(), "weir (Faktory protocol)");
    let runs = common::ended_runs_of(&engine, &jid).await;
    assert_eq!(runs[0].steps["send"].output, Some(json!({"to": 7})));

    // Plain text on the TLS port: the handshake fails, and no greeting comes.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain.write_all(b"HELLO {}\r\n").await.expect("writes");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut got),
    )
    .await;
    assert!(!got.starts_with(b"+HI"), "no plain-text greeting: {got:?}");

    // A certificate file that is not there fails the start, naming it.
    let missing = weir_adapter_faktory::FaktoryAdapter::open(
        "faktory+tls://127.0.0.1:0?cert=/nonexistent/c.pem&key=/nonexistent/k.pem",
    )
    .await
    .expect_err("no such file");
    assert!(
        missing.to_string().contains("/nonexistent/c.pem"),
        "{missing}"
    );

    trigger.raise();
    task.await
        .expect("joins")
        .expect("the adapter stops without an error");
    handle.shutdown().await;
}

/// A TLS connection (tokio-rustls, trusting the test CA) for the Rust client, which takes any
/// stream that can reconnect.
struct TlsConn {
    stream: tokio::io::BufStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    port: u16,
    connector: tokio_rustls::TlsConnector,
}

impl TlsConn {
    async fn open(port: u16, connector: tokio_rustls::TlsConnector) -> std::io::Result<TlsConn> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await?;
        Ok(TlsConn {
            stream: tokio::io::BufStream::new(tls),
            port,
            connector,
        })
    }
}

#[async_trait::async_trait]
impl faktory::Reconnect for TlsConn {
    async fn reconnect(&mut self) -> std::io::Result<Box<dyn faktory::Connection>> {
        Ok(Box::new(
            TlsConn::open(self.port, self.connector.clone()).await?,
        ))
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncBufRead for TlsConn {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_fill_buf(cx)
    }

    fn consume(mut self: std::pin::Pin<&mut Self>, amt: usize) {
        std::pin::Pin::new(&mut self.stream).consume(amt)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_and_worker_speak_tls() {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = tempfile::tempdir().expect("tempdir");
    make_test_certificates(dir.path());
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let adapter = weir_adapter_faktory::FaktoryAdapter::open(&format!(
        "faktory+tls://:rust-tls@127.0.0.1:0?cert={}&key={}",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    ))
    .await
    .expect("opens");
    let port = adapter.local_addr().expect("bound").port();
    let (trigger, shutdown) = weir_core::adapter::Shutdown::new();
    let task = tokio::spawn({
        let engine = engine.clone();
        async move {
            use weir_core::adapter::Adapter;
            adapter.run(engine, shutdown).await
        }
    });

    let mut roots = RootCertStore::empty();
    for cert in
        rustls_pki_types::CertificateDer::pem_file_iter(dir.path().join("ca.pem")).expect("ca.pem")
    {
        roots.add(cert.expect("a certificate")).expect("added");
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));

    let stream = TlsConn::open(port, connector.clone()).await.expect("TLS");
    let mut client = faktory::Client::connect_with(stream, Some("rust-tls".into()))
        .await
        .expect("HELLO over TLS");
    client
        .enqueue(faktory::Job::new("record", vec![1]))
        .await
        .expect("PUSH");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut worker = faktory::Worker::builder()
        .register_fn("record", {
            let done = done.clone();
            move |_job| {
                let done = done.clone();
                async move {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<(), std::io::Error>(())
                }
            }
        })
        .connect_with(
            TlsConn::open(port, connector).await.expect("TLS"),
            Some("rust-tls".into()),
        )
        .await
        .expect("the worker connects over TLS");
    assert!(worker.run_one(0, &["default"]).await.expect("runs the job"));
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    let info = client.current_info().await.expect("INFO");
    assert_eq!(info.data.total_processed, 1);
    drop(worker);
    drop(client);
    trigger.raise();
    task.await
        .expect("joins")
        .expect("the adapter stops without an error");
    handle.shutdown().await;
}
