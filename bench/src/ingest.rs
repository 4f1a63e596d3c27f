//! `weir-bench ingest`: warm up and measure each target (weir, then the baselines) and print one
//! row of throughput, latency and CPU per target.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_core::Error;

use super::IngestArgs;
use super::baseline::baseline_router;
use super::load::{Load, LoadResult, Until, client, run_load};
use super::local::{LocalWeir, serve_local};
use super::stats::{Cpu, cpu_secs, ms};

/// One printed row of `weir-bench ingest`.
struct Row {
    target: String,
    url: String,
    result: LoadResult,
    cpu: Cpu,
}

impl Row {
    fn events_per_s(&self) -> f64 {
        self.result.events as f64 / self.result.elapsed.as_secs_f64().max(1e-9)
    }

    fn requests_per_s(&self) -> f64 {
        self.result.requests as f64 / self.result.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU seconds per wall second (cores in use) of this process and of the server.
    fn cores(&self) -> (Option<f64>, Option<f64>) {
        let secs = self.result.elapsed.as_secs_f64().max(1e-9);
        (
            self.cpu.this.map(|c| c / secs),
            self.cpu.server.map(|c| c / secs),
        )
    }

    /// Server CPU microseconds per event.
    fn server_us_per_event(&self) -> Option<f64> {
        let events = self.result.events.max(1) as f64;
        self.cpu.server.map(|c| c * 1e6 / events)
    }

    fn json(&self) -> Value {
        let r = &self.result;
        let (this_cores, server_cores) = self.cores();
        json!({
            "bench_cores": this_cores,
            "server_cores": server_cores,
            "server_cpu_us_per_event": self.server_us_per_event(),
            "target": self.target,
            "url": self.url,
            "events": r.events,
            "requests": r.requests,
            "seconds": r.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_s().round(),
            "requests_per_s": self.requests_per_s().round(),
            "latency_ms": r.latency.json(),
            "errors": r.errors,
            "first_errors": r.first_errors,
        })
    }
}

/// Warms `load` up, then measures it (and the CPU of this process and of `server_pid`).
async fn measure(
    client: &reqwest::Client,
    load: &Load,
    args: &IngestArgs,
    server_pid: Option<u32>,
    target: &str,
) -> (LoadResult, Cpu) {
    let quiet = args.json;
    if args.warmup_secs > 0.0 {
        if !quiet {
            eprintln!("{target}: warming up for {} s", args.warmup_secs);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(args.warmup_secs);
        // Warm-up events are numbered far above the measured ones.
        run_load(client, load, Until::Deadline(deadline), 1 << 40).await;
    }
    if !quiet {
        eprintln!("{target}: sending {} events", args.events);
    }
    let server = server_pid.map(|p| p.to_string());
    let this0 = cpu_secs("self");
    let server0 = server.as_deref().and_then(cpu_secs);
    let result = run_load(client, load, Until::Events(args.events), 0).await;
    let cpu = Cpu {
        this: this0.zip(cpu_secs("self")).map(|(a, b)| b - a),
        server: server0
            .zip(server.as_deref().and_then(cpu_secs))
            .map(|(a, b)| b - a),
    };
    (result, cpu)
}

pub(super) async fn ingest(args: IngestArgs) -> weir_core::Result<i32> {
    if !args.warmup_secs.is_finite() || args.warmup_secs < 0.0 {
        return Err(Error::invalid("--warmup-secs must be a number ≥ 0"));
    }
    let client = client(args.concurrency as usize)?;
    let mut rows = Vec::new();

    // weir: a separate server, or an in-process one.
    let (local, weir_url, weir_target) = match &args.url {
        Some(url) => (None, url.clone(), "weir".to_string()),
        None => {
            let local = LocalWeir::start(None).await?;
            let url = local.url.clone();
            (Some(local), url, "weir (in-process)".to_string())
        }
    };
    let load = Load {
        url: weir_url.clone(),
        batch: args.batch,
        concurrency: args.concurrency,
        expect_ids: true,
        client: args.client,
    };
    let (result, cpu) = measure(&client, &load, &args, args.pid, &weir_target).await;
    if let Some(local) = local {
        local.stop().await;
    }
    rows.push(Row {
        target: weir_target,
        url: weir_url,
        result,
        cpu,
    });

    // Baselines: in-process and/or separate.
    // `None`: an in-process baseline, started for its run only.
    let mut baselines: Vec<(&str, Option<String>, Option<u32>)> = Vec::new();
    if args.baseline {
        baselines.push(("baseline (in-process)", None, None));
    }
    if let Some(url) = &args.baseline_url {
        baselines.push(("baseline", Some(url.clone()), args.baseline_pid));
    }
    for (target, url, pid) in baselines {
        let (url, task) = match url {
            Some(url) => (url, None),
            None => {
                let (addr, task) = serve_local(baseline_router()).await?;
                (format!("http://{addr}"), Some(task))
            }
        };
        let load = Load {
            url: url.clone(),
            expect_ids: false,
            ..load.clone()
        };
        let (result, cpu) = measure(&client, &load, &args, pid, target).await;
        if let Some(task) = task {
            task.abort();
        }
        rows.push(Row {
            target: target.to_string(),
            url,
            result,
            cpu,
        });
    }

    let weir_rate = rows[0].events_per_s();
    let ratios: Vec<(String, f64)> = rows[1..]
        .iter()
        .map(|b| (b.target.clone(), weir_rate / b.events_per_s().max(1e-9)))
        .collect();
    let errors: u64 = rows.iter().map(|r| r.result.errors).sum();

    if args.json {
        out!(
            "{}",
            json!({
                "benchmark": "ingest",
                "events": args.events,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "client": format!("{:?}", args.client).to_lowercase(),
                "warmup_secs": args.warmup_secs,
                "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
                "ratios": ratios.iter().map(|(t, r)| json!({"baseline": t, "weir_over_baseline": r})).collect::<Vec<_>>(),
                "errors": errors,
            })
        );
    } else {
        out!(
            "weir-bench ingest: {} events, batch {}, concurrency {}, client {:?}, warm-up {} s per target",
            args.events,
            args.batch,
            args.concurrency,
            args.client,
            args.warmup_secs
        );
        out!(
            "{:<22} {:>8} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>6} {:>6} {:>6} {:>9}",
            "target",
            "events",
            "requests",
            "secs",
            "events/s",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "bench",
            "srv",
            "srv us/ev"
        );
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(v) => format!("{v:.prec$}"),
            None => "-".to_string(),
        };
        for row in &rows {
            let r = &row.result;
            let (this_cores, server_cores) = row.cores();
            out!(
                "{:<22} {:>8} {:>8} {:>6.2} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>8.3} {:>6} {:>6} {:>6} {:>9}",
                row.target,
                r.events,
                r.requests,
                r.elapsed.as_secs_f64(),
                row.events_per_s(),
                row.requests_per_s(),
                ms(r.latency.p50),
                ms(r.latency.p99),
                ms(r.latency.max),
                r.errors,
                opt(this_cores, 2),
                opt(server_cores, 2),
                opt(row.server_us_per_event(), 1)
            );
        }
        out!(
            "(bench / srv: cores used during the measurement by this process / by the --pid server)"
        );
        for (target, ratio) in &ratios {
            out!(
                "weir/{target}: {:.3} ({:.1}% of the baseline's events/s)",
                ratio,
                ratio * 100.0
            );
        }
        for row in &rows {
            for e in &row.result.first_errors {
                out!("error ({}): {e}", row.target);
            }
        }
    }
    Ok(if errors > 0 { 1 } else { 0 })
}
