//! `weir events [--name N] [--user U] [--since D] [--limit N]`: the events a server stored.

use std::time::Duration;

use clap::Args;
use weir_core::Event;

use super::remote::Remote;

/// Arguments of `weir events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
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

pub(super) async fn events(args: EventsArgs) -> weir_core::Result<i32> {
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
