//! Device tokens: 256 random bits, shown once, stored only as their SHA-256
//! hash, compared in constant time; where a request carries one; and how a
//! request target is written to logs without it.
//!
//! SHA-256 (not argon2) is enough because the secret is 256 random bits, not
//! a password: nobody can brute-force a preimage, so a slow hash would only
//! cost CPU at every handshake.

use std::fmt;

use axum::http::{HeaderMap, Uri, header};
use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this, so leaked tokens are easy to grep for
/// (secret scanners) and easy to tell from other credentials.
pub const PREFIX: &str = "wsi_";

/// A token as presented by a client. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }

    /// The secret itself, for the one place that prints it (`device add`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// A fresh token: `wsi_` and 64 hex digits (256 bits from the OS-seeded CSPRNG).
pub fn generate() -> Token {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut s = String::with_capacity(PREFIX.len() + 64);
    s.push_str(PREFIX);
    s.push_str(&HEXLOWER.encode(&bytes));
    Token(s)
}

/// The SHA-256 of a token: what the registry stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Constant-time equality, so response timing says nothing about how
    /// many bytes of a stored hash a guess matched.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        HEXLOWER.encode(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<TokenHash> {
        let bytes = HEXLOWER_PERMISSIVE.decode(s.as_bytes()).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in a debug dump.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// Why the token of a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the Authorization header is not `Bearer <token>`")]
    BadHeader,
    #[error("a token was given both in the Authorization header and in ?token=, and they differ")]
    Conflicting,
    #[error("the token query parameter is given more than once")]
    Repeated,
}

/// The token of a request: `Authorization: Bearer <token>` or `?token=`
/// (browsers cannot set headers on a WebSocket). `Ok(None)`: no token.
pub fn from_request(headers: &HeaderMap, uri: &Uri) -> Result<Option<Token>, TokenError> {
    let from_header = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| TokenError::BadHeader)?;
            let (scheme, rest) = v.trim().split_once(' ').ok_or(TokenError::BadHeader)?;
            if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                return Err(TokenError::BadHeader);
            }
            Some(rest.trim().to_string())
        }
    };
    let mut from_query = None;
    for (k, v) in query_pairs(uri.query().unwrap_or("")) {
        if k == "token" {
            if from_query.is_some() {
                return Err(TokenError::Repeated);
            }
            from_query = Some(v);
        }
    }
    match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => Err(TokenError::Conflicting),
        (Some(t), _) | (None, Some(t)) => Ok(Some(Token(t))),
        (None, None) => Ok(None),
    }
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// Percent-decoded, `+` as a space (as in a query), invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The request target for logs, with anything that may be a secret
/// replaced by `***`: the value of every query parameter whose name mentions
/// a token, key, secret or password (however spelt or encoded), every
/// `wsi_…` token and every long run of letters and digits (a token without
/// its prefix) anywhere, path included. Decoded first, so `%77si_` hides
/// nothing; control characters are escaped so a target cannot forge log lines.
pub fn redact(uri: &Uri) -> String {
    let path = redact_secrets(&percent_decode(uri.path()));
    let Some(q) = uri.query() else {
        return escape_controls(&path);
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if secret_name(&percent_decode(k)) => {
                format!("{}=***", redact_secrets(&percent_decode(k)))
            }
            _ => redact_secrets(&percent_decode(p)),
        })
        .collect();
    escape_controls(&format!("{path}?{}", parts.join("&")))
}

/// Whether a query parameter's name says its value is a credential.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "key", "secret", "passw", "auth", "sig"]
        .iter()
        .any(|s| n.contains(s))
}

/// Tokens need 20+ letters and digits to be worth guessing; shorter runs
/// (device ids, numbers) stay readable.
const SECRET_RUN: usize = 20;

