//! `weir jobs [--state S] [--queue Q]`: the jobs a running server keeps for outside workers
//! (the Faktory adapter's), listed like runs.

use clap::Args;
use serde_json::Value;

use super::remote::Remote;

/// Arguments of `weir jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, reserved, scheduled, retries, dead).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

pub(super) async fn jobs(args: JobsArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    let url = remote.url(
        "/v1/jobs",
        &[],
        &[
            ("state", args.state.clone()),
            ("queue", args.queue.clone()),
            ("limit", Some(args.limit.to_string())),
        ],
    )?;
    remote
        .print(&url, |jobs: &Vec<Value>| crate::jobs::render(jobs))
        .await
}
