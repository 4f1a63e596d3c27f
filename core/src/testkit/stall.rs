//! A TCP proxy that stalls a server's replies ([`StallProxy`]): for tests of deadlines and of
//! answers that come too late.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy that can hold everything the server sends back until released: requests reach
/// the server (and are applied), their answers come late, as from a stalled server or network.
pub struct StallProxy {
    /// The proxy's `host:port`.
    pub addr: String,
    hold: watch::Sender<bool>,
}

impl StallProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: String) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (hold, held) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_read, client_write) = client.into_split();
                let (server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                tokio::spawn(pump_replies(server_read, client_write, held.clone()));
            }
        });
        StallProxy { addr, hold }
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

/// Forwards what the server sends, waiting while replies are held.
async fn pump_replies(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
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
