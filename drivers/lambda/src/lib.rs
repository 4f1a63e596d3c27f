//! weir-driver-lambda: runs weir steps as AWS Lambda functions (the `lambda` runtime).
//!
//! A step names an existing function (`runtime.function`: a name or ARN, with an optional
//! version or alias), or the driver deploys the step's `path` directory as the function
//! `<function-id>-<step-id>`: zipped the same way every time, created when missing, updated when
//! its code or configuration changed, and waited for until Lambda says it is ready.
//!
//! Each attempt is one synchronous `Invoke`: the step input is the payload, the response
//! payload is the step's stdout, the decoded log tail its log, and a `FunctionError` a failed
//! attempt (retried unless its payload says `"retry": false` or a `status` 4xx). The step
//! timeout is the SDK's operation timeout. See the README for every key and limit.
//!
//! ```no_run
//! # async fn demo() -> weir_core::Result<()> {
//! use std::sync::Arc;
//! use weir_core::driver::{Driver, DriverSet};
//! use weir_driver_lambda::{LambdaDriver, LambdaDriverConfig};
//!
//! let lambda = LambdaDriver::connect(LambdaDriverConfig::new().with_region("eu-west-1")).await?;
//! let drivers = DriverSet::new().with(Arc::new(lambda));
//! # Ok(()) }
//! ```

mod client;
mod config;
mod deploy;
mod error;
mod invoke;
mod limit;
mod package;
mod role;
mod target;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::time::Instant;
use weir_core::driver::{Driver, StepRequest, StepResult, StepSpec};
use weir_core::{Error, ErrorKind, Result};

pub use config::LambdaDriverConfig;
pub use deploy::{DeployAction, Deployment};
pub use invoke::LAMBDA_MAX_PAYLOAD_BYTES;
pub use package::{MAX_UNZIPPED_BYTES, MAX_ZIP_BYTES, Package, package_dir};
pub use target::{
    DEFAULT_FUNCTION_TIMEOUT, DEFAULT_HANDLER, DEFAULT_ROLE_NAME, DEFAULT_RUNTIME,
    deployed_function_name,
};

use crate::deploy::Desired;
use crate::target::{DeploySettings, Target};

/// The `runtime.type` served by [`LambdaDriver`].
pub const KIND: &str = "lambda";

/// Environment variables Lambda sets itself and refuses in a function's configuration; a
/// `.env` key among them (or starting with `AWS_LAMBDA_`) is left out, with a warning.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Runs steps on AWS Lambda; one SDK client (and connection pool) per driver.
///
/// Cloning is cheap and shares the client and the record of what this process deployed.
#[derive(Clone)]
pub struct LambdaDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: LambdaDriverConfig,
    /// The SDK clients, built on first use: loading the AWS chain probes the environment (and
    /// EC2 instance metadata), which a weir without lambda steps should never do.
    clients: tokio::sync::OnceCell<client::Clients>,
    account: tokio::sync::OnceCell<role::Account>,
    deployments: deploy::Deployments,
}

impl fmt::Debug for LambdaDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaDriver")
            .field("config", &self.inner.config)
            .field(
                "region",
                &self.inner.clients.get().map(|c| c.region.as_deref()),
            )
            .finish_non_exhaustive()
    }
}

