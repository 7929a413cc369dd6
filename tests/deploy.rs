//! docker-compose.yml and the Dockerfile, checked without Docker (no engine
//! runs here): the YAML parses, every mounted or copied path exists, ports
//! and host names agree with the configs they point at, and the commands
//! parse with wsingest's own command line.

use std::path::Path;

use clap::Parser;
use wsingest::cli::{Cli, Command};
use wsingest_server::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .map(|v| scalar(v).unwrap_or_else(|| panic!("not a scalar: {v:?}")))
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(String::from).collect(),
        _ => panic!("not a command: {y:?}"),
    }
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `./host:/container[:ro]` bind mounts of a service (named volumes skipped).
fn binds(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_vec()
        .map(|v| v.iter().filter_map(|m| m.as_str()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.starts_with("./"))
        .map(|m| {
            let mut parts = m.split(':');
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// `"host:container"` port mappings as (host, container).
fn ports(service: &Yaml) -> Vec<(u16, u16)> {
    service["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            let (h, c) = p.as_str().unwrap().split_once(':').unwrap();
            (h.parse().unwrap(), c.parse().unwrap())
        })
        .collect()
}

fn cli(args: &[String]) -> Command {
    let argv = std::iter::once("wsingest".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("wsingest {args:?}: {e}"))
        .command
}

/// A Dockerfile's instructions, with `\` continuations joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("Dockerfile").unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (op, rest) = current
            .trim()
            .split_once(' ')
            .unwrap_or((current.trim(), ""));
        out.push((op.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

#[test]
fn compose_file_is_consistent_with_the_repo() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in ["influxdb", "grafana", "mosquitto", "wsingest", "simulate"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
    }
    // Every bind-mounted path is in the repository.
    for (name, service) in services.as_hash().unwrap() {
        for (host, _) in binds(service) {
            assert!(
                Path::new(&host).exists(),
                "{}: mounts {host}, which does not exist",
                name.as_str().unwrap()
            );
        }
        if !service["build"].is_badvalue() {
            assert_eq!(
                service["build"].as_str(),
                Some("."),
                "built from the top-level Dockerfile"
            );
        }
    }

    // wsingest: its config is the mounted file, valid, and agrees with the ports.
    let ws = &services["wsingest"];
    let Command::Serve(args) = cli(&strings(&ws["command"])) else {
        panic!("wsingest runs serve")
    };
    let config_in_container = args.config.clone().expect("--config");
    let (host_config, _) = binds(ws)
        .into_iter()
        .find(|(_, c)| Path::new(c) == config_in_container)
        .expect("the config file is mounted where --config points");
    let config = Config::load(Path::new(&host_config)).unwrap();
    config.validate().unwrap();
    let port = config.server.listen.port();
    assert!(
        config.server.listen.ip().is_unspecified(),
        "listen on all interfaces inside the container"
    );
    assert!(
        ports(ws).contains(&(port, port)),
        "wsingest publishes its listen port {port}"
    );
    assert_eq!(
        config.influx.url, "http://influxdb:8086",
        "the influxdb service"
    );
    assert!(ports(&services["influxdb"]).iter().any(|&(_, c)| c == 8086));
    assert_eq!(
        services["influxdb"]["environment"]["INFLUXDB_DB"].as_str(),
        config.influx.db.as_deref(),
        "InfluxDB creates the database wsingest writes to"
    );
    assert!(
        config.auth.allow_anonymous,
        "the demo stack lets the generator in without tokens"
    );

    // Grafana: provisioning and dashboards where the provider looks.
    let grafana = binds(&services["grafana"]);
    assert!(grafana.contains(&(
        "./grafana/provisioning".into(),
        "/etc/grafana/provisioning".into()
    )));
    let provider = yaml("grafana/provisioning/dashboards/wsingest.yaml");
    let dashboards_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(grafana.contains(&("./grafana/dashboards".into(), dashboards_path.to_string())));
    let home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    let home_file = home
        .strip_prefix(dashboards_path)
        .expect("home dashboard under the provider's path");
    assert!(
        Path::new("grafana/dashboards")
            .join(home_file.trim_start_matches('/'))
            .is_file(),
        "{home}"
    );
    let ds = &yaml("grafana/provisioning/datasources/influxdb.yaml")["datasources"][0];
    assert_eq!(ds["url"].as_str(), Some("http://influxdb:8086"));
    assert_eq!(
        ds["jsonData"]["dbName"].as_str(),
        config.influx.db.as_deref()
    );
    let interval = ds["jsonData"]["timeInterval"].as_str().unwrap();
    assert_eq!(
        interval,
        format!("{}s", config.observe.stats_interval_ms / 1000),
        "min interval = stats interval"
    );

    // Mosquitto listens where it is published.
    let mosquitto = std::fs::read_to_string("deploy/mosquitto.conf").unwrap();
    assert!(
        mosquitto
            .lines()
            .any(|l| l.trim() == "listener 1883 0.0.0.0")
    );
    assert!(ports(&services["mosquitto"]).contains(&(1883, 1883)));
    assert_eq!(
        config.mqtt.url.as_deref(),
        Some("mqtt://mosquitto:1883"),
        "the bridge uses the mosquitto service"
    );

    // The generator: a valid `wsingest simulate` against the wsingest service,
    // with profiles where the image puts them.
    let sim = strings(&services["simulate"]["command"]);
    assert_eq!(sim[0], "simulate");
    cli(&sim);
    let arg = |flag: &str| {
        sim.iter()
            .position(|a| a == flag)
            .map(|i| sim[i + 1].clone())
            .unwrap()
    };
    assert_eq!(arg("--url"), format!("ws://wsingest:{port}"));
    let devices_dir = arg("--devices-dir");
    let copied = dockerfile()
        .into_iter()
        .any(|(op, rest)| op == "COPY" && rest == format!("devices {devices_dir}"));
    assert!(copied, "the Dockerfile copies devices/ to {devices_dir}");
    assert_eq!(
        services["simulate"]["restart"].as_str(),
        Some("no"),
        "a one-shot service"
    );
}

#[test]
fn dockerfile_is_multi_stage_and_copies_what_exists() {
    let steps = dockerfile();
    let stages: Vec<&String> = steps
        .iter()
        .filter(|(op, _)| op == "FROM")
        .map(|(_, r)| r)
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let build_stage = stages[0]
        .split(" AS ")
        .nth(1)
        .expect("the build stage is named")
        .trim()
        .to_string();
    assert!(
        stages.last().unwrap().contains("slim"),
        "a small runtime image: {}",
        stages.last().unwrap()
    );
    let ignored = std::fs::read_to_string(".dockerignore").unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == "target/"),
        "the build context skips target/"
    );
    let mut copied_binary = None;
    for (op, rest) in &steps {
        if op != "COPY" {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        if let Some(stage) = parts[0].strip_prefix("--from=") {
            assert_eq!(stage, build_stage, "COPY --from names the build stage");
            copied_binary = Some(parts[2].to_string());
            continue;
        }
        let (dest, sources) = parts.split_last().unwrap();
        for s in sources {
            assert!(
                Path::new(s).exists(),
                "COPY {s} {dest}: {s} is not in the repository"
            );
            assert!(
                !ignored
                    .lines()
                    .any(|l| l.trim().trim_end_matches('/') == s.trim_end_matches('/'))
            );
        }
    }
    let run = steps
        .iter()
        .find(|(op, r)| op == "RUN" && r.contains("cargo build"))
        .expect("cargo build");
    assert!(
        run.1.contains("--release") && run.1.contains("--locked"),
        "{}",
        run.1
    );
    let entry = steps.iter().find(|(op, _)| op == "ENTRYPOINT").unwrap();
    let entry: Vec<String> = serde_json::from_str(&entry.1).unwrap();
    assert_eq!(
        Some(&entry[0]),
        copied_binary.as_ref(),
        "ENTRYPOINT runs the copied binary"
    );
    let cmd = steps.iter().find(|(op, _)| op == "CMD").unwrap();
    let cmd: Vec<String> = serde_json::from_str(&cmd.1).unwrap();
    let Command::Serve(args) = cli(&cmd) else {
        panic!("CMD serves")
    };
    let config_path = args.config.unwrap();
    let baked = steps
        .iter()
        .find(|(op, r)| op == "COPY" && r.ends_with(config_path.to_str().unwrap()))
        .expect("the default config is copied into the image");
    let source = baked.1.split_whitespace().next().unwrap();
    let config = Config::load(Path::new(source)).unwrap();
    let expose = steps
        .iter()
        .find(|(op, _)| op == "EXPOSE")
        .unwrap()
        .1
        .parse::<u16>()
        .unwrap();
    assert_eq!(
        expose,
        config.server.listen.port(),
        "EXPOSE matches the baked config"
    );
    assert!(
        steps.iter().any(|(op, r)| op == "USER" && r != "root"),
        "runs as a non-root user"
    );
}
