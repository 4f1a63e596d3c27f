//! [`LambdaDriverConfig`]: where the driver finds Lambda, and how it signs in.

use std::fmt;

use weir_core::driver::DEFAULT_MAX_LOG_BYTES;

/// Settings of a [`LambdaDriver`](crate::LambdaDriver). Everything is optional: what is not set
/// comes from the usual AWS chain.
///
/// - **Region**: `region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`, the profile's region, or
///   instance metadata.
/// - **Endpoint**: `endpoint` (e.g. `http://127.0.0.1:5000` for moto), else
///   `AWS_ENDPOINT_URL_LAMBDA` / `AWS_ENDPOINT_URL` / the profile's, else the region's. It serves
///   STS too, which the driver asks for the account id when a role is given by name.
/// - **Credentials**: static ones set with [`with_static_credentials`](Self::with_static_credentials)
///   (meant for local emulators), else the AWS chain: `AWS_ACCESS_KEY_ID` /
///   `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_PROFILE` and `~/.aws`, web identity,
///   ECS/EKS container credentials, EC2 instance metadata.
///
/// `Debug` never shows credentials.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LambdaDriverConfig {
    /// The AWS region; `None`: the AWS chain's.
    pub region: Option<String>,
    /// The Lambda (and STS) endpoint; `None`: the AWS chain's, else the region's.
    pub endpoint: Option<String>,
    /// The execution role of functions the driver deploys when a step sets no `runtime.role`:
    /// a role ARN, or a role name in the caller's account. `None`:
    /// [`DEFAULT_ROLE_NAME`](crate::DEFAULT_ROLE_NAME).
    pub default_role: Option<String>,
    /// How much of each attempt's log (Lambda's log tail, at most 4 KB) is kept.
    pub max_log_bytes: usize,
    credentials: Option<StaticCredentials>,
}

#[derive(Clone, PartialEq, Eq)]
struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Default for LambdaDriverConfig {
    fn default() -> Self {
        LambdaDriverConfig {
            region: None,
            endpoint: None,
            default_role: None,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            credentials: None,
        }
    }
}

impl LambdaDriverConfig {
    /// Everything from the AWS chain (the same as `Default`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Uses this endpoint (`http://` or `https://`) for Lambda and STS.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses these credentials instead of the AWS chain's.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        });
        self
    }

    /// Deploys functions with this execution role (an ARN, or a role name in the caller's
    /// account) unless a step sets `runtime.role`.
    pub fn with_default_role(mut self, role: impl Into<String>) -> Self {
        self.default_role = Some(role.into());
        self
    }

    /// Keeps at most `bytes` of each attempt's log.
    pub fn with_max_log_bytes(mut self, bytes: usize) -> Self {
        self.max_log_bytes = bytes;
        self
    }

    /// Checks the settings; the message names the one that is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!(
                "lambda driver: endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        if let Some(region) = &self.region
            && region.trim().is_empty()
        {
            return Err("lambda driver: region is empty".into());
        }
        Ok(())
    }

    /// Static credentials: (access key id, secret, session token).
    pub(crate) fn static_credentials(&self) -> Option<(&str, &str, Option<&str>)> {
        self.credentials.as_ref().map(|c| {
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref(),
            )
        })
    }
}

impl fmt::Debug for LambdaDriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaDriverConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("default_role", &self.default_role)
            .field("max_log_bytes", &self.max_log_bytes)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map_or("from the AWS chain", |_| "***"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let config = LambdaDriverConfig::new()
            .with_region("eu-west-1")
            .with_static_credentials("AKIDEXAMPLE", "s3cret", Some("t0ken".into()));
        let shown = format!("{config:?}");
        for secret in ["AKIDEXAMPLE", "s3cret", "t0ken"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("***") && shown.contains("eu-west-1"),
            "{shown}"
        );
        assert_eq!(
            config.static_credentials(),
            Some(("AKIDEXAMPLE", "s3cret", Some("t0ken")))
        );
    }

    #[test]
    fn endpoints_need_a_scheme() {
        let bad = LambdaDriverConfig::new().with_endpoint("127.0.0.1:5000");
        assert!(bad.validate().unwrap_err().contains("http://"));
        let good = LambdaDriverConfig::new().with_endpoint("http://127.0.0.1:5000");
        assert!(good.validate().is_ok());
        assert!(
            LambdaDriverConfig::new()
                .with_region(" ")
                .validate()
                .is_err()
        );
    }
}