/// Replace `wsi_…` tokens and long alphanumeric runs in `s` by `***`.
fn redact_secrets(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= SECRET_RUN || run.to_ascii_lowercase().starts_with(PREFIX) {
            out.push_str("***");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        // `_` joins runs so `wsi_` and what follows count as one.
        if c.is_ascii_alphanumeric() || c == '_' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn escape_controls(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_256_bit_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(a.expose().len(), PREFIX.len() + 64);
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = Token::new("wsi_abc").hash();
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert!(h.ct_eq(&Token::new("wsi_abc").hash()));
        assert!(!h.ct_eq(&Token::new("wsi_abd").hash()));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert_eq!(TokenHash::from_hex(&"g".repeat(64)), None);
    }

    fn req(auth: Option<&str>, uri: &str) -> Result<Option<Token>, TokenError> {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        from_request(&h, &uri.parse().unwrap())
    }

    #[test]
    fn token_from_header_or_query() {
        assert_eq!(
            req(Some("Bearer wsi_1"), "/").unwrap(),
            Some(Token::new("wsi_1"))
        );
        assert_eq!(
            req(Some("bearer  wsi_1 "), "/").unwrap(),
            Some(Token::new("wsi_1"))
        );
        assert_eq!(
            req(None, "/?a=1&token=wsi_2").unwrap(),
            Some(Token::new("wsi_2"))
        );
        assert_eq!(
            req(None, "/?token=wsi%5F3").unwrap(),
            Some(Token::new("wsi_3"))
        );
        assert_eq!(
            req(Some("Bearer x"), "/?token=x").unwrap(),
            Some(Token::new("x"))
        );
        assert_eq!(req(None, "/v1/devices/a").unwrap(), None);
        assert_eq!(req(Some("Basic dXNlcg=="), "/"), Err(TokenError::BadHeader));
        assert_eq!(req(Some("Bearer "), "/"), Err(TokenError::BadHeader));
        assert_eq!(
            req(Some("Bearer x"), "/?token=y"),
            Err(TokenError::Conflicting)
        );
        assert_eq!(req(None, "/?token=x&token=y"), Err(TokenError::Repeated));
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("a%"), "a%");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("%zz+b"), "%zz b");
    }

    #[test]
    fn redaction_hides_every_token_parameter() {
        let u: Uri = "/v1/devices/a?x=1&token=wsi_secret&%74oken=wsi_secret2"
            .parse()
            .unwrap();
        let r = redact(&u);
        assert!(!r.contains("secret"), "{r}");
        assert_eq!(r, "/v1/devices/a?x=1&token=***&token=***");
        assert_eq!(redact(&"/".parse().unwrap()), "/");
    }

    /// Tokens under other names, smuggled in other parameters or in the path
    /// never reach a log line (seen: `?access_token=`, `?TOKEN=`,
    /// `?x=1;token=`, `token+=`, the token as the device id).
    #[test]
    fn redaction_hides_tokens_however_they_are_sent() {
        let t = generate();
        let t = t.expose();
        let hex = &t[PREFIX.len()..];
        for target in [
            format!("/?access_token={t}"),
            format!("/?TOKEN={t}"),
            format!("/?x=1;token={t}"),
            format!("/?token+={t}"),
            format!("/?x={hex}"),
            format!("/v1/devices/{t}"),
            format!("/v1/devices/{hex}/points?y=2"),
            format!("/?q=%77si_{hex}"),
            "/?api%5Fkey=short".to_string(),
        ] {
            let r = redact(&target.parse().unwrap());
            assert!(
                !r.contains(&hex[..12]) && !r.contains("short"),
                "{target} -> {r}"
            );
            assert!(r.contains("***"), "{target} -> {r}");
        }
        // Ordinary targets stay readable.
        assert_eq!(
            redact(&"/v1/devices/meter-17?format=shelly&n=3".parse().unwrap()),
            "/v1/devices/meter-17?format=shelly&n=3"
        );
        assert_eq!(redact(&"/a%0Ab".parse().unwrap()), "/a\\nb");
    }
}
