//! One client connection: the greeting, the HELLO (within [`HANDSHAKE_WAIT`], with the
//! password check), then one reply per command until the client leaves, sends something weir
//! cannot read on from, or weir shuts down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use weir_core::adapter::Shutdown;

use crate::auth::{Challenge, Hello};
use crate::command::{self, Command};
use crate::resp::{ReadLine, Reply, read_line};
use crate::server::Server;

/// How long a client has to say HELLO once greeted (as Faktory).
pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(2);

/// The longest HELLO line taken (a client that has not proven the password gets no more).
const MAX_HELLO: usize = 4_096;

/// Serves one connection until it ends.
pub async fn serve<S>(stream: S, server: Arc<Server>, mut shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let challenge = Challenge::new(server.settings().password.is_some());
    if send(&mut writer, &Reply::Simple(challenge.greeting()))
        .await
        .is_err()
    {
        return;
    }
    // The HELLO: anything else first, or nothing in time, closes the connection.
    let hello = tokio::select! {
        _ = shutdown.raised() => return,
        hello = tokio::time::timeout(HANDSHAKE_WAIT, read_line(&mut reader, MAX_HELLO)) => hello,
    };
    let hello = match hello {
        Ok(Ok(ReadLine::Line(line))) => line,
        Ok(Ok(ReadLine::TooLong)) => {
            let _ = send(&mut writer, &Reply::error("HELLO line too long")).await;
            return;
        }
        _ => return,
    };
    let hello = match command::parse(&hello) {
        Command::Hello(payload) => match serde_json::from_slice::<Hello>(payload) {
            Ok(hello) => hello,
            Err(e) => {
                let _ = send(&mut writer, &Reply::error(format!("invalid HELLO: {e}"))).await;
                return;
            }
        },
        _ => {
            let _ = send(
                &mut writer,
                &Reply::error("the first command must be HELLO (see the greeting)"),
            )
            .await;
            return;
        }
    };
    // Up to 8,095 rounds of SHA-256: off the async threads.
    let password = server.settings().password.clone();
    let hello = match tokio::task::spawn_blocking(move || {
        challenge
            .accepts(password.as_deref(), &hello)
            .then_some(hello)
    })
    .await
    {
        Ok(Some(hello)) => hello,
        _ => {
            tracing::warn!("faktory adapter: a client's password was wrong or missing");
            let _ = send(&mut writer, &Reply::error("Invalid password")).await;
            return;
        }
    };
    let wid = hello.wid.filter(|w| !w.is_empty());
    if let Some(wid) = &wid {
        server.worker_joined(wid);
        // An order given before it connected holds from its first FETCH.
        server.read_order(wid).await;
    }
    server.stats.connections.fetch_add(1, Ordering::Relaxed);
    if send(&mut writer, &Reply::Ok).await.is_ok() {
        commands(
            &mut reader,
            &mut writer,
            &server,
            &mut shutdown,
            wid.as_deref(),
        )
        .await;
    }
    server.stats.connections.fetch_sub(1, Ordering::Relaxed);
    if let Some(wid) = &wid {
        server.worker_left(wid);
    }
}

/// How long a worker's connection is still served after shutdown (ACK and FAIL of the jobs
/// it holds; FETCH finds nothing): a worker stopping with the node loses no answer.
pub const DRAIN: Duration = Duration::from_secs(5);

/// How long a reply may take to be written before the client counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The command loop after the handshake. At shutdown a producer's connection ends at once; a
/// worker's (`wid`) is served for [`DRAIN`] more, without handing out jobs.
async fn commands<R, W>(
    reader: &mut R,
    writer: &mut W,
    server: &Server,
    shutdown: &mut Shutdown,
    wid: Option<&str>,
) where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max_line = server.settings().max_line;
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        // Between commands a client may idle (a producer keeps its connection); once a line
        // starts it must end within the settings' `line_timeout`.
        let started = tokio::select! {
            biased;
            _ = shutdown.raised(), if drain_until.is_none() => {
                if wid.is_none() {
                    return;
                }
                drain_until = Some(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            _ = sleep_until_some(drain_until) => return,
            started = tokio::io::AsyncBufReadExt::fill_buf(reader) => started,
        };
        match started {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        let line_timeout = server.settings().line_timeout;
        let line = match tokio::time::timeout(line_timeout, read_line(reader, max_line)).await {
            Ok(Ok(ReadLine::Line(line))) => line,
            Ok(Ok(ReadLine::TooLong)) => {
                let _ = send(
                    writer,
                    &Reply::error(format!(
                        "command line longer than {max_line} bytes; closing the connection"
                    )),
                )
                .await;
                return;
            }
            Ok(Ok(ReadLine::Closed)) | Ok(Err(_)) => return,
            Err(_) => {
                let _ = send(writer, &Reply::error("command line too slow to arrive")).await;
                return;
            }
        };
        server.stats.commands.fetch_add(1, Ordering::Relaxed);
        let command = command::parse(&line);
        let fetched = matches!(command, Command::Fetch(_));
        let reply = match command {
            Command::End => return,
            Command::Hello(_) => Reply::error("HELLO was said already"),
            Command::Push(payload) => server.push(payload).await,
            Command::PushBulk(payload) => server.push_bulk(payload).await,
            Command::Fetch(queues) => {
                // A client that leaves while its FETCH waits is handed no job.
                let gone = async {
                    match tokio::io::AsyncBufReadExt::fill_buf(reader).await {
                        Ok([]) | Err(_) => {}
                        Ok(_) => std::future::pending().await,
                    }
                };
                server.fetch(&queues, wid, shutdown, gone).await
            }
            Command::Ack(payload) => server.ack(payload).await,
            Command::Fail(payload) => server.fail(payload).await,
            Command::Beat(payload) => server.beat(payload).await,
            Command::Info => server.info().await,
            Command::Flush => server.flush().await,
            Command::Queue { op, names } => server.queue(op, &names).await,
            Command::Mutate(payload) => server.mutate(payload).await,
            Command::Enterprise(what) => Reply::error(format!(
                "{what} subsystem is only available in Faktory Enterprise"
            )),
            Command::Unknown(verb) => Reply::error(format!("unknown command {verb}")),
        };
        if send(writer, &reply).await.is_err() {
            // A job reserved for a client that is gone goes back to its queue.
            if let (true, Reply::Bulk(job)) = (fetched, &reply) {
                server.unfetch(job).await;
            }
            return;
        }
    }
}

/// Waits until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one reply and flushes it, within [`WRITE_TIMEOUT`] (a client that reads nothing is
/// let go).
async fn send<W: AsyncWrite + Unpin>(writer: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut out = Vec::new();
    reply.encode(&mut out);
    let write = async {
        writer.write_all(&out).await?;
        writer.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
