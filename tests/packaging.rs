//! The Debian package, for real: `scripts/package.sh` packages the binary
//! cargo built for these tests (no second release build), then
//!
//! - the package's metadata and layout are checked with `dpkg-deb` and lintian
//!   (errors fail; warnings are printed);
//! - it is installed into this machine with `dpkg -i` (root required; CI and
//!   the development machines run as root), the installed unit is checked with
//!   `systemd-analyze verify` and `security`, the installed binary validates the
//!   installed config, and a real `wsingest serve` runs with the unit's
//!   command line as the unit's user against a real influxd: a device added
//!   with the installed CLI writes a point over HTTP, SIGHUP (the unit's
//!   ExecReload) reloads the registry, SIGTERM stops it cleanly. The server
//!   runs under strace: every system call it made must pass the unit's
//!   `SystemCallFilter=` and every socket its `RestrictAddressFamilies=`
//!   (there is no running systemd here to enforce them);
//! - `dpkg --purge` removes it again (also from a Drop guard when a check fails).
//!
//! Also here, as a deployment check of docs/operations.md: config/nginx.conf's
//! commented TLS server block, enabled, terminates wss in a real nginx, and a
//! certificate renewal with `nginx -s reload` keeps open sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wsingest_harness::services::{free_port, http, require_binary};
use wsingest_harness::{Influxd, eventually};

const UNIT: &str = "/lib/systemd/system/wsingest.service";
const CONFIG: &str = "/etc/wsingest/wsingest.toml";
const REGISTRY: &str = "/etc/wsingest/devices.toml";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The .deb, built once per test process from the test binary.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        require_binary("dpkg-deb", "dpkg");
        require_binary("dpkg-shlibdeps", "dpkg-dev");
        require_binary("strip", "binutils");
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
        let _ = std::fs::remove_dir_all(&out_dir);
        let started = Instant::now();
        let stdout = run_ok(
            Command::new("scripts/package.sh")
                .arg("--binary")
                .arg(env!("CARGO_BIN_EXE_wsingest"))
                .arg("--out")
                .arg(&out_dir)
                .arg("--fast"),
        );
        let path = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("package.sh prints the .deb")
                .trim(),
        );
        assert!(
            path.is_file(),
            "package.sh said {path:?}, which does not exist"
        );
        let size = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "built {} ({:.1} MiB) in {:.1} s",
            path.display(),
            size as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
        path
    })
}

fn binary_version() -> String {
    let v = run_ok(Command::new(env!("CARGO_BIN_EXE_wsingest")).arg("--version"));
    v.split_whitespace()
        .nth(1)
        .expect("wsingest VERSION")
        .to_string()
}

