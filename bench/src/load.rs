//! The load runner of `weir-bench ingest`: a fixed number of workers, each with one request in
//! flight, sending numbered events with reqwest or the raw client; and the checks every answer
//! must pass (shared with `weir-bench latency`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use weir_core::Error;

use super::raw_client::{RawConn, RawTarget};
use super::stats::{Percentiles, nanos};
use super::{BENCH_KEY, ClientKind};

/// ~200 bytes of padding per ingested event, so events have a realistic size.
const PAD: &str = "weir-bench-padding-0123456789abcdefghijklmnopqrstuvwxyz-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-\
                   weir-bench-padding-0123456789abcdefghijklmnopqrstuvwxyz-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-\
                   0123456789abcdef";

/// A keep-alive HTTP/1.1 client with room for `connections` idle connections.
pub(super) fn client(connections: usize) -> weir_core::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))
}

/// The part of an answer the load generator checks.
#[derive(Deserialize)]
struct Answer {
    ids: Vec<IgnoredAny>,
}

/// When a load stops.
#[derive(Clone, Copy)]
pub(super) enum Until {
    /// After this many events.
    Events(u64),
    /// At this instant (warm-up).
    Deadline(Instant),
}

/// One load against one target.
#[derive(Clone)]
pub(super) struct Load {
    pub(super) url: String,
    pub(super) batch: u64,
    pub(super) concurrency: u64,
    /// Whether answers must hold one id per event (weir) or just an `ids` array (baseline).
    pub(super) expect_ids: bool,
    /// The HTTP client to send with.
    pub(super) client: ClientKind,
}

/// What one load measured.
pub(super) struct LoadResult {
    pub(super) events: u64,
    pub(super) requests: u64,
    pub(super) elapsed: Duration,
    pub(super) latency: Percentiles,
    pub(super) errors: u64,
    pub(super) first_errors: Vec<String>,
}

/// What one worker measured.
#[derive(Default)]
struct WorkerResult {
    latencies: Vec<u64>,
    events: u64,
    errors: u64,
    first_errors: Vec<String>,
}

/// A request body of `n` events numbered from `first`.
pub(super) fn ingest_body(first: u64, n: u64) -> Bytes {
    let one = |i: u64| format!(r#"{{"name":"bench/ingested","data":{{"i":{i},"pad":"{PAD}"}}}}"#);
    if n == 1 {
        return Bytes::from(one(first));
    }
    let mut s = String::with_capacity(n as usize * (PAD.len() + 64) + 2);
    s.push('[');
    for i in first..first + n {
        if i > first {
            s.push(',');
        }
        s.push_str(&one(i));
    }
    s.push(']');
    Bytes::from(s)
}

/// Runs `load` until `until`; event numbers start at `first_event`.
pub(super) async fn run_load(
    client: &reqwest::Client,
    load: &Load,
    until: Until,
    first_event: u64,
) -> LoadResult {
    let url: Arc<str> = format!("{}/e/{BENCH_KEY}", load.url.trim_end_matches('/')).into();
    let raw = match load.client {
        ClientKind::Reqwest => None,
        ClientKind::Raw => match RawTarget::parse(&url) {
            Ok(t) => Some(Arc::new(t)),
            Err(message) => {
                return LoadResult {
                    events: 0,
                    requests: 0,
                    elapsed: Duration::ZERO,
                    latency: Percentiles::default(),
                    errors: 1,
                    first_errors: vec![message],
                };
            }
        },
    };
    let next_request = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(load.concurrency as usize);
    for _ in 0..load.concurrency {
        let mut sender = match &raw {
            None => Sender::Reqwest {
                client: client.clone(),
                url: url.clone(),
            },
            Some(target) => Sender::Raw(RawConn::new(target.clone())),
        };
        let next_request = next_request.clone();
        let (batch, expect_ids) = (load.batch, load.expect_ids);
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult::default();
            loop {
                let req = next_request.fetch_add(1, Ordering::Relaxed);
                let first = req * batch;
                let n = match until {
                    Until::Events(total) => {
                        if first >= total {
                            break;
                        }
                        batch.min(total - first)
                    }
                    Until::Deadline(at) => {
                        if Instant::now() >= at {
                            break;
                        }
                        batch
                    }
                };
                let body = ingest_body(first_event + first, n);
                let t0 = Instant::now();
                let outcome = sender.post(body).await.and_then(|(status, answer)| {
                    check_answer(status, &answer, if expect_ids { n } else { 0 })
                });
                r.latencies.push(nanos(t0.elapsed()));
                match outcome {
                    Ok(()) => r.events += n,
                    Err(message) => {
                        r.errors += 1;
                        if r.first_errors.len() < 3 {
                            r.first_errors.push(message);
                        }
                    }
                }
            }
            r
        }));
    }
    let mut latencies = Vec::new();
    let mut result = LoadResult {
        events: 0,
        requests: 0,
        elapsed: Duration::ZERO,
        latency: Percentiles::default(),
        errors: 0,
        first_errors: Vec::new(),
    };
    for w in workers {
        match w.await {
            Ok(r) => {
                latencies.extend_from_slice(&r.latencies);
                result.events += r.events;
                result.errors += r.errors;
                for e in r.first_errors {
                    if result.first_errors.len() < 5 {
                        result.first_errors.push(e);
                    }
                }
            }
            Err(e) => {
                result.errors += 1;
                result.first_errors.push(format!("worker failed: {e}"));
            }
        }
    }
    result.elapsed = started.elapsed();
    result.requests = latencies.len() as u64;
    result.latency = Percentiles::of(&mut latencies);
    result
}

