//! Opening a device's WebSocket: resolve the [`Target`] (a base URL such as
//! `ws://host:8765`, or one with `{device}` where the id goes), optionally
//! bind a source address (several loopback addresses get past the ~28k
//! ephemeral ports of one), connect, handshake with the session's
//! subprotocol and `Authorization: Bearer <token>`, and count every byte on
//! the wire ([`WireBytes`], TLS records included). `wss://` trusts the
//! system's roots (`ca-certificates`) and, if given, a PEM file of private
//! CAs; rustls with ring, as the server.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::wire::Encoding;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("url {url}: {detail}")]
    Url { url: String, detail: String },
    #[error("url {url}: cannot resolve {host}: {source}")]
    Resolve {
        url: String,
        host: String,
        source: io::Error,
    },
    #[error("url {url}: TLS: {detail}")]
    Tls { url: String, detail: String },
}

/// The server the fleet connects to.
#[derive(Debug, Clone)]
pub struct Target {
    /// URL with `{device}` where the device id goes.
    template: String,
    addr: SocketAddr,
    /// For `wss://`.
    tls: Option<Tls>,
}

/// What a `wss://` connection checks the server's certificate against.
#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.name)
    }
}

/// The system's roots plus the certificates of `ca_file` (PEM).
fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted root certificates: install ca-certificates, or give the server's CA as a PEM file".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Where device sessions live when `--url` gives no path.
pub const DEVICE_PATH: &str = "/v1/devices/{device}";

impl Target {
    /// Parse `url` (`ws://host:port` or `wss://…`, optionally with a path
    /// containing `{device}`) and resolve its host once for the whole fleet.
    /// `wss://` trusts the system's root certificates.
    pub async fn resolve(url: &str) -> Result<Target, TargetError> {
        Target::resolve_with_ca(url, None).await
    }

    /// [`Target::resolve`], trusting for `wss://` the CA certificates in
    /// `ca_file` (PEM) as well, e.g. a private CA that signed the server's.
    pub async fn resolve_with_ca(url: &str, ca_file: Option<&Path>) -> Result<Target, TargetError> {
        let err = |detail: &str| TargetError::Url {
            url: url.into(),
            detail: detail.into(),
        };
        let uri: Uri = url
            .replace("{device}", "x")
            .parse()
            .map_err(|e| err(&format!("not a URL ({e})")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(err("use a ws:// or wss:// URL, e.g. ws://127.0.0.1:8765")),
        };
        let host = uri
            .host()
            .ok_or_else(|| err("no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = match secure {
            false => None,
            true => {
                let tls_err = |detail: String| TargetError::Tls {
                    url: url.into(),
                    detail,
                };
                let config = client_tls(ca_file).map_err(tls_err)?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| tls_err(format!("{host} is not a valid server name: {e}")))?;
                Some(Tls {
                    connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                    name,
                })
            }
        };
        let mut template = url.trim_end_matches('/').to_string();
        if !template.contains("{device}") {
            if uri.path() != "/" && !uri.path().is_empty() {
                return Err(err(
                    "put {device} in the path where the device id goes, e.g. ws://host:8765/v1/devices/{device}",
                ));
            }
            template.push_str(DEVICE_PATH);
        }
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| TargetError::Resolve {
                url: url.into(),
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| err("the host resolves to no address"))?;
        Ok(Target {
            template,
            addr,
            tls,
        })
    }

    pub fn url_for(&self, device: &str) -> String {
        self.template.replace("{device}", device)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Why a connection attempt failed; [`ConnectError::kind`] is how it is counted.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect failed: {0}")]
    Tcp(io::Error),
    #[error("cannot bind source address {addr}: {source}")]
    Bind { addr: IpAddr, source: io::Error },
    #[error("timed out")]
    Timeout,
    #[error("the server answered the upgrade with HTTP {status}: {body}")]
    Http {
        status: u16,
        body: String,
        /// `Retry-After` in seconds (429, 503), capped at 300.
        retry_after: Option<u64>,
    },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    #[error(
        "TLS handshake failed: {0} (is the server's certificate signed by a trusted CA, for this host name?)"
    )]
    Tls(io::Error),
}

