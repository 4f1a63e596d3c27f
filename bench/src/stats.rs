//! The figures' arithmetic: latency percentiles, nanosecond/millisecond conversions and the CPU
//! a process used (Linux, from `/proc`).

use std::time::Duration;

use serde_json::{Value, json};

/// Latency percentiles of a set of samples (nanoseconds).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Percentiles {
    pub(super) count: usize,
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
    pub(super) mean: u64,
}

impl Percentiles {
    /// Sorts `samples` and computes nearest-rank percentiles.
    pub(super) fn of(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let n = samples.len();
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[i]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Percentiles {
            count: samples.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
            mean: (sum / samples.len() as u128) as u64,
        }
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50": ms(self.p50),
            "p90": ms(self.p90),
            "p99": ms(self.p99),
            "max": ms(self.max),
            "mean": ms(self.mean),
        })
    }
}

/// Nanoseconds as milliseconds, rounded to the microsecond.
pub(super) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat` (Linux).
pub(super) fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 in the Linux user-space ABI.
    Some((utime + stime) / 100.0)
}

/// CPU used during one measurement, in CPU seconds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cpu {
    /// This process (the load generator, and the server when in-process).
    pub(super) this: Option<f64>,
    /// The server process given with `--pid` / `--baseline-pid`.
    pub(super) server: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.count),
            (50, 90, 99, 100, 100)
        );
        assert_eq!(Percentiles::of(&mut []).count, 0);
    }
}