/// Sends one request; checks the status and the number of ids (`ids` = 0: any array).
pub(super) async fn send_one(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    ids: u64,
) -> Result<(), String> {
    let (status, bytes) = reqwest_post(client, url, body).await?;
    check_answer(status, &bytes, ids)
}

/// Checks an answer: 200 and an `ids` array, of `ids` elements unless `ids` is 0.
pub(super) fn check_answer(status: u16, bytes: &[u8], ids: u64) -> Result<(), String> {
    if status != 200 {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        return Err(format!("status {status}: {text}"));
    }
    let answer: Answer =
        serde_json::from_slice(bytes).map_err(|e| format!("unexpected answer: {e}"))?;
    if ids > 0 && answer.ids.len() as u64 != ids {
        return Err(format!("expected {ids} ids, got {}", answer.ids.len()));
    }
    Ok(())
}

/// POSTs `body` as JSON with reqwest; returns the status and the answer's body.
async fn reqwest_post(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
) -> Result<(u16, Bytes), String> {
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = answer.status();
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| format!("reading the answer failed: {}", chain(&e)))?;
    Ok((status.as_u16(), bytes))
}

/// One worker's way of sending requests.
enum Sender {
    /// The shared reqwest client.
    Reqwest {
        client: reqwest::Client,
        url: Arc<str>,
    },
    /// The worker's own raw connection.
    Raw(RawConn),
}

impl Sender {
    /// POSTs `body`; returns the status and the answer's body.
    async fn post(&mut self, body: Bytes) -> Result<(u16, Bytes), String> {
        match self {
            Sender::Reqwest { client, url } => reqwest_post(client, url, body).await,
            Sender::Raw(conn) => conn.post(&body).await,
        }
    }
}

/// An error and its sources, `: `-separated (reqwest hides the cause otherwise).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn bodies_are_valid_json() {
        let one: Value = serde_json::from_slice(&ingest_body(7, 1)).unwrap();
        assert_eq!(one["data"]["i"], 7);
        assert!(one["data"]["pad"].as_str().unwrap().len() >= 200);
        let many: Value = serde_json::from_slice(&ingest_body(10, 3)).unwrap();
        assert_eq!(many.as_array().unwrap().len(), 3);
        assert_eq!(many[2]["data"]["i"], 12);
    }
}