impl LambdaDriver {
    /// Checks `config`; the SDK clients are built from it and the AWS chain when a lambda step
    /// is first prepared or run (nothing is read from the environment or sent before). A
    /// missing region or bad credentials show up then. Fails with [`ErrorKind::Config`] on an
    /// invalid setting.
    pub async fn connect(config: LambdaDriverConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|m| Error::new(ErrorKind::Config, m).permanent())?;
        Ok(LambdaDriver {
            inner: Arc::new(Inner {
                config,
                clients: tokio::sync::OnceCell::new(),
                account: tokio::sync::OnceCell::new(),
                deployments: deploy::Deployments::default(),
            }),
        })
    }

    /// The SDK clients, built on first use.
    async fn clients(&self) -> &client::Clients {
        self.inner
            .clients
            .get_or_init(|| client::build(&self.inner.config))
            .await
    }

    /// The Lambda client in use.
    pub async fn client(&self) -> &aws_sdk_lambda::Client {
        &self.clients().await.lambda
    }

    /// The region in use, if the settings or the AWS chain gave one.
    pub async fn region(&self) -> Option<&str> {
        self.clients().await.region.as_deref()
    }

    /// Deploys a step without `runtime.function`: packages its directory and creates or
    /// updates its function when the code or configuration changed ([`Driver::prepare`] does
    /// this and drops the [`Deployment`]). Fails with [`ErrorKind::Config`] for a step that
    /// names its function.
    pub async fn deploy(&self, step: &StepSpec) -> Result<Deployment> {
        self.require_region().await?;
        match target::parse(&step.runtime, Some(step.timeout))
            .map_err(|m| step_config_error(m, &step.step_id))?
        {
            Target::Deploy(settings) => self.ensure_deployed(step, &settings, true).await,
            Target::Existing(r) => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "step {} invokes the existing function {}: there is nothing to deploy",
                    step.step_id, r.function
                ),
            )
            .permanent()),
        }
    }

    async fn require_region(&self) -> Result<()> {
        if self.region().await.is_none() {
            return Err(Error::new(
                ErrorKind::Config,
                "lambda driver: no AWS region (set AWS_REGION, a profile's region, or the driver's region)",
            )
            .permanent());
        }
        Ok(())
    }

    /// Deploys `step` unless this process did already: with `repackage`, the directory is
    /// zipped again and compared; without, an earlier deploy is trusted as it is.
    async fn ensure_deployed(
        &self,
        step: &StepSpec,
        settings: &DeploySettings,
        repackage: bool,
    ) -> Result<Deployment> {
        let name = deployed_function_name(&step.function_id, &step.step_id);
        let slot = self.inner.deployments.slot(&name);
        let mut deployed = slot.lock().await;
        if let Some((_, code_sha256)) = deployed.as_ref().filter(|_| !repackage) {
            return Ok(Deployment {
                function_name: name,
                code_sha256: code_sha256.clone(),
                action: DeployAction::Cached,
            });
        }
        let (dir, settings) =
            target::deploy_dir(settings, step.path.as_deref(), &step.function_dir)
                .map_err(|m| step_config_error(m, &step.step_id))?;
        let settings = &settings;
        let package = tokio::task::spawn_blocking(move || package_dir(&dir))
            .await
            .map_err(|e| {
                Error::internal("packaging the step directory panicked").with_source(e)
            })??;
        let desired = Desired {
            description: description(step),
            settings: settings.clone(),
            role_arn: self.role_arn(settings.role.as_deref()).await?,
            env: environment(step),
            package,
            name,
        };
        let fingerprint = desired.fingerprint();
        let code_sha256 = desired.package.code_sha256().to_owned();
        if deployed.as_ref().is_some_and(|(f, _)| *f == fingerprint) {
            return Ok(Deployment {
                function_name: desired.name,
                code_sha256,
                action: DeployAction::Cached,
            });
        }
        let action = deploy::ensure(self.client().await, &desired)
            .await
            .map_err(|e| e.with_context("step", &step.step_id))?;
        *deployed = Some((fingerprint, code_sha256.clone()));
        Ok(Deployment {
            function_name: desired.name,
            code_sha256,
            action,
        })
    }

    /// The execution role's ARN: `role` (an ARN, or a name in the caller's account), else the
    /// driver's default role, else [`DEFAULT_ROLE_NAME`].
    async fn role_arn(&self, role: Option<&str>) -> Result<String> {
        let role = role
            .or(self.inner.config.default_role.as_deref())
            .unwrap_or(DEFAULT_ROLE_NAME);
        if role::is_arn(role) {
            return Ok(role.to_owned());
        }
        let sts = &self.clients().await.sts;
        let account = self
            .inner
            .account
            .get_or_try_init(|| role::caller_account(sts))
            .await?;
        Ok(role::role_arn(role, account))
    }

    /// Checks that an existing function is there (a missing permission to look is no error).
    async fn check_exists(&self, r: &target::FunctionRef, step_id: &str) -> Result<()> {
        let found = self
            .client()
            .await
            .get_function_configuration()
            .function_name(&r.function)
            .set_qualifier(r.qualifier.clone())
            .send()
            .await;
        match found {
            Ok(_) => Ok(()),
            Err(e) => {
                let error = error::lambda_error("GetFunctionConfiguration", e);
                match error.kind() {
                    ErrorKind::NotFound => Err(self.not_found(r, step_id, error)),
                    ErrorKind::Config => {
                        tracing::debug!(function = %r.function, error = %error,
                            "lambda driver: cannot check that the function exists");
                        Ok(())
                    }
                    _ => Err(error.with_context("step", step_id)),
                }
            }
        }
    }

    fn not_found(&self, r: &target::FunctionRef, step_id: &str, source: Error) -> Error {
        let qualifier = r
            .qualifier
            .as_deref()
            .map(|q| format!(" (version or alias {q})"))
            .unwrap_or_default();
        Error::new(
            ErrorKind::NotFound,
            format!(
                "lambda function not found: {}{qualifier} in region {} (check `runtime.function` of step {step_id}, \
                 the region and the credentials' account)",
                r.function,
                self.inner
                    .clients
                    .get()
                    .and_then(|c| c.region.as_deref())
                    .unwrap_or("?")
            ),
        )
        .permanent()
        .with_source(source)
    }
}

