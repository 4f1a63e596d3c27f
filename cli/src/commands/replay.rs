//! `weir replay FN --from T [--to T] [--filter CEL] [--dir DIR | --version N] [--shadow]
//! [--json]`: run the events a server stored through a version of a function, here,
//! in-process, and print each step whose output differs from the original run's
//! (docs/deploying.md, *Replaying stored events*). Nothing is sent back to the server:
//! replayed runs never appear in its listings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::{Value, json};
use weir_core::engine::{Engine, FunctionRegistry, Roles};
use weir_core::expr::{Expr, Vars};
use weir_core::function::{Function, FunctionBundle, load_function};
use weir_core::{Error, Event};

use super::remote::Remote;
use crate::embedded::EngineOptions;
use crate::view::printable;

/// The most stored events one replay reads.
const MAX_EVENTS: usize = 10_000;

/// Arguments of `weir replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The function's id.
    pub function: String,
    /// Events from this time on (their `ts`): RFC 3339 (`2026-12-07T10:00:00Z`) or how long
    /// ago (`1h`, `30m`).
    #[arg(long)]
    pub from: String,
    /// Events before this time (the same forms; default: now; it may be in the future).
    #[arg(long)]
    pub to: Option<String>,
    /// Only events for which this CEL expression is true (it sees `event`, `data`, `user`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Run the function as it is in this directory (never deployed anywhere); default: the
    /// server's live version.
    #[arg(long, conflicts_with = "version")]
    pub dir: Option<PathBuf>,
    /// Run this stored version of the function (a number `weir versions` lists), its files
    /// fetched from the server; default: the live version.
    #[arg(long)]
    pub version: Option<u64>,
    /// Keep the replayed runs apart from the server's (they run here, in this process; this
    /// is what every replay does today).
    #[arg(long)]
    pub shadow: bool,
    /// Where the events come from: another server (`https://…`, its key in
    /// `--source-api-key`), whose runs they are compared with; or an NDJSON file from
    /// `weir events export` (nothing to compare with). Default: the server of `--url`.
    #[arg(long)]
    pub source: Option<String>,
    /// The API key of the `--source` server.
    #[arg(long, env = "WEIR_SOURCE_API_KEY", hide_env_values = true)]
    pub source_api_key: Option<String>,
    /// Do not run this step: answer with its output in the original run of the same event (a
    /// step with side effects). Repeatable.
    #[arg(long = "stub", value_name = "STEP")]
    pub stubs: Vec<String>,
    /// Give up on a replayed run after this long.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// A time as `--from`/`--to` take it, in epoch ms: RFC 3339, or a duration before `now_ms`.
pub(super) fn parse_time(text: &str, now_ms: i64, flag: &str) -> weir_core::Result<i64> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let since = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| Error::invalid(format!("{flag}: before 1970")))?;
        return Ok(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(Error::invalid(format!(
            "{flag} {text:?}: an RFC 3339 time (2026-12-07T10:00:00Z) or how long ago (1h)"
        ))),
    }
}

