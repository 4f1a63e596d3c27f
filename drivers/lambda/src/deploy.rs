//! Deploying a step directory as a Lambda function: create it, or update its code and
//! configuration when they differ, then wait until Lambda says it is ready.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, Runtime, State,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use weir_core::{Error, ErrorKind, Result};

use crate::error::{code, lambda_error};
use crate::package::Package;
use crate::target::DeploySettings;

/// How long a deploy waits for Lambda to make a function ready.
const READY_WAIT: Duration = Duration::from_secs(300);

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployAction {
    /// The function did not exist and was created.
    Created,
    /// Its code, its configuration or both were updated.
    Updated,
    /// Lambda already had this code and configuration.
    Unchanged,
    /// This driver deployed this content before: nothing was asked of Lambda.
    Cached,
}

/// A function deployed for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The function's name (see [`deployed_function_name`](crate::deployed_function_name)).
    pub function_name: String,
    /// The deployed package's `CodeSha256`.
    pub code_sha256: String,
    /// What the deploy did.
    pub action: DeployAction,
}

/// The function a step should have.
pub(crate) struct Desired {
    pub name: String,
    pub description: String,
    pub settings: DeploySettings,
    pub role_arn: String,
    pub env: BTreeMap<String, String>,
    pub package: Package,
}

impl Desired {
    /// A hash of everything deployed: code and configuration.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.package.code_sha256());
        hash.update(format!(
            "\0{:?}\0{}\0{:?}\0{}",
            self.settings, self.role_arn, self.env, self.description
        ));
        hex::encode(hash.finalize())
    }
}

/// What this process deployed as one function: (fingerprint, `CodeSha256`).
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<(String, String)>>>;

/// Per function name: what this process deployed last, behind a lock so one process deploys
/// a function once at a time.
#[derive(Default)]
pub(crate) struct Deployments {
    slots: parking_lot::Mutex<HashMap<String, Slot>>,
}

impl Deployments {
    /// The slot of function `name`.
    pub fn slot(&self, name: &str) -> Slot {
        self.slots
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets what was deployed as `name` (it was deleted behind our back).
    pub fn forget(&self, name: &str) {
        self.slots.lock().remove(name);
    }
}

/// Makes Lambda's function `desired.name` match `desired`.
pub(crate) async fn ensure(client: &Client, desired: &Desired) -> Result<DeployAction> {
    let name = desired.name.as_str();
    let current = match get(client, name).await? {
        Some(current) => current,
        None => match create(client, desired).await {
            Ok(()) => {
                tracing::info!(function = name, "lambda driver: created the function");
                wait_ready(client, name).await?;
                return Ok(DeployAction::Created);
            }
            // Another process created it first: compare with what it deployed.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                get(client, name).await?.ok_or_else(|| {
                    Error::unavailable(format!(
                        "lambda function {name} was created and deleted at once"
                    ))
                })?
            }
            Err(e) => return Err(e),
        },
    };
    let mut current = if is_ready(&current) {
        current
    } else {
        wait_ready(client, name).await?
    };
    let mut action = DeployAction::Unchanged;
    if current.code_sha256() != Some(desired.package.code_sha256()) {
        client
            .update_function_code()
            .function_name(name)
            .zip_file(Blob::new(desired.package.zip().to_vec()))
            .send()
            .await
            .map_err(|e| lambda_error("UpdateFunctionCode", e).with_context("function", name))?;
        tracing::info!(
            function = name,
            "lambda driver: updated the function's code"
        );
        current = wait_ready(client, name).await?;
        action = DeployAction::Updated;
    }
    if config_differs(&current, desired) {
        client
            .update_function_configuration()
            .function_name(name)
            .description(&desired.description)
            .runtime(Runtime::from(desired.settings.runtime.as_str()))
            .handler(&desired.settings.handler)
            .role(&desired.role_arn)
            .timeout(desired.settings.timeout_secs)
            .set_memory_size(desired.settings.memory)
            .environment(environment(&desired.env))
            .send()
            .await
            .map_err(|e| deploy_error("UpdateFunctionConfiguration", e, desired))?;
        tracing::info!(
            function = name,
            "lambda driver: updated the function's configuration"
        );
        wait_ready(client, name).await?;
        action = DeployAction::Updated;
    }
    Ok(action)
}

