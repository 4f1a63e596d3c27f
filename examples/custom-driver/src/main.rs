//! `weir-custom`: the `weir` binary with one more runtime, `shell`. Every command of weir works
//! (`weir-custom run …`, `dev`, `serve`, `validate`, …), and `weir-custom --help` lists the
//! `shell` runtime among the drivers.

/// The allocator the `weir` binary uses too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weir::App::builder()
        .runtime(weir_custom::shell::runtime())
        .command(|c| c.name("weir-custom").version(env!("CARGO_PKG_VERSION")))
        .run_cli()
}
