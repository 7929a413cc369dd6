//! Small HTTP pieces every handler shares: plain-text and JSON error answers
//! (with the headers that tell a client what to do next) and the WebSocket
//! upgrade check. Handlers live with their modules (`server`, `http_ingest`,
//! `commands::http`, `live`); this module imports none of them.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse;

/// A plain-text answer. 503 says when to come back (`Retry-After`), so a
/// fleet does not retry in a tight loop; 426 says which upgrade to ask for.
pub fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    if status == StatusCode::UPGRADE_REQUIRED {
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    r
}

/// A JSON error of an API: `{"error": code, "detail": ...}`.
pub fn json_error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response<Body> {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "detail": detail.into()})),
    )
        .into_response()
}

/// `/readyz`: 200 or 503, the reason as the body (`serve` and the writer).
pub fn readiness(r: &crate::sink::health::Readiness) -> Response<Body> {
    let status = match r.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{}\n", r.reason)).into_response()
}

/// `/metrics`: the Prometheus text format, or OpenMetrics when the scraper
/// asks for it (`serve` and the writer).
pub fn metrics(metrics: &crate::metrics::Metrics, headers: &HeaderMap) -> Response<Body> {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (
            metrics.encode_openmetrics(),
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (
            metrics.encode_prometheus(),
            crate::metrics::PROMETHEUS_CONTENT_TYPE,
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_what_to_do_next() {
        let r = text(StatusCode::SERVICE_UNAVAILABLE, "full");
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = text(StatusCode::UPGRADE_REQUIRED, "use a WebSocket");
        assert_eq!(r.headers()[header::UPGRADE], "websocket");
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        h.remove(header::UPGRADE);
        assert!(!is_upgrade(&h));
    }
}
