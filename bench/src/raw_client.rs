//! `--client raw`: a minimal HTTP/1.1 keep-alive client (pre-formatted request head,
//! `Content-Length` answers only), far cheaper per request than reqwest.

use std::sync::Arc;

use axum::body::Bytes;

/// Where the raw client connects and what it sends before each body.
pub(super) struct RawTarget {
    /// `host:port` to connect to.
    authority: String,
    /// The request head up to the `Content-Length` value.
    head: String,
}

impl RawTarget {
    /// Parses an `http://host:port/path` URL.
    pub(super) fn parse(url: &str) -> Result<RawTarget, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("--client raw speaks plain http:// only: {url}"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("no host in {url}"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authority = format!("{host}:{port}");
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: ",
            parsed.path()
        );
        Ok(RawTarget { authority, head })
    }
}

/// A minimal HTTP/1.1 keep-alive connection: sends a pre-formatted head and the body, reads a
/// `Content-Length` answer. Reconnects after an error or a `Connection: close`.
pub(super) struct RawConn {
    target: Arc<RawTarget>,
    stream: Option<tokio::net::TcpStream>,
    /// Bytes read and not consumed yet.
    input: Vec<u8>,
    /// The request being sent.
    output: Vec<u8>,
}

impl RawConn {
    pub(super) fn new(target: Arc<RawTarget>) -> RawConn {
        RawConn {
            target,
            stream: None,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(4096),
        }
    }

    pub(super) async fn post(&mut self, body: &[u8]) -> Result<(u16, Bytes), String> {
        use std::io::Write as _;
        self.output.clear();
        self.output.extend_from_slice(self.target.head.as_bytes());
        let _ = write!(self.output, "{}\r\n\r\n", body.len());
        self.output.extend_from_slice(body);
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.target.authority)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.target.authority))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.input.clear();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("not connected".into());
        };
        match exchange(stream, &self.output, &mut self.input).await {
            Ok((status, answer, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok((status, answer))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Writes `request` and reads one answer; returns its status, body and whether the connection
/// stays open.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    input: &mut Vec<u8>,
) -> Result<(u16, Bytes, bool), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut scanned = 0;
    let head_end = loop {
        if let Some(p) = input[scanned..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scanned + p + 4;
        }
        scanned = input.len().saturating_sub(3);
        if input.len() > 64 * 1024 {
            return Err("answer head over 64 KiB".into());
        }
        input.reserve(8192);
        let n = stream
            .read_buf(input)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
    };
    let head = std::str::from_utf8(&input[..head_end]).map_err(|_| "answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut length = None;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("--client raw cannot read chunked answers".into());
        }
    }
    let length = length.ok_or("answer without Content-Length")?;
    while input.len() < head_end + length {
        input.reserve(head_end + length - input.len());
        let n = stream
            .read_buf(input)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection mid-answer".into());
        }
    }
    let body = Bytes::copy_from_slice(&input[head_end..head_end + length]);
    input.drain(..head_end + length);
    Ok((status, body, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BENCH_KEY;
    use crate::baseline::baseline_router;
    use crate::load::{check_answer, ingest_body};
    use crate::local::serve_local;

    #[tokio::test]
    async fn raw_client_keeps_the_connection_and_checks_answers() {
        let (addr, server) = serve_local(baseline_router()).await.unwrap();
        let target = RawTarget::parse(&format!("http://{addr}/e/{BENCH_KEY}")).unwrap();
        let mut conn = RawConn::new(Arc::new(target));
        for i in 0..3 {
            let (status, answer) = conn.post(&ingest_body(i, 2)).await.unwrap();
            assert_eq!(status, 200);
            check_answer(status, &answer, 0).unwrap();
            assert!(check_answer(status, &answer, 2).is_err());
        }
        let (status, answer) = conn.post(b"{not json").await.unwrap();
        assert_eq!(status, 400);
        assert!(check_answer(status, &answer, 0).is_err());
        assert!(RawTarget::parse("https://example.com/e/x").is_err());
        server.abort();
    }
}
