//! A TCP proxy that stalls a server's replies, or cuts connections off without the client
//! hearing ([`StallProxy`]): for tests of deadlines and of answers that come too late.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy that can hold everything the server sends back until released (requests reach
/// the server and are applied, their answers come late, as from a stalled server or network),
/// and can cut its connections off: the server sees them closed, the client sees nothing.
pub struct StallProxy {
    /// The proxy's `host:port`.
    pub addr: String,
    hold: watch::Sender<bool>,
    /// How many times [`cut`](Self::cut) was called.
    cuts: watch::Sender<u64>,
}

impl StallProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: String) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (hold, held) = watch::channel(false);
        let (cuts, cut) = watch::channel(0);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Counted now: a `cut()` from here on reaches this connection.
                let cuts_before = *cut.borrow();
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay(
                    client,
                    server,
                    held.clone(),
                    cut.clone(),
                    cuts_before,
                ));
            }
        });
        StallProxy { addr, hold, cuts }
    }

    /// Starts a proxy to the server of `url` (`scheme://[userinfo@]host:port[/…][?…]`) and
    /// returns it with `url` pointed at it (userinfo, path and query kept).
    pub async fn in_front_of(url: &str) -> (StallProxy, String) {
        let (scheme, rest) = url.split_once("://").expect("a scheme://… URL");
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (format!("{userinfo}@"), host_port),
            None => (String::new(), authority),
        };
        let proxy = StallProxy::start(host_port.to_owned()).await;
        let proxied = format!("{scheme}://{userinfo}{}{tail}", proxy.addr);
        (proxy, proxied)
    }

    /// Cuts every connection open now off: closes it towards the server (which sees the
    /// client gone) and leaves it open and silent towards the client (which hears nothing, as
    /// after a close it missed or on a half-open socket). Later connections pass.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Holds the server's replies from now on, until [`release`](Self::release).
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Lets the held replies (and all later ones) through.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// Holds the server's replies for `how_long`.
    pub async fn stall(&self, how_long: Duration) {
        self.hold.send_replace(true);
        tokio::time::sleep(how_long).await;
        self.hold.send_replace(false);
    }
}

/// Relays one connection both ways until either side closes it or it is cut off.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    held: watch::Receiver<bool>,
    mut cut: watch::Receiver<u64>,
    cuts_before: u64,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let both_ways = async {
        let requests = async {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            // The client closed: tell the server.
            let _ = server_write.shutdown().await;
        };
        tokio::join!(
            requests,
            pump_replies(&mut server_read, &mut client_write, held)
        )
    };
    let cut_off = async {
        if cut.wait_for(|n| *n > cuts_before).await.is_err() {
            // The proxy was dropped: relay on.
            std::future::pending::<()>().await;
        }
    };
    let was_cut = tokio::select! {
        _ = both_ways => false,
        () = cut_off => true,
    };
    if was_cut {
        drop((server_read, server_write));
        // The client's side stays open and silent for as long as the proxy's runtime runs.
        std::future::pending::<()>().await;
        drop((client_read, client_write));
    }
}

/// Forwards what the server sends, waiting while replies are held; passes the server's close
/// on.
async fn pump_replies(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
