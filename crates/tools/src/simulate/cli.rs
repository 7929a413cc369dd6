//! `wsingest simulate`: its flags, the progress bar, Ctrl-C handling and the
//! final summary. Everything else is in [`super::fleet`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::SimulateError;
use super::faults::Faults;
use super::fleet::{Fleet, FleetConfig};
use super::message::Encoding;
use super::profile::{self, Profile};
use super::report::Report;
use super::stats::Live;
use super::tokens::Tokens;

const EXAMPLES: &str = "\
Examples:
  wsingest simulate                                  one device of every profile (built in, or devices/) for 60 s
  wsingest simulate -p all -n 20 -d 2m               20 devices of each profile for two minutes
  wsingest simulate -p weather_station=100 -p gps_tracker=10 --rate 5
  wsingest simulate -p smart_meter -n 20000 --source-addrs 127.0.0.2-127.0.0.9 --json
  wsingest simulate --list-profiles

Each device sends seq-numbered messages, resends what is unacknowledged after a reconnect
(same seq, same ts), and answers set_interval and reboot commands. The summary counts what
was sent, acked, nacked (by reason), resent and left unacked. See docs/simulate.md.";

/// Connect simulated devices to a wsingest server and stream telemetry.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct SimulateArgs {
    /// Server URL; device sessions go to <url>/v1/devices/<id>, or put {device} in the path.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:8765",
        env = "WSINGEST_SIMULATE_URL"
    )]
    pub url: String,
    /// For a wss:// URL: a PEM file of CA certificates to trust besides the system's
    /// (the CA that signed the server's certificate, if private).
    #[arg(long, value_name = "PEM", env = "WSINGEST_SIMULATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Device profile: a name from --devices-dir, a .toml path, or `all`; `=N` sets its device count.
    /// Repeat for a mixed fleet.
    #[arg(
        short,
        long = "profile",
        value_name = "PROFILE[=N]",
        default_value = "all"
    )]
    pub profiles: Vec<String>,
    /// A directory of .toml profiles that adds to or overrides (by name) the
    /// profiles built into the binary; default: ./devices when it exists.
    #[arg(long, value_name = "DIR")]
    pub devices_dir: Option<PathBuf>,
    /// Devices per profile (unless the profile says =N).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub devices: usize,
    /// Messages per second per device, instead of each profile's interval.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Points per message, instead of each profile's.
    #[arg(long)]
    pub batch: Option<usize>,
    /// How long to generate (e.g. 30s, 2m, 500ms); then devices wait for their last acks.
    /// Default 60s unless --messages is given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Telemetry messages per device, then stop.
    #[arg(short, long)]
    pub messages: Option<u64>,
    /// Payload encoding (and subprotocol): json, cbor, or SenML packs (senml+json, senml+cbor).
    #[arg(short, long, value_enum, default_value = "json")]
    pub encoding: Encoding,
    /// File of `device-id token` lines (or a JSON object); each device sends
    /// `Authorization: Bearer <token>`. Without it devices connect anonymously.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// WebSocket handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Unacknowledged messages a device may have before it waits.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Reconnect (and resend) when the oldest message has no ack after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// After generating, how long devices may wait for their last acks.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// First reconnect backoff; it doubles per failed attempt, with jitter.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest reconnect backoff.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// Seed for reproducible fleets (tags, values, faults); random by default, printed in the summary.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Local addresses to connect from, round-robin (e.g. 127.0.0.2-127.0.0.9,127.0.1.1), to
    /// get past the ~28k ephemeral ports of one address.
    #[arg(long, value_parser = parse_addrs, value_name = "ADDRS")]
    pub source_addrs: Option<AddrList>,
    /// Prefix for every device id, so several generators use distinct ids.
    #[arg(long, default_value = "")]
    pub id_prefix: String,
    /// Add each message's seq to its points as an integer field of this name (for checking).
    #[arg(long, value_name = "FIELD")]
    pub seq_field: Option<String>,
    /// Fault: drop the connection (no close handshake) after every N-th message of a device.
    #[arg(long, value_name = "N")]
    pub fault_drop_every: Option<u64>,
    /// Fault: chance per message of dropping the connection after it.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fault_drop_probability: f64,
    /// Fault: chance per message of also sending a garbage (unparseable) message.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fault_garbage: f64,
    /// Fault: chance per message of also sending one with a string over the server's 64 KiB limit.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fault_oversize: f64,
    /// Fault: chance per message of also sending one with a NaN field.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub fault_nan: f64,
    /// Fault: each device's clock is off by a random amount up to ± this (e.g. 5m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub clock_skew: Option<Duration>,
    /// Burst mode: send N messages back to back every N intervals (same average rate).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub burst: u32,
    /// Print the summary as JSON on stdout (no table, no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Include every device's counters in the JSON summary.
    #[arg(long)]
    pub per_device: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// List the profiles (built in, and from --devices-dir or ./devices) and exit.
    #[arg(long)]
    pub list_profiles: bool,
}

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 30s, 2m, 500ms"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a duration"))
}

