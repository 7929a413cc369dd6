//! The comparison's output: a text table, JSON, or the Markdown section of
//! `docs/protocols.md` (between `<!-- compare:begin -->` and
//! `<!-- compare:end -->`, so the prose around it survives regeneration).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::transports::Kind;
use super::{CompareArgs, CompareError};

const BEGIN: &str = "<!-- compare:begin -->";
const END: &str = "<!-- compare:end -->";

/// The measured figures of one transport.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub transport: String,
    pub kind: Kind,
    pub connection: String,
    /// Bytes both ways to connect and get the first message acked, less what
    /// a message costs once connected.
    pub handshake_bytes: f64,
    /// Connect, send one message, receive its ack (median of 5).
    pub first_ack_ms: f64,
    pub up_bytes_per_point: f64,
    pub down_bytes_per_point: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub msgs_per_sec: f64,
    pub points_per_sec: f64,
    pub server_cpu_s_per_mpoints: f64,
    pub client_cpu_s_per_mpoints: f64,
    pub idle_kib_per_conn: f64,
}

/// The workload and the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub devices: usize,
    pub rate_per_device: f64,
    pub points_per_message: usize,
    pub duration_secs: f64,
    pub window: usize,
    pub idle_connections: usize,
    pub payload: String,
    pub mqtt_qos: u8,
    pub sink: String,
    pub flush_interval_ms: u64,
    pub cpus: usize,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(a: &CompareArgs, rows: Vec<Row>) -> Report {
        Report {
            devices: a.devices,
            rate_per_device: a.rate,
            points_per_message: a.points_per_message,
            duration_secs: a.duration,
            window: a.window,
            idle_connections: a.idle,
            payload: format!("{:?}", a.payload).to_lowercase(),
            mqtt_qos: a.mqtt_qos,
            sink: format!("{:?}", a.sink).to_lowercase(),
            flush_interval_ms: a.flush_interval,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            rows,
        }
    }

    fn workload(&self) -> String {
        format!(
            "{} devices, {} msg/s each (paced phase), {} point(s)/message, {} s per phase, window {} \
             (HTTP/1.1: 1), {} idle connections, MQTT/HTTP payload {}, MQTT QoS {}, sink {}, \
             flush interval {} ms, {} CPUs",
            self.devices,
            self.rate_per_device,
            self.points_per_message,
            self.duration_secs,
            self.window,
            self.idle_connections,
            self.payload,
            self.mqtt_qos,
            self.sink,
            self.flush_interval_ms,
            self.cpus,
        )
    }

    const HEADERS: [&'static str; 13] = [
        "transport",
        "connection type",
        "handshake B",
        "1st ack ms",
        "B/pt up",
        "B/pt down",
        "msgs/s",
        "points/s",
        "p50 ms",
        "p99 ms",
        "srv CPU s/Mpt",
        "cli CPU s/Mpt",
        "idle KiB/conn",
    ];

    fn cells(r: &Row) -> [String; 13] {
        [
            r.transport.clone(),
            r.connection.clone(),
            num(r.handshake_bytes),
            num(r.first_ack_ms),
            num(r.up_bytes_per_point),
            num(r.down_bytes_per_point),
            num(r.msgs_per_sec),
            num(r.points_per_sec),
            num(r.latency_p50_ms),
            num(r.latency_p99_ms),
            num(r.server_cpu_s_per_mpoints),
            num(r.client_cpu_s_per_mpoints),
            num(r.idle_kib_per_conn),
        ]
    }

    /// Aligned text for a terminal.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 13]> = self.rows.iter().map(Self::cells).collect();
        let width = |i: usize| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([Self::HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..13).map(width).collect();
        let mut s = format!("Workload: {}\n\n", self.workload());
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i < 2 {
                    let _ = write!(l, "{:<w$}  ", c, w = widths[i]);
                } else {
                    let _ = write!(l, "{:>w$}  ", c, w = widths[i]);
                }
            }
            l.trim_end().to_owned() + "\n"
        };
        s += &line(&Self::HEADERS.map(String::from));
        for r in &rows {
            s += &line(r);
        }
        s
    }

    /// The measured section of docs/protocols.md.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Measured by `wsingest compare` — workload: {}.\n\n",
            self.workload()
        );
        s += &format!("| {} |\n", Self::HEADERS.join(" | "));
        s += &format!("|{}\n", "---|---|".to_owned() + &"---:|".repeat(11));
        for r in &self.rows {
            s += &format!("| {} |\n", Self::cells(r).join(" | "));
        }
        s
    }

    /// Replace the measured section of `path` (between the markers).
    pub fn update_doc(&self, path: &Path) -> Result<(), CompareError> {
        let text = std::fs::read_to_string(path)?;
        let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
            return Err(CompareError::Client(format!(
                "{} has no {BEGIN} ... {END} section to replace",
                path.display()
            )));
        };
        let updated = format!("{}{BEGIN}\n{}{}", &text[..b], self.markdown(), &text[e..]);
        std::fs::write(path, updated)?;
        Ok(())
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
