//! The `redis::Client` of a `redis://` or `rediss://` URL.

use std::path::Path;

use weir_core::redact::redact_url;
use weir_core::{Error, ErrorKind, Result};

/// A [`redis::Client`] for `url` (`redis://…`, or `rediss://…` for TLS); it does not connect.
///
/// Connections have `TCP_NODELAY` set: weir pipelines many small commands on one multiplexed
/// connection, and Nagle's algorithm would hold each behind the acknowledgement of the
/// previous one. On Linux they also set `TCP_USER_TIMEOUT` (20 s, `DEAD_PEER_TIMEOUT`): a
/// connection whose peer vanished (a host lost, a NAT entry dropped: no reset ever comes) is
/// closed once what was sent stays unacknowledged that long, and the client reconnects; else
/// every call on it would time out until the kernel gave up, about 15 minutes later. With `ca_file` (a PEM file of CA certificates, for `rediss://`), the server's
/// certificate is checked against those CAs instead of the system store.
///
/// Errors are permanent [`ErrorKind::Config`] errors with the URL, redacted, as context `url`:
/// a URL the `redis` crate refuses (bad host, port or database; `rediss://` in a build
/// without TLS support says so), or a `ca_file` that cannot be read (the message names it).
pub fn client(url: &str, ca_file: Option<&Path>) -> Result<redis::Client> {
    let invalid = |e: redis::RedisError| url_error(url, e);
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(invalid)?
        .set_tcp_settings(tcp_settings());
    let Some(path) = ca_file else {
        return redis::Client::open(info).map_err(invalid);
    };
    let root_cert = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot read ca_file {}: {e}", path.display()),
        )
        .permanent()
        .with_context("url", redact_url(url))
    })?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(info, certs).map_err(invalid)
}

/// How long data sent on a connection may stay unacknowledged by the peer before the kernel
/// closes the connection (`TCP_USER_TIMEOUT`, Linux).
pub const DEAD_PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let settings = redis::io::tcp::TcpSettings::default().set_nodelay(true);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(DEAD_PEER_TIMEOUT);
    settings
}

/// A URL the `redis` crate refuses, as a configuration error; says plainly when TLS is missing.
fn url_error(url: &str, e: redis::RedisError) -> Error {
    let tls_missing = url.starts_with("rediss://")
        && e.kind() == redis::ErrorKind::InvalidClientConfig
        && e.to_string().contains("TLS");
    let message = if tls_missing {
        "rediss:// (TLS) is not supported by this build of weir: the `redis` crate was compiled \
         without a TLS feature (enable e.g. `tokio-rustls-comp` on the workspace's `redis` \
         dependency), or use redis://"
    } else {
        "invalid Redis URL"
    };
    Error::new(ErrorKind::Config, message)
        .permanent()
        .with_context("url", redact_url(url))
        .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_urls_give_a_client_without_connecting() {
        for url in [
            "redis://127.0.0.1:1",
            "redis://u:pw@h:6379/2",
            "redis://h?protocol=resp3",
            "rediss://h:6380",
        ] {
            client(url, None).expect(url);
        }
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for url in [
            "redis://:s3cret@h/notadb",
            "http://h",
            "redis://u:s3cret@h:port",
        ] {
            let err = client(url, None).expect_err(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.is_retryable(), "{url}");
            assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
        }
        let err = client("redis://:s3cret@h/notadb", None).expect_err("db");
        assert_eq!(err.message(), "invalid Redis URL");
        assert_eq!(err.context(), [("url", "redis://:***@h/notadb".to_owned())]);
    }

    #[test]
    fn an_unreadable_ca_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let err = client("rediss://:s3cret@h:6380", Some(&missing)).expect_err("missing");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("missing-ca.pem"), "{err}");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
    }
}