/// The addresses of one `--source-addrs` value. A newtype: clap treats an
/// argument of type `Vec<T>` as repeated values of `T`, not as one list.
#[derive(Debug, Clone, PartialEq)]
pub struct AddrList(pub Vec<IpAddr>);

/// `127.0.0.2,127.0.0.3` or `127.0.0.2-127.0.0.20` (IPv4 ranges), mixed.
pub fn parse_addrs(s: &str) -> Result<AddrList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
                let b: Ipv4Addr = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a >= 65_536 {
                    return Err(format!(
                        "{part}: a range goes upwards and spans at most 65536 addresses"
                    ));
                }
                out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
            None => out.push(
                part.parse()
                    .map_err(|_| format!("{part:?} is not an IP address"))?,
            ),
        }
    }
    if out.is_empty() {
        return Err("give at least one address".into());
    }
    Ok(AddrList(out))
}

impl SimulateArgs {
    /// The profiles with their device counts.
    pub fn load_profiles(&self) -> Result<Vec<(Profile, usize)>, SimulateError> {
        let mut out: Vec<(Profile, usize)> = Vec::new();
        for spec in &self.profiles {
            let (what, count) = match spec.rsplit_once('=') {
                Some((w, n)) => {
                    let n = n.parse().map_err(|_| {
                        SimulateError::Invalid(format!(
                            "--profile {spec}: the count after = must be a number"
                        ))
                    })?;
                    (w, n)
                }
                None => (spec.as_str(), self.devices),
            };
            for source in profile::resolve_sources(what, self.devices_dir.as_deref())? {
                let p = source.load()?;
                if out.iter().any(|(o, _)| o.id_prefix == p.id_prefix) {
                    return Err(SimulateError::Invalid(format!(
                        "profile {} is given twice (or two profiles share id_prefix {:?})",
                        p.name, p.id_prefix
                    )));
                }
                out.push((p, count));
            }
        }
        Ok(out)
    }

    pub fn fleet_config(&self) -> Result<FleetConfig, SimulateError> {
        let tokens = self.tokens.as_deref().map(Tokens::load).transpose()?;
        let duration = match (self.duration, self.messages) {
            (None, None) => Some(Duration::from_secs(60)),
            (d, _) => d,
        };
        Ok(FleetConfig {
            url: self.url.clone(),
            ca_file: self.ca_file.clone(),
            profiles: self.load_profiles()?,
            encoding: self.encoding,
            rate: self.rate,
            batch: self.batch,
            duration,
            messages: self.messages,
            window: self.window,
            ack_timeout: self.ack_timeout,
            drain_timeout: self.drain_timeout,
            connect_concurrency: self.connect_concurrency,
            connect_timeout: Duration::from_secs(10),
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            faults: Faults {
                drop_every: self.fault_drop_every,
                drop_probability: self.fault_drop_probability,
                garbage: self.fault_garbage,
                oversize: self.fault_oversize,
                nan: self.fault_nan,
                clock_skew_ms: self.clock_skew.map_or(0, |d| d.as_millis() as u64),
                burst: self.burst.max(1),
            },
            seed: self.seed.unwrap_or_else(rand::random),
            tokens,
            source_addrs: self.source_addrs.clone().map(|a| a.0).unwrap_or_default(),
            id_prefix: self.id_prefix.clone(),
            seq_field: self.seq_field.clone(),
            per_device: self.per_device,
        })
    }
}

