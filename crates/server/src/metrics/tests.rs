use super::*;

#[test]
fn names_labels_and_format() {
    let m = Metrics::new();
    m.sessions_opened.inc();
    m.sessions_open.inc();
    m.session_closed(Some(1007));
    m.session_closed(None);
    m.session_closed(SessionEnd::Device);
    m.decode_error("invalid_json");
    m.nack("rate_limited");
    m.bytes.inc_by(123);
    m.write_request(Some(204), 0.002);
    m.bridge().dropped("queue_full", 3);
    m.spool().set_size(4096, 2);
    m.spool().max_bytes.set(1 << 30);
    assert!(
        !m.encode_prometheus()
            .lines()
            .any(|l| l.starts_with("wsingest_influxdb_up")),
        "no InfluxDB sink reported yet: no sample"
    );
    m.influxdb_up(false);
    let t = m.encode_prometheus();
    assert_eq!(find_sample(&t, "wsingest_influxdb_up"), Some(0.0), "{t}");
    assert_eq!(
        find_sample(&t, "wsingest_spool_max_bytes"),
        Some(1073741824.0),
        "{t}"
    );
    assert_eq!(
        find_sample(&t, "wsingest_sessions_opened_total"),
        Some(1.0),
        "{t}"
    );
    assert_eq!(find_sample(&t, "wsingest_sessions_open"), Some(1.0));
    assert_eq!(
        find_sample(&t, "wsingest_sessions_closed_total{code=\"1007\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_sessions_closed_total{code=\"dropped\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_sessions_closed_total{code=\"device\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_decode_errors_total{reason=\"invalid_json\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_nacks_total{reason=\"invalid_json\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_received_bytes_total"),
        Some(123.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_write_requests_total{outcome=\"2xx\"}"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_write_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        find_sample(&t, "wsingest_bridge_dropped_total{reason=\"queue_full\"}"),
        Some(3.0)
    );
    assert_eq!(find_sample(&t, "wsingest_spool_bytes"), Some(4096.0));
    assert!(
        t.contains("# TYPE wsingest_write_duration_seconds histogram"),
        "{t}"
    );
    let s = m.snapshot();
    assert_eq!(
        (s.decode_errors, s.nacks, s.sessions_closed, s.writes),
        (1, 2, 3, 1)
    );
    assert!((s.write_seconds_sum - 0.002).abs() < 1e-9);
    assert_eq!(s.bridge_dropped, 3);
    assert!(m.encode_openmetrics().ends_with("# EOF\n"));
}
