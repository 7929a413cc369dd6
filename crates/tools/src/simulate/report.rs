//! The summary of a run: what was sent, acknowledged, refused, resent and
//! possibly lost, per profile and in total, with rates, ack latency, bytes on
//! the wire and the generator's own CPU cost. Printed as a table, or as JSON
//! (`--json`) for scripts. Every number is counted, none estimated.

use std::fmt::Write;

use serde::Serialize;

use super::device::DeviceResult;
use super::faults::Faults;
use super::message::Encoding;
use super::state::Counters;
use super::stats::{CpuUsage, LatencySummary};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The URL devices connected to (`{device}` stands for each id).
    pub target: String,
    pub encoding: Encoding,
    pub seed: u64,
    pub devices: usize,
    /// From the start until generating stopped.
    pub generating_s: f64,
    /// From the start until the last device finished (draining included).
    pub elapsed_s: f64,
    pub totals: Counters,
    pub profiles: Vec<ProfileReport>,
    pub ack_latency: Option<LatencySummary>,
    pub wire: WireReport,
    pub cpu: CpuUsage,
    pub faults: Faults,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_device: Vec<DeviceResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub name: String,
    pub measurement: String,
    pub devices: usize,
    pub interval_s: f64,
    pub points_per_message: usize,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Clone, Serialize)]
pub struct WireReport {
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Rates over the run, derived from the counters.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub messages_sent_per_s: f64,
    pub points_sent_per_s: f64,
    pub messages_acked_per_s: f64,
    pub points_acked_per_s: f64,
}

impl Report {
    pub fn rates(&self) -> Rates {
        let per = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let t = &self.totals;
        Rates {
            messages_sent_per_s: per(t.messages_sent, self.generating_s),
            points_sent_per_s: per(t.points_sent, self.generating_s),
            messages_acked_per_s: per(t.messages_acked, self.elapsed_s),
            points_acked_per_s: per(t.points_acked, self.elapsed_s),
        }
    }

    /// Why nothing was sent, when nothing was: the connection errors first,
    /// with what to do about the usual ones. `None` when something was sent.
    pub fn nothing_sent(&self) -> Option<String> {
        let t = &self.totals;
        if t.messages_sent > 0 || t.faulty_sent_total() > 0 {
            return None;
        }
        if t.connect_errors.is_empty() {
            return Some(format!(
                "nothing was sent to {} ({} sessions opened): the run may be too short for the profiles' intervals (see --duration, --rate)",
                self.target, t.sessions
            ));
        }
        let errors: Vec<String> = t
            .connect_errors
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        let hint = |k: &str| match k {
            "http_401" => Some(
                "the server wants device tokens: give --tokens FILE (lines of `device-id token`, from `wsingest device add`)",
            ),
            "http_403" => {
                Some("a token is not valid for its device id, or the Origin is not allowed")
            }
            "http_404" => Some("wrong path: point --url at the server's base URL (ws://HOST:8765)"),
            "refused" => Some("nothing listens at --url: is `wsingest serve` running there?"),
            "timeout" => Some("the server did not answer in time: check --url and the network"),
            _ => None,
        };
        let hints: Vec<&str> = t.connect_errors.keys().filter_map(|k| hint(k)).collect();
        Some(format!(
            "nothing was sent to {}: every connection attempt failed ({}){}",
            self.target,
            errors.join(", "),
            if hints.is_empty() {
                String::new()
            } else {
                format!("; {}", hints.join("; "))
            }
        ))
    }

