//! Paced POSTs for `weir-bench latency`: events sent at a fixed rate, each in its own task, with
//! their round trips measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::time::MissedTickBehavior;

use super::load::send_one;
use super::stats::nanos;

/// What a paced series of POSTs measured.
pub(super) struct Paced {
    /// Round trips of the measured (not warm-up) POSTs that succeeded, in nanoseconds.
    pub(super) latencies: Vec<u64>,
    /// Failed POSTs (warm-up included).
    pub(super) errors: u64,
    /// The first few failures.
    pub(super) first_errors: Vec<String>,
    /// Achieved rate of the measured POSTs (starts per second).
    pub(super) achieved_rate: f64,
}

/// How many events to POST, how fast, and which.
pub(super) struct Schedule<'a> {
    /// Events per second.
    pub(super) rate: u64,
    /// Events in all, warm-up included.
    pub(super) total: u64,
    /// The first this many are a warm-up.
    pub(super) warm: u64,
    /// The events' name.
    pub(super) name: &'a str,
}

/// POSTs `total` events to `url` at `rate` per second (a tokio interval with
/// `MissedTickBehavior::Delay`; each POST in its own task), the first `warm` of them a warm-up.
/// Each event carries `seq` and `sent_at_ns` (nanoseconds since `origin`, taken just before
/// its POST starts); answers must hold `ids` ids (0: any `ids` array).
pub(super) async fn paced_posts(
    client: &reqwest::Client,
    url: &Arc<str>,
    schedule: &Schedule<'_>,
    origin: Instant,
    ids: u64,
) -> Paced {
    let Schedule {
        rate,
        total,
        warm,
        name,
    } = *schedule;
    let name: Arc<str> = name.into();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut posts = tokio::task::JoinSet::new();
    let mut first_measured_ns = 0;
    let mut last_measured_ns = 0;
    for seq in 0..total {
        interval.tick().await;
        let client = client.clone();
        let url = url.clone();
        let sent_at_ns = nanos(origin.elapsed());
        if seq == warm {
            first_measured_ns = sent_at_ns;
        }
        last_measured_ns = sent_at_ns;
        let name = name.clone();
        posts.spawn(async move {
            let body =
                format!(r#"{{"name":"{name}","data":{{"seq":{seq},"sent_at_ns":{sent_at_ns}}}}}"#);
            let error = send_one(&client, &url, Bytes::from(body), ids).await.err();
            Posted {
                seq,
                post_ns: nanos(origin.elapsed()).saturating_sub(sent_at_ns),
                error,
            }
        });
    }
    let mut paced = Paced {
        latencies: Vec::with_capacity(total.saturating_sub(warm) as usize),
        errors: 0,
        first_errors: Vec::new(),
        achieved_rate: 0.0,
    };
    while let Some(joined) = posts.join_next().await {
        match joined {
            Ok(p) => {
                if let Some(e) = p.error {
                    paced.errors += 1;
                    if paced.first_errors.len() < 5 {
                        paced.first_errors.push(e);
                    }
                } else if p.seq >= warm {
                    paced.latencies.push(p.post_ns);
                }
            }
            Err(e) => {
                paced.errors += 1;
                paced.first_errors.push(format!("POST task failed: {e}"));
            }
        }
    }
    let measured = total.saturating_sub(warm);
    let span = last_measured_ns.saturating_sub(first_measured_ns) as f64 / 1e9;
    if measured > 1 && span > 0.0 {
        paced.achieved_rate = (measured - 1) as f64 / span;
    }
    paced
}

/// What one latency POST measured.
struct Posted {
    seq: u64,
    post_ns: u64,
    error: Option<String>,
}
