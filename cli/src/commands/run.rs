//! `weir run DIR --event FILE|-`: one run, in-process, on the embedded engine.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use weir_core::engine::Roles;
use weir_core::function::load_function;
use weir_core::{Error, Event};

use crate::embedded::EngineOptions;

/// Arguments of `weir run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The function directory (holding weir.json).
    pub dir: PathBuf,
    /// The event: a JSON file, or `-` for stdin.
    #[arg(long, short)]
    pub event: String,
    /// Print `{"run_id","status","steps":{…}}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this long (e.g. `10m`).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
}

pub(super) async fn run(app: &crate::App, args: RunArgs) -> weir_core::Result<i32> {
    let text = if args.event == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::invalid("cannot read stdin").with_source(e))?;
        s
    } else {
        std::fs::read_to_string(&args.event)
            .map_err(|e| Error::invalid(format!("cannot read {}", args.event)).with_source(e))?
    };
    let timeout = weir_core::duration::parse_duration(&args.timeout)
        .map_err(|e| Error::invalid(format!("--timeout: {e}")))?;
    let engine = app.build_engine(&EngineOptions::default()).await?;
    let function = match load_function(&args.dir, engine.drivers()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    // Images built, modules compiled, Lambdas deployed before the event goes in.
    let mut loaded = crate::functions::Loaded {
        functions: vec![function],
        ..Default::default()
    };
    crate::functions::prepare(engine.drivers(), &mut loaded).await;
    let Some(function) = loaded.functions.pop() else {
        for e in &loaded.errors {
            eprintln!("{e}");
        }
        return Ok(2);
    };
    let order: Vec<String> = function.steps.iter().map(|s| s.id.clone()).collect();
    let function_id = function.id.clone();
    engine.functions().replace(vec![function]);
    let cfg = engine.config();
    let events =
        weir_core::engine::parse_body(text.as_bytes(), cfg.max_event_bytes, cfg.max_request_bytes)?;
    let handle = engine
        .start(Roles {
            router: false,
            executor: true,
            scheduler: true,
        })
        .await?;
    let mut code = 0;
    let mut outputs = Vec::new();
    for event in events {
        let run_ids = route(&engine, &event).await?;
        if run_ids.is_empty() {
            eprintln!(
                "event {:?} does not trigger function {function_id:?} (name or expression did not match)",
                event.name
            );
            code = 1;
        }
        for id in run_ids {
            let run = engine
                .wait_for_run(&id, timeout.max(Duration::from_millis(1)))
                .await?;
            if !crate::view::completed(&run) {
                code = 1;
            }
            let view = crate::view::run_json(&run, false);
            if args.json {
                outputs.push(view);
            } else {
                outp!("{}", crate::view::render_run(&view, &order));
            }
        }
    }
    if args.json {
        let doc = if outputs.len() == 1 {
            outputs.remove(0)
        } else {
            serde_json::Value::Array(outputs)
        };
        out!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    handle.shutdown().await;
    Ok(code)
}

async fn route(
    engine: &weir_core::engine::Engine,
    event: &Event,
) -> weir_core::Result<Vec<String>> {
    engine
        .events()
        .append(&[std::sync::Arc::new(event.clone())])
        .await?;
    engine.route(event).await
}
