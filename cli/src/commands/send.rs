//! `weir send NAME --data JSON`.

use clap::Args;
use serde_json::{Value, json};
use weir_core::Error;

/// Arguments of `weir send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The event name, e.g. `user/signed.up`.
    pub name: String,
    /// The event's `data` (a JSON object).
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// The event's `user` (a JSON object).
    #[arg(long)]
    pub user: Option<String>,
    /// The event id (idempotency key); a new ULID when absent.
    #[arg(long)]
    pub id: Option<String>,
    /// The server.
    #[arg(long, default_value = super::DEFAULT_URL, env = "WEIR_URL")]
    pub url: String,
    /// The event key.
    #[arg(long, default_value = "dev", env = "WEIR_EVENT_KEY")]
    pub key: String,
    /// Print the server's JSON answer.
    #[arg(long)]
    pub json: bool,
}

fn parse_object(flag: &str, text: &str) -> weir_core::Result<Value> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("--{flag} is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::invalid(format!("--{flag} must be a JSON object")));
    }
    Ok(v)
}

pub(super) async fn send(args: SendArgs) -> weir_core::Result<i32> {
    let mut event = json!({"name": args.name, "data": parse_object("data", &args.data)?});
    if let Some(user) = &args.user {
        event["user"] = parse_object("user", user)?;
    }
    if let Some(id) = &args.id {
        event["id"] = json!(id);
    }
    let url = format!("{}/e/{}", args.url.trim_end_matches('/'), args.key);
    let answer = reqwest::Client::new()
        .post(&url)
        .json(&event)
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("cannot reach {url}")).with_source(e))?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if args.json {
        out!("{body}");
    } else if status.is_success() {
        for id in body["ids"].as_array().into_iter().flatten() {
            out!("{}", id.as_str().unwrap_or_default());
        }
    } else {
        eprintln!(
            "error {}: {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or("(no message)")
        );
    }
    Ok(if status.is_success() { 0 } else { 1 })
}
