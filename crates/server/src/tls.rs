//! TLS plumbing. One TLS stack (rustls) with one crypto provider (ring), used
//! by the InfluxDB client, the wss listener and the MQTT bridge.
//!
//! The listener serves wss when `[tls] cert` and `key` (PEM files; flags
//! `--tls-cert`, `--tls-key`) are set. The certificate file holds the chain,
//! leaf first; the key is PKCS#8, PKCS#1 (RSA) or SEC1 (EC). ALPN offers
//! `http/1.1` only: WebSockets over HTTP/2 (RFC 8441) are not served.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Install ring as rustls' process-wide provider (idempotent).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `[tls]`: serve wss/https with these PEM files. Both or neither.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: set both tls.cert and tls.key (--tls-cert, --tls-key), or neither")]
    Incomplete,
    #[error("TLS certificate file {path}: {detail}")]
    Cert { path: PathBuf, detail: String },
    #[error("TLS key file {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("TLS: the certificate and key do not form a usable server config: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor for `config`, or `None` when TLS is off.
pub fn acceptor(config: &TlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    match (&config.cert, &config.key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            server_config(cert, key)?,
        )))),
        _ => Err(TlsError::Incomplete),
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_err = |detail: String| TlsError::Cert {
        path: cert.into(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // h2 first for clients that offer it (HTTP fallback ingest, gRPC, the
    // API); WebSocket clients offer only http/1.1 (or no ALPN) and get it.
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(sc)
}
