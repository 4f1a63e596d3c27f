//! Bad input over a raw TCP connection: each gets an error reply or a closed connection, the
//! connection stays usable where it can, and the server keeps serving everyone else.

mod common;

use std::time::Duration;

use common::Raw;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_core::testkit::unique;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_get_an_error_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "").await;
    let mut raw = Raw::hello(running.address()).await;
    let cases: &[(&[u8], &str)] = &[
        (b"\x00\xff garbage \x01", "-ERR unknown command "),
        (b"PUSH {not json", "-ERR invalid JSON: "),
        (
            br#"PUSH {"jobtype": "x", "args": []}"#,
            "-ERR jobs must have a reasonable jid parameter",
        ),
        (
            br#"PUSH {"jid": "12345678", "args": []}"#,
            "-ERR jobs must have a jobtype parameter",
        ),
        (
            br#"PUSH {"jid": "12345678", "jobtype": "x"}"#,
            "-ERR jobs must have an args parameter",
        ),
        (b"FETCH", "-ERR must call fetch with at least one queue"),
        (b"FETCH bad/queue", "-ERR cannot get \"bad/queue\" queue"),
        (b"ACK nope", "-ERR invalid ACK nope"),
        (br#"ACK {"jid": "unknown-jid"}"#, "+OK"),
        (
            br#"FAIL {"jid": "unknown-jid"}"#,
            "-ERR Job not found unknown-jid",
        ),
        (br#"BEAT {"wid": "nobody"}"#, "-ERR unknown worker nobody"),
        (b"HELLO {}", "-ERR HELLO was said already"),
        (b"QUEUE PAUSE", "-ERR QUEUE PAUSE needs queue names"),
        (
            b"MUTATE {\"cmd\":\"zap\",\"target\":\"dead\"}",
            "-ERR unknown mutate operation",
        ),
        (
            b"BATCH NEW {}",
            "-ERR batch subsystem is only available in Faktory Enterprise",
        ),
        (b"", "-ERR unknown command "),
    ];
    for (line, expected) in cases {
        let reply = raw.send(line).await.expect("a reply");
        assert!(
            reply.starts_with(expected),
            "{}: {reply}",
            String::from_utf8_lossy(line)
        );
    }
    // A PUSHB answers each refused job by its jid.
    let jobs = json!([{"jid": "12345678", "jobtype": "x"}, {"jid": "abc"}]);
    let reply = raw
        .send(format!("PUSHB {jobs}").as_bytes())
        .await
        .expect("a reply");
    let (_, body) = reply.split_once(' ').expect("bulk");
    let refused: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(refused["12345678"], "jobs must have an args parameter");
    assert_eq!(refused["abc"], "jobs must have a reasonable jid parameter");
    // Still usable.
    let info = raw.send(b"INFO").await.expect("a reply");
    assert!(info.contains("\"faktory_version\":\"1.9.1\""), "{info}");
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_read_on_from_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "?line_timeout=1s").await;
    let address = running.address().to_string();

    // A command before HELLO: an error, then the connection closes.
    let (mut raw, _) = Raw::connect(&address).await;
    let reply = raw.send(b"FETCH default").await;
    assert!(
        reply
            .as_deref()
            .is_some_and(|r| r.starts_with("-ERR the first command must be HELLO")),
        "{reply:?}"
    );
    assert!(raw.closed().await);

    // Silence after the greeting: closed after the handshake's 2 s.
    let (mut silent, _) = Raw::connect(&address).await;
    assert!(silent.closed().await, "a silent client is let go");

    // A 64 MiB line: refused once it passes the limit, not read to its end.
    let mut big = Raw::hello(&address).await;
    let (mut reader, mut writer) = (big.reader, big.writer);
    let flood = tokio::spawn(async move {
        let chunk = vec![b'x'; 1 << 20];
        writer.write_all(b"PUSH ").await.ok();
        for _ in 0..64 {
            if writer.write_all(&chunk).await.is_err() {
                return false;
            }
        }
        true
    });
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("reads");
    assert!(line.starts_with("-ERR command line longer than"), "{line}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await;
    drop(reader);
    assert!(
        !flood.await.expect("joins"),
        "the server closed the connection before the 64 MiB were sent"
    );
    big = Raw::hello(&address).await;

    // A line that trickles: cut off after `line_timeout`.
    big.writer
        .write_all(b"PUSH {\"jid\": ")
        .await
        .expect("writes");
    let reply = big.reply().await;
    assert_eq!(
        reply.as_deref(),
        Some("-ERR command line too slow to arrive")
    );
    assert!(big.closed().await);

    // Meanwhile everyone else is served.
    let mut other = Raw::hello(&address).await;
    let ack = format!(r#"ACK {{"jid": "{}"}}"#, unique("jid"));
    assert_eq!(other.send(ack.as_bytes()).await.as_deref(), Some("+OK"));
    running.stop().await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_clients_wait_their_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, handle) = common::engine(dir.path(), &[]).await;
    let running = common::run_adapter(&engine, None, "?max_connections=2").await;
    let address = running.address().to_string();
    let first = Raw::hello(&address).await;
    let _second = Raw::hello(&address).await;
    let stream = TcpStream::connect(&address).await.expect("connects");
    let mut third = BufReader::new(stream);
    let mut hi = String::new();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read_line(&mut hi))
            .await
            .is_err(),
        "no greeting while two connections are served: {hi}"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_line(&mut hi))
        .await
        .expect("greeted once a connection closed")
        .expect("reads");
    assert!(hi.starts_with("+HI "), "{hi}");
    running.stop().await;
    handle.shutdown().await;
}
