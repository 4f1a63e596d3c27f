//! `weir runs [--function ID] [--status S] [--user U]` and `weir runs show RUN_ID`.

use clap::{Args, Subcommand};
use serde_json::Value;
use weir_core::Error;
use weir_core::run::RunSummary;

/// Arguments of `weir runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// `show RUN_ID` to see one run.
    #[command(subcommand)]
    pub show: Option<RunsCommand>,
    /// Only runs of this function.
    #[arg(long)]
    pub function: Option<String>,
    /// Only runs in this status (running, completed, failed).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs whose event is about this user (user.id, external_id or email).
    #[arg(long)]
    pub user: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// The server.
    #[arg(long, default_value = super::DEFAULT_URL, env = "WEIR_URL", global = true)]
    pub url: String,
    /// The API key, when the server requires one (`weir serve` with `api_keys`).
    #[arg(long, env = "WEIR_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `weir runs show`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Show one run: each step's status, output and attempts, and the timeline.
    Show {
        /// The run id.
        run_id: String,
    },
}

/// GETs JSON from the server (with the API key, if any); prints the server's error and gives
/// `None` on a non-200 answer.
async fn get_ok(url: &str, api_key: Option<&str>) -> weir_core::Result<Option<Value>> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("cannot reach {url}")).with_source(e))?;
    let status = answer.status().as_u16();
    let body: Value = answer
        .json()
        .await
        .map_err(|e| Error::unavailable("unreadable answer").with_source(e))?;
    if status != 200 {
        let message = body["error"].as_str().unwrap_or("(no message)");
        eprintln!("error {status}: {message}");
        return Ok(None);
    }
    Ok(Some(body))
}

pub(super) async fn runs(args: RunsArgs) -> weir_core::Result<i32> {
    let base = args.url.trim_end_matches('/');
    if let Some(RunsCommand::Show { run_id }) = &args.show {
        let Some(body) =
            get_ok(&format!("{base}/v1/runs/{run_id}"), args.api_key.as_deref()).await?
        else {
            return Ok(1);
        };
        if args.json {
            out!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        } else {
            outp!("{}", crate::view::render_run(&body, &[]));
        }
        return Ok(0);
    }
    let mut url = reqwest::Url::parse(&format!("{base}/v1/runs"))
        .map_err(|e| Error::invalid(format!("bad --url {base:?}: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        let filters = [
            ("function", &args.function),
            ("status", &args.status),
            ("user", &args.user),
        ];
        for (key, value) in filters {
            if let Some(v) = value {
                q.append_pair(key, v);
            }
        }
        q.append_pair("limit", &args.limit.to_string());
    }
    let Some(body) = get_ok(url.as_str(), args.api_key.as_deref()).await? else {
        return Ok(1);
    };
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        let runs: Vec<RunSummary> = serde_json::from_value(body)?;
        outp!("{}", crate::view::render_summaries(&runs));
    }
    Ok(0)
}
