//! The `weir` binary: weir's built-in drivers, every command.

/// mimalloc: the engine's hot path allocates small JSON values per event; glibc's malloc
/// spent ~20% of ingest CPU on them (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::App::default().run_cli()
}
