//! Counters for every refusal the security layer makes. No per-device labels
//! (cardinality): per-device detail is in the logs. They are prometheus-client
//! counters registered in the server's one registry ([`crate::metrics`]), so
//! `/metrics` has a single encoder for both text formats; the hot path pays
//! one relaxed add.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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

/// Close codes the server sends, as `code` label values.
pub const CLOSE_CODES: &[u16] = &[1000, 1001, 1002, 1007, 1008, 1009, 1011, 1013];

type ByLabel = Family<Vec<(&'static str, String)>, Counter>;

/// The security layer's counters (clones share the values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    handshakes_refused: ByLabel,
    sessions_closed: ByLabel,
    pub handshake_timeouts: Counter,
    pub tls_handshake_failures: Counter,
    pub sessions_replaced: Counter,
    pub sessions_revoked: Counter,
    pub messages_rate_limited: Counter,
    pub points_rate_limited: Counter,
    pub rate_limit_closes: Counter,
    pub series_refused: Counter,
    pub measurement_refused: Counter,
}

impl Metrics {
    /// Counters at zero for every reason and code, so dashboards and alerts
    /// see the series before the first refusal.
    pub fn new() -> Self {
        let m = Metrics::default();
        for r in HANDSHAKE_REASONS {
            let _ = m.handshakes_refused.get_or_create(&reason(r));
        }
        for c in CLOSE_CODES {
            let _ = m.sessions_closed.get_or_create(&code(*c));
        }
        m
    }

    /// Add every counter to `r` (whose prefix is `wsingest`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "handshakes_refused",
            "WebSocket handshakes refused before the upgrade, by reason.",
            self.handshakes_refused.clone(),
        );
        r.register(
            "sessions_closed_by_server",
            "Sessions the server closed, by WebSocket close code.",
            self.sessions_closed.clone(),
        );
        let plain: [(&str, &str, &Counter); 9] = [
            (
                "handshake_timeouts",
                "Connections closed for not finishing their handshake in time (slowloris).",
                &self.handshake_timeouts,
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes that failed or timed out.",
                &self.tls_handshake_failures,
            ),
            (
                "sessions_replaced",
                "Sessions closed (1008) because a newer session of the same device opened.",
                &self.sessions_replaced,
            ),
            (
                "sessions_revoked",
                "Sessions closed (1008) because their token was revoked or rotated.",
                &self.sessions_revoked,
            ),
            (
                "messages_rate_limited",
                "Messages nacked `rate_limited`.",
                &self.messages_rate_limited,
            ),
            (
                "points_rate_limited",
                "Points in messages nacked `rate_limited`.",
                &self.points_rate_limited,
            ),
            (
                "rate_limit_closes",
                "Sessions closed (1008) for persistent rate-limit abuse.",
                &self.rate_limit_closes,
            ),
            (
                "series_refused",
                "Messages nacked `too_many_series` (cardinality guard).",
                &self.series_refused,
            ),
            (
                "measurement_refused",
                "Messages nacked `forbidden_measurement`.",
                &self.measurement_refused,
            ),
        ];
        for (name, help, c) in plain {
            r.register(name, help, c.clone());
        }
    }

    pub fn handshake_refused(&self, r: &str) {
        if let Some(r) = HANDSHAKE_REASONS.iter().find(|x| **x == r) {
            self.handshakes_refused.get_or_create(&reason(r)).inc();
        }
    }

    pub fn handshakes_refused(&self, r: &str) -> u64 {
        self.handshakes_refused.get_or_create(&reason(r)).get()
    }

    /// A session the server closed with `c` (`None`: not the server's close).
    pub fn session_closed(&self, c: Option<u16>) {
        if let Some(c) = c.filter(|c| CLOSE_CODES.contains(c)) {
            self.sessions_closed.get_or_create(&code(c)).inc();
        }
    }
}

fn reason(r: &str) -> Vec<(&'static str, String)> {
    vec![("reason", r.to_owned())]
}

fn code(c: u16) -> Vec<(&'static str, String)> {
    vec![("code", c.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_in_the_registry_in_both_formats() {
        let m = Metrics::new();
        let mut r = Registry::with_prefix("wsingest");
        m.register(&mut r);
        m.handshake_refused("wrong_device");
        m.handshake_refused("wrong_device");
        m.handshake_refused("not a reason");
        m.session_closed(Some(1009));
        m.messages_rate_limited.inc();
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        assert!(
            s.contains("wsingest_handshakes_refused_total{reason=\"wrong_device\"} 2"),
            "{s}"
        );
        assert!(
            s.contains("wsingest_handshakes_refused_total{reason=\"origin\"} 0"),
            "{s}"
        );
        assert!(
            s.contains("wsingest_sessions_closed_by_server_total{code=\"1009\"} 1"),
            "{s}"
        );
        assert!(s.contains("wsingest_messages_rate_limited_total 1"), "{s}");
        assert!(
            s.contains("# TYPE wsingest_messages_rate_limited counter\n"),
            "{s}"
        );
        assert_eq!(m.handshakes_refused("wrong_device"), 2);
    }
}
