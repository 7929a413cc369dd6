//! The package installed with `dpkg -i`, its unit checked, a real server run
//! with the unit's command line and user under strace, and purged.

use super::*;

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
        "tests/packaging/ installs the .deb with dpkg into this machine and needs root \
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
    let metrics = get_text(&format!("{base}/metrics")).await;
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
    edited.push_str("\n# edited by tests/packaging/\n");
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
