//! The test conveniences most end-to-end tests share: a wsingest server in
//! this process on a free port, a test config, WebSocket client helpers and
//! [`eventually`], the poll-with-a-deadline every wait uses. They panic on
//! failure, as test helpers do.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use wsingest_server::config::Config;

/// A wsingest server running in this process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
    /// The spool's temp dir when the config left the default (shared) one.
    _spool_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Start `wsingest_server::server::run` with `config` (its listen address is
    /// ignored; a default spool dir is replaced by a temp dir of its own).
    pub async fn start(mut config: Config) -> TestServer {
        let spool_dir = (config.spool.dir
            == wsingest_server::sink::spool::SpoolConfig::default().dir)
            .then(|| {
                let d = tempfile::tempdir().unwrap();
                config.spool.dir = d.path().join("spool");
                d
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            wsingest_server::server::run(listener, config, token)
                .await
                .expect("server runs");
        });
        TestServer {
            addr,
            shutdown,
            handle,
            _spool_dir: spool_dir,
        }
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Cancel and wait for the server to finish its shutdown.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .unwrap();
    }
}

/// A config for tests: anonymous devices, short flush, writing to `influx_url`/`db`.
pub fn test_config(influx_url: &str, db: &str) -> Config {
    let mut c = Config::default();
    c.auth.allow_anonymous = true;
    c.influx.url = influx_url.to_string();
    c.influx.db = Some(db.to_string());
    c.influx.flush_interval_ms = 50;
    c.influx.retry_max_elapsed_ms = 2_000;
    c.influx.dead_letter_path = None;
    // Load and durability tests send far above a real device's rate; the
    // limits have tests of their own (tests/limits.rs).
    c.limits.messages_per_sec = 0.0;
    c.limits.points_per_sec = 0.0;
    c.limits.new_series_per_minute = 0;
    c
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connect a WebSocket client, optionally offering `subprotocol`.
pub async fn connect(url: &str, subprotocol: Option<&str>) -> Ws {
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, _resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connects");
    ws
}

/// The next data message as JSON (text, or CBOR binary converted), skipping
/// pings; panics after 10 s.
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply within 10 s")
            .expect("connection open")
            .expect("no websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(b) => {
                let v: ciborium::Value = ciborium::from_reader(&b[..]).unwrap();
                return serde_json::to_value(v).unwrap();
            }
            Message::Close(c) => panic!("closed while waiting for a reply: {c:?}"),
            _ => continue,
        }
    }
}

/// Send a JSON text message.
pub async fn send_json(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Send a CBOR binary message built from JSON.
pub async fn send_cbor(ws: &mut Ws, v: serde_json::Value) {
    let mut buf = Vec::new();
    ciborium::into_writer(&v, &mut buf).unwrap();
    ws.send(Message::binary(buf)).await.unwrap();
}

/// Wait for the close frame; returns its code.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("close within 15 s")
        {
            Some(Ok(Message::Close(c))) => return c.map(|c| c.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// Poll `f` until it returns `Some`, or panic after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Open a gRPC stream as `device`, send one JSON payload and return the
/// server's first answer (within 10 s).
pub async fn grpc_json(
    server: &TestServer,
    device: &str,
    payload: &serde_json::Value,
) -> wsingest_server::grpc::proto::Downlink {
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use wsingest_server::grpc::proto::{self, uplink};
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut client = wsingest_server::grpc::client::connect(tcp, &server.addr.to_string())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert(
        wsingest_server::grpc::DEVICE_METADATA,
        device.parse().unwrap(),
    );
    tx.send(proto::Uplink {
        body: Some(uplink::Body::Payload(proto::Payload {
            encoding: proto::Encoding::Json as i32,
            data: payload.to_string().into_bytes(),
        })),
    })
    .await
    .unwrap();
    let mut down = client.session(req).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(10), down.message())
        .await
        .expect("a gRPC answer within 10 s")
        .unwrap()
        .expect("the stream stays open for its answer")
}
