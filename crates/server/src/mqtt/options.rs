//! Building rumqttc's connection options from `[mqtt]`: the broker URL,
//! credentials, and TLS for `mqtts://` on our one rustls stack (ring
//! provider, see [`crate::tls`]).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::MqttError;
use super::config::{MqttConfig, parse_url};

/// A fresh random client id: several instances may share a broker, and a
/// broker disconnects the older of two clients with the same id.
pub fn random_client_id() -> String {
    format!("wsingest-{:016x}", rand::random::<u64>())
}

/// rumqttc options for `config`; `client_id` is fixed for the process.
pub fn build(config: &MqttConfig, client_id: &str) -> Result<MqttOptions, MqttError> {
    let url = config.url.as_deref().unwrap_or_default();
    let broker = parse_url(url).map_err(MqttError::Url)?;
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(1)));
    o.set_clean_session(config.clean_session);
    o.set_inflight(config.inflight);
    o.set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    let username = config.username.clone().or(broker.username);
    let password = config
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .or(broker.password);
    if let Some(user) = username {
        o.set_credentials(user, password.unwrap_or_default());
    }
    if broker.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(config)?),
        )));
    }
    Ok(o)
}

fn tls_config(config: &MqttConfig) -> Result<rustls::ClientConfig, MqttError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect())
                .map_err(|e| {
                    MqttError::Tls(format!(
                        "cannot read CA certificates from {}: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(MqttError::Tls(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    MqttError::Tls(format!("bad CA certificate in {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(MqttError::Tls(
                    "no system CA certificates found; install ca-certificates or set mqtt.ca_file"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.username),
            (false, "127.0.0.1", 1884, None)
        );
        let u = parse_url("mqtts://bob:p%40ss@broker.example").unwrap();
        assert_eq!((u.tls, u.port), (true, 8883));
        assert_eq!(u.username.as_deref(), Some("bob"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(parse_url("mqtt://[::1]").unwrap().host, "::1");
        for bad in [
            "http://x",
            "mqtt://",
            "broker:1883",
            "mqtt://h/topic",
            "mqtt://h?client_id=1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_with_a_missing_ca_file_is_a_clear_error() {
        let c = MqttConfig {
            url: Some("mqtts://h".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..MqttConfig::default()
        };
        let e = build(&c, "x").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
