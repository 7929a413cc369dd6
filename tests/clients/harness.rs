//! What the device-client tests (tests/clients_*.rs) share: a real influxd,
//! a device registry with a token, a real `wsingest serve` process, a client
//! driver run as a child process whose JSON lines we read, the faults
//! (InfluxDB paused, the server killed and restarted, 1013) and the check
//! that InfluxDB holds exactly the points sent.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsingest_server::auth::DevicePolicy;
use wsingest_server::config::Config;

use wsingest_harness::process::WsingestProcess;
use wsingest_harness::security::{TestRegistry, try_connect};
use wsingest_harness::{Influxd, test_config};

pub const DB: &str = "clients";
pub const MEASUREMENT: &str = "clients";
pub const TS0: i64 = 1_700_000_000_000;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// InfluxDB, a registry with one device, and a server on a port that
/// survives restarts.
pub struct Stack {
    pub influx: Influxd,
    pub registry: TestRegistry,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub server: Option<WsingestProcess>,
    pub port: u16,
}

impl Stack {
    /// Start influxd and `wsingest serve` with `tweak` applied to the
    /// config (token auth, a 64 KiB spool, 1013 after 1 s without an ack).
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Stack {
        let influx = Influxd::start().await;
        influx.create_db(DB).await;
        let registry = TestRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&influx.url, DB);
        config.auth.allow_anonymous = false;
        config.auth.registry_path = Some(registry.path.clone());
        config.auth.reload_interval_ms = 100;
        config.spool.dir = dir.path().join("spool");
        config.spool.max_bytes = 64 * 1024;
        config.influx.batch_size = 200;
        config.influx.retry_initial_ms = 20;
        config.influx.retry_max_ms = 200;
        config.influx.retry_max_elapsed_ms = 500;
        config.influx.timeout_ms = 1_000;
        config.server.backpressure_timeout_ms = 1_000;
        config.server.shutdown_timeout_secs = 2;
        // Below the clients' window (64): a stalled session stops reading, and
        // after backpressure_timeout_ms without an ack is closed with 1013.
        config.server.max_inflight_messages = 32;
        tweak(&mut config);
        let server = WsingestProcess::start(config.clone(), dir.path()).await;
        let port = server.addr.port();
        Stack {
            influx,
            registry,
            dir,
            config,
            server: Some(server),
            port,
        }
    }

    /// Add `id` to the registry; returns its token once the server (which
    /// reloads the registry every 100 ms) accepts it.
    pub async fn add_device(&self, id: &str) -> String {
        let token = self.registry.add(id, DevicePolicy::default());
        let url = format!("{}/v1/devices/{id}", self.base_url());
        let bearer = format!("Bearer {token}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut ws) = try_connect(&url, &[("authorization", &bearer)]).await {
                let _ = ws.close(None).await;
                return token;
            }
            assert!(
                Instant::now() < deadline,
                "the server never accepted {id}'s token"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL the server.
    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill9();
        }
    }

    /// Start the server again on the same port and spool.
    pub async fn restart_server(&mut self) {
        self.kill_server();
        let s = WsingestProcess::start_on(self.config.clone(), self.dir.path(), self.port).await;
        self.server = Some(s);
    }

    /// The server's log over all its runs: the same port appends to the same
    /// file, so a loss after a kill shows what the killed run did.
    pub fn server_log(&self) -> String {
        let path = self.dir.path().join(format!("wsingest-{}.log", self.port));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// SIGSTOP influxd for `d`, then SIGCONT: it holds its connections and
    /// answers nothing meanwhile, like a stuck database.
    pub async fn pause_influx(&self, d: Duration) {
        let pid = influxd_pid(&self.influx);
        signal(pid, libc::SIGSTOP);
        tokio::time::sleep(d).await;
        signal(pid, libc::SIGCONT);
    }

    /// The points of `device` stored in InfluxDB: (time ns, n, v, s).
    pub async fn stored(&self, device: &str) -> Vec<(i64, f64, Value, String)> {
        let rows = self
            .influx
            .rows(
                DB,
                &format!("SELECT n, v, s FROM {MEASUREMENT} WHERE device = '{device}'"),
            )
            .await;
        rows.iter()
            .map(|r| {
                (
                    r[0].as_i64().unwrap(),
                    r[1].as_f64().unwrap(),
                    r[2].clone(),
                    r[3].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Wait until InfluxDB holds `n` points of `device` (acked points may
    /// still be in the spool, replayed shortly), then check that they are
    /// exactly points `indices` with the values and (unless `auto_ts`)
    /// timestamps the driver gave them, none twice.
    pub async fn check_exactly(&self, device: &str, indices: &[i64], pad: usize, auto_ts: bool) {
        let want = indices.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        let rows = loop {
            let rows = self.stored(device).await;
            if rows.len() >= want || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut by_n: BTreeMap<i64, usize> = BTreeMap::new();
        for (t, n, v, s) in &rows {
            let i = *n as i64;
            *by_n.entry(i).or_default() += 1;
            assert_eq!(v.as_f64(), Some(i as f64 * 0.25), "point {i}: v");
            assert_eq!(s, &format!("p-{i:06}-{}", "x".repeat(pad)), "point {i}: s");
            if !auto_ts {
                assert_eq!(*t, (TS0 + i) * 1_000_000, "point {i}: timestamp");
            }
        }
        let twice: Vec<_> = by_n.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "points stored twice: {twice:?}");
        let got: Vec<i64> = by_n.keys().copied().collect();
        let mut expect = indices.to_vec();
        expect.sort_unstable();
        if got != expect {
            let missing: Vec<_> = expect.iter().filter(|i| !by_n.contains_key(i)).collect();
            let extra: Vec<_> = got.iter().filter(|i| !expect.contains(i)).collect();
            // Whether influxd saw the points at all (it keeps no request log here).
            let stats = self.influx.query(DB, "SHOW STATS").await;
            let writes: Vec<_> = stats["results"][0]["series"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| matches!(s["name"].as_str(), Some("httpd" | "write")))
                .collect();
            panic!(
                "InfluxDB holds {} points, want {want}; missing {missing:?}, unexpected {extra:?}\ninfluxd's write stats: {writes:?}\nserver log (every run):\n{}",
                rows.len(),
                tail(&self.server_log(), 80)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The pid of the influxd running with `influx`'s config (it is ours: its
/// config file lives in its temp dir).
fn influxd_pid(influx: &Influxd) -> i32 {
    let conf = influx.dir.path().join("influxdb.conf");
    let conf = conf.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("influxd") && cmd.contains(&conf) {
            return pid;
        }
    }
    panic!("no influxd process runs with {conf}");
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a pid we started; no memory is involved.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// A client process whose stdout is JSON lines.
pub struct Driver {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    pub seen: Vec<Value>,
}

impl Driver {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Driver {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver {
            name: name.into(),
            child,
            lines: rx,
            stderr_path,
            seen: Vec::new(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The next JSON line, polling (the runtime keeps running); `None` when
    /// the process closed its stdout.
    async fn next_line(&mut self, deadline: Instant, what: &str) -> Option<Value> {
        loop {
            match self.lines.try_recv() {
                Ok(l) => {
                    let v: Value = match serde_json::from_str(&l) {
                        Ok(v) => v,
                        Err(_) => {
                            eprintln!("{}: {l}", self.name);
                            continue;
                        }
                    };
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: timed out waiting for {what}; stderr:\n{}",
                    self.name,
                    tail(&self.stderr(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait for a line with `key` whose value is at least `at_least`.
    pub async fn wait_for(&mut self, key: &str, at_least: u64, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let what = format!("{key} >= {at_least}");
        loop {
            let Some(v) = self.next_line(deadline, &what).await else {
                panic!(
                    "{}: exited before {what}; stderr:\n{}",
                    self.name,
                    tail(&self.stderr(), 40)
                );
            };
            if v.get(key)
                .and_then(|x| x.as_u64())
                .is_some_and(|x| x >= at_least)
            {
                return v;
            }
        }
    }

    /// Wait for the final `{"result": ...}` line and the process's exit.
    pub async fn result(&mut self, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let Some(v) = self.next_line(deadline, "the result line").await else {
                panic!(
                    "{}: exited without a result; stderr:\n{}",
                    self.name,
                    tail(&self.stderr(), 40)
                );
            };
            if v.get("result").is_some() {
                let status = loop {
                    if let Some(s) = self.child.try_wait().unwrap() {
                        break s;
                    }
                    if Instant::now() > deadline {
                        panic!("{}: printed its result but did not exit", self.name);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                eprintln!("{}: {v} ({status})", self.name);
                return v;
            }
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a client's stats must say after a clean run of `n` messages.
pub fn assert_all_acked(result: &Value, n: u64) {
    assert_eq!(result["result"], "ok", "{result}");
    let s = &result["stats"];
    assert_eq!(s["sent"], n, "stats.sent: {s}");
    assert_eq!(s["acked"], n, "stats.acked: {s}");
    assert_eq!(s["nacked"], 0, "stats.nacked: {s}");
    assert_eq!(s["buffered"], 0, "stats.buffered: {s}");
}

/// A close-code count from the stats (`closes` maps code → count).
pub fn closes(result: &Value, code: &str) -> u64 {
    result["stats"]["closes"][code].as_u64().unwrap_or(0)
}

/// The three faults while a driver sends `n` points at a steady rate:
/// InfluxDB paused 10 s (the 64 KiB spool fills, the server closes the
/// session with 1013 and keeps doing so until InfluxDB answers again), then
/// the server SIGKILLed and restarted on the same port. Returns the result.
pub async fn faults_run(stack: &mut Stack, driver: &mut Driver, n: u64) -> Value {
    driver.wait_for("progress", n / 8, 30).await;
    stack.pause_influx(Duration::from_secs(10)).await;
    driver.wait_for("progress", n * 3 / 4, 60).await;
    stack.kill_server();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.restart_server().await;
    driver.result(120).await
}

/// Checks after [`faults_run`]: everything acked, the faults were seen.
pub fn assert_faults_seen(stack: &Stack, result: &Value, n: u64) {
    assert_all_acked(result, n);
    let s = &result["stats"];
    assert!(
        closes(result, "1013") >= 1,
        "a 1013 close: {s}\nserver log tail:\n{}",
        tail(&stack.server_log(), 60)
    );
    assert!(
        s["reconnects"].as_u64().unwrap() >= 2,
        "reconnected after the 1013 and the kill: {s}"
    );
    assert!(
        s["resent"].as_u64().unwrap() >= 1,
        "unacked messages resent: {s}"
    );
}

/// Builds the command that runs a client driver with these arguments.
pub type MakeDriver<'a> = &'a dyn Fn(&[String]) -> Command;

fn driver_args(stack: &Stack, device: &str, token: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--url".into(),
        stack.base_url(),
        "--device".into(),
        device.into(),
        "--token".into(),
        token.into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// N points at 60 messages/s through InfluxDB paused 10 s (then 1013s)
/// and a server kill -9 + restart: all acked, exactly N stored.
pub async fn scenario_faults(label: &str, make: MakeDriver<'_>, encoding: &str) {
    let mut stack = Stack::start(|_| {}).await;
    let device = format!("{label}-faults");
    let token = stack.add_device(&device).await;
    const N: u64 = 1200;
    let a = driver_args(
        &stack,
        &device,
        &token,
        &[
            "--count",
            "1200",
            "--rate",
            "60",
            "--pad",
            "150",
            "--encoding",
            encoding,
        ],
    );
    let mut d = Driver::spawn(label, make(&a), stack.dir.path());
    let r = faults_run(&mut stack, &mut d, N).await;
    assert_faults_seen(&stack, &r, N);
    let all: Vec<i64> = (0..N as i64).collect();
    stack.check_exactly(&device, &all, 150, false).await;
}

/// Points 3 (reserved tag), 5 (field type conflict) and 7 (over the
/// server's 4096-byte message limit: close 1009) of 20 are refused for good
/// and reported with their reason; the other 17 are stored.
pub async fn scenario_nacks(label: &str, make: MakeDriver<'_>) {
    let stack = Stack::start(|c| c.server.max_message_bytes = 4096).await;
    let device = format!("{label}-nacks");
    let token = stack.add_device(&device).await;
    let a = driver_args(
        &stack,
        &device,
        &token,
        &["--count", "20", "--mode", "nacks"],
    );
    let mut d = Driver::spawn(label, make(&a), stack.dir.path());
    let r = d.result(60).await;
    assert_eq!(r["result"], "failed", "{r}");
    let mut reasons: Vec<(u64, String)> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(!f["detail"].as_str().unwrap().is_empty(), "{f}");
            (
                f["seq"].as_u64().unwrap(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    // seq = index + 1.
    assert_eq!(
        reasons,
        vec![
            (4, "reserved_tag".to_string()),
            (6, "rejected_by_database".to_string()),
            (8, "too_large".to_string()),
        ],
        "{r}"
    );
    let s = &r["stats"];
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["acked"].as_u64(),
            s["nacked"].as_u64()
        ),
        (Some(20), Some(17), Some(3)),
        "{s}"
    );
    assert_eq!(closes(&r, "1009"), 1, "{s}");
    let good: Vec<i64> = (0..20).filter(|i| ![3, 5, 7].contains(i)).collect();
    stack.check_exactly(&device, &good, 0, false).await;
}

/// Revoking the token closes the session with 1008: the client stops with
/// an auth error and does not reconnect; started again with that token it
/// gets 401 at the handshake (when `sees_http_status`) and stops too.
pub async fn scenario_revoked(label: &str, make: MakeDriver<'_>, sees_http_status: bool) {
    let stack = Stack::start(|_| {}).await;
    let device = format!("{label}-revoked");
    let token = stack.add_device(&device).await;
    let a = driver_args(
        &stack,
        &device,
        &token,
        &["--mode", "forever", "--rate", "50"],
    );
    let mut d = Driver::spawn(label, make(&a), stack.dir.path());
    d.wait_for("progress", 30, 30).await;
    stack.registry.revoke(&device);
    let r = d.result(20).await;
    assert_eq!(r["result"], "auth_error", "{r}");
    assert_eq!(r["close_code"], 1008, "{r}");
    assert!(r["stats"]["acked"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["stats"]["reconnects"], 0, "stopped, no reconnect: {r}");
    if sees_http_status {
        let a = driver_args(&stack, &device, &token, &["--count", "5"]);
        let mut d = Driver::spawn(&format!("{label}-again"), make(&a), stack.dir.path());
        let r = d.result(20).await;
        assert_eq!(r["result"], "auth_error", "{r}");
        assert_eq!(r["status"], 401, "{r}");
        assert_eq!(r["stats"]["connects"], 0, "{r}");
    }
}

/// 50 points acked; the server gone, 50 more taken into the disk buffer and
/// the client killed -9; a new client process on the same buffer resends
/// them and 50 more: InfluxDB holds exactly the 150.
pub async fn scenario_disk_buffer(label: &str, make: MakeDriver<'_>) {
    let mut stack = Stack::start(|_| {}).await;
    let device = format!("{label}-disk");
    let token = stack.add_device(&device).await;
    let buf = stack.dir.path().join(format!("{label}-buffer"));
    let buf = buf.to_string_lossy().to_string();
    let a = driver_args(
        &stack,
        &device,
        &token,
        &["--count", "50", "--buffer-dir", &buf],
    );
    let r = Driver::spawn(&format!("{label}-1"), make(&a), stack.dir.path())
        .result(60)
        .await;
    assert_all_acked(&r, 50);
    stack.kill_server();
    let a = driver_args(
        &stack,
        &device,
        &token,
        &[
            "--first",
            "50",
            "--count",
            "50",
            "--buffer-dir",
            &buf,
            "--mode",
            "hold",
        ],
    );
    let mut d = Driver::spawn(&format!("{label}-2"), make(&a), stack.dir.path());
    let held = d.wait_for("held", 50, 30).await;
    assert_eq!(held["stats"]["acked"], 0, "{held}");
    d.kill9();
    stack.restart_server().await;
    let a = driver_args(
        &stack,
        &device,
        &token,
        &["--first", "100", "--count", "50", "--buffer-dir", &buf],
    );
    let r = Driver::spawn(&format!("{label}-3"), make(&a), stack.dir.path())
        .result(60)
        .await;
    assert_eq!(r["result"], "ok", "{r}");
    let s = &r["stats"];
    assert_eq!(s["restored"], 50, "{s}");
    assert_eq!(s["resent"], 50, "{s}");
    assert_eq!(s["acked"], 100, "the restored 50 and the new 50: {s}");
    assert_eq!(s["buffered"], 0, "{s}");
    let all: Vec<i64> = (0..150).collect();
    stack.check_exactly(&device, &all, 0, false).await;
}

/// Points stamped by the client (no ts given) across a server kill: the
/// resend keeps the stamp, so nothing is stored twice (the server's dedupe
/// window does not survive its restart; the stamp does).
pub async fn scenario_auto_ts(label: &str, make: MakeDriver<'_>) {
    let mut stack = Stack::start(|_| {}).await;
    let device = format!("{label}-auto");
    let token = stack.add_device(&device).await;
    let a = driver_args(
        &stack,
        &device,
        &token,
        &["--count", "300", "--rate", "100", "--auto-ts"],
    );
    let mut d = Driver::spawn(label, make(&a), stack.dir.path());
    d.wait_for("progress", 150, 30).await;
    stack.restart_server().await;
    let r = d.result(60).await;
    assert_all_acked(&r, 300);
    assert!(r["stats"]["reconnects"].as_u64().unwrap() >= 1, "{r}");
    let all: Vec<i64> = (0..300).collect();
    stack.check_exactly(&device, &all, 0, true).await;
}
