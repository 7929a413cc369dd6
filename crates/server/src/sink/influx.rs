//! HTTP client for the InfluxDB write APIs: 1.x (`/write?db=&rp=&precision=n`,
//! basic auth) and v2 (`/api/v2/write?org=&bucket=&precision=ns`,
//! `Authorization: Token`), which InfluxDB 2.x/3.x, 1.8+ and VictoriaMetrics
//! serve. One call is one attempt; retries live in [`super::writer`].

use std::io::Write;

use bytes::Bytes;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::retry::parse_retry_after;
use crate::setting::Secret;

/// Which write API to speak.
#[derive(Debug, Clone)]
pub enum Api {
    V1 {
        db: String,
        rp: Option<String>,
        user: Option<String>,
        password: Option<Secret>,
    },
    V2 {
        org: String,
        bucket: String,
        token: Option<Secret>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("InfluxDB answered {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot reach InfluxDB at {url}: {detail}")]
    Transport { url: String, detail: String },
}

impl WriteError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WriteError::Status { status, .. } => Some(*status),
            WriteError::Transport { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("influx url {url:?} is not a valid http(s) URL: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

pub struct InfluxClient {
    http: reqwest::Client,
    base: String,
    write_url: reqwest::Url,
    ping_url: reqwest::Url,
    auth: Option<HeaderValue>,
    /// 1.x user and password, sent as basic auth (kept out of URLs and logs).
    basic: Option<(String, Option<Secret>)>,
    gzip: bool,
}

impl InfluxClient {
    pub fn new(url: &str, api: &Api, timeout: Duration, gzip: bool) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let bad = |detail: String| ClientError::BadUrl {
            url: url.to_string(),
            detail,
        };
        let base = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https".into()));
        }
        let join = |path: &str| {
            let mut u = base.clone();
            let prefix = base.path().trim_end_matches('/');
            u.set_path(&format!("{prefix}{path}"));
            u
        };
        let mut write_url;
        let mut basic = None;
        let auth = match api {
            Api::V1 {
                db,
                rp,
                user,
                password,
            } => {
                write_url = join("/write");
                {
                    let mut q = write_url.query_pairs_mut();
                    q.append_pair("db", db);
                    if let Some(rp) = rp {
                        q.append_pair("rp", rp);
                    }
                    q.append_pair("precision", "n");
                }
                basic = user.clone().map(|u| (u, password.clone()));
                None
            }
            Api::V2 { org, bucket, token } => {
                write_url = join("/api/v2/write");
                write_url
                    .query_pairs_mut()
                    .append_pair("org", org)
                    .append_pair("bucket", bucket)
                    .append_pair("precision", "ns");
                token.as_ref().map(|t| {
                    let mut v = HeaderValue::from_str(&format!("Token {}", t.expose()))
                        .unwrap_or_else(|_| HeaderValue::from_static("Token invalid"));
                    v.set_sensitive(true);
                    v
                })
            }
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(InfluxClient {
            http,
            base: url.to_string(),
            ping_url: join("/ping"),
            write_url,
            auth,
            basic,
            gzip,
        })
    }

    /// The write URL without credentials, for logs.
    pub fn write_url(&self) -> &str {
        self.write_url.as_str()
    }

    /// One write attempt.
    pub async fn write(&self, body: Bytes) -> Result<(), WriteError> {
        let mut req = self
            .http
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, password.as_ref().map(Secret::expose));
        }
        let body = if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            Bytes::from(
                enc.write_all(&body)
                    .and_then(|_| enc.finish())
                    .expect("gzip into memory cannot fail"),
            )
        } else {
            body
        };
        let resp = req.body(body).send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        Err(WriteError::Status {
            status: status.as_u16(),
            message: server_message(&text),
            retry_after,
        })
    }

    /// Whether the server answers at all (any non-5xx answer to `/ping`).
    pub async fn ping(&self) -> bool {
        match self.http.get(self.ping_url.clone()).send().await {
            Ok(r) => !r.status().is_server_error(),
            Err(_) => false,
        }
    }

    fn transport(&self, e: reqwest::Error) -> WriteError {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        WriteError::Transport {
            url: self.base.clone(),
            detail,
        }
    }
}

/// The error text of an InfluxDB answer: 1.x `{"error": ...}`, v2
/// `{"message": ...}`, or the raw body.
fn server_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<E>(body) {
        Ok(E { error: Some(m), .. })
        | Ok(E {
            message: Some(m), ..
        }) => m,
        _ => body.trim().chars().take(2000).collect(),
    }
}
