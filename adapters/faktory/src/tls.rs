//! TLS for `faktory+tls://`: rustls (ring) with the certificate chain and private key of the
//! URL's `cert` and `key` PEM files, read once at start.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use weir_core::{Error, Result};

/// The acceptor for the certificate chain in `cert` and the key in `key` (PEM).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| {
            Error::config(format!(
                "faktory adapter: cannot read the certificates in {}",
                cert.display()
            ))
            .with_source(e)
        })?;
    if chain.is_empty() {
        return Err(Error::config(format!(
            "faktory adapter: no certificate in {}",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::config(format!(
            "faktory adapter: cannot read the private key in {}",
            key.display()
        ))
        .with_source(e)
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| {
            Error::config("faktory adapter: the certificate and key do not go together")
                .with_source(e)
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
