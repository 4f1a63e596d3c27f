//! `weir dead list|show|retry|drop`: the messages a running server gave up on.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use weir_core::dead::{DeadLetter, DeadLetterPage};

use super::remote::Remote;
use crate::view::printable;

/// Arguments of `weir dead`.
#[derive(Debug, Args)]
pub struct DeadArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<DeadCommand>,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// The `weir dead` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead letters, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only those older than this dead letter (the `next` of a listing).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show one dead letter, with its message.
    Show {
        /// The dead letter's id.
        id: String,
    },
    /// Send the message again (reopening the run it failed) and forget the dead letter. Fix
    /// the cause first: a message the engine fails on again is given up on again.
    Retry {
        /// The dead letter's id.
        id: String,
    },
    /// Forget a dead letter without sending its message again.
    Drop {
        /// The dead letter's id.
        id: String,
    },
}

pub(super) async fn dead(args: DeadArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    match args.command.unwrap_or(DeadCommand::List {
        limit: 100,
        before: None,
    }) {
        DeadCommand::List { limit, before } => {
            let url = remote.url(
                "/v1/dead",
                &[],
                &[("limit", Some(limit.to_string())), ("before", before)],
            )?;
            remote.print(&url, render_page).await
        }
        DeadCommand::Show { id } => {
            let url = remote.url("/v1/dead", &[&id], &[])?;
            remote.print(&url, render_one).await
        }
        DeadCommand::Retry { id } => {
            let url = remote.url("/v1/dead", &[&id, "retry"], &[])?;
            remote
                .post_and_print(&url, |d: &DeadLetter| {
                    format!("sent {} again; the dead letter is gone\n", d.id)
                })
                .await
        }
        DeadCommand::Drop { id } => {
            let url = remote.url("/v1/dead", &[&id], &[])?;
            remote
                .delete_and_print(&url, |_: &serde_json::Value| format!("dropped {id}\n"))
                .await
        }
    }
}

/// One line per dead letter.
fn render_page(page: &DeadLetterPage) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}  {:<6}  {:<26}  {:>5}  REASON",
        "DEAD LETTER", "TOPIC", "RUN", "FAILS"
    );
    for d in &page.items {
        let reason: String = d.reason.chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:<26}  {:<6}  {:<26}  {:>5}  {}",
            d.id,
            printable(&d.topic),
            printable(d.run_id.as_deref().unwrap_or("-")),
            d.deliveries,
            printable(&reason)
        );
    }
    if let Some(next) = &page.next {
        let _ = writeln!(out, "more: weir dead list --before {next}");
    }
    out
}

/// A dead letter in full.
fn render_one(d: &DeadLetter) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "dead letter {}", d.id);
    let _ = writeln!(out, "  topic     {}", printable(&d.topic));
    let _ = writeln!(out, "  key       {}", printable(&d.key));
    if let Some(run) = &d.run_id {
        let _ = writeln!(out, "  run       {}", printable(run));
    }
    if let Some(event) = &d.event_id {
        let _ = writeln!(out, "  event     {}", printable(event));
    }
    let _ = writeln!(out, "  failures  {}", d.deliveries);
    let _ = writeln!(out, "  at        {}", crate::view::event_time(d.at_ms));
    let _ = writeln!(out, "  reason    {}", printable(&d.reason));
    let encoding = if d.base64 { " (base64)" } else { "" };
    let _ = writeln!(out, "  message{encoding}\n    {}", printable(&d.payload));
    out
}