/// `Key: value` fields of a control file (continuation lines skipped).
fn control_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn deb_layout_metadata_and_lintian() {
    let deb = deb();
    let control = run_ok(Command::new("dpkg-deb").arg("--field").arg(deb));
    let f = control_fields(&control);
    assert_eq!(f["Package"], "wsingest");
    assert_eq!(f["Version"], binary_version(), "version follows the binary");
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(f["Architecture"], arch.trim());
    let depends = &f["Depends"];
    for dep in ["libc6 (>=", "adduser"] {
        assert!(depends.contains(dep), "Depends {depends:?} lacks {dep}");
    }
    let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(deb));
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(
            info.contains(script),
            "control archive lacks {script}:\n{info}"
        );
    }
    let conffiles = run_ok(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --ctrl-tarfile '{}' | tar -xO ./conffiles",
        deb.display()
    )));
    assert_eq!(conffiles.trim(), CONFIG);

    // Every file: path -> (mode, owner).
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let mut files = BTreeMap::new();
    for line in contents.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let path = cols.last().unwrap().trim_start_matches('.');
        files.insert(path.to_string(), (cols[0].to_string(), cols[1].to_string()));
        assert_eq!(cols[1], "root/root", "{line}: files belong to root");
    }
    let want = |p: &str, mode: &str| {
        let (m, _) = files
            .get(p)
            .unwrap_or_else(|| panic!("the package lacks {p}:\n{contents}"));
        assert_eq!(m, mode, "{p}");
    };
    want("/usr/bin/wsingest", "-rwxr-xr-x");
    want(CONFIG, "-rw-r--r--");
    want(UNIT, "-rw-r--r--");
    want("/usr/share/man/man1/wsingest.1.gz", "-rw-r--r--");
    for doc in [
        "copyright",
        "changelog.gz",
        "operations.md",
        "README.md.gz",
        "examples/wsingest.toml.example",
        "examples/nginx.conf",
    ] {
        want(&format!("/usr/share/doc/wsingest/{doc}"), "-rw-r--r--");
    }
    // The repo's profiles, dashboards and Prometheus files, all of them.
    for (dir, into) in [
        ("devices", "/usr/share/wsingest/devices"),
        (
            "grafana/dashboards",
            "/usr/share/wsingest/grafana/dashboards",
        ),
        (
            "grafana/provisioning/datasources",
            "/usr/share/wsingest/grafana/provisioning/datasources",
        ),
        (
            "grafana/provisioning/dashboards",
            "/usr/share/wsingest/grafana/provisioning/dashboards",
        ),
        ("deploy/prometheus", "/usr/share/wsingest/prometheus"),
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            want(&format!("{into}/{name}"), "-rw-r--r--");
            n += 1;
        }
        assert!(n > 0, "{dir} is empty");
    }
    // Nothing outside the expected trees (no stray build files).
    for path in files.keys() {
        assert!(
            ["/usr/bin/", "/usr/share/", "/etc/wsingest", "/lib/systemd/"]
                .iter()
                .any(|p| path.starts_with(p))
                || ["/", "/usr/", "/etc/", "/lib/"].contains(&path.as_str()),
            "unexpected path in the package: {path}"
        );
    }
    // The packaged binary is the test binary, stripped.
    let (bin_size, test_bin_size) = (
        contents
            .lines()
            .find(|l| l.ends_with("./usr/bin/wsingest"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap(),
        std::fs::metadata(env!("CARGO_BIN_EXE_wsingest"))
            .unwrap()
            .len(),
    );
    assert!(
        bin_size < test_bin_size,
        "the packaged binary is not stripped"
    );

    // lintian: errors fail, warnings are listed.
    let lintian = require_binary("lintian", "lintian");
    let out = run(Command::new(lintian)
        .arg("--tag-display-limit")
        .arg("0")
        .arg("--display-info")
        .arg(deb));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        out.status.success(),
        "lintian failed: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Purges the package (and what the test added) however the test ends.
struct Installed {
    user_existed: bool,
}

impl Installed {
    fn is_installed() -> bool {
        let out =
            run(Command::new("dpkg-query").args(["-W", "-f", "${db:Status-Status}", "wsingest"]));
        String::from_utf8_lossy(&out.stdout).trim() == "installed"
    }

    fn purge() {
        // The dpkg lock may be held by a concurrent apt run for a moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = run(Command::new("dpkg").args(["--purge", "wsingest"]));
            if out.status.success() {
                return;
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !err.contains("lock") || Instant::now() > deadline {
                panic!("dpkg --purge wsingest failed:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if Installed::is_installed() || Path::new(CONFIG).exists() {
            let _ = std::panic::catch_unwind(Installed::purge);
        }
        for f in [
            REGISTRY,
            "/etc/wsingest/devices.toml.lock",
            "/etc/wsingest/devices.toml.tmp",
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir("/etc/wsingest");
        if !self.user_existed {
            let _ = Command::new("deluser")
                .args(["--system", "--quiet", "wsingest"])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("delgroup")
                .args(["--system", "--quiet", "wsingest"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn dpkg_install(deb: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = run(Command::new("dpkg").arg("-i").arg(deb));
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !err.contains("lock") || Instant::now() > deadline {
            panic!(
                "dpkg -i {} failed:\n{}{err}",
                deb.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `Key=value` settings of the [Service] section (the last one wins, as in
/// systemd; multi-valued keys keep every value).
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = "";
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]"
            && !line.starts_with('#')
            && let Some((k, v)) = line.split_once('=')
        {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

fn id_of(kind: &str, name: &str) -> u32 {
    let line = run_ok(Command::new("getent").args([kind, name]));
    line.split(':').nth(2).unwrap().parse().unwrap()
}

/// The syscalls `SystemCallFilter=` lines allow, expanded as systemd does:
/// the first line's groups, minus the `~` lines' groups.
fn allowed_syscalls(filters: &[String]) -> BTreeSet<String> {
    // `systemd-analyze syscall-filter` lists every group and its members
    // (syscalls and nested @groups).
    let listing = run_ok(Command::new("systemd-analyze").arg("syscall-filter"));
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in listing.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && t.starts_with('@') {
            current = t.to_string();
            groups.entry(current.clone()).or_default();
        } else if !current.is_empty() {
            groups.get_mut(&current).unwrap().push(t.to_string());
        }
    }
    fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        if name.starts_with('@') {
            for m in groups
                .get(name)
                .unwrap_or_else(|| panic!("unknown group {name}"))
            {
                expand(m, groups, out);
            }
        } else {
            out.insert(name.to_string());
        }
    }
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for f in filters {
        let (deny, list) = match f.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, f.as_str()),
        };
        for name in list.split_whitespace() {
            expand(name, &groups, if deny { &mut denied } else { &mut allowed });
        }
    }
    assert!(
        allowed.len() > 100,
        "@system-service expanded to {allowed:?}"
    );
    &allowed - &denied
}

/// The system calls and socket families of `/usr/bin/wsingest` in an
/// `strace -f` log (everything after its execve; setpriv's own calls before).
fn traced_calls(trace: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut calls = BTreeSet::new();
    let mut families = BTreeSet::new();
    let mut exec_seen = false;
    for line in trace.lines() {
        let rest = line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if rest.starts_with("execve(\"/usr/bin/wsingest\"") {
            exec_seen = true;
            continue;
        }
        if !exec_seen
            || rest.starts_with("<...")
            || rest.starts_with("+++")
            || rest.starts_with("---")
        {
            continue;
        }
        let Some(name) = rest
            .split('(')
            .next()
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            continue;
        };
        calls.insert(name.to_string());
        if name == "socket" || name == "socketpair" {
            let family = rest[name.len() + 1..]
                .split([',', ')'])
                .next()
                .unwrap()
                .to_string();
            families.insert(family);
        }
    }
    assert!(
        exec_seen,
        "strace log without the execve of /usr/bin/wsingest"
    );
    (calls, families)
}

/// The pid of the `/usr/bin/wsingest` process listening on `port`.
fn wsingest_pid(port: u16) -> Option<u32> {
    let needle = format!("127.0.0.1:{port}");
    for e in std::fs::read_dir("/proc").ok()? {
        let e = e.ok()?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if exe == Path::new("/usr/bin/wsingest")
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            return Some(pid);
        }
    }
    None
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn kill(pid: u32, signal: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    );
}

/// The server process (strace, which runs setpriv, which runs wsingest);
/// killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn deb_installs_serves_and_purges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/packaging.rs installs the .deb with dpkg into this machine and needs root \
         (CI and the development machines run as root); run the tests as root"
    );
    require_binary("systemd-analyze", "systemd");
    let strace = require_binary("strace", "strace");
    require_binary("setpriv", "util-linux");
    assert!(
        !Installed::is_installed(),
        "a wsingest package is already installed on this machine; this test installs and \
         purges its own build. Remove it first: dpkg --purge wsingest"
    );
    let deb = deb().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let user_existed = run(Command::new("getent").args(["passwd", "wsingest"]))
        .status
        .success();
    let guard = Installed { user_existed };

    let started = Instant::now();
    dpkg_install(&deb);
    eprintln!("dpkg -i: {:.1} s", started.elapsed().as_secs_f64());
    assert!(Installed::is_installed());

    // What the postinst did: user, state directory, unit enabled.
    let uid = id_of("passwd", "wsingest");
    let gid = id_of("group", "wsingest");
    let passwd = run_ok(Command::new("getent").args(["passwd", "wsingest"]));
    assert!(
        passwd
            .trim()
            .ends_with(":/var/lib/wsingest:/usr/sbin/nologin"),
        "{passwd}"
    );
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata("/var/lib/wsingest").expect("postinst creates /var/lib/wsingest");
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        assert_eq!(m.permissions().mode() & 0o777, 0o750);
    }
    assert_eq!(
        std::fs::read_link("/etc/systemd/system/multi-user.target.wants/wsingest.service").ok(),
        Some(PathBuf::from(UNIT)),
        "postinst enables the unit"
    );
    let installed_version = run_ok(Command::new("/usr/bin/wsingest").arg("--version"));
    assert_eq!(
        installed_version.split_whitespace().nth(1),
        Some(binary_version().as_str())
    );

    // The unit: systemd's own checks (its directives, the ExecStart binary).
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && verify_err.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{verify_err}",
        verify.status
    );
    let security =
        run_ok(Command::new("systemd-analyze").args(["security", "--offline=true", UNIT]));
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for wsingest.service: ")
                .nth(1)
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= 2.0,
        "the unit's exposure is {exposure} (> 2.0):\n{security}"
    );
    let unit_text = std::fs::read_to_string(UNIT).unwrap();
    let unit = unit_settings(&unit_text);
    let one = |k: &str| -> String {
        unit.get(k)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("{UNIT} lacks {k}="))
            .clone()
    };
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(nofile >= 1_048_576, "LimitNOFILE={nofile}");
    assert_eq!(one("StateDirectory"), "wsingest");
    assert_eq!(one("User"), "wsingest");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");

    // The installed binary accepts the installed config.
    let check =
        run_ok(Command::new("/usr/bin/wsingest").args(["config", "check", "--config", CONFIG]));
    for line in [
        "dir = \"/var/lib/wsingest/spool\"",
        "registry_path = \"/etc/wsingest/devices.toml\"",
        "allow_anonymous = false",
    ] {
        assert!(
            check.contains(line),
            "config check output lacks {line}:\n{check}"
        );
    }

    // A device, added with the installed CLI to the installed registry.
    let added = run_ok(Command::new("/usr/bin/wsingest").args([
        "device",
        "add",
        "pkg-test-1",
        "--config",
        CONFIG,
        "--json",
    ]));
    let token = serde_json::from_str::<serde_json::Value>(&added).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // `serve` as the unit runs it: its ExecStart, user and working directory,
    // no capabilities; only the listen address and InfluxDB URL are this test's.
    let influx = Influxd::start().await;
    influx.create_db("wsingest").await;
    let port = free_port();
    let exec_start = one("ExecStart");
    let mut argv = exec_start.split_whitespace();
    let program = argv.next().unwrap();
    assert_eq!(program, "/usr/bin/wsingest");
    let trace_path = dir.path().join("strace.log");
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(strace)
        .args(["-f", "-qq", "-o"])
        .arg(&trace_path)
        .arg("setpriv")
        .arg(format!("--reuid={}", one("User")))
        .arg(format!("--regid={}", one("Group")))
        .args([
            "--init-groups",
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(program)
        .args(argv)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--influx-url",
            &influx.url,
        ])
        .current_dir(one("WorkingDirectory"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("strace starts");
    let mut server = Server(child);
    let client = http();
    let base = format!("http://127.0.0.1:{port}");
    let serve_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually(30, "the installed wsingest to answer /healthz", || {
        let c = client.clone();
        let url = format!("{base}/healthz");
        async move { c.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let pid =
        wsingest_pid(port).unwrap_or_else(|| panic!("no wsingest process; log:\n{}", serve_log()));
    assert_eq!(
        status_field(pid, "Uid:").split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "CapBnd:"), "0000000000000000");

    // Tokens are required; the device's token writes a point into InfluxDB.
    let point = serde_json::json!({"seq": 1, "measurement": "pkgtest", "tags": {"via": "deb"}, "fields": {"v": 1.5}});
    let url = format!("{base}/v1/devices/pkg-test-1/points");
    let r = client.post(&url).json(&point).send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "the packaged config lets anonymous devices in"
    );
    let r = client
        .post(&url)
        .bearer_auth(&token)
        .json(&point)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}\nserver log:\n{}", serve_log());
    assert!(body.contains("\"ack\":1"), "{body}");
    let rows = influx
        .rows("wsingest", "SELECT v, device FROM pkgtest")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], serde_json::json!(1.5));
    assert_eq!(rows[0][2], serde_json::json!("pkg-test-1"));
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wsingest_points_written_total"),
        "{metrics}"
    );

    // ExecReload: SIGHUP re-reads the registry.
    kill(pid, "HUP");
    eventually(10, "the registry reload after SIGHUP", || {
        let log = serve_log();
        async move { log.contains("sighup=true").then_some(()) }
    })
    .await;

    // The stop the unit sends: SIGTERM, a clean exit well within TimeoutStopSec.
    let timeout: u64 = one("TimeoutStopSec").parse().unwrap();
    kill(pid, "TERM");
    let stop = Instant::now();
    let exit = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(timeout),
            "wsingest did not stop within TimeoutStopSec={timeout}; log:\n{}",
            serve_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        exit.success(),
        "wsingest exited with {exit}; log:\n{}",
        serve_log()
    );
    eprintln!("stopped in {:.1} s", stop.elapsed().as_secs_f64());
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/var/lib/wsingest/spool")
            .expect("the spool is in the state directory");
        assert_eq!(m.uid(), uid, "the spool belongs to the service user");
    }

    // What the sandbox would have allowed: every call and socket family used.
    let filters = unit.get("SystemCallFilter").cloned().unwrap_or_default();
    assert!(!filters.is_empty(), "the unit has no SystemCallFilter");
    let allowed = allowed_syscalls(&filters);
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let (calls, families) = traced_calls(&trace);
    let refused: Vec<&String> = calls.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "wsingest made system calls the unit's SystemCallFilter ({filters:?}) refuses: {refused:?}"
    );
    let allowed_families: BTreeSet<String> = one("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        families.is_subset(&allowed_families),
        "sockets {families:?} outside RestrictAddressFamilies {allowed_families:?}"
    );
    eprintln!(
        "{} distinct system calls, all allowed; socket families {families:?}",
        calls.len()
    );

    drop(server);

    // An upgrade (here: the same package again) keeps the admin's edit of the
    // conffile, the registry and the state directory.
    let mut edited = std::fs::read_to_string(CONFIG).unwrap();
    edited.push_str("\n# edited by tests/packaging.rs\n");
    std::fs::write(CONFIG, &edited).unwrap();
    dpkg_install(&deb);
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        edited,
        "reinstalling replaced the edited conffile"
    );
    assert!(
        Path::new(REGISTRY).exists(),
        "the registry survives an upgrade"
    );
    assert!(Path::new("/var/lib/wsingest/spool").exists());
    run_ok(Command::new("/usr/bin/wsingest").args(["config", "check", "--config", CONFIG]));

    // Purge: the files, the state and the enablement go.
    Installed::purge();
    assert!(!Installed::is_installed());
    for gone in [
        "/usr/bin/wsingest",
        UNIT,
        CONFIG,
        "/var/lib/wsingest",
        "/etc/systemd/system/multi-user.target.wants/wsingest.service",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is left after dpkg --purge"
        );
    }
    drop(guard);
    eprintln!(
        "install, serve, purge: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The shipped nginx config with its commented TLS server block enabled,
/// pointed at `upstream` and this test's ports and files.
fn nginx_tls_config(upstream: u16, http_port: u16, tls_port: u16) -> String {
    let shipped =
        std::fs::read_to_string("config/nginx.conf").expect("config/nginx.conf is shipped");
    let start = shipped
        .find("    # server {")
        .expect("config/nginx.conf has a commented TLS server block");
    let end = shipped[start..]
        .find("    # --- end TLS")
        .expect("the TLS block ends with `# --- end TLS`")
        + start;
    let enabled: String = shipped[start..end]
        .lines()
        .map(|l| match l.strip_prefix("    # ") {
            Some(rest) => format!("    {rest}\n"),
            None if l.trim() == "#" => "\n".to_string(),
            None => panic!("a line of the TLS block is not commented out: {l:?}"),
        })
        .collect();
    let mut conf = format!("{}{enabled}{}", &shipped[..start], &shipped[end..]);
    for (from, to) in [
        ("server 127.0.0.1:8765 ", format!("server 127.0.0.1:{upstream} ")),
        ("server 127.0.0.1:8766 ", format!("server 127.0.0.1:{upstream} ")),
        ("listen 8080;", format!("listen 127.0.0.1:{http_port};")),
        ("listen 443 ssl;", format!("listen 127.0.0.1:{tls_port} ssl;")),
        ("listen [::]:443 ssl;", String::new()),
        (
            "/etc/nginx/tls/wsingest/fullchain.pem",
            "{prefix}/tls/fullchain.pem".to_string(),
        ),
        (
            "/etc/nginx/tls/wsingest/privkey.pem",
            "{prefix}/tls/privkey.pem".to_string(),
        ),
        (
            "http {",
            "http {\n    client_body_temp_path {prefix}/tmp/body;\n    proxy_temp_path {prefix}/tmp/proxy;\n    \
             fastcgi_temp_path {prefix}/tmp/fcgi;\n    uwsgi_temp_path {prefix}/tmp/uwsgi;\n    scgi_temp_path {prefix}/tmp/scgi;"
                .to_string(),
        ),
        ("worker_processes auto;", "worker_processes 1;\nuser root;".to_string()),
    ] {
        assert_eq!(
            conf.matches(from).count(),
            1,
            "config/nginx.conf (TLS block enabled) should contain {from:?} once"
        );
        conf = conf.replace(from, &to);
    }
    conf
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Send a point with `seq` and wait for its ack.
async fn roundtrip(ws: &mut Wss, seq: u64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let msg = serde_json::json!({"seq": seq, "fields": {"v": 1.0}});
    ws.send(Message::text(msg.to_string()))
        .await
        .expect("the session is open");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("the session is open")
            .expect("no WebSocket error");
        match m {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["ack"], seq, "{v}");
                return;
            }
            Message::Close(c) => panic!("session closed: {c:?}"),
            _ => continue,
        }
    }
}

