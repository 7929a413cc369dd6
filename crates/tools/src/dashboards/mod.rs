//! `wsingest dashboards check` and `wsingest dashboards render`: the Grafana
//! dashboards in `grafana/dashboards/` seen without Grafana.
//!
//! - [`model`]: the dashboard JSON (panels, grid, targets, variables) in types.
//! - [`expand`]: Grafana's InfluxQL substitutions (`$timeFilter`,
//!   `$__interval`, variables, multi-value regexes).
//! - [`builder`]: query-builder targets rendered to InfluxQL.
//! - [`query`]: the InfluxDB 1.x `/query` client and its answers.
//! - [`check`]: resolve variables, run every target, the report table.
//! - [`render`]: one PNG per dashboard on its own grid, drawn from the answers.

pub mod builder;
pub mod check;
pub mod expand;
pub mod model;
pub mod query;
pub mod render;

use std::path::PathBuf;

pub use check::{DashboardResult, PanelResult, Report, TargetResult, run};
pub use query::Influx;

/// Loading dashboards and writing images.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: not a dashboard Grafana would load: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no dashboards (*.json) in {0}")]
    Empty(PathBuf),
    #[error("no dashboard matches --only {0}")]
    NoMatch(String),
    #[error(transparent)]
    Expand(#[from] ExpandError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drawing {dashboard}: {reason}")]
    Draw { dashboard: String, reason: String },
}

/// Substituting a query's macros and variables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unknown variable ${0}")]
    UnknownVariable(String),
    #[error("variable ${variable}: unknown format {format:?}")]
    Format { variable: String, format: String },
    #[error("cannot read the interval {0:?}")]
    Interval(String),
    #[error("time range: {0}")]
    Time(String),
}

/// What `check` and `render` read and where they run the queries.
#[derive(Debug, Clone)]
pub struct Options {
    /// The folder of dashboard JSON files.
    pub dir: PathBuf,
    pub influx: Influx,
    /// Time range over every dashboard's own (`now-15m`, RFC 3339, epoch ms).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Only the dashboards whose file stem or uid is one of these.
    pub only: Vec<String>,
    /// The data source's minimum interval (`timeInterval` of the provisioned
    /// data source).
    pub min_interval: String,
    /// The browser width assumed for `$__interval` (a panel's data points
    /// are its width in pixels).
    pub width_px: u32,
}

impl Options {
    pub fn new(dir: PathBuf, influx: Influx) -> Options {
        Options {
            dir,
            influx,
            from: None,
            to: None,
            only: Vec::new(),
            min_interval: "10s".into(),
            width_px: 1920,
        }
    }
}
