//! The client against a scripted in-process server: a command answered, a
//! transient nack retried with the same bytes, a 1013 close followed by a
//! resend, a 1008 close stopping the client with an auth error, a refused
//! handshake (401). The real-server tests are tests/clients_rust.rs.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsingest_device::{Client, ClientConfig, Error, Point};

type Ws = WebSocketStream<tokio::net::TcpStream>;

async fn accept(l: &TcpListener, token_ok: bool) -> Option<Ws> {
    let (tcp, _) = l.accept().await.unwrap();
    #[allow(clippy::result_large_err)]
    let cb = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        assert_eq!(req.uri().path(), "/v1/devices/dev-1");
        assert_eq!(req.headers()["authorization"], "Bearer t0k");
        if !token_ok {
            let mut e = ErrorResponse::new(Some("unknown token".into()));
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(e);
        }
        resp.headers_mut().insert(
            "sec-websocket-protocol",
            req.headers()["sec-websocket-protocol"].clone(),
        );
        Ok(resp)
    };
    tokio_tungstenite::accept_hdr_async(tcp, cb).await.ok()
}

async fn recv(ws: &mut Ws) -> (Value, String) {
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => return (serde_json::from_str(&t).unwrap(), t.to_string()),
            _ => continue,
        }
    }
}

async fn say(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn close(ws: &mut Ws, code: u16) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "scripted".into(),
        })))
        .await;
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new("dev-1");
    c.token = Some("t0k".into());
    c.backoff_base = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c
}

#[tokio::test]
async fn commands_transient_nacks_1013_and_1008() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut ws = accept(&l, true).await.unwrap();
        let (m1, raw1) = recv(&mut ws).await;
        assert_eq!(
            (m1["seq"].as_u64(), m1["fields"]["x"].as_f64()),
            (Some(1), Some(1.0))
        );
        say(
            &mut ws,
            json!({"nack": 1, "error": "storage_unavailable", "detail": "d"}),
        )
        .await;
        say(&mut ws, json!({"cmd": "c-1", "name": "ping", "args": {}})).await;
        say(&mut ws, json!({"cmd": "c-2", "name": "nope"})).await;
        let mut got = Vec::new();
        while got.len() < 3 {
            let (v, raw) = recv(&mut ws).await;
            got.push((v, raw));
        }
        let results: Vec<&Value> = got
            .iter()
            .map(|g| &g.0)
            .filter(|v| v.get("cmd_result").is_some())
            .collect();
        assert_eq!(results[0], &json!({"cmd_result": "c-1", "ok": true}));
        assert_eq!(
            results[1],
            &json!({"cmd_result": "c-2", "ok": false, "detail": "unknown nope"})
        );
        let retried = got.iter().find(|g| g.0.get("seq").is_some()).unwrap();
        assert_eq!(retried.1, raw1, "a retry is the same bytes");
        say(&mut ws, json!({"ack": 1})).await;
        // Message 2 goes unacked: 1013, then it must come again.
        let (m2, raw2) = recv(&mut ws).await;
        assert_eq!(m2["seq"], 2);
        close(&mut ws, 1013).await;
        drop(ws);
        let mut ws = accept(&l, true).await.unwrap();
        let (_, again) = recv(&mut ws).await;
        assert_eq!(again, raw2, "a resend is the same bytes (seq and ts)");
        say(&mut ws, json!({"ack": 2})).await;
        let (m3, _) = recv(&mut ws).await;
        assert_eq!(m3["seq"], 3);
        close(&mut ws, 1008).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let c = Client::connect(&url, config()).await.unwrap();
    c.on_command(|cmd| match cmd.name.as_str() {
        "ping" => Ok(()),
        other => Err(format!("unknown {other}")),
    });
    c.send(Point::new("m").field("x", 1.0)).await.unwrap();
    c.flush(Duration::from_secs(10)).await.unwrap();
    c.send(Point::new("m").field("x", 2.0)).await.unwrap();
    c.flush(Duration::from_secs(10)).await.unwrap();
    c.send(Point::new("m").field("x", 3.0)).await.unwrap();
    let e = c.flush(Duration::from_secs(10)).await.unwrap_err();
    let Error::Auth(auth) = e else { panic!("{e}") };
    assert_eq!(auth.close_code, Some(1008));
    assert!(matches!(
        c.send(Point::new("m").field("x", 4.0)).await,
        Err(Error::Auth(_))
    ));
    let s = c.stats();
    assert_eq!(
        (s.sent, s.acked, s.retried, s.resent, s.commands),
        (3, 2, 1, 1, 2),
        "{s:?}"
    );
    assert_eq!((s.connects, s.reconnects, s.buffered), (2, 1, 1), "{s:?}");
    assert_eq!(s.closes.get("1013"), Some(&1));
    assert_eq!(s.nacks.get("storage_unavailable"), Some(&1));
    server.await.unwrap();
}

#[tokio::test]
async fn a_refused_handshake_stops_the_client_and_try_send_fails_fast_when_full() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let server = tokio::spawn(async move { assert!(accept(&l, false).await.is_none()) });
    let mut cfg = config();
    cfg.window = 1;
    cfg.max_buffered = 2;
    let c = Client::connect(&url, cfg).await.unwrap();
    c.try_send(Point::new("m").field("x", 1)).unwrap();
    // The handshake may already have been refused: then every call says so.
    match c.try_send(Point::new("m").field("x", 2)) {
        Ok(_) => assert!(matches!(
            c.try_send(Point::new("m").field("x", 3)),
            Err(Error::BufferFull { held: 2 } | Error::Auth(_))
        )),
        Err(e) => assert!(matches!(e, Error::Auth(_)), "{e}"),
    }
    let e = c.flush(Duration::from_secs(10)).await.unwrap_err();
    let Error::Auth(auth) = e else { panic!("{e}") };
    assert_eq!(auth.status, Some(401));
    assert_eq!(c.stats().connects, 0);
    server.await.unwrap();
}
