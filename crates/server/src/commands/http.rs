//! The HTTP command API, for operators without MQTT:
//!
//! - `POST /v1/devices/{id}/commands` with `Authorization: Bearer <operator
//!   token>` and `{"name": "set_interval", "args": {...}}` (optional `cmd`
//!   id and `ttl_secs`). Waits up to `?wait=` seconds (default
//!   `commands.http_wait_secs`, at most 60) for the device's answer, then
//!   returns the command's view: `200` when it is final (`done`, `failed`,
//!   `expired`), `202` while `pending` or `delivered`.
//! - `GET /v1/devices/{id}/commands/{cmd}`: the view of a recent command.
//!
//! Without `observe.operator_token` the API is off (403), so an open demo
//! server cannot be used to command devices.

use std::sync::Arc;
use std::time::Duration;

use axum::Router as Routes;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{MAX_WAIT, Origin, Router, SubmitError};
use crate::config::Secret;

/// Whether a device id may receive commands (registered, not revoked).
pub type KnownDevice = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct Api {
    router: Arc<Router>,
    token: Option<Secret>,
    /// With a registry (and no anonymous devices): only its devices.
    known: Option<KnownDevice>,
}

/// Most commands one long-poll answer carries.
const POLL_MAX: usize = 100;

/// `GET /v1/devices/{id}/commands?wait=30` for devices without a WebSocket
/// (the device is authenticated by the caller): waits up to `wait` seconds
/// (at most 60) for commands, answers `{"commands": [...]}` (maybe empty) and
/// counts them as delivered. Results go back as `cmd_result` messages on
/// `POST /v1/devices/{id}/points`. Commands published while no poll is
/// waiting need `commands.store` to be kept for the next poll.
pub async fn poll(router: &Arc<Router>, device: &str, wait: Option<f64>) -> Response {
    let wait = match wait {
        None => Duration::from_secs(30),
        Some(w) if w.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&w) => {
            Duration::from_secs_f64(w)
        }
        Some(_) => {
            return crate::http::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_wait",
                "wait is seconds, from 0 to 60",
            );
        }
    };
    let Some(mut rx) = router.register_poll(device) else {
        return crate::http::json_error(
            StatusCode::CONFLICT,
            "session_open",
            "this device has a WebSocket session: its commands are delivered there",
        );
    };
    let mut cmds = Vec::new();
    if let Ok(Some(first)) = tokio::time::timeout(wait, rx.recv()).await {
        cmds.push(first);
        while cmds.len() < POLL_MAX
            && let Some(c) = rx.try_recv()
        {
            cmds.push(c);
        }
    }
    for c in &cmds {
        rx.delivered(c);
    }
    let list: Vec<_> = cmds.iter().map(|c| c.message()).collect();
    axum::Json(json!({ "commands": list })).into_response()
}

/// The command API's routes.
/// `known`: when set, a command to a device it does not know is refused
/// with 404 instead of waiting as `pending` for a device that cannot exist.
pub fn routes(
    router: Arc<Router>,
    operator_token: Option<Secret>,
    known: Option<KnownDevice>,
) -> Routes {
    Routes::new()
        .route("/v1/devices/{device_id}/commands", post(create))
        .route("/v1/devices/{device_id}/commands/{cmd}", get(show))
        .with_state(Api {
            router,
            token: operator_token,
            known,
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCommand {
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    pub wait: Option<f64>,
}

/// `Authorization: Bearer <operator token>`, compared in constant time.
/// `None` when authorized, else the error response.
fn authorize(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &api.token else {
        return Some(crate::http::json_error(
            StatusCode::FORBIDDEN,
            "disabled",
            "the command API is off: set observe.operator_token (or --operator-token) to enable it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !expected.matches(given) {
        let mut r = crate::http::json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <operator token>",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Some(r);
    }
    None
}

fn new_id() -> String {
    format!("c-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

async fn create(
    State(api): State<Api>,
    Path(device): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = authorize(&api, &headers) {
        return r;
    }
    if !crate::auth::valid_device_id(&device) {
        return crate::http::json_error(
            StatusCode::BAD_REQUEST,
            "invalid_device",
            "device ids are 1-128 characters from A-Z a-z 0-9 - _ . :",
        );
    }
    if let Some(known) = &api.known
        && !known(&device)
    {
        return crate::http::json_error(
            StatusCode::NOT_FOUND,
            "unknown_device",
            format!(
                "device {device:?} is not in the device registry (or is revoked): check the id, or register it with `wsingest device add {device}`"
            ),
        );
    }
    let new: NewCommand = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return crate::http::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_command",
                format!("{e}; send {{\"name\": \"...\", \"args\": {{...}}}}"),
            );
        }
    };
    let wait = match q.wait {
        None => api.router.default_wait(),
        Some(w) if w.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&w) => {
            Duration::from_secs_f64(w)
        }
        Some(_) => {
            return crate::http::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_wait",
                "wait is seconds, from 0 to 60",
            );
        }
    };
    let id = new.cmd.unwrap_or_else(new_id);
    let ttl = new.ttl_secs.map(Duration::from_secs);
    let view = match api
        .router
        .submit(&device, id.clone(), new.name, new.args, ttl, Origin::Http)
    {
        Ok(v) => v,
        Err(e @ SubmitError::Invalid(_)) => {
            return crate::http::json_error(
                StatusCode::BAD_REQUEST,
                "invalid_command",
                e.to_string(),
            );
        }
        Err(e @ SubmitError::NotConnected(_)) => {
            return crate::http::json_error(
                StatusCode::NOT_FOUND,
                "device_not_connected",
                e.to_string(),
            );
        }
        Err(e @ SubmitError::StoreFull) => {
            return crate::http::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_full",
                e.to_string(),
            );
        }
    };
    let view = if wait.is_zero() {
        view
    } else {
        api.router.wait(&device, &id, wait).await.unwrap_or(view)
    };
    let status = if view.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, axum::Json(view)).into_response()
}

async fn show(
    State(api): State<Api>,
    Path((device, cmd)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = authorize(&api, &headers) {
        return r;
    }
    match api.router.status(&device, &cmd) {
        Some(v) => axum::Json(v).into_response(),
        None => crate::http::json_error(
            StatusCode::NOT_FOUND,
            "unknown_command",
            "no recent command with this id for this device",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids() {
        assert!(new_id().starts_with("c-"));
    }
}
