//! Who may open a session, decided during the WebSocket handshake, before
//! the upgrade.
//!
//! - [`token`]: token generation, hashing, extraction from a request, redaction.
//! - [`registry`]: the device registry file (hashed tokens, per-device policy).
//! - [`reload`]: picks up registry changes while running (file watch, SIGHUP).
//! - [`cli`]: `wsingest device add|list|revoke|rotate`.
//!
//! Rules ([`Auth::authenticate`]): a token is bound to one device id. A
//! missing, unknown, revoked or malformed token is 401; a valid token on
//! another device's path is 403; `/` takes the device id from the token.
//! Without a token, a client gets in only when `auth.allow_anonymous` is on,
//! and never under the id of a registered device (that would bypass its
//! token). A wrong token is never downgraded to anonymous. When
//! `auth.allowed_origins` is set, a browser `Origin` outside it is 403.

pub mod cli;
pub mod registry;
pub mod reload;
pub mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, StatusCode, Uri, header};

pub use registry::{DevicePolicy, Registry, RegistryError, valid_device_id};
pub use token::{Token, TokenHash};

/// Who a session is, once admitted.
#[derive(Debug, Clone)]
pub struct Identity {
    pub device: String,
    /// The token's hash, kept to close the session when the token is revoked
    /// or rotated; `None` for anonymous sessions.
    pub token: Option<TokenHash>,
    /// The device's policy with its profile applied (not yet `[limits]`).
    pub policy: DevicePolicy,
}

/// Why a handshake is refused: the HTTP status and a message for the client.
/// The message never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("a device token is required: send Authorization: Bearer <token> or ?token=<token>")]
    Missing,
    #[error("{0}")]
    BadToken(token::TokenError),
    #[error("invalid or revoked device token")]
    Invalid,
    #[error("this token belongs to another device than the one in the path")]
    WrongDevice,
    #[error("device {0:?} is registered: it must present its token")]
    RegisteredNeedsToken(String),
    #[error("invalid device id: use 1-128 characters from A-Z a-z 0-9 - _ . :")]
    BadDeviceId,
    #[error("origin not allowed")]
    Origin,
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Missing
            | Denied::BadToken(_)
            | Denied::Invalid
            | Denied::RegisteredNeedsToken(_) => StatusCode::UNAUTHORIZED,
            Denied::WrongDevice | Denied::Origin => StatusCode::FORBIDDEN,
            Denied::BadDeviceId => StatusCode::BAD_REQUEST,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing_token",
            Denied::BadToken(_) => "malformed_token",
            Denied::Invalid => "invalid_token",
            Denied::WrongDevice => "wrong_device",
            Denied::RegisteredNeedsToken(_) => "missing_token",
            Denied::BadDeviceId => "bad_device_id",
            Denied::Origin => "origin",
        }
    }
}

/// The `[auth]` settings this module needs (see [`crate::config::AuthConfig`]).
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub allow_anonymous: bool,
    pub registry_path: Option<PathBuf>,
    pub allowed_origins: Vec<String>,
    pub profiles: BTreeMap<String, DevicePolicy>,
}

/// The handshake's gatekeeper; the registry inside is swapped on reload.
pub struct Auth {
    settings: AuthSettings,
    registry: RwLock<Arc<Registry>>,
    anonymous_ids: AtomicU64,
}

