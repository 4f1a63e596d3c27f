//! `weir validate DIR`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

/// Arguments of `weir validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A function directory, or a directory holding several.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Print the errors as a JSON array of {file, path, message}.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn validate(app: &crate::App, args: ValidateArgs) -> weir_core::Result<i32> {
    let drivers = app.drivers(&Default::default()).await?;
    let loaded = crate::functions::load_all(&args.dir, &drivers);
    if loaded.functions.is_empty() && loaded.errors.is_empty() {
        eprintln!("no function (weir.json) found under {}", args.dir.display());
        return Ok(1);
    }
    if args.json {
        let errors: Vec<_> = loaded
            .errors
            .iter()
            .flat_map(|e| {
                e.problems
                    .iter()
                    .map(|p| json!({"file": e.file, "path": p.path, "message": p.message}))
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&errors).unwrap_or_default()
        );
    } else {
        for e in &loaded.errors {
            out!("{e}");
        }
        for f in &loaded.functions {
            out!(
                "ok: {} ({} steps) in {}",
                f.id,
                f.steps.len(),
                f.dir.display()
            );
        }
    }
    Ok(if loaded.errors.is_empty() { 0 } else { 1 })
}
