//! Helpers shared by the integration tests (the broker helpers are weir-core's
//! `testkit::broker`).
#![allow(dead_code)]

/// `WEIR_TEST_AMQP_URL` with `params` appended (`None`: skip; panics under `CI=true`).
pub fn url_with(params: &str) -> Option<String> {
    weir_core::testkit::service_url_with("WEIR_TEST_AMQP_URL", params)
}

/// Runs `rabbitmqctl` with `args` (the test RabbitMQ runs on this machine); panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("running rabbitmqctl (the connection-drop tests need the local RabbitMQ)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain lapin connection to the test server (`WEIR_TEST_AMQP_URL`; its `ca_file`, if any,
/// is the CA to trust), for arranging what a test needs behind the broker's back.
pub async fn raw_connection() -> lapin::Connection {
    let url = weir_core::testkit::service_url("WEIR_TEST_AMQP_URL").expect("WEIR_TEST_AMQP_URL");
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let cert_chain = query
        .split('&')
        .find_map(|p| p.strip_prefix("ca_file="))
        .map(|path| std::fs::read_to_string(path).expect("ca_file"));
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain,
    };
    lapin::Connection::connect_with_config(
        base,
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().expect("runtime"),
    )
    .await
    .expect("raw connection")
}

/// The test server's URL with other credentials (and the same scheme, host, port and CA).
pub fn url_with_credentials(user: &str, password: &str) -> Option<String> {
    let url = weir_core::testkit::service_url("WEIR_TEST_AMQP_URL")?;
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Some(format!("{scheme}://{user}:{password}@{rest}"))
}
