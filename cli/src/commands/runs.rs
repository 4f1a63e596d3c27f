//! `weir runs [--function ID] [--status S] [--user U]`, `weir runs show RUN_ID` and `weir runs
//! cancel RUN_ID`.

use clap::{Args, Subcommand};
use serde_json::Value;
use weir_core::run::RunSummary;

use super::remote::Remote;

/// Arguments of `weir runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// `show RUN_ID` to see one run.
    #[command(subcommand)]
    pub show: Option<RunsCommand>,
    /// Only runs of this function.
    #[arg(long)]
    pub function: Option<String>,
    /// Only runs in this status (running, waiting, completed, failed, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs whose event is about this user (user.id, external_id or email).
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// `weir runs show`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run: each step's status, output and attempts, and the timeline.
    Show {
        /// The run id.
        run_id: String,
    },
    /// Cancel a run: its running steps are stopped, its pending steps, waits and timers
    /// dropped, its status becomes `cancelled`.
    Cancel {
        /// The run id.
        run_id: String,
    },
}

pub(super) async fn runs(args: RunsArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    match &args.show {
        Some(RunsCommand::Show { run_id }) => {
            let url = remote.url("/v1/runs", &[run_id], &[])?;
            return remote
                .print(&url, |run: &Value| crate::view::render_run(run, &[]))
                .await;
        }
        Some(RunsCommand::Cancel { run_id }) => {
            let url = remote.url("/v1/runs", &[run_id, "cancel"], &[])?;
            return remote
                .post_and_print(&url, |run: &Value| crate::view::render_run(run, &[]))
                .await;
        }
        None => {}
    }
    let url = remote.url(
        "/v1/runs",
        &[],
        &[
            ("function", args.function.clone()),
            ("status", args.status.clone()),
            ("user", args.user.clone()),
            ("limit", Some(args.limit.to_string())),
        ],
    )?;
    remote
        .print(&url, |runs: &Vec<RunSummary>| {
            crate::view::render_summaries(runs)
        })
        .await
}
