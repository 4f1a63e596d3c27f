//! A TCP proxy in front of the test endpoint. It can let one kind of request vanish (the
//! connection that carries it goes silent: nothing forwarded, nothing answered, not closed, as
//! a pooled connection that died without a FIN does), or slow every request down (a slow SQS
//! endpoint). Everything else passes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy.
pub struct Proxy {
    /// `url` with its endpoint replaced by the proxy's address.
    pub url: String,
    armed: Arc<AtomicBool>,
    /// How many more requests to swallow while armed ([`UNLIMITED`]: every one).
    left: Arc<AtomicUsize>,
    swallowed: Arc<AtomicUsize>,
}

/// [`Proxy::arm`]: no limit on the requests swallowed.
const UNLIMITED: usize = usize::MAX;

/// What the proxy does to the requests it forwards.
#[derive(Clone, Copy)]
enum Mode {
    /// Swallows requests containing the pattern while armed.
    Swallow(&'static [u8]),
    /// Holds every request back for a random time between the two bounds (milliseconds).
    Slow(u64, u64),
}

impl Proxy {
    /// Starts a proxy for the `endpoint=http://host:port` of the broker URL `url`, swallowing
    /// requests that contain `pattern` while armed. `None` when the endpoint is not plain
    /// HTTP (the proxy cannot read TLS).
    pub async fn start(url: &str, pattern: &'static [u8]) -> Option<Proxy> {
        Self::with_mode(url, Mode::Swallow(pattern)).await
    }

    /// Starts a proxy that holds every request back for a random `min_ms..=max_ms` before
    /// forwarding it (in order: a connection's requests never overtake each other). `None`
    /// when the endpoint is not plain HTTP.
    pub async fn slowed(url: &str, min_ms: u64, max_ms: u64) -> Option<Proxy> {
        Self::with_mode(url, Mode::Slow(min_ms, max_ms)).await
    }

    async fn with_mode(url: &str, mode: Mode) -> Option<Proxy> {
        let endpoint = url
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("endpoint="))?;
        let target = endpoint
            .strip_prefix("http://")?
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxied = format!("http://{}", listener.local_addr().expect("addr"));
        let armed = Arc::new(AtomicBool::new(false));
        let left = Arc::new(AtomicUsize::new(UNLIMITED));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let (a, l, s) = (armed.clone(), left.clone(), swallowed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let trap = Trap {
                    armed: a.clone(),
                    left: l.clone(),
                    swallowed: s.clone(),
                };
                tokio::spawn(forward(client, server, mode, trap));
            }
        });
        Some(Proxy {
            url: url.replace(
                &format!("endpoint={endpoint}"),
                &format!("endpoint={proxied}"),
            ),
            armed,
            left,
            swallowed,
        })
    }

    /// From now on, a request containing the pattern silences its connection.
    pub fn arm(&self) {
        self.left.store(UNLIMITED, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The next request containing the pattern (only that one) silences its connection.
    pub fn arm_once(&self) {
        self.arm_times(1);
    }

    /// The next `n` requests containing the pattern silence their connections.
    pub fn arm_times(&self, n: usize) {
        self.left.store(n, Ordering::SeqCst);
        self.armed.store(n > 0, Ordering::SeqCst);
    }

    /// Requests pass again (connections already silenced stay silent).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// How many requests were swallowed.
    pub fn swallowed(&self) -> usize {
        self.swallowed.load(Ordering::SeqCst)
    }
}

/// The proxy's switches, shared by its connections.
struct Trap {
    armed: Arc<AtomicBool>,
    left: Arc<AtomicUsize>,
    swallowed: Arc<AtomicUsize>,
}

impl Trap {
    /// Whether to swallow a request containing the pattern (counting it; disarming after the
    /// last one when armed for a number of them).
    fn springs(&self) -> bool {
        if !self.armed.load(Ordering::SeqCst) {
            return false;
        }
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                UNLIMITED => Some(UNLIMITED),
                0 => None,
                n => Some(n - 1),
            });
        match taken {
            Ok(1) => self.armed.store(false, Ordering::SeqCst),
            Ok(_) => {}
            Err(_) => return false,
        }
        self.swallowed.fetch_add(1, Ordering::SeqCst);
        true
    }
}

async fn forward(mut client: TcpStream, server: TcpStream, mode: Mode, trap: Trap) {
    let silenced = AtomicBool::new(false);
    let (mut from_server, mut to_server) = server.into_split();
    let (mut from_client, mut to_client) = client.split();
    let upstream = async {
        let mut window: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match mode {
                Mode::Swallow(pattern) => {
                    // The pattern may straddle two reads: look at the tail of the last one too.
                    let keep = window.len().saturating_sub(pattern.len());
                    window.drain(..keep);
                    window.extend_from_slice(&chunk[..n]);
                    if window.windows(pattern.len()).any(|w| w == pattern) && trap.springs() {
                        silenced.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                // A request's head starts with its method; its body's later reads pass at once.
                Mode::Slow(min, max)
                    if chunk[..n].starts_with(b"POST ") || chunk[..n].starts_with(b"GET ") =>
                {
                    let ms = rand::random_range(min..=max);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Mode::Slow(..) => {}
            }
            if to_server.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
    if silenced.load(Ordering::SeqCst) {
        // Silent from now on, and kept open (even if the server closes its side).
        drop((from_server, to_server));
        std::future::pending::<()>().await;
        drop(client);
    }
}
