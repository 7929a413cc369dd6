//! HTTP fallback ingest: `POST /v1/devices/{device_id}/points`, for networks
//! where WebSockets do not pass (the notes' "may fall back to HTTP-based
//! alternatives"). Served over HTTP/1.1 and HTTP/2 (h2c with prior knowledge;
//! h2 over TLS where the listener has TLS) by the same accept loop.
//!
//! The body is one message, exactly as a WebSocket message would carry it;
//! `Content-Type` selects the decoder: `application/json`, `application/cbor`,
//! `application/senml+json`, `application/senml+cbor`. The answer comes once
//! the points are durable, in the request's encoding (JSON or CBOR):
//!
//! | status | body |
//! |---|---|
//! | 200 | `{"ack": seq, "points": n}` (`ack` is null without a `seq`) |
//! | 400 | nack: not parseable (`invalid_json`, `invalid_cbor`) |
//! | 422 | nack: parseable but refused (any other decoder or database reason) |
//! | 408 | the body did not arrive within `server.handshake_timeout_secs` (a slow client cannot hold a connection) |
//! | 413 | body over `server.max_message_bytes` |
//! | 415 | unknown `Content-Type` |
//! | 422 | nack `forbidden_measurement`: a measurement outside the device's allow-list |
//! | 429 + `Retry-After` | nack `rate_limited` or `too_many_series`: over a per-device limit; resend after the given seconds |
//! | 503 + `Retry-After` | nack `storage_unavailable`, `overloaded` or `shutting_down`: resend later |
//!
//! A request is one message, so a limit refuses the whole request: 429 with
//! the nack as its body. The limits are the device's own, shared with its
//! WebSocket sessions and gRPC streams (see [`crate::limits`]): a device
//! cannot post its way past the rate it has on its socket.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ingest::{IngestContext, Submitted};
use crate::limits::DeviceLimiter;
use crate::pipeline::Outcome;
use wsingest_proto::decode::Format;
use wsingest_proto::protocol::Downlink;

/// Seconds a client is told to wait before resending after a 503.
const RETRY_AFTER_SECS: u64 = 1;

/// The media types we decode, with their payload format.
pub const CONTENT_TYPES: &[(&str, Format)] = &[
    ("application/json", Format::Json),
    ("application/cbor", Format::Cbor),
    ("application/senml+json", Format::SenmlJson),
    ("application/senml+cbor", Format::SenmlCbor),
];

/// The successful answer.
#[derive(Debug, Serialize)]
struct HttpAck {
    ack: Option<u64>,
    points: u32,
}

/// The payload format a `Content-Type` value selects.
pub fn format_of(content_type: Option<&HeaderValue>) -> Option<Format> {
    let media = content_type?.to_str().ok()?.split(';').next()?.trim();
    CONTENT_TYPES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(media))
        .map(|(_, f)| *f)
}