impl ConnectError {
    /// The server refused the device (HTTP 401/403): reconnecting with the
    /// same token is pointless.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ConnectError::Http {
                status: 401 | 403,
                ..
            }
        )
    }

    pub fn kind(&self) -> String {
        match self {
            ConnectError::Tcp(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => "refused".into(),
                io::ErrorKind::AddrNotAvailable => "no_free_port".into(),
                io::ErrorKind::ConnectionReset => "reset".into(),
                _ => "tcp".into(),
            },
            ConnectError::Bind { .. } => "bind".into(),
            ConnectError::Timeout => "timeout".into(),
            ConnectError::Http { status, .. } => format!("http_{status}"),
            ConnectError::Handshake(_) => "handshake".into(),
            ConnectError::Tls(_) => "tls".into(),
        }
    }
}

/// Bytes written to and read from all sockets of the fleet (WebSocket
/// framing and handshakes included: what really crossed the wire, minus
/// TCP/IP headers).
#[derive(Debug, Default)]
pub struct WireBytes {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// A stream that counts its bytes into [`WireBytes`].
pub struct Counted<S> {
    inner: S,
    bytes: Arc<WireBytes>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.bytes.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A device's connection: TCP, or TLS over it, counted below TLS.
pub enum DeviceStream {
    Plain(Counted<TcpStream>),
    Tls(Box<tokio_rustls::client::TlsStream<Counted<TcpStream>>>),
}

impl AsyncRead for DeviceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            DeviceStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DeviceStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DeviceStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            DeviceStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(s) => Pin::new(s).poll_flush(cx),
            DeviceStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DeviceStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            DeviceStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub type DeviceSocket = WebSocketStream<DeviceStream>;

/// How one device connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub encoding: Encoding,
    pub token: Option<Arc<str>>,
    pub source: Option<IpAddr>,
    /// For the TCP connect and the handshake together.
    pub timeout: Duration,
}

/// Small buffers: thousands of devices share one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(8 * 1024)
}

pub async fn connect(
    target: &Target,
    device: &str,
    opts: &ConnectOptions,
    bytes: &Arc<WireBytes>,
) -> Result<DeviceSocket, ConnectError> {
    let mut req = target
        .url_for(device)
        .into_client_request()
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let headers = req.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(opts.encoding.subprotocol()),
    );
    if let Some(token) = &opts.token {
        let v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ConnectError::Handshake("the token is not a valid header value".into()))?;
        headers.insert("Authorization", v);
    }
    let attempt = async {
        let addr = target.addr();
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ConnectError::Tcp)?;
        if let Some(ip) = opts.source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|source| ConnectError::Bind { addr: ip, source })?;
        }
        let stream = socket.connect(addr).await.map_err(ConnectError::Tcp)?;
        let _ = stream.set_nodelay(true);
        let stream = Counted {
            inner: stream,
            bytes: bytes.clone(),
        };
        let stream = match &target.tls {
            None => DeviceStream::Plain(stream),
            Some(tls) => DeviceStream::Tls(Box::new(
                tls.connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(ConnectError::Tls)?,
            )),
        };
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config()))
            .await
            .map(|(ws, _)| ws)
            .map_err(handshake_error)
    };
    tokio::time::timeout(opts.timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

fn handshake_error(e: tokio_tungstenite::tungstenite::Error) -> ConnectError {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(200)
                        .collect()
                })
                .unwrap_or_default();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| s.min(300));
            ConnectError::Http {
                status: resp.status().as_u16(),
                body,
                retry_after,
            }
        }
        Error::Io(e) => ConnectError::Tcp(e),
        other => ConnectError::Handshake(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets() {
        let t = Target::resolve("ws://127.0.0.1:8765").await.unwrap();
        assert_eq!(t.url_for("a-1"), "ws://127.0.0.1:8765/v1/devices/a-1");
        assert_eq!(t.addr(), "127.0.0.1:8765".parse().unwrap());
        let t = Target::resolve("ws://127.0.0.1:9/x/{device}/ws")
            .await
            .unwrap();
        assert_eq!(t.url_for("b"), "ws://127.0.0.1:9/x/b/ws");
        let t = Target::resolve("ws://localhost:9/").await.unwrap();
        assert_eq!(t.url_for("c"), "ws://localhost:9/v1/devices/c");
        let missing =
            Target::resolve_with_ca("wss://127.0.0.1:9", Some(Path::new("/nonexistent/ca.pem")))
                .await
                .unwrap_err();
        assert!(
            matches!(&missing, TargetError::Tls { detail, .. } if detail.contains("/nonexistent/ca.pem")),
            "{missing}"
        );
        for bad in ["http://127.0.0.1:1", "ws://127.0.0.1:1/other", "nope"] {
            assert!(Target::resolve(bad).await.is_err(), "{bad}");
        }
    }
}
