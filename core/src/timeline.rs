//! One user's events and runs on one timeline (`weir user ID`, `GET /v1/users/{id}/timeline`):
//! how a support engineer answers "what happened to this customer?".
//!
//! A user is named by the user key of their events (`user.id`, else `user.external_id`, else
//! `user.email`: see [`Event::user_key`](crate::Event::user_key)); runs carry the key of the
//! event that started them. Both stores index runs and events by it, so a timeline reads
//! only that user's entries.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::event::Event;
use crate::events::{EventFilter, EventStore};
use crate::run::{RunFilter, RunSummary};
use crate::state::StateStore;

/// The most items a timeline holds.
pub const MAX_TIMELINE_ITEMS: usize = 1_000;

/// One user's timeline, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserTimeline {
    /// The user key asked for.
    pub user: String,
    /// Events (each with the runs it started) and runs whose event is no longer stored,
    /// newest first by the event's `ts` or the run's creation time.
    pub items: Vec<TimelineItem>,
}

/// An entry of a [`UserTimeline`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TimelineItem {
    /// An event about the user, and the runs it started (oldest first).
    Event {
        /// The event's `ts` (epoch ms).
        at: i64,
        /// The event as stored.
        event: Event,
        /// The runs it started.
        runs: Vec<RunSummary>,
    },
    /// A run whose event is no longer stored (gone with the event retention).
    Run {
        /// Its creation time (epoch ms).
        at: i64,
        /// The run.
        run: RunSummary,
    },
}

impl TimelineItem {
    /// When it happened (epoch ms).
    pub fn at(&self) -> i64 {
        match self {
            TimelineItem::Event { at, .. } | TimelineItem::Run { at, .. } => *at,
        }
    }

    /// The event's or the run's id (what orders items of one time).
    pub fn id(&self) -> &str {
        match self {
            TimelineItem::Event { event, .. } => &event.id,
            TimelineItem::Run { run, .. } => &run.id,
        }
    }
}

/// Runs read per timeline item: an event can start several.
const RUNS_PER_ITEM: usize = 4;

/// The newest `limit` (at most [`MAX_TIMELINE_ITEMS`]) items of `user`'s timeline: their
/// newest events by `ts`, each with the runs it started among the user's newest
/// `limit × 4` runs, and those runs whose event is no longer stored.
pub async fn user_timeline(
    state: &dyn StateStore,
    events: &dyn EventStore,
    user: &str,
    limit: usize,
) -> Result<UserTimeline> {
    let limit = limit.min(MAX_TIMELINE_ITEMS);
    let event_filter = EventFilter {
        user: Some(user.to_owned()),
        limit: Some(limit),
        newest_first: true,
        ..EventFilter::default()
    };
    let run_filter = RunFilter {
        user: Some(user.to_owned()),
        limit: Some(limit * RUNS_PER_ITEM),
        ..RunFilter::default()
    };
    let (stored, runs) =
        tokio::try_join!(events.scan(&event_filter), state.list_runs(&run_filter))?;
    let mut by_event: HashMap<String, Vec<RunSummary>> = HashMap::new();
    for run in runs {
        by_event.entry(run.event_id.clone()).or_default().push(run);
    }
    let mut items: Vec<TimelineItem> = stored
        .into_iter()
        .map(|event| {
            let mut runs = by_event.remove(&event.id).unwrap_or_default();
            runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            TimelineItem::Event {
                at: event.ts,
                event,
                runs,
            }
        })
        .collect();
    // Runs of events not listed: those events are older than the ones listed (left out), or
    // gone with the event retention (listed as runs of their own).
    let mut orphans: Vec<RunSummary> = by_event.into_values().flatten().collect();
    orphans.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    orphans.truncate(limit);
    let found =
        futures::future::try_join_all(orphans.iter().map(|r| events.get(&r.event_id))).await?;
    items.extend(
        orphans
            .into_iter()
            .zip(found)
            .filter(|(_, event)| event.is_none())
            .map(|(run, _)| TimelineItem::Run {
                at: run.created_at,
                run,
            }),
    );
    items.sort_by(|a, b| b.at().cmp(&a.at()).then_with(|| a.id().cmp(b.id())));
    items.truncate(limit);
    Ok(UserTimeline {
        user: user.to_owned(),
        items,
    })
}
