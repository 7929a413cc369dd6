//! The package's metadata and layout, checked with `dpkg-deb` and lintian.

use super::*;

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