pub(super) async fn replay(app: &crate::App, args: ReplayArgs) -> weir_core::Result<i32> {
    let now = weir_core::event::now_ms();
    let from = parse_time(&args.from, now, "--from")?;
    let to = match &args.to {
        Some(t) => parse_time(t, now, "--to")?,
        None => now + 1,
    };
    if to <= from {
        return Err(Error::invalid("--to must be after --from"));
    }
    let filter = args
        .filter
        .as_deref()
        .map(Expr::compile)
        .transpose()
        .map_err(|e| Error::invalid(format!("--filter: {e}")))?;
    let timeout = weir_core::duration::parse_duration(&args.timeout)
        .map_err(|e| Error::invalid(format!("--timeout: {e}")))?;
    let remote = &args.remote;
    let engine = app.build_engine(&EngineOptions::default()).await?;
    // Rebuilt below with the recorded outputs once they are known; this one loads the
    // function and reads nothing.
    let scratch = Scratch::new()?;
    let function = match &args.dir {
        Some(dir) => {
            load_function(dir, engine.drivers()).map_err(|e| Error::invalid(e.to_string()))?
        }
        None => stored_version(remote, &args.function, args.version, &scratch.0, &engine).await?,
    };
    if function.id != args.function {
        return Err(Error::invalid(format!(
            "the function there is {:?}, not {:?}",
            function.id, args.function
        )));
    }
    let source_remote = match &args.source {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some(Remote {
            url: url.clone(),
            api_key: args.source_api_key.clone(),
            json: remote.json,
        }),
        _ => None,
    };
    let events = match (&args.source, &source_remote) {
        (_, Some(source)) => stored_events(source, &function, filter.as_ref(), from, to).await?,
        (Some(file), None) => {
            let all = read_export(std::path::Path::new(file))?;
            triggering(
                &function,
                filter.as_ref(),
                all.into_iter().filter(|e| e.ts >= from && e.ts < to),
            )
        }
        (None, None) => stored_events(remote, &function, filter.as_ref(), from, to).await?,
    };
    // The runs compared with: those of the server the events come from (none for a file).
    let originals = match (&args.source, source_remote) {
        (_, Some(source)) => Some(source),
        (Some(_), None) => None,
        (None, None) => Some(Remote {
            url: remote.url.clone(),
            api_key: remote.api_key.clone(),
            json: remote.json,
        }),
    };
    if events.is_empty() {
        eprintln!(
            "no stored event from {from} to {to} (epoch ms) triggers {}",
            function.id
        );
    }
    let order: Vec<String> = function.steps.iter().map(|s| s.id.clone()).collect();
    if let Some(unknown) = args.stubs.iter().find(|s| !order.contains(s)) {
        return Err(Error::invalid(format!(
            "--stub {unknown:?}: {} has no such step (steps: {})",
            function.id,
            order.join(", ")
        )));
    }
    // A Lambda step deploys its code under one name per function and step at its first
    // attempt: replayed, it would put this code under the live function.
    if let Some(step) = function
        .steps
        .iter()
        .find(|s| s.runtime_type == "lambda" && !args.stubs.contains(&s.id))
    {
        return Err(Error::invalid(format!(
            "step {:?} runs on AWS Lambda: replaying it would deploy this code over the live function; --stub {} it",
            step.id, step.id
        )));
    }
    if !args.stubs.is_empty() && originals.is_none() {
        return Err(Error::invalid(
            "--stub needs the original runs: a file --source has none",
        ));
    }
    // The original outputs, first: stubbed steps answer with them.
    let mut before_by_event: std::collections::HashMap<String, BTreeMap<String, Value>> =
        std::collections::HashMap::new();
    if let Some(server) = &originals {
        for event in &events {
            let outputs = original_outputs(server, &args.function, &event.id).await?;
            before_by_event.insert(event.id.clone(), outputs);
        }
    }
    let mut function = function;
    for step in &mut function.steps {
        if args.stubs.contains(&step.id) {
            step.runtime_type = super::replay_stub::STUB_RUNTIME.to_owned();
        }
    }
    let stub = super::replay_stub::RecordedOutputs {
        outputs: before_by_event.clone(),
    };
    let engine = app
        .build_engine_with(&EngineOptions::default(), vec![Arc::new(stub)])
        .await?;
    // Steps are not prepared: preparing deploys code for some runtimes (a Lambda's, under one
    // name per step), which a replay must never do. They prepare at their first attempt where
    // the runtime can.
    engine.functions().replace(vec![function]);
    let handle = engine
        .start(Roles {
            router: false,
            executor: true,
            scheduler: true,
        })
        .await?;
    let mut started = Vec::with_capacity(events.len());
    for event in &events {
        engine.events().append(&[Arc::new(event.clone())]).await?;
        for run_id in engine.route(event).await? {
            started.push((event.id.clone(), run_id));
        }
    }
    let mut changed = Vec::new();
    let mut failed = 0usize;
    for (event_id, run_id) in &started {
        let run = match engine.wait_for_run(run_id, timeout).await {
            Ok(run) => run,
            Err(e) if e.kind() == weir_core::ErrorKind::Timeout => {
                eprintln!(
                    "warning: the replayed run of event {event_id} did not end within --timeout: not compared"
                );
                failed += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !crate::view::completed(&run) {
            failed += 1;
        }
        let after = step_outputs(&crate::view::run_json(&run, false));
        let before = before_by_event.get(event_id).cloned().unwrap_or_default();
        for step in order.iter().filter(|s| !args.stubs.contains(s)) {
            let (Some(b), Some(a)) = (before.get(step), after.get(step)) else {
                continue;
            };
            if a != b {
                changed
                    .push(json!({"event_id": event_id, "step_id": step, "before": b, "after": a}));
            }
        }
    }
    handle.shutdown().await;
    let report = json!({"events": events.len(), "runs": started.len(), "failed": failed, "changed": changed});
    if remote.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        outp!("{}", render(&report));
    }
    // Runs that did not complete: the report is there, the exit code says so.
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Version `number` of `id` as the server stored it (default: its live version), written
/// under `scratch` and loaded.
async fn stored_version(
    remote: &Remote,
    id: &str,
    number: Option<u64>,
    scratch: &std::path::Path,
    engine: &Engine,
) -> weir_core::Result<Function> {
    let url = remote.url("/v1/functions", &[id, "versions"], &[])?;
    let (status, versions) = remote.call(reqwest::Method::GET, &url, None).await?;
    if status != 200 {
        return Err(Error::invalid(format!(
            "the versions of {id}: {status} {}",
            Remote::error_message(&versions)
        )));
    }
    let listed = versions.as_array().map(Vec::as_slice).unwrap_or_default();
    let chosen = match number {
        Some(n) => listed
            .iter()
            .find(|v| v["version"].as_u64() == Some(n))
            .map(|_| n)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{id} has no version {n} on the server (weir versions {id})"
                ))
            })?,
        None => listed
            .iter()
            .find(|v| v["status"] == "live")
            .and_then(|v| v["version"].as_u64())
            .ok_or_else(|| Error::invalid(format!("{id} has no live version on the server")))?,
    };
    let url = remote.url(
        "/v1/functions",
        &[id, "versions", &chosen.to_string(), "bundle"],
        &[],
    )?;
    let bytes = remote.fetch_bytes(&url).await?;
    let bundle = FunctionBundle::decode(&bytes)?;
    let dir = bundle.materialize(scratch)?;
    load_function(&dir, engine.drivers()).map_err(|e| Error::invalid(e.to_string()))
}

