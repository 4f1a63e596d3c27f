//! The `weir` binary.

use clap::Parser;

/// mimalloc: the engine's hot path allocates small JSON values per event; glibc's malloc
/// spent ~20% of ingest CPU on them (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = weir::commands::main(weir::commands::Cli::parse()).await;
    std::process::exit(code);
}
