//! Real database servers and proxies for tests, each on free ports in a temp
//! dir, on top of the core ([`crate::daemons`], [`crate::child::Service`]):
//! these panic with the core's error instead of returning it.

use std::path::PathBuf;
use std::process::Command;

use crate::child::Service;
use crate::daemons;
use crate::ready::{Probe, READY_WITHIN, retry_if_port_taken, wait_ready};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    crate::ready::free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// Find `name` on PATH (or in /usr/sbin, /usr/bin) or fail with how to install it.
pub fn require_binary(name: &str, package: &str) -> PathBuf {
    crate::child::find_binary(name, package)
        .unwrap_or_else(|e| panic!("{e} (the README's test command runs scripts/install.sh)"))
}

/// An HTTP client for talking to the services (installs rustls' provider).
pub fn http() -> reqwest::Client {
    wsingest_server::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// The body of `GET url` as text (e.g. a process's `/metrics`).
pub async fn get_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// A real influxd (1.x API).
pub struct Influxd {
    pub url: String,
    pub port: u16,
    rpc: u16,
    service: Option<Service>,
    pub dir: tempfile::TempDir,
}

impl Influxd {
    pub async fn start() -> Influxd {
        let dir = tempfile::tempdir().unwrap();
        let (service, port, rpc) = daemons::influxd(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Influxd {
            url: format!("http://127.0.0.1:{port}"),
            port,
            rpc,
            service: Some(service),
            dir,
        }
    }

    /// Start (again) on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop();
        let service = daemons::start_influxd(self.dir.path(), self.port, self.rpc)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.service = Some(service);
    }

    /// influxd's process id (to freeze it with SIGSTOP, say); `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.service.as_ref().map(Service::pid)
    }

    /// Stop influxd (SIGKILL), keeping its data for [`Influxd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.kill();
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

/// A real VictoriaMetrics single node, for the v2 write API.
pub struct VictoriaMetrics {
    pub url: String,
    _service: Service,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    pub async fn start() -> VictoriaMetrics {
        let bin = require_binary("victoria-metrics", "victoria-metrics");
        let dir = tempfile::tempdir().unwrap();
        let (service, port) = retry_if_port_taken(|| async {
            let port = crate::ready::free_port()?;
            let mut svc = Service::spawn(
                "victoria-metrics",
                Command::new(&bin)
                    .arg(format!(
                        "-storageDataPath={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg("-search.latencyOffset=0s"),
                &dir.path().join("vm.log"),
            )?;
            wait_ready(&mut svc, &Probe::http(port, "/health"), READY_WITHIN).await?;
            Ok((svc, port))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        VictoriaMetrics {
            url: format!("http://127.0.0.1:{port}"),
            _service: service,
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

/// A real mosquitto broker: anonymous, on a free port of 127.0.0.1.
pub struct Mosquitto {
    pub port: u16,
    service: Option<Service>,
    config_path: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let (service, port) = daemons::mosquitto(dir.path())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Mosquitto {
            port,
            service: Some(service),
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            _dir: dir,
        }
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
        self.stop();
        let service = daemons::start_mosquitto(&self.config_path, self.port, &self.log_path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.service = Some(service);
    }

    /// Kill the broker (SIGKILL), as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.service.take() {
            s.kill();
        }
    }
}

/// A real nginx (Debian package `nginx`) with a config the test writes,
/// running in the foreground with everything under a temp dir.
pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _service: Service,
}

impl Nginx {
    /// The shipped config/nginx.conf (read from the working directory, the
    /// repository root in tests), listening on `listen` and balancing over
    /// the gateways on ports `a` and `b`, its temp files under the prefix.
    pub fn shipped_config(listen: u16, a: u16, b: u16) -> String {
        let shipped =
            std::fs::read_to_string("config/nginx.conf").expect("config/nginx.conf is shipped");
        let mut conf = shipped.clone();
        for (from, to) in [
            ("server 127.0.0.1:8765 ", format!("server 127.0.0.1:{a} ")),
            ("server 127.0.0.1:8766 ", format!("server 127.0.0.1:{b} ")),
            ("listen 8080;", format!("listen 127.0.0.1:{listen};")),
            // Temp files in the test's directory, not /var/lib/nginx.
            (
                "http {",
                "http {\n    client_body_temp_path {prefix}/tmp/body;\n    proxy_temp_path {prefix}/tmp/proxy;\n    \
                 fastcgi_temp_path {prefix}/tmp/fcgi;\n    uwsgi_temp_path {prefix}/tmp/uwsgi;\n    scgi_temp_path {prefix}/tmp/scgi;"
                    .to_string(),
            ),
            ("worker_processes auto;", "worker_processes 1;\nuser root;".to_string()),
        ] {
            assert_eq!(shipped.matches(from).count(), 1, "config/nginx.conf should contain {from:?} once");
            conf = conf.replace(from, &to);
        }
        conf
    }

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
        let mut service = Service::spawn(
            "nginx",
            Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.path().join("logs/error.log"))
                .arg("-g")
                .arg(format!("daemon off; pid {prefix}/nginx.pid;")),
            &dir.path().join("logs/stderr.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // The port is in the caller's config: no retry on another one.
        wait_ready(&mut service, &Probe::Tcp(port), READY_WITHIN)
            .await
            .unwrap_or_else(|e| {
                let errors =
                    std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
                panic!("{e}\nnginx's error.log:\n{errors}")
            });
        Nginx {
            port,
            dir,
            _service: service,
        }
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
    }
}
