//! Real database servers for tests, each on free ports in a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Find `name` on PATH (or in /usr/sbin, /usr/bin) or fail with how to install it.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]);
    for dir in dirs {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed. Install it with `sudo apt-get install -y {package}` \
         or run scripts/install.sh (which the README's test command does)."
    );
}

/// An HTTP client for talking to the services (installs rustls' provider).
pub fn http() -> reqwest::Client {
    wsingest_server::tls::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn wait_http(url: &str, what: &str, child: &mut Child, log: &Path) {
    let client = http();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().as_u16() < 500
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited with {status} before answering; its log:\n{log}");
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what} did not answer {url} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real influxd (1.x API).
pub struct Influxd {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Influxd {
    pub async fn start() -> Influxd {
        let bin = require_binary("influxd", "influxdb");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let rpc = free_port();
        let d = dir.path().display();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  max-values-per-tag = 0
  max-series-per-database = 0
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#
        );
        let config_path = dir.path().join("influxdb.conf");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("influxd.log");
        let mut influx = Influxd {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
            config_path,
            log_path,
            dir,
        };
        let _ = bin;
        influx.restart().await;
        influx
    }

    /// Start (again) on the same port and data directory.
    pub async fn restart(&mut self) {
        let bin = require_binary("influxd", "influxdb");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = Command::new(bin)
            .arg("-config")
            .arg(&self.config_path)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("influxd starts");
        wait_http(
            &format!("{}/ping", self.url),
            "influxd",
            &mut child,
            &self.log_path,
        )
        .await;
        self.child = Some(child);
    }

    /// Stop influxd (SIGKILL), keeping its data for [`Influxd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run an InfluxQL statement; returns the JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let r = http()
            .post(format!("{}/query", self.url))
            .form(&[("db", db), ("q", q), ("epoch", "ns")])
            .send()
            .await
            .expect("influxd answers queries");
        r.json().await.unwrap()
    }

    pub async fn create_db(&self, db: &str) {
        let v = self.query(db, &format!("CREATE DATABASE \"{db}\"")).await;
        assert!(v["results"][0].get("error").is_none(), "{v}");
    }

    /// Rows of the first series of a query, as JSON arrays (time first).
    pub async fn rows(&self, db: &str, q: &str) -> Vec<Vec<serde_json::Value>> {
        let v = self.query(db, q).await;
        assert!(
            v["results"][0].get("error").is_none(),
            "query {q} failed: {v}"
        );
        let mut out = Vec::new();
        if let Some(series) = v["results"][0]["series"].as_array() {
            for s in series {
                for row in s["values"].as_array().unwrap() {
                    out.push(row.as_array().unwrap().clone());
                }
            }
        }
        out
    }

    /// Count of points of `measurement` (over field `field`) per value of `tag`.
    pub async fn count_by(
        &self,
        db: &str,
        measurement: &str,
        field: &str,
        tag: &str,
    ) -> std::collections::BTreeMap<String, u64> {
        let q = format!("SELECT count(\"{field}\") FROM \"{measurement}\" GROUP BY \"{tag}\"");
        let v = self.query(db, &q).await;
        assert!(
            v["results"][0].get("error").is_none(),
            "query {q} failed: {v}"
        );
        let mut out = std::collections::BTreeMap::new();
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let key = s["tags"][tag].as_str().unwrap_or_default().to_string();
            let n = s["values"][0][1].as_u64().unwrap_or(0);
            out.insert(key, n);
        }
        out
    }

    /// Count of points of `measurement` (over field `field`).
    pub async fn count(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let rows = self
            .rows(
                db,
                &format!("SELECT count(\"{field}\") FROM \"{measurement}\""),
            )
            .await;
        rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real VictoriaMetrics single node, for the v2 write API.
pub struct VictoriaMetrics {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    pub async fn start() -> VictoriaMetrics {
        let bin = require_binary("victoria-metrics", "victoria-metrics");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log_path = dir.path().join("vm.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(bin)
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("victoria-metrics starts");
        let url = format!("http://127.0.0.1:{port}");
        wait_http(
            &format!("{url}/health"),
            "victoria-metrics",
            &mut child,
            &log_path,
        )
        .await;
        VictoriaMetrics {
            url,
            child,
            _dir: dir,
        }
    }

    /// Exported series matching the metric name regex, one JSON object each.
    pub async fn export(&self, name_regex: &str) -> Vec<serde_json::Value> {
        let text = http()
            .post(format!("{}/api/v1/export", self.url))
            .form(&[("match[]", format!("{{__name__=~\"{name_regex}\"}}"))])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `port` on 127.0.0.1 accepts TCP connections.
async fn wait_port(port: u16, what: &str, child: &mut Child, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited with {status} before listening; its log:\n{log}");
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what} did not listen on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real mosquitto broker: anonymous, on a free port of 127.0.0.1.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        require_binary("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config_path = dir.path().join("mosquitto.conf");
        // No queue limit for QoS 0 so that the broker does not drop what a
        // test counts.
        std::fs::write(
            &config_path,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\n"
            ),
        )
        .unwrap();
        let log_path = dir.path().join("mosquitto.log");
        let mut m = Mosquitto {
            port,
            child: None,
            config_path,
            log_path,
            _dir: dir,
        };
        m.restart().await;
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Add a TLS listener with a certificate for 127.0.0.1 signed by a CA made
    /// here (openssl CLI); restarts the broker. Returns the TLS port and the
    /// CA file a client must trust.
    pub async fn add_tls_listener(&mut self) -> (u16, PathBuf) {
        let openssl = require_binary("openssl", "openssl");
        let dir = self._dir.path().to_path_buf();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=wsingest test CA",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat());
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        // mosquitto started as root drops to user `mosquitto` before it reads
        // the key: let that user read the files.
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [
            (dir.clone(), 0o755),
            (dir.join("server.key"), 0o644),
            (dir.join("server.pem"), 0o644),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let tls_port = free_port();
        let mut conf = std::fs::read_to_string(&self.config_path).unwrap();
        conf.push_str(&format!(
            "listener {tls_port} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = dir.display()
        ));
        std::fs::write(&self.config_path, conf).unwrap();
        self.stop();
        self.restart().await;
        (tls_port, dir.join("ca.pem"))
    }

    /// Start (again) on the same port.
    pub async fn restart(&mut self) {
        let bin = require_binary("mosquitto", "mosquitto");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&self.config_path)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("mosquitto starts");
        wait_port(self.port, "mosquitto", &mut child, &self.log_path).await;
        self.child = Some(child);
    }

    /// Kill the broker (SIGKILL), as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real nginx (Debian package `nginx`) with a config the test writes,
/// running in the foreground with everything under a temp dir.
pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Start nginx with `config` (a whole nginx.conf; `{prefix}` in it is
    /// replaced by the temp dir). `port` is where the config listens.
    pub async fn start(config: &str, port: u16) -> Nginx {
        let bin = require_binary("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, config.replace("{prefix}", &prefix)).unwrap();
        let log_path = dir.path().join("logs/stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("logs/error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {prefix}/nginx.pid;"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nginx starts");
        wait_port(port, "nginx", &mut child, &log_path).await;
        Nginx { port, dir, child }
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
