//! `weir user ID`: one user's events and the runs they started, on one timeline, newest
//! first (docs/functions.md, *One user's timeline*).

use std::fmt::Write as _;

use clap::Args;
use serde_json::Value;

use super::remote::Remote;
use crate::view::{event_time, printable};

/// Arguments of `weir user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// The user: their events' `user.id`, else `user.external_id`, else `user.email`.
    pub id: String,
    /// At most this many items (events and runs whose event is not listed).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

pub(super) async fn user(args: UserArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    let url = remote.url(
        "/v1/users",
        &[&args.id, "timeline"],
        &[("limit", Some(args.limit.to_string()))],
    )?;
    remote.print(&url, render_timeline).await
}

/// A run as one line, indented under its event.
fn run_line(out: &mut String, indent: &str, run: &Value) {
    let duration = match (run["created_at"].as_i64(), run["ended_at"].as_i64()) {
        (Some(start), Some(end)) => format!(" in {} ms", end.saturating_sub(start)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{indent}run {}  {}  {}{duration}",
        printable(run["id"].as_str().unwrap_or("")),
        printable(run["function_id"].as_str().unwrap_or("")),
        run["status"].as_str().unwrap_or(""),
    );
}

/// The timeline: one line per event (time, name, id), its runs below it; runs whose event
/// is not listed on lines of their own.
fn render_timeline(timeline: &Value) -> String {
    let mut out = String::new();
    let items = timeline["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if items.is_empty() {
        let _ = writeln!(
            out,
            "no events or runs of user {}",
            printable(timeline["user"].as_str().unwrap_or(""))
        );
        return out;
    }
    for item in items {
        let at = event_time(item["at"].as_i64().unwrap_or(0));
        match item["kind"].as_str() {
            Some("event") => {
                let event = &item["event"];
                let _ = writeln!(
                    out,
                    "{at}  event {}  {}",
                    printable(event["name"].as_str().unwrap_or("")),
                    printable(event["id"].as_str().unwrap_or(""))
                );
                for run in item["runs"].as_array().into_iter().flatten() {
                    run_line(&mut out, &" ".repeat(at.len() + 4), run);
                }
            }
            _ => run_line(&mut out, &format!("{at}  "), &item["run"]),
        }
    }
    out
}
