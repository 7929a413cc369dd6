//! TLS plumbing. One TLS stack (rustls) with one crypto provider (ring), used
//! by the InfluxDB client and, later, the wss listener and MQTT bridge.

/// Install ring as rustls' process-wide provider (idempotent).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
