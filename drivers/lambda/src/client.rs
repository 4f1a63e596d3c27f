//! Building the SDK clients: rustls on ring (no aws-lc), tokio, the AWS chain for the rest.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_lambda::config::{Credentials, Region};

use crate::config::LambdaDriverConfig;
use crate::invoke::CONNECT_TIMEOUT;

/// How long one attempt of a control-plane call (create, update, get) may take; an upload of
/// a 50 MB package included. Invoke sets its own timeouts from the step's.
const CONTROL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The clients of one driver.
pub(crate) struct Clients {
    pub lambda: aws_sdk_lambda::Client,
    pub sts: aws_sdk_sts::Client,
    pub region: Option<String>,
}

/// Loads the AWS chain with `config`'s overrides and builds the Lambda and STS clients.
pub(crate) async fn build(config: &LambdaDriverConfig) -> Clients {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(CONTROL_ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret, token)) = config.static_credentials() {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            token.map(str::to_owned),
            None,
            "weir-lambda-config",
        ));
    }
    let sdk = loader.load().await;
    Clients {
        lambda: aws_sdk_lambda::Client::new(&sdk),
        sts: aws_sdk_sts::Client::new(&sdk),
        region: sdk.region().map(|r| r.to_string()),
    }
}