    /// What does not add up: every telemetry message is acked, nacked or
    /// still unacked; every faulty message is nacked or unanswered; no ack
    /// comes for a message we did not send. Empty when all is consistent.
    pub fn inconsistencies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, c: &Counters| {
            let answered = c.messages_acked + c.messages_nacked + c.messages_unacked;
            if c.messages_sent != answered {
                out.push(format!(
                    "{name}: {} messages sent but {} acked + {} nacked + {} unacked = {answered}",
                    c.messages_sent, c.messages_acked, c.messages_nacked, c.messages_unacked
                ));
            }
            let faulty = c.faulty_nacked + c.faulty_unanswered;
            if c.faulty_sent_total() != faulty {
                out.push(format!(
                    "{name}: {} faulty messages sent but {} nacked + {} unanswered",
                    c.faulty_sent_total(),
                    c.faulty_nacked,
                    c.faulty_unanswered
                ));
            }
            if c.unexpected_acks > 0 {
                out.push(format!(
                    "{name}: {} acks or nacks for messages not waiting for one",
                    c.unexpected_acks
                ));
            }
        };
        check("total", &self.totals);
        for d in &self.per_device {
            check(&d.id, &d.counters);
        }
        out
    }

    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct WithRates<'a> {
            #[serde(flatten)]
            report: &'a Report,
            rates: Rates,
            consistent: bool,
        }
        let v = WithRates {
            report: self,
            rates: self.rates(),
            consistent: self.inconsistencies().is_empty(),
        };
        serde_json::to_string_pretty(&v).expect("report serializes")
    }

    /// The human summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(
            s,
            "wsingest simulate: {} devices, {} profile(s), {}, seed {}, {}",
            self.devices,
            self.profiles.len(),
            self.encoding.subprotocol(),
            self.seed,
            self.target
        );
        let _ = writeln!(
            s,
            "ran {:.1} s generating, {:.1} s in total (draining acks)\n",
            self.generating_s, self.elapsed_s
        );
        let header = [
            "profile",
            "devices",
            "msgs sent",
            "points",
            "acked",
            "nacked",
            "unacked",
            "resent",
            "reconnects",
        ];
        let mut rows: Vec<[String; 9]> = Vec::new();
        let row = |name: &str, devices: usize, c: &Counters| {
            [
                name.to_string(),
                devices.to_string(),
                c.messages_sent.to_string(),
                c.points_sent.to_string(),
                c.messages_acked.to_string(),
                c.messages_nacked.to_string(),
                c.messages_unacked.to_string(),
                c.messages_resent.to_string(),
                c.reconnects.to_string(),
            ]
        };
        for p in &self.profiles {
            rows.push(row(&p.name, p.devices, &p.counters));
        }
        rows.push(row("total", self.devices, t));
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 0 {
                    let _ = write!(l, "{:<w$}", c, w = widths[0]);
                } else {
                    let _ = write!(l, "  {:>w$}", c, w = widths[i]);
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(s, "{}", line(&header));
        for (i, r) in rows.iter().enumerate() {
            if i == rows.len() - 1 {
                let _ = writeln!(
                    s,
                    "{}",
                    "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
                );
            }
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            let _ = writeln!(s, "{}", line(&cells));
        }
        let _ = writeln!(s);
        let r = self.rates();
        let _ = writeln!(
            s,
            "rates        sent {:.1} msgs/s ({:.1} points/s); acked {:.1} msgs/s ({:.1} points/s)",
            r.messages_sent_per_s,
            r.points_sent_per_s,
            r.messages_acked_per_s,
            r.points_acked_per_s
        );
        match &self.ack_latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "ack latency  p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} acks)",
                    l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
                );
            }
            None => {
                let _ = writeln!(s, "ack latency  no acks received");
            }
        }
        let _ = writeln!(
            s,
            "points       {} sent, {} acked, {} nacked, {} unacked",
            t.points_sent, t.points_acked, t.points_nacked, t.points_unacked
        );
        if !t.nacks.is_empty() {
            let _ = writeln!(
                s,
                "nacks        {}",
                join(t.nacks.iter().map(|(k, v)| format!("{k} {v}")))
            );
        }
        if t.faulty_sent_total() > 0 || t.drops_injected > 0 {
            let sent = join(
                t.faulty_sent
                    .iter()
                    .map(|(k, v)| format!("{} {v}", format!("{k:?}").to_lowercase())),
            );
            let _ = writeln!(
                s,
                "faults       sent {sent}; nacked {} ({}), unanswered {}; connections dropped {}",
                t.faulty_nacked,
                join(t.faulty_nacks.iter().map(|(k, v)| format!("{k} {v}"))),
                t.faulty_unanswered,
                t.drops_injected
            );
        }
        let mut conn = format!("{} sessions, {} reconnects", t.sessions, t.reconnects);
        if !t.connect_errors.is_empty() {
            let _ = write!(
                conn,
                "; connect errors: {}",
                join(t.connect_errors.iter().map(|(k, v)| format!("{k} {v}")))
            );
        }
        if !t.server_closes.is_empty() {
            let _ = write!(
                conn,
                "; server closed: {}",
                join(t.server_closes.iter().map(|(k, v)| format!("{k} ×{v}")))
            );
        }
        if t.ack_timeouts > 0 {
            let _ = write!(conn, "; ack timeouts {}", t.ack_timeouts);
        }
        let _ = writeln!(s, "connections  {conn}");
        if !t.commands.is_empty() {
            let _ = writeln!(
                s,
                "commands     {}",
                join(t.commands.iter().map(|(k, v)| format!("{k} {v}")))
            );
        }
        if t.window_stalls > 0 {
            let _ = writeln!(
                s,
                "window full  {} times a message was due while the window was full",
                t.window_stalls
            );
        }
        let _ = writeln!(
            s,
            "wire         {} sent, {} received",
            bytes(self.wire.bytes_sent),
            bytes(self.wire.bytes_received)
        );
        let _ = writeln!(
            s,
            "cpu          user {:.2} s, system {:.2} s: {:.2} cores ({:.0} % of this machine)",
            self.cpu.user_s,
            self.cpu.system_s,
            self.cpu.cores_used,
            self.cpu.machine_share * 100.0
        );
        let problems = self.inconsistencies();
        if problems.is_empty() {
            if t.messages_unacked > 0 {
                let _ = writeln!(
                    s,
                    "\n{} messages ({} points) were never acknowledged: possibly lost.",
                    t.messages_unacked, t.points_unacked
                );
            }
        } else {
            let _ = writeln!(s, "\nINCONSISTENT:");
            for p in problems {
                let _ = writeln!(s, "  {p}");
            }
        }
        s
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::message::Fault;

    fn report() -> Report {
        let mut c = Counters {
            messages_sent: 10,
            points_sent: 20,
            messages_acked: 9,
            points_acked: 18,
            ..Default::default()
        };
        c.messages_nacked = 1;
        c.points_nacked = 2;
        c.nacks.insert("too_large".into(), 1);
        c.faulty_sent.insert(Fault::Garbage, 2);
        c.faulty_nacked = 2;
        c.faulty_nacks.insert("invalid_json".into(), 2);
        c.sessions = 1;
        Report {
            target: "ws://x/v1/devices/{device}".into(),
            encoding: Encoding::Json,
            seed: 1,
            devices: 1,
            generating_s: 2.0,
            elapsed_s: 2.5,
            totals: c.clone(),
            profiles: vec![ProfileReport {
                name: "weather_station".into(),
                measurement: "weather".into(),
                devices: 1,
                interval_s: 1.0,
                points_per_message: 2,
                counters: c,
            }],
            ack_latency: None,
            wire: WireReport {
                bytes_sent: 5000,
                bytes_received: 100,
            },
            cpu: CpuUsage {
                user_s: 0.1,
                system_s: 0.1,
                cores_used: 0.08,
                machine_share: 0.04,
            },
            faults: Faults::default(),
            per_device: vec![],
        }
    }

    #[test]
    fn consistent_report() {
        let r = report();
        assert!(r.inconsistencies().is_empty());
        let table = r.table();
        assert!(table.contains("weather_station"), "{table}");
        assert!(table.contains("nacks        too_large 1"), "{table}");
        assert!(
            table.contains("faults       sent garbage 2; nacked 2 (invalid_json 2)"),
            "{table}"
        );
        assert!(table.contains("4.9 KiB sent"), "{table}");
        assert!(!table.contains("INCONSISTENT"), "{table}");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["totals"]["messages_acked"], 9);
        assert_eq!(v["rates"]["messages_sent_per_s"], 5.0);
        assert_eq!(v["consistent"], true);
        assert_eq!(v["profiles"][0]["nacks"]["too_large"], 1);
    }

    #[test]
    fn a_missing_answer_is_reported() {
        let mut r = report();
        r.totals.messages_acked -= 1;
        assert_eq!(r.inconsistencies().len(), 1);
        assert!(r.table().contains("INCONSISTENT"));
    }
}