#[async_trait]
impl Driver for LambdaDriver {
    fn kind(&self) -> &str {
        KIND
    }

    fn check(&self, runtime: &Map<String, Value>, path: Option<&Path>) -> Result<()> {
        match target::parse(runtime, None).map_err(Error::config)? {
            Target::Existing(_) => Ok(()),
            Target::Deploy(settings) => target::deploy_dir(&settings, path, Path::new(""))
                .map(|_| ())
                .map_err(Error::config),
        }
    }

    async fn prepare(&self, step: &StepSpec) -> Result<()> {
        self.require_region().await?;
        match target::parse(&step.runtime, Some(step.timeout))
            .map_err(|m| step_config_error(m, &step.step_id))?
        {
            Target::Existing(r) => self.check_exists(&r, &step.step_id).await,
            Target::Deploy(settings) => self
                .ensure_deployed(step, &settings, true)
                .await
                .map(|_| ()),
        }
    }

    async fn execute(&self, request: StepRequest) -> Result<StepResult> {
        let deadline = Instant::now() + request.timeout;
        self.require_region().await?;
        invoke::check_input(&request.input)?;
        let target = target::parse(&request.runtime, Some(request.timeout))
            .map_err(|m| step_config_error(m, &request.step_id))?;
        let (function, deployed) = match target {
            Target::Existing(r) => (r, false),
            Target::Deploy(settings) => {
                let step = request.spec();
                let deploying = self.ensure_deployed(&step, &settings, false);
                let deployment = tokio::time::timeout_at(deadline, deploying)
                    .await
                    .map_err(|_| timed_out(&request, "while deploying the function"))??;
                let r = target::FunctionRef {
                    function: deployment.function_name,
                    qualifier: None,
                };
                (r, true)
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(&request, "before the function was invoked"));
        }
        let call = invoke::Call {
            function: &function.function,
            qualifier: function.qualifier.as_deref(),
            timeout: remaining,
            max_log: self.inner.config.max_log_bytes,
        };
        match invoke::invoke(self.client().await, call, &request).await {
            Ok(result) => Ok(result),
            Err(e) if e.kind() == ErrorKind::NotFound && deployed => {
                // Deleted behind our back: the next attempt deploys it again.
                self.inner.deployments.forget(&function.function);
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "lambda function {} was deleted; the next attempt deploys it again",
                        function.function
                    ),
                )
                .with_source(e))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(self.not_found(&function, &request.step_id, e))
            }
            Err(e) => Err(e.with_context("function", &function.function)),
        }
    }
}

fn step_config_error(message: String, step_id: &str) -> Error {
    Error::new(ErrorKind::Config, message)
        .permanent()
        .with_context("step", step_id)
}

fn timed_out(request: &StepRequest, when: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("step timed out after {:?} {when}", request.timeout),
    )
}

fn description(step: &StepSpec) -> String {
    let mut text = format!(
        "weir step {} of function {} (deployed by weir)",
        step.step_id, step.function_id
    );
    if let Some((cut, _)) = text.char_indices().nth(256) {
        text.truncate(cut);
    }
    text
}

/// The function's `.env` (less what Lambda reserves), plus `WEIR_FUNCTION_ID` and
/// `WEIR_STEP_ID`, which win.
fn environment(step: &StepSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (key, value) in step.env.iter() {
        if RESERVED_ENV.contains(&key.as_str()) || key.starts_with("AWS_LAMBDA_") {
            tracing::warn!(key = %key, step = %step.step_id,
                "lambda driver: Lambda reserves this .env variable; it is not set on the function");
            continue;
        }
        env.insert(key.clone(), value.clone());
    }
    env.insert("WEIR_FUNCTION_ID".into(), step.function_id.clone());
    env.insert("WEIR_STEP_ID".into(), step.step_id.clone());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_skips_reserved_keys_and_weir_wins() {
        let step = StepSpec {
            function_id: "signup".into(),
            function_dir: Default::default(),
            step_id: "step-2".into(),
            path: None,
            runtime: Map::new(),
            env: Arc::new(vec![
                ("GREETING".into(), "hi".into()),
                ("AWS_ACCESS_KEY_ID".into(), "AKID".into()),
                ("AWS_LAMBDA_FUNCTION_NAME".into(), "x".into()),
                ("WEIR_STEP_ID".into(), "spoofed".into()),
            ]),
            timeout: std::time::Duration::from_secs(30),
        };
        let env = environment(&step);
        assert_eq!(
            env.into_iter().collect::<Vec<_>>(),
            [
                ("GREETING".to_owned(), "hi".to_owned()),
                ("WEIR_FUNCTION_ID".to_owned(), "signup".to_owned()),
                ("WEIR_STEP_ID".to_owned(), "step-2".to_owned()),
            ]
        );
    }
}
