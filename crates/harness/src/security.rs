//! Harness pieces for the security tests: a device registry in a temp dir,
//! handshakes whose refusal status we can read, wss clients trusting an
//! rcgen CA, the server's /metrics, and this process's RSS.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, http};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsingest_server::auth::{DevicePolicy, Registry};

/// A registry file in its own temp dir.
pub struct TestRegistry {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Default for TestRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRegistry {
    pub fn new() -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        Registry::default().save(&path).unwrap();
        TestRegistry { path, _dir: dir }
    }

    /// Add `id` and return its token.
    pub fn add(&self, id: &str, policy: DevicePolicy) -> String {
        let mut r = Registry::load(&self.path).unwrap();
        let t = r.add(id, None, policy).unwrap();
        r.save(&self.path).unwrap();
        t.expose().to_string()
    }

    pub fn revoke(&self, id: &str) {
        let mut r = Registry::load(&self.path).unwrap();
        r.revoke(id).unwrap();
        r.save(&self.path).unwrap();
    }

    pub fn rotate(&self, id: &str) -> String {
        let mut r = Registry::load(&self.path).unwrap();
        let t = r.rotate(id).unwrap();
        r.save(&self.path).unwrap();
        t.expose().to_string()
    }
}

pub type WsResult = Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error>;

/// Open a WebSocket with extra request headers; `Err` keeps the refusal.
pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> WsResult {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// The HTTP status of a refused handshake (panics if it was accepted).
pub fn refused_status(r: WsResult) -> u16 {
    match r {
        Ok(_) => panic!("the handshake was accepted"),
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// The body of a refused handshake, as text.
pub fn refused_body(r: WsResult) -> String {
    match r {
        Err(tungstenite::Error::Http(resp)) => {
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or(&[])).into()
        }
        _ => panic!("expected an HTTP refusal"),
    }
}

/// Connect with `Authorization: Bearer <token>`.
pub async fn connect_bearer(url: &str, token: &str) -> super::Ws {
    try_connect(url, &[("authorization", &format!("Bearer {token}"))])
        .await
        .expect("handshake accepted")
}

/// A self-signed CA and a server certificate it signed for 127.0.0.1 and
/// localhost, as PEM files in a temp dir.
pub struct TestCerts {
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsingest test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("server.pem");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCerts {
            ca_pem: ca.pem(),
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    /// A rustls client config (ring) trusting only the test CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// Connect to a `wss://` URL over rustls with `config`, with extra headers.
pub async fn connect_wss(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>, Box<dyn std::error::Error>>
{
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut()
            .insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
    }
    let host = req.uri().host().unwrap().to_string();
    let port = req.uri().port_u16().unwrap();
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (ws, _) = tokio_tungstenite::client_async(req, tls).await?;
    Ok(ws)
}

/// The server's /metrics text.
pub async fn metrics(server: &super::TestServer) -> String {
    super::services::get_text(&server.http_url("/metrics")).await
}

/// The value of one metric line (`name{labels}`), 0 when absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Resident set size of this process (the in-process server included), bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