async fn create(client: &Client, desired: &Desired) -> Result<()> {
    let sent = client
        .create_function()
        .function_name(&desired.name)
        .description(&desired.description)
        .runtime(Runtime::from(desired.settings.runtime.as_str()))
        .handler(&desired.settings.handler)
        .role(&desired.role_arn)
        .timeout(desired.settings.timeout_secs)
        .set_memory_size(desired.settings.memory)
        .environment(environment(&desired.env))
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(desired.package.zip().to_vec()))
                .build(),
        )
        .publish(false)
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceConflictException") => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("lambda function {} exists already", desired.name),
        )),
        Err(e) => Err(deploy_error("CreateFunction", e, desired)),
    }
}

/// A create or update error, with the hint Lambda's role errors need.
fn deploy_error<E>(
    what: &str,
    e: aws_sdk_lambda::error::SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
    desired: &Desired,
) -> Error
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_lambda::error::ProvideErrorMetadata;
    let role_problem = e.message().is_some_and(|m| m.contains("role"));
    let error = lambda_error(what, e).with_context("function", &desired.name);
    if role_problem {
        return Error::new(
            ErrorKind::Config,
            format!(
                "lambda driver: Lambda refused the execution role {} of function {} (create the role \
                 with a trust policy for lambda.amazonaws.com, or set `runtime.role`)",
                desired.role_arn, desired.name
            ),
        )
        .permanent()
        .with_source(error);
    }
    error
}

/// The function's configuration (`$LATEST`), or `None` when it does not exist.
pub(crate) async fn get(client: &Client, name: &str) -> Result<Option<FunctionConfiguration>> {
    match client.get_function().function_name(name).send().await {
        Ok(output) => output.configuration.map(Some).ok_or_else(|| {
            Error::internal(format!(
                "GetFunction of lambda function {name} gave no configuration"
            ))
        }),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(lambda_error("GetFunction", e).with_context("function", name)),
    }
}

fn is_ready(c: &FunctionConfiguration) -> bool {
    !matches!(c.state(), Some(State::Pending))
        && !matches!(c.last_update_status(), Some(LastUpdateStatus::InProgress))
}

/// Polls until the function is no longer `Pending` nor `InProgress` (failing on `Failed`).
async fn wait_ready(client: &Client, name: &str) -> Result<FunctionConfiguration> {
    let deadline = Instant::now() + READY_WAIT;
    let mut delay = Duration::from_millis(250);
    loop {
        let current = get(client, name).await?.ok_or_else(|| {
            Error::unavailable(format!(
                "lambda function {name} disappeared while it was being deployed"
            ))
        })?;
        if matches!(current.state(), Some(State::Failed)) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "lambda function {name} failed to become active: {}",
                    current.state_reason().unwrap_or("no reason given")
                ),
            )
            .permanent());
        }
        if matches!(current.last_update_status(), Some(LastUpdateStatus::Failed)) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the last update of lambda function {name} failed: {}",
                    current
                        .last_update_status_reason()
                        .unwrap_or("no reason given")
                ),
            )
            .permanent());
        }
        if is_ready(&current) {
            return Ok(current);
        }
        if Instant::now() + delay > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("lambda function {name} was not ready after {READY_WAIT:?}"),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn config_differs(current: &FunctionConfiguration, desired: &Desired) -> bool {
    let s = &desired.settings;
    let env: BTreeMap<&str, &str> = current
        .environment()
        .and_then(|e| e.variables())
        .map(|vars| vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
        .unwrap_or_default();
    let wanted: BTreeMap<&str, &str> = desired
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    current.handler() != Some(s.handler.as_str())
        || current.runtime().map(Runtime::as_str) != Some(s.runtime.as_str())
        || current.role() != Some(desired.role_arn.as_str())
        || current.timeout() != Some(s.timeout_secs)
        || s.memory.is_some_and(|m| current.memory_size() != Some(m))
        || current.description().unwrap_or_default() != desired.description
        || env != wanted
}

fn environment(env: &BTreeMap<String, String>) -> Environment {
    Environment::builder()
        .set_variables(Some(env.clone().into_iter().collect()))
        .build()
}
