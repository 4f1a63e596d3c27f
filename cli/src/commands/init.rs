//! `weir init NAME`: scaffold a runnable function directory.

use std::path::PathBuf;

use clap::Args;
use weir_core::Error;

/// Arguments of `weir init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The function id; also the directory created (a slug: lowercase, digits, '-', '_').
    pub name: String,
    /// Create it inside this directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

const STEP: &str = r#"#!/bin/sh
# A weir step: the input document arrives on stdin (and as $1 when it fits):
#   {"event": {...}, "steps": {...}, "ctx": {"run_id": ..., "step_id": ..., "attempt": ...}}
# Print the step's output as JSON on stdout; stderr is kept as the step's log.
input=$(cat)
echo "step $WEIR_STEP_ID of run $WEIR_RUN_ID got $(printf %s "$input" | wc -c) bytes" >&2
printf '{"greeting": "hello from %s", "attempt": %s}\n' "$WEIR_STEP_ID" "$WEIR_ATTEMPT"
"#;

pub(super) fn init(args: InitArgs) -> weir_core::Result<i32> {
    let id = args.name.as_str();
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::invalid(format!(
            "{id:?} is not a slug (lowercase letters, digits, '-' and '_')"
        )));
    }
    let root = args.dir.join(id);
    if root.exists() {
        return Err(Error::invalid(format!("{} exists already", root.display())));
    }
    let io = |e: std::io::Error| {
        Error::internal(format!("cannot write into {}", root.display())).with_source(e)
    };
    std::fs::create_dir_all(root.join("steps")).map_err(io)?;
    let event_name = format!("app/{id}.requested");
    let def = serde_json::json!({
        "id": id,
        "name": id,
        "triggers": [{"event": event_name}],
        "steps": {
            "hello": {"id": "hello", "name": "Say hello", "path": "file://./steps/hello", "runtime": {"type": "process"}, "timeout": "30s"},
            "goodbye": {"id": "goodbye", "name": "Say goodbye", "path": "file://./steps/hello", "runtime": {"type": "process"},
                        "after": [{"step": "hello"}]}
        }
    });
    std::fs::write(
        root.join("weir.json"),
        serde_json::to_string_pretty(&def).unwrap_or_default() + "\n",
    )
    .map_err(io)?;
    let step = root.join("steps/hello");
    std::fs::write(&step, STEP).map_err(io)?;
    make_executable(&step).map_err(io)?;
    let event = serde_json::json!({"name": event_name, "data": {"hello": "world"}, "user": {"id": "user-1"}});
    std::fs::write(
        root.join("event.json"),
        serde_json::to_string_pretty(&event).unwrap_or_default() + "\n",
    )
    .map_err(io)?;
    out!("created {}", root.display());
    out!(
        "run it:  weir run {} --event {}",
        root.display(),
        root.join("event.json").display()
    );
    Ok(0)
}

fn make_executable(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(path)?.permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(path, perm)
}
