//! [`App`]: weir as a library — the built-in drivers plus a custom build's own, and every
//! command of the `weir` binary on top.
//!
//! A custom weir (a NATS broker, a Postgres state store, a Firecracker runtime of one's own) is
//! a binary of a few lines:
//!
//! ```no_run
//! use weir::core::registry::RuntimeType;
//!
//! fn main() -> std::process::ExitCode {
//!     weir::App::builder()
//!         .runtime(RuntimeType::new("noop", |_settings| async {
//!             Ok(my_runtime::NoopDriver)
//!         }))
//!         .run_cli()
//! }
//! # mod my_runtime {
//! #     use weir::core::driver::{Driver, StepRequest, StepResult};
//! #     pub struct NoopDriver;
//! #     #[async_trait::async_trait]
//! #     impl Driver for NoopDriver {
//! #         fn kind(&self) -> &str { "noop" }
//! #         async fn execute(&self, _: StepRequest) -> weir::core::Result<StepResult> {
//! #             Ok(StepResult { success: true, stdout: "{}".into(), log: String::new(), detail: None, retryable: None })
//! #         }
//! #     }
//! # }
//! ```
//!
//! Its `serve`, `dev`, `run`, `validate`, … are weir's, with the custom driver usable wherever a
//! built-in one is (`--broker nats://…`, `"runtime": {"type": "noop"}`) and listed in `--help`.
//! See docs/writing-a-driver.md.

use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use weir_core::Result;
use weir_core::driver::DriverSet;
use weir_core::engine::{Engine, EngineParts};
use weir_core::registry::{
    AdapterScheme, BrokerScheme, Registry, RuntimeSettings, RuntimeType, StateScheme,
};

use crate::commands::Cli;
use crate::config::ServeConfig;
use crate::embedded::EngineOptions;

/// Changes made to the `weir` command line of a custom build (its name, version, about).
type CommandHook = Arc<dyn Fn(clap::Command) -> clap::Command + Send + Sync>;

/// weir with a set of drivers: what every command runs on. Cheap to clone.
#[derive(Clone)]
pub struct App {
    registry: Arc<Registry>,
    command: Option<CommandHook>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Default for App {
    /// weir with its built-in drivers (those of this build's Cargo features).
    fn default() -> Self {
        App::builder().build()
    }
}

/// Builds an [`App`]: weir's built-in drivers, then a custom build's own. A driver registered
/// under a name an earlier entry serves replaces that entry whole (replacing `redis` drops
/// the built-in `rediss` too).
#[derive(Clone)]
pub struct AppBuilder {
    registry: Registry,
    command: Option<CommandHook>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl App {
    /// A builder holding weir's built-in drivers.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            registry: crate::registry::builtins(),
            command: None,
        }
    }

    /// The drivers this app knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Builds every runtime driver of this app.
    pub async fn drivers(&self, settings: &RuntimeSettings) -> Result<DriverSet> {
        self.registry.open_runtimes(settings).await
    }

    /// Opens the state store and broker named by `options` and builds an engine (not started).
    pub async fn build_engine(&self, options: &EngineOptions) -> Result<Engine> {
        self.build_engine_with(options, Vec::new()).await
    }

    /// [`build_engine`](Self::build_engine) with `extra` runtime drivers beside this app's
    /// (`weir replay`'s stub of recorded outputs).
    pub async fn build_engine_with(
        &self,
        options: &EngineOptions,
        extra: Vec<std::sync::Arc<dyn weir_core::driver::Driver>>,
    ) -> Result<Engine> {
        let stores = self.registry.open_state(&options.state_url).await?;
        let broker = self.registry.open_broker(&options.broker_url).await?;
        let settings = RuntimeSettings::default().with_signing_key(options.signing_key.clone());
        let mut drivers = self.drivers(&settings).await?;
        for driver in extra {
            drivers = drivers.with(driver);
        }
        Ok(Engine::new(EngineParts {
            state: stores.state,
            events: stores.events,
            broker,
            drivers,
            config: options.config.clone(),
        }))
    }

    /// The `weir` command line, its `--help` listing this app's drivers.
    pub fn command(&self) -> clap::Command {
        let command = Cli::command().after_help(self.registry.describe());
        match &self.command {
            Some(hook) => hook(command),
            None => command,
        }
    }

    /// Runs one command line; returns the process exit code.
    pub async fn run(&self, cli: Cli) -> i32 {
        crate::commands::main(self, cli).await
    }

    /// `weir serve` with `config` (what the file, `WEIR_*` variables and flags fill in);
    /// returns the process exit code once the server stopped (on SIGINT or SIGTERM).
    pub async fn serve(&self, config: ServeConfig) -> Result<i32> {
        crate::commands::serve::serve_config(self, config).await
    }

    /// The whole `weir` binary: logging as `WEIR_LOG` says (default `warn`, on stderr), the
    /// command line parsed from the process arguments, run on a multi-threaded Tokio runtime.
    pub fn run_cli(&self) -> std::process::ExitCode {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .try_init()
            // A program embedding weir may have set its own subscriber: keep it.
            .ok();
        let cli = match Cli::from_arg_matches(&self.command().get_matches()) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the Tokio runtime: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        let code = runtime.block_on(self.run(cli));
        // Tasks still running (the steps of a `weir run` that timed out) are dropped, which
        // kills what they started; blocking work gets a second to end, then the process exits.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
    }
}

impl AppBuilder {
    /// Adds a state store (URL schemes and constructor).
    pub fn state_scheme(mut self, entry: StateScheme) -> Self {
        self.registry.state(entry);
        self
    }

    /// Adds a broker (URL schemes and constructor).
    pub fn broker_scheme(mut self, entry: BrokerScheme) -> Self {
        self.registry.broker(entry);
        self
    }

    /// Adds a runtime driver (its `runtime.type` and constructor).
    pub fn runtime(mut self, entry: RuntimeType) -> Self {
        self.registry.runtime(entry);
        self
    }

    /// Adds an adapter (URL schemes of `--adapter` and constructor).
    pub fn adapter_scheme(mut self, entry: AdapterScheme) -> Self {
        self.registry.adapter(entry);
        self
    }

    /// Changes the command line (`weir-custom` instead of `weir`, its own version and about):
    /// `.command(|c| c.name("weir-custom").version(env!("CARGO_PKG_VERSION")))`.
    pub fn command(
        mut self,
        hook: impl Fn(clap::Command) -> clap::Command + Send + Sync + 'static,
    ) -> Self {
        self.command = Some(Arc::new(hook));
        self
    }

    /// The app.
    pub fn build(self) -> App {
        App {
            registry: Arc::new(self.registry),
            command: self.command,
        }
    }

    /// Builds the app and runs the `weir` binary on it ([`App::run_cli`]).
    pub fn run_cli(self) -> std::process::ExitCode {
        self.build().run_cli()
    }
}
