//! The `weir` command line.

/// `println!` that ignores a closed stdout (`weir runs | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! outp {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

mod dead;
mod deploy;
mod dev;
mod events;
mod init;
mod jobs;
mod remote;
mod replay;
mod replay_stub;
mod run;
mod runs;
mod schemas;
mod send;
pub(crate) mod serve;
mod user;
mod validate;
mod versions;

use clap::{Parser, Subcommand};

/// weir — event-driven functions: send events, run DAGs of steps, see every run.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dev server on 127.0.0.1:8288 with the embedded engine; reloads functions on change.
    Dev(dev::DevArgs),
    /// Run one function once, in-process, for one event; print each step's result.
    Run(run::RunArgs),
    /// Production server: state, broker and roles by configuration (file, WEIR_* env, flags).
    Serve(Box<serve::ServeArgs>),
    /// Send an event to a running server.
    Send(send::SendArgs),
    /// Validate function definitions; print every error with file and JSON path.
    Validate(validate::ValidateArgs),
    /// Scaffold a runnable function directory.
    Init(init::InitArgs),
    /// List runs of a running server, or show one (`weir runs show RUN_ID`).
    Runs(runs::RunsArgs),
    /// List the events a running server stored, newest first.
    Events(events::EventsArgs),
    /// List the jobs a running server keeps for outside workers (Faktory's), like runs.
    Jobs(jobs::JobsArgs),
    /// The messages a running server gave up on (dead letters): list, show, retry, drop.
    Dead(dead::DeadArgs),
    /// The event schemas of a running server: list, show, push, delete.
    Schemas(schemas::SchemasArgs),
    /// One user's events and the runs they started, on one timeline, newest first.
    User(user::UserArgs),
    /// Store the functions under DIR as new versions on a running server and route to them
    /// (live, or a canary share).
    Deploy(deploy::DeployArgs),
    /// A function's stored versions: live, canary or retired, runs, failure rate, p50.
    Versions(versions::VersionsArgs),
    /// Make a function's canary its live version.
    Promote(versions::PromoteArgs),
    /// Make a function's previously live version (or --to N) live again; retire any canary.
    Rollback(versions::RollbackArgs),
    /// Run a server's stored events through a version of a function, here, and print the
    /// steps whose output changed.
    Replay(replay::ReplayArgs),
}

/// Runs the command; returns the process exit code.
pub async fn main(app: &crate::App, cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Dev(a) => dev::dev(app, a).await,
        Command::Run(a) => run::run(app, a).await,
        Command::Send(a) => send::send(a).await,
        Command::Serve(a) => serve::serve(app, *a).await,
        Command::Validate(a) => validate::validate(app, a).await,
        Command::Init(a) => init::init(a),
        Command::Runs(a) => runs::runs(a).await,
        Command::Events(a) => events::events(a).await,
        Command::Jobs(a) => jobs::jobs(a).await,
        Command::Dead(a) => dead::dead(a).await,
        Command::Schemas(a) => schemas::schemas(a).await,
        Command::User(a) => user::user(a).await,
        Command::Deploy(a) => deploy::deploy(a).await,
        Command::Versions(a) => versions::versions(a).await,
        Command::Promote(a) => versions::promote(a).await,
        Command::Rollback(a) => versions::rollback(a).await,
        Command::Replay(a) => replay::replay(app, a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// The default server URL of client commands.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8288";
