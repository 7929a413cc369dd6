//! Every transport carries the same points into InfluxDB identically: the
//! same workload over WebSocket (JSON, CBOR), MQTT (through a real mosquitto
//! and wsingest's subscriber), HTTP/1.1, HTTP/2 and gRPC gives the same
//! InfluxQL result, and that result is what the devices sent.

use std::net::SocketAddr;
use std::time::Duration;

use wsingest_harness::*;
use wsingest_tools::compare::transports::{self, Kind, Payload, Target};
use wsingest_tools::compare::workload;

/// The messages: three 2-point batches, then a single point (seq 10, so its
/// timestamp is its own).
const MESSAGES: [(u64, usize); 4] = [(1, 2), (2, 2), (3, 2), (10, 1)];

/// Send [`MESSAGES`] and wait for their acks.
async fn send_workload(kind: Kind, target: &Target, device: &str) {
    let mut c = transports::connect(kind, target, device).await.unwrap();
    for (seq, points) in MESSAGES {
        c.sender
            .send(seq, &workload::readings(seq, points))
            .await
            .unwrap();
        let a = tokio::time::timeout(Duration::from_secs(10), c.answers.recv())
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: no answer to {seq}"))
            .unwrap();
        assert_eq!((a.seq, a.ok), (seq, true), "{kind:?}");
    }
}

#[tokio::test]
async fn every_transport_stores_the_same_points() {
    let influx = Influxd::start().await;
    influx.create_db("same").await;
    let config = test_config(&influx.url, "same");
    let server = TestServer::start(config.clone()).await;
    let mqtt = Mosquitto::start().await;
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], mqtt.port));
    let stop = tokio_util::sync::CancellationToken::new();
    let ingest = tokio::spawn(wsingest_tools::compare::mqtt_ingest::run(
        config,
        broker_addr,
        Payload::Json,
        stop.clone(),
    ));

    let target = Target {
        server: server.addr,
        broker: Some(broker_addr),
        payload: Payload::Json,
        mqtt_qos: 1,
    };
    // wsingest's subscriber is live once a probe comes back acked.
    eventually(20, "the MQTT subscriber", || {
        let target = target.clone();
        async move {
            let mut c = transports::connect(Kind::Mqtt, &target, "probe")
                .await
                .ok()?;
            c.sender.send(1, &workload::readings(1, 1)).await.ok()?;
            tokio::time::timeout(Duration::from_millis(300), c.answers.recv())
                .await
                .ok()
                .flatten()
        }
    })
    .await;

    for kind in Kind::ALL {
        send_workload(kind, &target, &format!("same-{kind:?}")).await;
    }
    // The HTTP fallback with CBOR bodies too.
    let cbor = Target {
        payload: Payload::Cbor,
        ..target.clone()
    };
    for kind in [Kind::Http1, Kind::Http2] {
        send_workload(kind, &cbor, &format!("same-cbor-{kind:?}")).await;
    }

    let mut expected: Vec<(i64, f64, f64, bool)> = MESSAGES
        .iter()
        .flat_map(|(seq, points)| workload::readings(*seq, *points))
        .map(|r| (r.ts_ms * 1_000_000, r.temp_c, r.humidity, r.ok))
        .collect();
    expected.sort_by_key(|r| r.0);
    assert_eq!(expected.len(), 7);
    let devices = Kind::ALL
        .iter()
        .map(|k| format!("same-{k:?}"))
        .chain(["same-cbor-Http1".into(), "same-cbor-Http2".into()]);
    for device in devices {
        let q = format!("SELECT temp_c, humidity, ok FROM compare WHERE device = '{device}'");
        let rows: Vec<(i64, f64, f64, bool)> = influx
            .rows("same", &q)
            .await
            .iter()
            .map(|r| {
                (
                    r[0].as_i64().unwrap(),
                    r[1].as_f64().unwrap(),
                    r[2].as_f64().unwrap(),
                    r[3].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(rows, expected, "{device} stored something else");
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), ingest).await;
    server.stop().await;
}