/// The events the server stored from `from` to `to` that trigger `function` and pass
/// `filter`, oldest first.
async fn stored_events(
    remote: &Remote,
    function: &Function,
    filter: Option<&Expr>,
    from: i64,
    to: i64,
) -> weir_core::Result<Vec<Event>> {
    let url = remote.url(
        "/v1/events",
        &[],
        &[
            ("from", Some(from.to_string())),
            ("to", Some(to.to_string())),
            ("limit", Some(MAX_EVENTS.to_string())),
            ("order", Some("oldest".into())),
        ],
    )?;
    let (status, body) = remote.call(reqwest::Method::GET, &url, None).await?;
    if status != 200 {
        return Err(Error::invalid(format!(
            "the stored events: {status} {}",
            Remote::error_message(&body)
        )));
    }
    let all: Vec<Event> = serde_json::from_value(body)?;
    if all.len() == MAX_EVENTS {
        eprintln!(
            "warning: the window holds {MAX_EVENTS} events or more: only the first {MAX_EVENTS} are replayed"
        );
    }
    Ok(triggering(function, filter, all.into_iter()))
}

/// The events of `all` that trigger `function` and pass `filter`.
fn triggering(
    function: &Function,
    filter: Option<&Expr>,
    all: impl Iterator<Item = Event>,
) -> Vec<Event> {
    let registry = FunctionRegistry::new();
    registry.replace(vec![function.clone()]);
    let mut kept = Vec::new();
    for event in all {
        if registry.matching(&event).is_empty() {
            continue;
        }
        if let Some(expr) = filter {
            let vars = Vars::for_trigger(&event);
            if !expr.eval_bool(&vars).unwrap_or(false) {
                continue;
            }
        }
        kept.push(event);
    }
    kept
}

/// The events of an NDJSON file (`weir events export`); a line that is not an event (a
/// truncated last line) fails the whole replay, naming the line.
fn read_export(path: &std::path::Path) -> weir_core::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            Error::invalid(format!(
                "{} line {}: not an event ({e}); nothing replayed",
                path.display(),
                i + 1
            ))
        })?;
        let event = Event::from_json(value, &format!("{} line {}", path.display(), i + 1))
            .map_err(|e| Error::invalid(format!("{e}; nothing replayed")))?;
        events.push(event);
    }
    Ok(events)
}

/// The outputs of the completed steps of the original run of `function` for `event_id` (the
/// newest, if several versions ran it), by step id.
async fn original_outputs(
    remote: &Remote,
    function: &str,
    event_id: &str,
) -> weir_core::Result<BTreeMap<String, Value>> {
    let url = remote.url(
        "/v1/functions",
        &[function, "events", event_id, "runs"],
        &[],
    )?;
    let (status, runs) = remote.call(reqwest::Method::GET, &url, None).await?;
    if status != 200 {
        return Err(Error::invalid(format!(
            "the runs of event {event_id}: {status} {}",
            Remote::error_message(&runs)
        )));
    }
    Ok(runs
        .as_array()
        .and_then(|r| r.last())
        .map(step_outputs)
        .unwrap_or_default())
}

/// The outputs of a run's completed steps (as `GET /v1/runs/{id}` shows a run).
fn step_outputs(run: &Value) -> BTreeMap<String, Value> {
    run["steps"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s["status"] == "completed")
        .map(|(id, s)| (id.clone(), s["output"].clone()))
        .collect()
}

/// The report as text: the counts, then one block per changed step.
fn render(report: &Value) -> String {
    let mut out = String::new();
    let changed = report["changed"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let _ = writeln!(
        out,
        "{} event(s) replayed, {} run(s) ({} did not complete), {} step output(s) changed",
        report["events"],
        report["runs"],
        report["failed"],
        changed.len()
    );
    for c in changed {
        let _ = writeln!(
            out,
            "event {} step {}\n  before: {}\n  after:  {}",
            printable(c["event_id"].as_str().unwrap_or("")),
            printable(c["step_id"].as_str().unwrap_or("")),
            printable(&c["before"].to_string()),
            printable(&c["after"].to_string())
        );
    }
    out
}

/// A directory of this process's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> weir_core::Result<Self> {
        let dir = std::env::temp_dir().join(format!("weir-replay-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal("cannot make a scratch directory").with_source(e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
