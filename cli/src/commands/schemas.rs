//! `weir schemas list|show|push|delete`: the event schemas of a running server
//! (docs/event-schemas.md).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use weir_core::Error;

use super::remote::Remote;
use crate::view::printable;

/// Arguments of `weir schemas`.
#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<SchemasCommand>,
    /// The server and the output.
    #[command(flatten)]
    pub remote: Remote,
}

/// The `weir schemas` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List the schemas in use: name, version, newest, where each comes from.
    List,
    /// Print one schema.
    Show {
        /// The event name.
        name: String,
        /// The version label.
        version: String,
    },
    /// Store a schema in the server's state store, where every node finds it. FILE is a
    /// schema file (`{"name", "version", "schema"}`), or a bare JSON Schema with NAME and
    /// --version. The newest stored events of the name are checked against it first.
    Push {
        /// The event name (when FILE does not give it), or FILE.
        #[arg(value_name = "NAME")]
        first: String,
        /// The file, when NAME comes first.
        #[arg(value_name = "FILE")]
        second: Option<String>,
        /// The version label (when FILE does not give it).
        #[arg(long)]
        version: Option<String>,
        /// Store it even when stored events break it.
        #[arg(long)]
        force: bool,
        /// Replace another schema stored under its version.
        #[arg(long)]
        replace: bool,
        /// How many of the newest stored events of the name to check it against (0: none).
        #[arg(long)]
        check: Option<usize>,
    },
    /// Delete a pushed schema (schema files on the nodes stay).
    Delete {
        /// The event name.
        name: String,
        /// The version label.
        version: String,
    },
}

pub(super) async fn schemas(args: SchemasArgs) -> weir_core::Result<i32> {
    let remote = &args.remote;
    match args.command.unwrap_or(SchemasCommand::List) {
        SchemasCommand::List => {
            let url = remote.url("/v1/schemas", &[], &[])?;
            remote.print(&url, render_list).await
        }
        SchemasCommand::Show { name, version } => {
            let url = remote.url("/v1/schemas", &[&name, &version], &[])?;
            remote
                .print(&url, |v: &Value| {
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&v["schema"]).unwrap_or_default()
                    )
                })
                .await
        }
        SchemasCommand::Push {
            first,
            second,
            version,
            force,
            replace,
            check,
        } => {
            let (name, file) = match second {
                None => (None, PathBuf::from(first)),
                Some(file) => (Some(first), PathBuf::from(file)),
            };
            let document = document_of(&file, name, version)?;
            let flags = [("force", force), ("replace", replace)];
            push(remote, document, &flags, check).await
        }
        SchemasCommand::Delete { name, version } => {
            let url = remote.url("/v1/schemas", &[&name, &version], &[])?;
            remote
                .delete_and_print(&url, |_: &Value| {
                    format!(
                        "deleted pushed version {} of {}\n",
                        printable(&version),
                        printable(&name)
                    )
                })
                .await
        }
    }
}

/// The schema document `file` gives: a schema file as it is (`name` and `version` must agree
/// with the arguments when both give them), or a bare JSON Schema wrapped with them.
fn document_of(
    file: &PathBuf,
    name: Option<String>,
    version: Option<String>,
) -> weir_core::Result<Value> {
    let text = std::fs::read(file)
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        Error::invalid(format!(
            "{}: malformed JSON at line {}, column {}: {e}",
            file.display(),
            e.line(),
            e.column()
        ))
    })?;
    // An object with a `schema` is a schema file (the server names its other problems);
    // anything else is a bare JSON Schema.
    let is_document = value.as_object().is_some_and(|o| o.contains_key("schema"));
    let mut document = if is_document {
        value
    } else {
        json!({"schema": value})
    };
    for (key, given) in [("name", name), ("version", version)] {
        let in_file = document.get(key).map(label);
        match (in_file, given) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::invalid(format!(
                    "{}: its {key} is {a:?}, the command line says {b:?}",
                    file.display()
                )));
            }
            (None, Some(b)) => document[key] = json!(b),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{} gives no {key}: pass {}",
                    file.display(),
                    if key == "name" { "NAME" } else { "--version" }
                )));
            }
            _ => {}
        }
    }
    Ok(document)
}

/// A name or version label as given in a document (a number as its text).
fn label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sends `document` to `PUT /v1/schemas/{name}/{version}` and prints what the server did.
async fn push(
    remote: &Remote,
    document: Value,
    flags: &[(&str, bool)],
    check: Option<usize>,
) -> weir_core::Result<i32> {
    let (name, version) = (label(&document["name"]), label(&document["version"]));
    let mut query: Vec<(&str, Option<String>)> = flags
        .iter()
        .map(|(flag, on)| (*flag, on.then(|| "true".to_owned())))
        .collect();
    query.push(("check", check.map(|n| n.to_string())));
    let url = remote.url("/v1/schemas", &[&name, &version], &query)?;
    let body = serde_json::to_vec(&document)?;
    let (status, answer) = remote.call(reqwest::Method::PUT, &url, Some(body)).await?;
    if remote.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    }
    if status == 200 || status == 201 {
        if !remote.json {
            outp!("{}", render_push(&name, &version, &answer));
        }
        return Ok(0);
    }
    eprintln!("error {status}: {}", Remote::error_message(&answer));
    if !remote.json {
        for p in answer["problems"].as_array().into_iter().flatten() {
            eprintln!(
                "  {}: {}",
                p["path"].as_str().unwrap_or(""),
                p["message"].as_str().unwrap_or("")
            );
        }
        eprint!("{}", render_breakages(&answer));
    }
    Ok(1)
}

/// What a successful push did.
fn render_push(name: &str, version: &str, answer: &Value) -> String {
    let mut out = String::new();
    let stored = answer["stored"].as_str().unwrap_or("stored");
    let checked = answer["checked"].as_u64().unwrap_or(0);
    let broken = answer["broken"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "version {} of {}: {stored}; {checked} stored event(s) checked, {broken} broken",
        printable(version),
        printable(name)
    );
    out.push_str(&render_breakages(answer));
    out
}

/// The stored events a schema breaks, one line each.
fn render_breakages(answer: &Value) -> String {
    let mut out = String::new();
    for b in answer["breakages"].as_array().into_iter().flatten() {
        let pointer = b["pointer"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "  event {}  {}: {}",
            printable(b["event_id"].as_str().unwrap_or("")),
            printable(if pointer.is_empty() { "/" } else { pointer }),
            printable(b["message"].as_str().unwrap_or(""))
        );
    }
    out
}

/// One line per schema in use.
fn render_list(answer: &Value) -> String {
    let mut out = String::new();
    if answer["strict"].as_bool() == Some(true) {
        let _ = writeln!(out, "strict events: a name without a schema is refused");
    }
    let _ = writeln!(
        out,
        "{:<32}  {:<10}  {:<6}  SOURCE",
        "EVENT", "VERSION", "NEWEST"
    );
    for s in answer["schemas"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<32}  {:<10}  {:<6}  {}",
            printable(s["name"].as_str().unwrap_or("")),
            printable(s["version"].as_str().unwrap_or("")),
            if s["newest"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            printable(s["source"].as_str().unwrap_or(""))
        );
    }
    out
}
