//! Counters for every refusal the security layer makes, in Prometheus text
//! format. No per-device labels (cardinality): per-device detail is in the
//! logs. Plain atomics, so the hot path pays one relaxed add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reasons a handshake is refused, as `reason` label values.
pub const HANDSHAKE_REASONS: &[&str] = &[
    "missing_token",
    "malformed_token",
    "invalid_token",
    "wrong_device",
    "bad_device_id",
    "origin",
    "server_full",
    "device_sessions",
];

/// Close codes a session may end with, as `code` label values.
pub const CLOSE_CODES: &[u16] = &[1000, 1001, 1002, 1007, 1008, 1009, 1011, 1013];

#[derive(Debug, Default)]
pub struct Metrics {
    handshakes_refused: [AtomicU64; 8],
    pub handshake_timeouts: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub sessions_replaced: AtomicU64,
    pub sessions_revoked: AtomicU64,
    pub messages_rate_limited: AtomicU64,
    pub points_rate_limited: AtomicU64,
    pub rate_limit_closes: AtomicU64,
    pub series_refused: AtomicU64,
    pub measurement_refused: AtomicU64,
    sessions_closed: [AtomicU64; 8],
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn handshake_refused(&self, reason: &str) {
        if let Some(i) = HANDSHAKE_REASONS.iter().position(|r| *r == reason) {
            inc(&self.handshakes_refused[i]);
        }
    }

    pub fn handshakes_refused(&self, reason: &str) -> u64 {
        HANDSHAKE_REASONS
            .iter()
            .position(|r| *r == reason)
            .map(|i| self.handshakes_refused[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn session_closed(&self, code: Option<u16>) {
        if let Some(i) = code.and_then(|c| CLOSE_CODES.iter().position(|x| *x == c)) {
            inc(&self.sessions_closed[i]);
        }
    }

    /// Append the counters in Prometheus text format, or in OpenMetrics
    /// (where a counter's family name has no `_total`; the caller writes
    /// `# EOF` after them).
    pub fn render(&self, out: &mut String, openmetrics: bool) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, values: &[(String, u64)]| {
            let family = match openmetrics {
                true => name.strip_suffix("_total").unwrap_or(name),
                false => name,
            };
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for (labels, v) in values {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let labelled = |key: &str, names: Vec<String>, cs: &[AtomicU64]| -> Vec<(String, u64)> {
            names
                .into_iter()
                .zip(cs)
                .map(|(n, c)| (format!("{{{key}=\"{n}\"}}"), get(c)))
                .collect()
        };
        counter(
            "wsingest_handshakes_refused_total",
            "WebSocket handshakes refused before the upgrade, by reason.",
            &labelled(
                "reason",
                HANDSHAKE_REASONS.iter().map(|s| s.to_string()).collect(),
                &self.handshakes_refused,
            ),
        );
        counter(
            "wsingest_sessions_closed_by_server_total",
            "Sessions the server closed, by WebSocket close code.",
            &labelled(
                "code",
                CLOSE_CODES.iter().map(|c| c.to_string()).collect(),
                &self.sessions_closed,
            ),
        );
        let plain: [(&str, &str, &AtomicU64); 9] = [
            (
                "wsingest_handshake_timeouts_total",
                "Connections closed for not finishing their handshake in time (slowloris).",
                &self.handshake_timeouts,
            ),
            (
                "wsingest_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                &self.tls_handshake_failures,
            ),
            (
                "wsingest_sessions_replaced_total",
                "Sessions closed (1008) because a newer session of the same device opened.",
                &self.sessions_replaced,
            ),
            (
                "wsingest_sessions_revoked_total",
                "Sessions closed (1008) because their token was revoked or rotated.",
                &self.sessions_revoked,
            ),
            (
                "wsingest_messages_rate_limited_total",
                "Messages nacked `rate_limited`.",
                &self.messages_rate_limited,
            ),
            (
                "wsingest_points_rate_limited_total",
                "Points in messages nacked `rate_limited`.",
                &self.points_rate_limited,
            ),
            (
                "wsingest_rate_limit_closes_total",
                "Sessions closed (1008) for persistent rate-limit abuse.",
                &self.rate_limit_closes,
            ),
            (
                "wsingest_series_refused_total",
                "Messages nacked `too_many_series` (cardinality guard).",
                &self.series_refused,
            ),
            (
                "wsingest_measurement_refused_total",
                "Messages nacked `forbidden_measurement`.",
                &self.measurement_refused,
            ),
        ];
        for (name, help, c) in plain {
            counter(name, help, &[(String::new(), get(c))]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        m.handshake_refused("wrong_device");
        m.handshake_refused("wrong_device");
        m.session_closed(Some(1009));
        inc(&m.messages_rate_limited);
        let mut s = String::new();
        m.render(&mut s, false);
        assert!(
            s.contains("wsingest_handshakes_refused_total{reason=\"wrong_device\"} 2"),
            "{s}"
        );
        assert!(
            s.contains("wsingest_sessions_closed_by_server_total{code=\"1009\"} 1"),
            "{s}"
        );
        assert!(s.contains("wsingest_messages_rate_limited_total 1"), "{s}");
        assert_eq!(m.handshakes_refused("wrong_device"), 2);
        let mut om = String::new();
        m.render(&mut om, true);
        assert!(
            om.contains("# TYPE wsingest_messages_rate_limited counter\nwsingest_messages_rate_limited_total 1\n"),
            "{om}"
        );
    }
}
