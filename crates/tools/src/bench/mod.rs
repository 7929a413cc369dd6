//! `wsingest bench <scenario>`: performance scenarios, each measured next to a
//! reference run in the same invocation (mosquitto, influxd's own bulk write
//! rate), reported as a table and JSON with the ratio to the reference and the
//! goal. `--smoke` runs a short version of each (CI checks it completes and
//! prints every figure; its numbers mean nothing).
//!
//! The server under test is a separate `wsingest serve` process (this binary),
//! so its CPU and memory are measured apart from the load generator's.

mod bridge;
mod load;
pub(crate) mod procs;
mod scenarios;
mod spool;

use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "`{name}` is not installed: run `sudo apt-get install -y {package}` or scripts/install.sh"
    )]
    Missing { name: String, package: String },
    #[error("cannot start a benchmark process: {0}")]
    Start(String),
    #[error("load generation failed: {0}")]
    Load(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error(transparent)]
    Spool(#[from] wsingest_server::sink::spool::SpoolError),
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        BenchError::Load(e.to_string())
    }
}

/// The harness's own errors keep their words: which package to install,
/// which port was taken, the end of the service's log.
impl From<wsingest_harness::StartError> for BenchError {
    fn from(e: wsingest_harness::StartError) -> Self {
        match e {
            wsingest_harness::StartError::Missing { name, package } => {
                BenchError::Missing { name, package }
            }
            other => BenchError::Start(other.to_string()),
        }
    }
}

impl From<reqwest::Error> for BenchError {
    fn from(e: reqwest::Error) -> Self {
        BenchError::Http(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Single-point JSON messages into `--sink blackhole`, vs mosquitto QoS 0.
    Blackhole,
    /// 100-point CBOR batches into `--sink blackhole`.
    BatchCbor,
    /// End to end into a real influxd, acked, vs influxd's own bulk write rate.
    Influx,
    /// Many mostly idle sessions: RSS per session, handshake rate.
    Sessions,
    /// Ack latency at 10/50/90 % of the influx scenario's rate.
    Latency,
    /// InfluxDB outage: spool append (fsync per batch) and replay rates.
    Spool,
    /// Ingest with and without the MQTT bridge to mosquitto (QoS 0 and 1).
    Bridge,
    /// Queue mode (gateway → NATS JetStream R3 → writer → influxd) beside
    /// direct mode, with every process's CPU per point. Not part of `all`
    /// (it needs nats-server).
    Queue,
    /// Every scenario in turn.
    All,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// A short run: checks that everything works, numbers are not meaningful.
    #[arg(long)]
    pub smoke: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Sessions for the `sessions` scenario (100000 needs `ulimit -n` raised
    /// and uses source addresses 127.0.0.2...; see scripts/bench.sh).
    #[arg(long)]
    pub sessions: Option<usize>,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub what: String,
    pub figures: Vec<Figure>,
    /// Our figure divided by the reference's, when there is a reference.
    pub ratio: Option<f64>,
    pub goal: String,
    pub goal_met: Option<bool>,
    /// Names of the figures the summary shows as the result.
    pub headline: Vec<String>,
    /// Name of the reference's figure, when there is one.
    pub reference: Option<String>,
}

impl Report {
    fn new(scenario: &str, what: &str, goal: &str) -> Self {
        Report {
            scenario: scenario.into(),
            what: what.into(),
            figures: vec![],
            ratio: None,
            goal: goal.into(),
            goal_met: None,
            headline: vec![],
            reference: None,
        }
    }

    /// Choose the figures of the summary line: `result` and `reference`.
    fn summarize(&mut self, result: &[&str], reference: Option<&str>) {
        self.headline = result.iter().map(|s| s.to_string()).collect();
        self.reference = reference.map(str::to_string);
    }

    fn figure(&self, name: &str) -> Option<String> {
        self.figures.iter().find(|f| f.name == name).map(|f| {
            format!("{}: {} {}", f.name, human(f.value), f.unit)
                .trim_end()
                .to_string()
        })
    }

    fn add(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    /// Markdown table rows, one per figure.
    pub fn table(&self) -> String {
        let mut s = format!(
            "## {} — {}\n\n| figure | value | unit |\n|---|---:|---|\n",
            self.scenario, self.what
        );
        for f in &self.figures {
            let _ = writeln!(s, "| {} | {} | {} |", f.name, human(f.value), f.unit);
        }
        if let Some(r) = self.ratio {
            let _ = writeln!(s, "| **ratio to reference** | {r:.2} | × |");
        }
        let met = match self.goal_met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a",
        };
        let _ = writeln!(s, "\nGoal: {} — {met}\n", self.goal);
        s
    }
}

/// One line per scenario: result next to its reference, ratio and goal.
pub fn summary(reports: &[Report]) -> String {
    let mut s = String::from(
        "## Summary\n\n| scenario | result | reference | ratio | goal | met |\n|---|---|---|---:|---|---|\n",
    );
    for r in reports {
        let result: Vec<String> = r.headline.iter().filter_map(|n| r.figure(n)).collect();
        let reference = r.reference.as_deref().and_then(|n| r.figure(n));
        let met = match r.goal_met {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "n/a",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {met} |",
            r.scenario,
            result.join("; "),
            reference.unwrap_or_default(),
            r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
            r.goal,
        );
    }
    s
}

fn human(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Run `args.scenario` (or all) and print the reports.
pub async fn run(args: BenchArgs) -> Result<Vec<Report>, BenchError> {
    wsingest_server::tls::install_crypto_provider();
    let list = match args.scenario {
        Scenario::All => vec![
            Scenario::Blackhole,
            Scenario::BatchCbor,
            Scenario::Influx,
            Scenario::Sessions,
            Scenario::Latency,
            Scenario::Spool,
            Scenario::Bridge,
        ],
        s => vec![s],
    };
    let mut reports = Vec::new();
    let mut influx_rate = None;
    for s in list {
        let r = match s {
            Scenario::Blackhole => scenarios::blackhole(&args).await?,
            Scenario::BatchCbor => scenarios::batch_cbor(&args).await?,
            Scenario::Influx => {
                let r = scenarios::influx(&args).await?;
                influx_rate = r
                    .figures
                    .iter()
                    .find(|f| f.name == "wsingest points/s")
                    .map(|f| f.value);
                r
            }
            Scenario::Sessions => scenarios::sessions(&args).await?,
            Scenario::Latency => scenarios::latency(&args, influx_rate).await?,
            Scenario::Spool => spool::spool(&args).await?,
            Scenario::Bridge => bridge::bridge(&args).await?,
            Scenario::Queue => scenarios::queue(&args).await?,
            Scenario::All => unreachable!(),
        };
        if !args.json {
            println!("{}", r.table());
        }
        reports.push(r);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialize")
        );
    } else if reports.len() > 1 {
        println!("{}", summary(&reports));
    }
    Ok(reports)
}
