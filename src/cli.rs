//! Command-line interface (clap derive). Every `serve` flag overrides the
//! config file and can also be set as a `WSINGEST_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use wsingest_server::config::{Config, ConfigError, DEFAULT_CONFIG, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "wsingest",
    version,
    about = "IoT telemetry ingestion over WebSockets into InfluxDB"
)]
pub struct Cli {
    /// Log format: human-readable or one JSON object per line. Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "WSINGEST_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingest server.
    Serve(Box<ServeArgs>),
    /// Queue mode's writer: take points from the NATS JetStream stream
    /// (--nats-url) and write them to InfluxDB (--influx-url, --influx-db);
    /// any number of writers share the work. --listen (queue.writer_listen)
    /// is its HTTP port: /healthz, /readyz, /metrics (default: none).
    Writer(Box<ServeArgs>),
    /// Performance scenarios, each next to a reference run (see docs/performance.md).
    Bench(wsingest_tools::bench::BenchArgs),
    /// Measure WebSocket (JSON, CBOR), MQTT, HTTP/1.1, HTTP/2 and gRPC on one
    /// workload: handshake, bytes per point, throughput, latency, CPU, memory.
    Compare(wsingest_tools::compare::CompareArgs),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the device registry (tokens are shown once, stored hashed).
    #[command(subcommand)]
    Device(wsingest_server::auth::cli::DeviceCommand),
    /// The dead-letter file (points InfluxDB refused): list, show, replay, purge.
    #[command(subcommand)]
    Deadletter(DeadletterCommand),
    /// Connect simulated devices (profiles in devices/) and stream telemetry.
    Simulate(Box<wsingest_tools::simulate::cli::SimulateArgs>),
    /// Formats (mappings of devices' own JSON): list them, show one as TOML.
    #[command(subcommand)]
    Formats(FormatsCommand),
    /// The Grafana dashboards without Grafana: run their queries, draw them.
    #[command(subcommand)]
    Dashboards(DashboardsCommand),
}

