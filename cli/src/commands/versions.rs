//! `weir versions FN`, `weir promote FN`, `weir rollback FN [--to N]`: a function's stored
//! versions on a running server, and which one is live (docs/deploying.md).

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;

use super::remote::Remote;
use crate::view::{event_time, printable};

/// Arguments of `weir versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The function's id.
    pub function: String,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// Arguments of `weir promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The function's id.
    pub function: String,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// Arguments of `weir rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The function's id.
    pub function: String,
    /// The version to make live (default: the one live before).
    #[arg(long)]
    pub to: Option<u64>,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

pub(super) async fn versions(args: VersionsArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    let url = remote.url("/v1/functions", &[&args.function, "versions"], &[])?;
    remote.print(&url, render_versions).await
}

pub(super) async fn promote(args: PromoteArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    let url = remote.url("/v1/functions", &[&args.function, "promote"], &[])?;
    let id = args.function.clone();
    remote
        .post_and_print(&url, |r: &Value| render_routing(&id, r))
        .await
}

pub(super) async fn rollback(args: RollbackArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    let url = remote.url(
        "/v1/functions",
        &[&args.function, "rollback"],
        &[("to", args.to.map(|n| n.to_string()))],
    )?;
    let id = args.function.clone();
    remote
        .post_and_print(&url, |r: &Value| render_routing(&id, r))
        .await
}

/// A routing after a change: what is live, and the canary if any.
fn render_routing(id: &str, routing: &Value) -> String {
    let mut out = format!(
        "{}: version {} live",
        printable(id),
        routing["live"].as_u64().unwrap_or(0)
    );
    if let Some(canary) = routing["canary"].as_object() {
        let _ = write!(
            out,
            ", version {} canary at {}%",
            canary["number"].as_u64().unwrap_or(0),
            canary["percent"].as_u64().unwrap_or(0)
        );
    }
    out.push('\n');
    out
}

/// One line per version: number, status, runs, failure rate, median duration, when stored.
fn render_versions(items: &Vec<Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>7}  {:<12}  {:>8}  {:>7}  {:>9}  {:<24}  SOURCE",
        "VERSION", "STATUS", "RUNS", "FAILED", "P50", "STORED"
    );
    let mut notes = Vec::new();
    for v in items {
        let status = match (v["status"].as_str(), v["percent"].as_u64()) {
            (Some("canary"), Some(p)) => format!("canary {p}%"),
            (Some(s), _) => s.to_owned(),
            (None, _) => String::new(),
        };
        let runs = v["runs"].as_u64().unwrap_or(0);
        let p50 = v["p50_ms"]
            .as_i64()
            .map_or("-".to_owned(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            out,
            "{:>7}  {:<12}  {:>8}  {:>6.1}%  {:>9}  {:<24}  {}",
            v["version"].as_u64().unwrap_or(0),
            status,
            runs,
            v["failure_rate"].as_f64().unwrap_or(0.0) * 100.0,
            p50,
            event_time(v["stored_at"].as_i64().unwrap_or(0)),
            printable(v["source"].as_str().unwrap_or(""))
        );
        if let Some(note) = v["note"].as_str() {
            notes.push(note.to_owned());
        }
    }
    for note in notes {
        let _ = writeln!(out, "last change: {}", printable(&note));
    }
    out
}
