//! The live web view: `GET /live` (and `GET /` without upgrade) serves one
//! static page embedded in the binary (no CDN, no build step); the page opens
//! a WebSocket to `GET /live/feed`, the operator feed, which sends a JSON
//! [`snapshot::Update`] every second: devices online, per-device rates and
//! last values, the selected device, recent errors. The page draws the
//! selected device's numeric fields as they arrive.
//!
//! Access: open when anonymous devices are allowed (the demo); otherwise the
//! operator token (`observe.operator_token`) is required as `?token=` or
//! `Authorization: Bearer`, and without one configured the view is refused.
//! Viewers are capped, and each costs one snapshot per second.

pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::fleet::Fleet;
use snapshot::Snapshotter;

/// The page, HTML + CSS + JS in one file.
pub const PAGE: &str = include_str!("page.html");

/// The first frame's rates are measured over this long.
const FIRST_FRAME_AFTER: Duration = Duration::from_millis(500);

/// Viewers at once; each one costs a snapshot of the fleet per second.
const MAX_VIEWERS: usize = 64;
/// Time between updates.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Who may see the live view.
#[derive(Clone)]
pub enum Access {
    /// Anyone (anonymous devices are allowed anyway).
    Open,
    /// Whoever presents this token.
    Token(Secret),
    /// Nobody: auth is on and no operator token is configured.
    Closed,
}

pub struct Live {
    fleet: Arc<Fleet>,
    access: Access,
    instance: String,
    max_devices: usize,
    viewers: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Live {
    pub fn new(
        fleet: Arc<Fleet>,
        access: Access,
        instance: String,
        max_devices: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Live {
            fleet,
            access,
            instance,
            max_devices: max_devices.max(1),
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
            shutdown,
        }
    }

    /// `GET /live`: the page.
    pub fn page(&self, req: &Request<Body>) -> Response<Body> {
        if let Some(resp) = self.check(req) {
            return resp;
        }
        let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        r
    }

    /// `GET /live/feed`: the operator feed (WebSocket).
    pub fn feed(self: &Arc<Self>, mut req: Request<Body>) -> Response<Body> {
        if let Some(resp) = self.check(&req) {
            return resp;
        }
        let h = req.headers();
        if !crate::http::is_upgrade(h)
            || h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13")
        {
            return crate::http::text(
                StatusCode::UPGRADE_REQUIRED,
                "the live feed is a WebSocket (version 13)",
            );
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return crate::http::text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key header");
        };
        let accept = derive_accept_key(key.as_bytes());
        let Ok(permit) = self.viewers.clone().try_acquire_owned() else {
            return crate::http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live viewers; retry later",
            );
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let live = self.clone();
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "live feed upgrade failed");
                    return;
                }
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(4096))
                .max_frame_size(Some(4096));
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            live.serve_viewer(ws).await;
            drop(permit);
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("valid response")
    }

    async fn serve_viewer<S>(&self, ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut tx, mut rx) = ws.split();
        let mut snap = Snapshotter::new(self.instance.clone(), self.max_devices);
        let mut selected: Option<String> = None;
        // Rates need two samples: take one now and send the first frame a
        // moment later, so that it carries real rates rather than zeros.
        snap.update(&self.fleet, None, tokio::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(FIRST_FRAME_AFTER) => {}
            _ = self.shutdown.cancelled() => return,
        }
        let mut tick = tokio::time::interval(UPDATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let send_now = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let frame = CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame)))).await;
                    return;
                }
                _ = tick.tick() => true,
                msg = rx.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        // {"select": "<device id>"} picks the charted device.
                        let v: Option<serde_json::Value> = serde_json::from_str(&t).ok();
                        selected = v
                            .as_ref()
                            .and_then(|v| v.get("select"))
                            .and_then(|s| s.as_str())
                            .filter(|s| s.len() <= 256)
                            .map(str::to_string);
                        true
                    }
                    Some(Ok(_)) => false,
                    Some(Err(_)) | None => return,
                },
            };
            if send_now {
                let update = snap.update(
                    &self.fleet,
                    selected.as_deref(),
                    tokio::time::Instant::now(),
                );
                let json = serde_json::to_string(&update).expect("update serializes");
                let sent =
                    tokio::time::timeout(Duration::from_secs(5), tx.send(Message::text(json)))
                        .await;
                if !matches!(sent, Ok(Ok(()))) {
                    return; // a viewer that stopped reading
                }
            }
        }
    }

    /// The refusal for a viewer who may not see the view, if any.
    fn check(&self, req: &Request<Body>) -> Option<Response<Body>> {
        match &self.access {
            Access::Open => None,
            Access::Closed => Some(crate::http::text(
                StatusCode::FORBIDDEN,
                "the live view is off: devices must authenticate and no observe.operator_token is set",
            )),
            Access::Token(want) => match presented_token(req) {
                Some(t) if want.matches(&t) => None,
                _ => Some(crate::http::text(
                    StatusCode::UNAUTHORIZED,
                    "the live view needs the operator token: open /live?token=<operator token>",
                )),
            },
        }
    }
}

/// `?token=` or `Authorization: Bearer`.
fn presented_token(req: &Request<Body>) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    #[derive(serde::Deserialize)]
    struct Q {
        token: Option<String>,
    }
    axum::extract::Query::<Q>::try_from_uri(req.uri())
        .ok()
        .and_then(|q| q.0.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let req = Request::builder()
            .uri("/live?x=1&token=s%20t")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req).as_deref(), Some("s t"));
        let req = Request::builder()
            .uri("/live")
            .header("authorization", "Bearer tok")
            .body(Body::empty())
            .unwrap();
        assert_eq!(presented_token(&req).as_deref(), Some("tok"));
    }

    #[test]
    fn page_is_self_contained() {
        // No CDN: nothing is loaded from another origin.
        assert!(
            !PAGE.contains("src=\"http") && !PAGE.contains("href=\"http"),
            "the page loads nothing external"
        );
        assert!(PAGE.contains("/live/feed"));
    }
}
