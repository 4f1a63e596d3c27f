//! `weir events [--name N] [--user U] [--since D] [--limit N]`: the events a server stored;
//! `weir events export`: all of them in a window, as NDJSON (what `weir replay --source`
//! reads).

use std::time::Duration;

use clap::Args;
use weir_core::Event;

use super::remote::Remote;

/// Arguments of `weir events`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    /// `export`: every event of a window as NDJSON (default: list).
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    /// Only events of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only events about this user (user.id, external_id or email).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events from this long ago on (`15m`, `2h`, `7d`), by the event's `ts` (when it
    /// happened, as its sender said).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many events (the latest; with --oldest the earliest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Oldest first (from --since on), instead of newest first.
    #[arg(long)]
    pub oldest: bool,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// The `weir events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Print every stored event of a window as NDJSON (one event per line), oldest first:
    /// a file `weir replay --source FILE` replays.
    Export {
        /// From this time on: RFC 3339 or how long ago (`1h`).
        #[arg(long)]
        from: String,
        /// Before this time (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Only events of this name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Events read per request of an export.
const EXPORT_PAGE: usize = 10_000;

/// Prints every event from `from` to `to` as NDJSON, a page at a time (by `ts`; events of
/// the page's last time are asked again and skipped by id).
async fn export(
    remote: &Remote,
    from: i64,
    to: i64,
    name: Option<String>,
) -> weir_core::Result<i32> {
    let mut from = from;
    let mut at_from: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let url = remote.url(
            "/v1/events",
            &[],
            &[
                ("name", name.clone()),
                ("from", Some(from.to_string())),
                ("to", Some(to.to_string())),
                ("limit", Some(EXPORT_PAGE.to_string())),
                ("order", Some("oldest".into())),
            ],
        )?;
        let (status, body) = remote.call(reqwest::Method::GET, &url, None).await?;
        if status != 200 {
            eprintln!("error {status}: {}", Remote::error_message(&body));
            return Ok(1);
        }
        let page: Vec<Event> = serde_json::from_value(body)?;
        let full = page.len() == EXPORT_PAGE;
        let last_ts = page.last().map(|e| e.ts);
        let mut new = 0usize;
        for event in &page {
            if event.ts == from && at_from.contains(&event.id) {
                continue;
            }
            new += 1;
            out!("{}", serde_json::to_string(event)?);
        }
        let Some(last_ts) = last_ts.filter(|_| full) else {
            return Ok(0);
        };
        if last_ts != from {
            at_from.clear();
        }
        at_from.extend(
            page.iter()
                .filter(|e| e.ts == last_ts)
                .map(|e| e.id.clone()),
        );
        if new == 0 {
            // A whole page of one time, all seen: more of that time than a page holds.
            eprintln!(
                "warning: over {EXPORT_PAGE} events share the time {last_ts} ms: some were not exported"
            );
            from = last_ts + 1;
            at_from.clear();
        } else {
            from = last_ts;
        }
    }
}

pub(super) async fn events(args: EventsArgs) -> weir_core::Result<i32> {
    if let Some(EventsCommand::Export { from, to, name }) = args.command {
        let now = weir_core::event::now_ms();
        let from = super::replay::parse_time(&from, now, "--from")?;
        let to = match to {
            Some(t) => super::replay::parse_time(&t, now, "--to")?,
            None => now + 1,
        };
        return export(&args.remote, from, to, name).await;
    }
    let remote = &args.remote;
    let from = args.since.map(|since| {
        let since = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
        weir_core::event::now_ms().saturating_sub(since).to_string()
    });
    let url = remote.url(
        "/v1/events",
        &[],
        &[
            ("name", args.name.clone()),
            ("user", args.user.clone()),
            ("from", from),
            ("limit", Some(args.limit.to_string())),
            (
                "order",
                Some(if args.oldest { "oldest" } else { "newest" }.into()),
            ),
        ],
    )?;
    remote
        .print(&url, |events: &Vec<Event>| {
            crate::view::render_events(events)
        })
        .await
}