/// Run `wsingest simulate`: the summary goes to stdout, the progress bar to
/// stderr. First Ctrl-C (or SIGTERM): stop generating and drain; second: stop now.
pub async fn main(args: SimulateArgs) -> Result<Option<Report>, SimulateError> {
    if args.list_profiles {
        for (_, source) in profile::catalog(args.devices_dir.as_deref())? {
            let p = source.load()?;
            println!(
                "{:<20} {:<12} every {:>5.1} s  {}",
                p.name, p.measurement, p.interval_s, p.description
            );
        }
        return Ok(None);
    }
    let config = args.fleet_config()?;
    let duration = config.duration;
    let fleet = Fleet::start(config).await?;
    let stop = fleet.stop_token();
    let abort = fleet.abort_token();
    tokio::spawn(async move {
        if stop_signal().await {
            eprintln!("stopping: waiting for the last acks (Ctrl-C again to stop now)");
            stop.cancel();
            if stop_signal().await {
                abort.cancel();
            }
        }
    });
    let bar = (!args.quiet && !args.json).then(|| progress_bar(duration));
    let report = if let Some(bar) = &bar {
        let finish = fleet.finish_with(|live, devices, started, stopping| {
            update(bar, live, devices, started, stopping)
        });
        finish.await
    } else {
        fleet.finish().await
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let nothing_sent = report.nothing_sent();
    if let Some(cause) = &nothing_sent {
        eprintln!("error: {cause}");
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    if let Some(cause) = nothing_sent {
        return Err(SimulateError::NothingSent(cause));
    }
    let problems = report.inconsistencies();
    if !problems.is_empty() {
        return Err(SimulateError::Inconsistent(problems.join("; ")));
    }
    Ok(Some(report))
}

/// SIGINT or SIGTERM; `false` if signals cannot be watched.
async fn stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

fn progress_bar(duration: Option<Duration>) -> ProgressBar {
    let bar = match duration {
        Some(d) => ProgressBar::new(d.as_millis() as u64),
        None => ProgressBar::new_spinner(),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:24}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn update(
    bar: &ProgressBar,
    live: &Live,
    devices: usize,
    started: tokio::time::Instant,
    stopping: bool,
) {
    let elapsed = started.elapsed();
    bar.set_position(elapsed.as_millis() as u64);
    let sent = Live::get(&live.messages_sent);
    let rate = sent as f64 / elapsed.as_secs_f64().max(0.001);
    let connected = live.connected.load(std::sync::atomic::Ordering::Relaxed);
    bar.set_message(format!(
        "{}{connected}/{devices} online  sent {sent} ({rate:.0}/s)  acked {}  nacked {}  resent {}  reconnects {}",
        if stopping { "draining: " } else { "" },
        Live::get(&live.messages_acked),
        Live::get(&live.nacked),
        Live::get(&live.resent),
        Live::get(&live.reconnects),
    ));
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn address_lists() {
        let a = parse_addrs("127.0.0.2-127.0.0.4,127.0.1.1").unwrap().0;
        assert_eq!(a.len(), 4);
        assert_eq!(a[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        assert!(parse_addrs("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_addrs("localhost").is_err());
    }

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn profile_counts_and_names() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../devices");
        let t = Top::try_parse_from([
            "x",
            "--devices-dir",
            dir,
            "-p",
            "smart_meter=3",
            "-p",
            "gps_tracker",
            "-n",
            "2",
        ])
        .unwrap();
        let p = t.args.load_profiles().unwrap();
        let got: Vec<(&str, usize)> = p.iter().map(|(p, n)| (p.name.as_str(), *n)).collect();
        assert_eq!(got, vec![("smart_meter", 3), ("gps_tracker", 2)]);
        let t = Top::try_parse_from(["x", "--devices-dir", dir]).unwrap();
        assert_eq!(t.args.load_profiles().unwrap().len(), 5);
        // Every flag reaches the fleet's config (clap checks argument types
        // only when they are read).
        let t = Top::try_parse_from([
            "x",
            "--devices-dir",
            dir,
            "--source-addrs",
            "127.0.0.2-127.0.0.3",
            "--clock-skew",
            "5m",
            "-e",
            "senml+cbor",
        ])
        .unwrap();
        let c = t.args.fleet_config().unwrap();
        assert_eq!(c.source_addrs.len(), 2);
        assert_eq!(c.faults.clock_skew_ms, 300_000);
        assert_eq!(c.encoding, Encoding::SenmlCbor);
        let t = Top::try_parse_from(["x", "--devices-dir", dir, "-p", "all", "-p", "smart_meter"])
            .unwrap();
        assert!(
            t.args
                .load_profiles()
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let t = Top::try_parse_from(["x", "--devices-dir", dir, "-p", "toaster"]).unwrap();
        let e = t.args.load_profiles().unwrap_err().to_string();
        assert!(
            e.contains("toaster") && e.contains("weather_station"),
            "{e}"
        );
    }
}