fn peer_leaf(ws: &Wss) -> Vec<u8> {
    let (_, conn) = ws.get_ref().get_ref();
    conn.peer_certificates().expect("a server certificate")[0].to_vec()
}

fn pem_leaf(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// docs/operations.md's claim, checked: with the shipped TLS server block, a
/// new certificate and `nginx -s reload` serve new connections with the new
/// certificate while an open session (on the old certificate) goes on.
#[tokio::test]
async fn nginx_tls_block_reloads_certificates_without_dropping_sessions() {
    use wsingest_harness::security::{TestCerts, connect_wss};
    wsingest_server::tls::install_crypto_provider();
    let nginx_bin = require_binary("nginx", "nginx");
    let mut config = wsingest_server::config::Config::default();
    config.auth.allow_anonymous = true;
    config.server.sink = wsingest_server::config::SinkKind::Blackhole;
    let server = wsingest_harness::TestServer::start(config).await;
    let (old_certs, new_certs) = (TestCerts::generate(), TestCerts::generate());
    let (http_port, tls_port) = (free_port(), free_port());

    let conf = nginx_tls_config(server.addr.port(), http_port, tls_port);
    let staging = tempfile::tempdir().unwrap();
    let install_certs = |prefix: &Path, certs: &TestCerts| {
        let tls = prefix.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        // Written beside and renamed, as certbot and friends do.
        for (from, name) in [
            (&certs.cert_path, "fullchain.pem"),
            (&certs.key_path, "privkey.pem"),
        ] {
            let tmp = tls.join(format!("{name}.new"));
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, tls.join(name)).unwrap();
        }
    };
    // Nginx::start makes its own prefix dir; the certificates must exist
    // before it starts, so they live in a dir of this test's.
    let conf = conf.replace(
        "{prefix}/tls/",
        &format!("{}/tls/", staging.path().display()),
    );
    install_certs(staging.path(), &old_certs);
    let nginx = wsingest_harness::Nginx::start(&conf, tls_port).await;

    let url = format!("wss://localhost:{tls_port}/v1/devices/tls-old");
    let mut old = connect_wss(&url, old_certs.client_config(), &[])
        .await
        .expect("a wss session through nginx with the first certificate");
    assert_eq!(peer_leaf(&old), pem_leaf(&old_certs.cert_path));
    roundtrip(&mut old, 1).await;

    // Renewal: new files, then a reload.
    install_certs(staging.path(), &new_certs);
    let prefix = nginx.dir.path();
    run_ok(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-g")
            .arg(format!("pid {}/nginx.pid;", prefix.display()))
            .args(["-s", "reload"]),
    );

    // New connections get the new certificate ...
    let new_url = format!("wss://localhost:{tls_port}/v1/devices/tls-new");
    let new_cfg = new_certs.client_config();
    let mut new = eventually(15, "a new session with the renewed certificate", || {
        let (url, cfg) = (new_url.clone(), new_cfg.clone());
        async move { connect_wss(&url, cfg, &[]).await.ok() }
    })
    .await;
    assert_eq!(peer_leaf(&new), pem_leaf(&new_certs.cert_path));
    roundtrip(&mut new, 1).await;
    assert!(
        connect_wss(&new_url, old_certs.client_config(), &[])
            .await
            .is_err(),
        "after the reload a new connection still gets the old certificate"
    );

    // ... and the session opened before the reload is still served.
    for seq in 2..=4 {
        roundtrip(&mut old, seq).await;
    }
    assert_eq!(peer_leaf(&old), pem_leaf(&old_certs.cert_path));
    drop(nginx);
    server.stop().await;
}
