//! `weir deploy DIR [--canary PCT] [--sticky-user]`: store the functions under DIR as new
//! versions on a running server and route to them (docs/deploying.md).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::Value;
use weir_core::Error;
use weir_core::function::{FunctionBundle, RuntimeCatalog, encode_bundles};

use super::remote::Remote;
use crate::view::printable;

/// Arguments of `weir deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A function directory, or a directory of them.
    pub dir: PathBuf,
    /// Send this percentage of new runs (0 to 100) to the new versions as canaries, the rest
    /// to the live ones; 0 is a blue-green standby (`weir promote` makes it live).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub canary: Option<u8>,
    /// Route the canary by the event's user (one user stays on one version) rather than by
    /// the event.
    #[arg(long, requires = "canary")]
    pub sticky_user: bool,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// Runtimes are the server's to check: any is taken here.
struct ServerChecks;

impl RuntimeCatalog for ServerChecks {
    fn check(
        &self,
        _: &str,
        _: &serde_json::Map<String, Value>,
        _: Option<&std::path::Path>,
    ) -> weir_core::Result<()> {
        Ok(())
    }
}

pub(super) async fn deploy(args: DeployArgs) -> weir_core::Result<i32> {
    let loaded = crate::functions::load_all(&args.dir, &ServerChecks);
    if !loaded.errors.is_empty() {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        return Err(Error::invalid(format!(
            "{} function file(s) under {} did not load: nothing deployed",
            loaded.errors.len(),
            args.dir.display()
        )));
    }
    if loaded.functions.is_empty() {
        return Err(Error::invalid(format!(
            "no function (weir.json) under {}",
            args.dir.display()
        )));
    }
    let bundles = loaded
        .functions
        .iter()
        .map(|f| {
            FunctionBundle::of(f).map_err(|e| Error::invalid(format!("function {}: {e}", f.id)))
        })
        .collect::<weir_core::Result<Vec<_>>>()?;
    let remote = &args.remote;
    let url = remote.url(
        "/v1/deploy",
        &[],
        &[
            ("canary", args.canary.map(|p| p.to_string())),
            ("sticky_user", args.sticky_user.then(|| "true".to_owned())),
        ],
    )?;
    let (status, answer) = remote
        .call_with(
            reqwest::Method::POST,
            &url,
            Some(encode_bundles(&bundles)),
            "application/octet-stream",
        )
        .await?;
    if status != 200 {
        eprintln!("error {status}: {}", Remote::error_message(&answer));
        return Ok(1);
    }
    if remote.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        outp!("{}", render(&answer));
    }
    Ok(0)
}

/// One line per function deployed.
fn render(answer: &Value) -> String {
    let mut out = String::new();
    for d in answer["deployed"].as_array().into_iter().flatten() {
        let id = printable(d["function_id"].as_str().unwrap_or(""));
        let version = d["version"].as_u64().unwrap_or(0);
        let what = match d["status"].as_str() {
            Some("canary") => "deployed as a canary",
            Some("unchanged") => "already live",
            _ => "deployed, live",
        };
        let new = if d["new"].as_bool() == Some(true) {
            ""
        } else {
            " (stored before)"
        };
        let _ = writeln!(out, "{id}: version {version} {what}{new}");
    }
    out
}