#[derive(Debug, Subcommand)]
pub enum DashboardsCommand {
    /// Run every variable and panel query against InfluxDB and print a table
    /// (dashboard, panel, target, series, rows, values, first error). Exits 1
    /// when a query fails, or with --require-data when a panel returns nothing.
    Check(DashboardsCheckArgs),
    /// Draw each dashboard to DIR/<file>.png from its query results, on the
    /// dashboard's own grid.
    Render(DashboardsRenderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DashboardsCheckArgs {
    #[command(flatten)]
    pub common: DashboardsArgs,
    /// Also fail when a panel (or variable) returns no data.
    #[arg(long)]
    pub require_data: bool,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DashboardsRenderArgs {
    #[command(flatten)]
    pub common: DashboardsArgs,
    /// Folder for the images (created).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DashboardsArgs {
    /// Config file whose [influx] url, db, user and password are used (flags win).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// InfluxDB base URL (default: the config's, else http://127.0.0.1:8086).
    #[arg(long, env = "WSINGEST_INFLUX_URL")]
    pub influx_url: Option<String>,
    /// InfluxDB 1.x database (default: the config's, else wsingest).
    #[arg(long, env = "WSINGEST_INFLUX_DB")]
    pub influx_db: Option<String>,
    /// InfluxDB 1.x user.
    #[arg(long, env = "WSINGEST_INFLUX_USER")]
    pub influx_user: Option<String>,
    /// InfluxDB 1.x password.
    #[arg(long, env = "WSINGEST_INFLUX_PASSWORD", hide_env_values = true)]
    pub influx_password: Option<String>,
    /// Folder of dashboard JSON files.
    #[arg(long, default_value = "grafana/dashboards")]
    pub dir: PathBuf,
    /// Only these dashboards (file name without .json, or uid); repeatable.
    #[arg(long)]
    pub only: Vec<String>,
    /// Start of the time range for every dashboard (now-15m, RFC 3339, epoch ms);
    /// default: each dashboard's own.
    #[arg(long, conflicts_with = "range")]
    pub from: Option<String>,
    /// End of the time range (default now).
    #[arg(long, conflicts_with = "range")]
    pub to: Option<String>,
    /// The last DURATION up to now, e.g. 15m: the same as --from now-15m.
    #[arg(long)]
    pub range: Option<String>,
    /// The data source's minimum interval (timeInterval in grafana/provisioning).
    #[arg(long, default_value = "10s")]
    pub min_interval: String,
}

impl DashboardsArgs {
    /// The options for wsingest_tools::dashboards, the config file under the flags.
    pub fn options(&self) -> Result<wsingest_tools::dashboards::Options, ConfigError> {
        let config = match &self.config {
            Some(path) => Some(Config::load(path)?),
            None => None,
        };
        let influx = config.as_ref().map(|c| &c.influx);
        let pick = |flag: &Option<String>, from_config: Option<String>, default: &str| {
            flag.clone()
                .or(from_config)
                .unwrap_or_else(|| default.to_string())
        };
        let influx = wsingest_tools::dashboards::Influx {
            url: pick(
                &self.influx_url,
                influx.map(|i| i.url.clone()),
                "http://127.0.0.1:8086",
            ),
            db: pick(
                &self.influx_db,
                influx.and_then(|i| i.db.clone()),
                "wsingest",
            ),
            user: self
                .influx_user
                .clone()
                .or_else(|| influx.and_then(|i| i.user.clone())),
            password: self.influx_password.clone().or_else(|| {
                influx.and_then(|i| i.password.as_ref().map(|p| p.expose().to_string()))
            }),
        };
        let mut o = wsingest_tools::dashboards::Options::new(self.dir.clone(), influx);
        o.from = match &self.range {
            Some(r) => Some(format!("now-{r}")),
            None => self.from.clone(),
        };
        o.to = self.to.clone();
        o.only = self.only.clone();
        o.min_interval = self.min_interval.clone();
        Ok(o)
    }
}

#[derive(Debug, Subcommand)]
pub enum FormatsCommand {
    /// The built-in presets and the config's [formats.*], one per line.
    List {
        #[command(flatten)]
        config: Box<ServeArgs>,
    },
    /// One format as TOML to copy into a [formats.NAME] section and edit.
    Show {
        #[command(flatten)]
        config: Box<ServeArgs>,
        /// The format's name, as `list` shows it.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration with every default, as TOML.
    PrintDefault,
    /// Load a configuration (file, environment, flags) and print what results.
    Check(Box<ServeArgs>),
}

#[derive(Debug, Subcommand)]
pub enum DeadletterCommand {
    /// One row per entry: number, time, devices, status, InfluxDB's reason.
    List {
        #[command(flatten)]
        config: Box<ServeArgs>,
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One entry in full, with its line protocol.
    Show {
        #[command(flatten)]
        config: Box<ServeArgs>,
        /// Entry number, as `list` shows it.
        n: usize,
    },
    /// Validate every entry's points again and send them to the config's
    /// InfluxDB (after fixing the cause); entries refused again stay in the file.
    Replay {
        #[command(flatten)]
        config: Box<ServeArgs>,
    },
    /// Delete every entry.
    Purge {
        #[command(flatten)]
        config: Box<ServeArgs>,
        /// Confirm: the entries are gone for good.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: config/wsingest.toml when it exists.
    #[arg(long, short, env = "WSINGEST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on: IP:PORT, HOST:PORT (e.g. localhost:8765) or
    /// :PORT (every interface).
    #[arg(long, env = "WSINGEST_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Where points go: influx, or blackhole (discard after decode, ack at once).
    #[arg(long, value_enum, env = "WSINGEST_SINK")]
    pub sink: Option<wsingest_server::config::SinkKind>,
    /// InfluxDB base URL, e.g. http://127.0.0.1:8086.
    #[arg(long, env = "WSINGEST_INFLUX_URL")]
    pub influx_url: Option<String>,
    /// InfluxDB 1.x database.
    #[arg(long, env = "WSINGEST_INFLUX_DB")]
    pub influx_db: Option<String>,
    /// InfluxDB 1.x retention policy.
    #[arg(long, env = "WSINGEST_INFLUX_RP")]
    pub influx_rp: Option<String>,
    /// InfluxDB 1.x user.
    #[arg(long, env = "WSINGEST_INFLUX_USER")]
    pub influx_user: Option<String>,
    /// InfluxDB 1.x password.
    #[arg(long, env = "WSINGEST_INFLUX_PASSWORD", hide_env_values = true)]
    pub influx_password: Option<String>,
    /// v2 API organisation.
    #[arg(long, env = "WSINGEST_INFLUX_ORG")]
    pub influx_org: Option<String>,
    /// v2 API bucket (selects the v2 write API).
    #[arg(long, env = "WSINGEST_INFLUX_BUCKET")]
    pub influx_bucket: Option<String>,
    /// v2 API token.
    #[arg(long, env = "WSINGEST_INFLUX_TOKEN", hide_env_values = true)]
    pub influx_token: Option<String>,
    /// Let devices connect without a token.
    #[arg(long, env = "WSINGEST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,
    /// Largest WebSocket message accepted (bigger: close 1009).
    #[arg(long, env = "WSINGEST_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Points per InfluxDB write.
    #[arg(long, env = "WSINGEST_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Longest a batch keeps growing while every write slot is busy, in ms.
    #[arg(long, env = "WSINGEST_FLUSH_INTERVAL")]
    pub flush_interval: Option<u64>,
    /// Dead-letter file for points InfluxDB refused.
    #[arg(long, env = "WSINGEST_DEAD_LETTER")]
    pub dead_letter: Option<PathBuf>,
    /// TLS certificate chain (PEM): serve wss:// (needs --tls-key).
    #[arg(long, env = "WSINGEST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "WSINGEST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Device registry file (see `wsingest device`).
    #[arg(long, env = "WSINGEST_REGISTRY")]
    pub registry: Option<PathBuf>,
    /// MQTT broker for the bridge, e.g. mqtt://127.0.0.1:1883 (mqtts:// for TLS).
    #[arg(long, env = "WSINGEST_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// Operator token: the HTTP command API and the live view (observe.operator_token).
    #[arg(long, env = "WSINGEST_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Queue mode: NATS servers (JetStream) to publish points to instead of
    /// writing InfluxDB, e.g. nats://a:4222,nats://b:4222 (queue.nats_url).
    #[arg(long, env = "WSINGEST_NATS_URL")]
    pub nats_url: Option<String>,
    /// serve in queue mode: also run a writer (JetStream to InfluxDB) in
    /// this process, for small deployments.
    #[arg(long)]
    pub writer: bool,
}

/// `--listen`: `IP:PORT`, `HOST:PORT` (resolved now; IPv4 preferred, as a
/// device on `localhost` most likely means 127.0.0.1), or `:PORT` for every
/// interface (0.0.0.0).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port after ':' must be a number 0-65535"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?}: give HOST:PORT, IP:PORT or :PORT (e.g. 127.0.0.1:8765, localhost:8765, :8765)"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("{s:?}: the port {port:?} must be a number 0-65535"));
    }
    let addrs: Vec<SocketAddr> = (
        host.trim_matches(['[', ']']),
        port.parse::<u16>().unwrap_or(0),
    )
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} resolves to no address"))
}

impl ServeArgs {
    /// The config file, then these flags over it, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
                Config::load(DEFAULT_CONFIG.as_ref())?
            }
            None => Config::default(),
        };
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        fn set_opt<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                *target = value.clone();
            }
        }
        set(&mut c.server.listen, &self.listen);
        set(&mut c.server.sink, &self.sink);
        set(&mut c.influx.url, &self.influx_url);
        set_opt(&mut c.influx.db, &self.influx_db);
        set_opt(&mut c.influx.rp, &self.influx_rp);
        set_opt(&mut c.influx.user, &self.influx_user);
        set_opt(
            &mut c.influx.password,
            &self.influx_password.clone().map(Secret::new),
        );
        set_opt(&mut c.influx.org, &self.influx_org);
        set_opt(&mut c.influx.bucket, &self.influx_bucket);
        set_opt(
            &mut c.influx.token,
            &self.influx_token.clone().map(Secret::new),
        );
        if self.allow_anonymous {
            c.auth.allow_anonymous = true;
        }
        set(&mut c.server.max_message_bytes, &self.max_message_bytes);
        if let Some(n) = self.max_message_bytes {
            c.server.max_frame_bytes = c.server.max_frame_bytes.min(n);
        }
        set(&mut c.influx.batch_size, &self.batch_size);
        set(&mut c.influx.flush_interval_ms, &self.flush_interval);
        set_opt(&mut c.influx.dead_letter_path, &self.dead_letter);
        set_opt(&mut c.tls.cert, &self.tls_cert);
        set_opt(&mut c.tls.key, &self.tls_key);
        set_opt(&mut c.auth.registry_path, &self.registry);
        set_opt(&mut c.mqtt.url, &self.mqtt_url);
        set_opt(
            &mut c.observe.operator_token,
            &self.operator_token.clone().map(Secret::new),
        );
        if let Some(urls) = &self.nats_url {
            c.queue.nats_url = wsingest_server::queue::config::split_urls([urls.as_str()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of every subcommand and flag.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn listen_takes_host_names_and_bare_ports() {
        assert_eq!(
            parse_listen("localhost:8765").unwrap(),
            "127.0.0.1:8765".parse().unwrap()
        );
        assert_eq!(
            parse_listen(":8765").unwrap(),
            "0.0.0.0:8765".parse().unwrap()
        );
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_listen("localhost").unwrap_err().contains(":PORT"));
        assert!(parse_listen(":http").unwrap_err().contains("port"));
        let cli = Cli::try_parse_from(["wsingest", "serve", "--listen", ":8765"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.listen.unwrap().port(), 8765);
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "wsingest",
            "writer",
            "--nats-url",
            "nats://a:4222, nats://b:4222",
            "--influx-db",
            "x",
        ])
        .unwrap();
        let Command::Writer(args) = cli.command else {
            panic!()
        };
        let c = args.load().unwrap();
        assert_eq!(c.queue.nats_url, ["nats://a:4222", "nats://b:4222"]);
        assert!(c.queue.enabled());
        let cli = Cli::try_parse_from(["wsingest", "serve", "--nats-url", "http://a"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let e = args.load().unwrap_err().to_string();
        assert!(e.contains("queue.nats_url"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[influx]\nbatch_size = 10\ndb = \"a\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "wsingest",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9",
            "--influx-bucket",
            "b",
            "--flush-interval",
            "250",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let c = args.load().unwrap();
        assert_eq!(c.influx.batch_size, 10);
        assert_eq!(c.server.listen.port(), 9);
        assert_eq!(c.influx.flush_interval_ms, 250);
        assert!(matches!(
            c.influx_api().unwrap(),
            wsingest_server::sink::influx::Api::V2 { .. }
        ));
    }
}
