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

/// What [`InfluxClient::check`] could verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// 1.x API: the server answered, took the credentials, and the database
    /// exists.
    Verified,
    /// The server answers `/ping`; the v2 API's credentials and bucket are
    /// only checked by the first write.
    Reachable,
}

pub struct InfluxClient {
    http: reqwest::Client,
    base: String,
    api: Api,
    write_url: reqwest::Url,
    ping_url: reqwest::Url,
    query_url: reqwest::Url,
    auth: Option<HeaderValue>,
    /// 1.x user and password, sent as basic auth (kept out of URLs and logs).
    basic: Option<(String, Option<Secret>)>,
    gzip: bool,
}

/// Parse an `influx.url`: http or https, with a host.
pub fn check_url(url: &str) -> Result<reqwest::Url, ClientError> {
    let bad = |detail: String| ClientError::BadUrl {
        url: url.to_string(),
        detail,
    };
    let base = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme must be http or https, not {:?} (e.g. http://127.0.0.1:8086)",
            base.scheme()
        )));
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host (e.g. http://127.0.0.1:8086)".into()));
    }
    Ok(base)
}

impl InfluxClient {
    pub fn new(url: &str, api: &Api, timeout: Duration, gzip: bool) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let base = check_url(url)?;
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
            api: api.clone(),
            ping_url: join("/ping"),
            query_url: join("/query"),
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
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(resp).await)
    }

    /// Whether the server answers at all (any non-5xx answer to `/ping`).
    pub async fn ping(&self) -> bool {
        match self.http.get(self.ping_url.clone()).send().await {
            Ok(r) => !r.status().is_server_error(),
            Err(_) => false,
        }
    }

    /// The base URL as configured.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Check what can be checked without writing: the server answers and,
    /// on the 1.x API, takes the credentials and has the database (`SHOW
    /// DATABASES`). A missing database is reported as InfluxDB reports it on
    /// a write (404 `database not found`), so callers classify both alike.
    pub async fn check(&self) -> Result<Checked, WriteError> {
        let resp = self
            .http
            .get(self.ping_url.clone())
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if resp.status().is_server_error() {
            return Err(self.status_error(resp).await);
        }
        let Api::V1 { db, .. } = &self.api else {
            return Ok(Checked::Reachable);
        };
        let body = self.query("SHOW DATABASES", false).await?;
        let exists = body["results"][0]["series"][0]["values"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r[0].as_str() == Some(db.as_str())));
        if exists {
            Ok(Checked::Verified)
        } else {
            Err(WriteError::Status {
                status: 404,
                message: format!("database not found: {db:?}"),
                retry_after: None,
            })
        }
    }

    /// `CREATE DATABASE` on the 1.x API (a no-op when it exists). `Ok(false)`
    /// on the v2 API, which has no such statement.
    pub async fn create_database(&self) -> Result<bool, WriteError> {
        let Api::V1 { db, .. } = &self.api else {
            return Ok(false);
        };
        let name = db.replace('\\', "\\\\").replace('"', "\\\"");
        self.query(&format!("CREATE DATABASE \"{name}\""), true)
            .await
            .map(|_| true)
    }

    /// One InfluxQL statement on the 1.x `/query` endpoint; an error inside
    /// a 200 answer is returned as a 400 (or 403 for authorization).
    async fn query(&self, q: &str, post: bool) -> Result<serde_json::Value, WriteError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut().append_pair("q", q);
        let mut req = if post {
            self.http.post(url)
        } else {
            self.http.get(url)
        };
        if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, password.as_ref().map(Secret::expose));
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        let body: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| WriteError::Status {
                status: 502,
                message: format!("/query answered something that is not JSON: {e}"),
                retry_after: None,
            })?;
        if let Some(err) = body["results"][0]["error"]
            .as_str()
            .or(body["error"].as_str())
        {
            let status = if err.contains("authoriz") { 403 } else { 400 };
            return Err(WriteError::Status {
                status,
                message: err.to_string(),
                retry_after: None,
            });
        }
        Ok(body)
    }

    async fn status_error(&self, resp: reqwest::Response) -> WriteError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        WriteError::Status {
            status,
            message: server_message(&text),
            retry_after,
        }
    }

    /// What an operator must do about a 401, 403 or 404 from this server:
    /// one sentence that names the setting or the statement that fixes it.
    pub fn explain(&self, status: u16, message: &str) -> String {
        let msg = message.trim();
        match (&self.api, status) {
            (Api::V1 { db, .. }, 404) if msg.contains("database not found") => format!(
                "database {db:?} does not exist: create it (CREATE DATABASE {db}) or set influx.create_database = true"
            ),
            (Api::V2 { org, bucket, .. }, 404)
                if msg.contains("bucket") || msg.contains("organization") =>
            {
                format!(
                    "bucket {bucket:?} of org {org:?} not found ({msg}): create it (influx bucket create -n {bucket} -o {org}) or fix influx.bucket / influx.org"
                )
            }
            (_, 404) => format!(
                "InfluxDB at {} has no write endpoint {} (404: {msg}): check influx.url (the server's base URL) and the API (influx.db selects /write, influx.bucket /api/v2/write, which InfluxDB 1.x before 1.8 lacks)",
                self.base,
                self.write_url.path()
            ),
            (Api::V1 { .. }, 401) => format!(
                "InfluxDB refused the credentials (401: {msg}): set influx.user and influx.password (or WSINGEST_INFLUX_USER / WSINGEST_INFLUX_PASSWORD)"
            ),
            (Api::V2 { .. }, 401) => format!(
                "InfluxDB refused the token (401: {msg}): set influx.token (or WSINGEST_INFLUX_TOKEN) to a token with write access"
            ),
            (Api::V1 { db, .. }, 403) => format!(
                "InfluxDB denied the write (403: {msg}): grant the user write access (GRANT WRITE ON {db} TO <user>)"
            ),
            (Api::V2 { bucket, .. }, 403) => format!(
                "InfluxDB denied the write (403: {msg}): give the token write access to bucket {bucket:?}"
            ),
            _ => format!("InfluxDB answered {status}: {msg}"),
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
