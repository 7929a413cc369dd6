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
//!
//! [`layout`]: the .deb's metadata, files and lintian; [`install`]: installed,
//! served under the unit's sandbox, purged; [`nginx`]: the TLS block.

mod install;
mod layout;
mod nginx;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wsingest_harness::services::{free_port, get_text, http, require_binary};
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