impl Auth {
    /// Load the registry (when configured).
    pub fn new(settings: AuthSettings) -> Result<Auth, RegistryError> {
        let registry = match &settings.registry_path {
            Some(p) => Registry::load(p)?,
            None => Registry::default(),
        };
        warn_unknown_profiles(&registry, &settings);
        Ok(Auth {
            settings,
            registry: RwLock::new(Arc::new(registry)),
            anonymous_ids: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    /// Swap in a newly loaded registry.
    pub fn replace(&self, registry: Registry) {
        warn_unknown_profiles(&registry, &self.settings);
        *self.registry.write().expect("registry lock") = Arc::new(registry);
    }

    /// Whether a session admitted as `device` with `token` may go on.
    pub fn still_valid(&self, device: &str, token: &TokenHash) -> bool {
        self.registry().is_valid(device, token)
    }

    /// Decide a handshake for `path_device` (`None` on `/`).
    pub fn authenticate(
        &self,
        path_device: Option<&str>,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Identity, Denied> {
        self.check_origin(headers)?;
        if path_device.is_some_and(|id| !valid_device_id(id)) {
            return Err(Denied::BadDeviceId);
        }
        let registry = self.registry();
        match token::from_request(headers, uri).map_err(Denied::BadToken)? {
            Some(token) => {
                let record = registry.find(&token.hash()).ok_or(Denied::Invalid)?;
                if path_device.is_some_and(|id| id != record.id) {
                    return Err(Denied::WrongDevice);
                }
                Ok(Identity {
                    device: record.id.clone(),
                    token: Some(token.hash()),
                    policy: self.policy_of(record),
                })
            }
            None if !self.settings.allow_anonymous => Err(Denied::Missing),
            None => {
                let device = match path_device {
                    Some(id) if registry.get(id).is_some() => {
                        return Err(Denied::RegisteredNeedsToken(id.into()));
                    }
                    Some(id) => id.to_string(),
                    None => format!(
                        "anonymous-{}",
                        self.anonymous_ids.fetch_add(1, Ordering::Relaxed) + 1
                    ),
                };
                Ok(Identity {
                    device,
                    token: None,
                    policy: DevicePolicy::default(),
                })
            }
        }
    }

    fn policy_of(&self, d: &registry::DeviceRecord) -> DevicePolicy {
        match d
            .profile
            .as_ref()
            .and_then(|p| self.settings.profiles.get(p))
        {
            Some(profile) => d.policy.or(profile),
            None => d.policy.clone(),
        }
    }

    /// Browsers always send `Origin` on a WebSocket handshake; devices
    /// usually do not. With an allow-list, a present `Origin` must be in it.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let allowed = &self.settings.allowed_origins;
        if allowed.is_empty() {
            return Ok(());
        }
        match headers.get(header::ORIGIN) {
            None => Ok(()),
            Some(o) => {
                let o = o
                    .to_str()
                    .map_err(|_| Denied::Origin)?
                    .trim_end_matches('/');
                if allowed
                    .iter()
                    .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o))
                {
                    Ok(())
                } else {
                    Err(Denied::Origin)
                }
            }
        }
    }
}

fn warn_unknown_profiles(registry: &Registry, settings: &AuthSettings) {
    for d in registry.devices() {
        if let Some(p) = &d.profile
            && !settings.profiles.contains_key(p)
        {
            tracing::warn!(device = %d.id, profile = %p, "device profile not in [auth.profiles]; using [limits] defaults");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous: bool, origins: &[&str]) -> (Auth, Token, Token) {
        let mut reg = Registry::default();
        let ta = reg
            .add("a", Some("slow".into()), DevicePolicy::default())
            .unwrap();
        let tb = reg.add("b", None, DevicePolicy::default()).unwrap();
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "slow".into(),
            DevicePolicy {
                messages_per_sec: Some(1.0),
                ..Default::default()
            },
        );
        let auth = Auth::new(AuthSettings {
            allow_anonymous: anonymous,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            profiles,
            ..Default::default()
        })
        .unwrap();
        auth.replace(reg);
        (auth, ta, tb)
    }

    fn bearer(t: &Token) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", t.expose()).parse().unwrap(),
        );
        h
    }

    #[test]
    fn token_is_bound_to_its_device() {
        let (auth, ta, tb) = auth(false, &[]);
        let root: Uri = "/".parse().unwrap();
        let id = auth.authenticate(Some("a"), &bearer(&ta), &root).unwrap();
        assert_eq!(id.device, "a");
        assert_eq!(id.policy.messages_per_sec, Some(1.0), "profile applied");
        assert_eq!(
            auth.authenticate(None, &bearer(&tb), &root).unwrap().device,
            "b"
        );
        assert_eq!(
            auth.authenticate(Some("b"), &bearer(&ta), &root)
                .unwrap_err(),
            Denied::WrongDevice
        );
        assert_eq!(
            auth.authenticate(Some("c"), &bearer(&ta), &root)
                .unwrap_err()
                .status(),
            403
        );
        let bad = Token::new("wsi_00");
        assert_eq!(
            auth.authenticate(Some("a"), &bearer(&bad), &root)
                .unwrap_err(),
            Denied::Invalid
        );
        assert_eq!(
            auth.authenticate(Some("a"), &HeaderMap::new(), &root)
                .unwrap_err(),
            Denied::Missing
        );
        let q: Uri = format!("/v1/devices/a?token={}", ta.expose())
            .parse()
            .unwrap();
        assert_eq!(
            auth.authenticate(Some("a"), &HeaderMap::new(), &q)
                .unwrap()
                .device,
            "a"
        );
    }

    #[test]
    fn anonymous_only_when_allowed_and_never_as_a_registered_device() {
        let (auth, ta, _) = auth(true, &[]);
        let root: Uri = "/".parse().unwrap();
        let h = HeaderMap::new();
        assert_eq!(
            auth.authenticate(None, &h, &root).unwrap().device,
            "anonymous-1"
        );
        assert_eq!(auth.authenticate(Some("x"), &h, &root).unwrap().device, "x");
        assert_eq!(
            auth.authenticate(Some("a"), &h, &root)
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            auth.authenticate(Some("x"), &bearer(&Token::new("nope")), &root)
                .unwrap_err(),
            Denied::Invalid
        );
        assert!(
            auth.authenticate(Some("a"), &bearer(&ta), &root)
                .unwrap()
                .token
                .is_some()
        );
        assert_eq!(
            auth.authenticate(Some("a/b"), &h, &root).unwrap_err(),
            Denied::BadDeviceId
        );
    }

    #[test]
    fn origin_allow_list() {
        let (auth, _, _) = auth(true, &["https://app.example.com"]);
        let root: Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(
            auth.authenticate(None, &h, &root).is_ok(),
            "no Origin: not a browser"
        );
        h.insert(header::ORIGIN, "https://APP.example.com".parse().unwrap());
        assert!(auth.authenticate(None, &h, &root).is_ok());
        h.insert(header::ORIGIN, "https://evil.example.net".parse().unwrap());
        assert_eq!(
            auth.authenticate(None, &h, &root).unwrap_err(),
            Denied::Origin
        );
    }

    #[test]
    fn revocation_invalidates_open_identities() {
        let (auth, ta, _) = auth(false, &[]);
        let mut reg = (*auth.registry()).clone();
        assert!(auth.still_valid("a", &ta.hash()));
        reg.revoke("a").unwrap();
        auth.replace(reg);
        assert!(!auth.still_valid("a", &ta.hash()));
    }
}