/// Handle one `POST /v1/devices/{device}/points` of an authenticated device,
/// under its limits.
#[allow(clippy::too_many_arguments)]
pub async fn post_points(
    ctx: &IngestContext,
    device: &str,
    mut limiter: DeviceLimiter,
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
    body_timeout: std::time::Duration,
    mapping: Option<std::sync::Arc<wsingest_proto::format::Mapping>>,
) -> Response<Body> {
    // A device's own document (`?format=`) is JSON unless it says CBOR:
    // webhooks and trackers send what they send.
    let content_type = format_of(headers.get(header::CONTENT_TYPE));
    let content_type = match (&mapping, content_type) {
        (Some(_), Some(Format::Cbor | Format::SenmlCbor)) => Some(Format::Cbor),
        (Some(_), _) => Some(Format::Json),
        (None, f) => f,
    };
    let Some(format) = content_type else {
        let names: Vec<&str> = CONTENT_TYPES.iter().map(|(n, _)| *n).collect();
        return crate::http::text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("send Content-Type: one of {}", names.join(", ")),
        );
    };
    let too_big = || {
        crate::http::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the body is over the limit of {max_bytes} bytes; split it into smaller messages"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return too_big();
    }
    // Reads at most `max_bytes`, whatever the client declared (or streams),
    // within the deadline: a body trickled byte by byte must not hold a
    // connection (and a device's limiter) forever.
    let read = tokio::time::timeout(body_timeout, axum::body::to_bytes(body, max_bytes)).await;
    let bytes = match read {
        Err(_) => {
            let mut r = crate::http::text(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s; send the whole message at once",
                    body_timeout.as_secs_f64()
                ),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                return too_big();
            }
            return crate::http::text(
                StatusCode::BAD_REQUEST,
                &format!("could not read the body: {e}"),
            );
        }
    };
    let (tx, mut rx) = mpsc::channel::<Outcome>(1);
    let permit = tx.try_reserve_owned().expect("a fresh channel has room");
    let submitted = ctx
        .submit_as(
            &bytes,
            format,
            mapping.as_deref(),
            device,
            None,
            Some(&mut limiter),
            permit,
        )
        .await;
    let seq = match submitted {
        Submitted::Queued { seq, points, .. } => {
            let device: std::sync::Arc<str> = device.into();
            match rx.recv().await.inspect(|o| ctx.settled(&device, o, true)) {
                Some(Outcome::Acked { .. }) => {
                    return encode(StatusCode::OK, format, &HttpAck { ack: seq, points });
                }
                Some(Outcome::Nacked(n)) => {
                    let crate::entry::Nack { seq, error, detail } = *n;
                    let status = match error {
                        "storage_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    };
                    return encode(status, format, &Downlink::nack(seq, error, detail));
                }
                // The reply was dropped with the pipeline: shutting down.
                None => seq,
            }
        }
        // Acked before: acked again, written and bridged once.
        Submitted::Resent { seq, points } => {
            return encode(
                StatusCode::OK,
                format,
                &HttpAck {
                    ack: Some(seq),
                    points,
                },
            );
        }
        Submitted::CommandResult { seq } => {
            return encode(
                StatusCode::OK,
                format,
                &HttpAck {
                    ack: seq,
                    points: 0,
                },
            );
        }
        Submitted::Refused(e) => {
            let status = match e.code() {
                "invalid_json" | "invalid_cbor" => StatusCode::BAD_REQUEST,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let mut detail = e.to_string();
            if mapping.is_none()
                && format == Format::Json
                && bytes.trim_ascii_start().starts_with(b"[")
            {
                // A top-level array is the common mistake; say what fits.
                detail = format!(
                    "the body is a JSON array, but this endpoint takes one message per request: an object such as {{\"seq\": 1, \"fields\": {{\"temp_c\": 21.5}}}}, or a batch {{\"seq\": 2, \"points\": [{{...}}, ...]}}; a SenML pack (an array of records) needs Content-Type: application/senml+json ({detail})"
                );
            }
            return encode(status, format, &Downlink::nack(e.seq(), e.code(), detail));
        }
        Submitted::Limited { seq, refusal } => {
            let status = match refusal.error {
                "rate_limited" | "too_many_series" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let mut resp = encode(
                status,
                format,
                &Downlink::nack(seq, refusal.error, refusal.detail),
            );
            if status == StatusCode::TOO_MANY_REQUESTS {
                // Whole seconds, rounded up: resending sooner is refused again.
                let secs = refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return resp;
        }
        Submitted::Overloaded { seq } => {
            return encode(
                StatusCode::SERVICE_UNAVAILABLE,
                format,
                &Downlink::nack(seq, "overloaded", "the server is overloaded; resend later"),
            );
        }
        Submitted::ShuttingDown { seq } => seq,
    };
    encode(
        StatusCode::SERVICE_UNAVAILABLE,
        format,
        &Downlink::nack(
            seq,
            "shutting_down",
            "the server is shutting down; resend later",
        ),
    )
}

fn encode<T: Serialize>(status: StatusCode, format: Format, body: &T) -> Response<Body> {
    let (content_type, bytes) = if format.is_binary() {
        let mut out = Vec::with_capacity(64);
        ciborium::into_writer(body, &mut out).expect("replies serialize");
        ("application/cbor", out)
    } else {
        (
            "application/json",
            serde_json::to_vec(body).expect("replies serialize"),
        )
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp = resp.header(header::RETRY_AFTER, RETRY_AFTER_SECS);
    }
    resp.body(Body::from(bytes)).expect("valid response")
}
