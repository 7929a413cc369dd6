//! SenML (RFC 8428) sessions end to end: the RFC's packs over `senml+json`
//! and `senml+cbor` land in InfluxDB, and packs are acked by their ordinal.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsingest_harness::*;

/// RFC 8428 §5.1.2 (second pack) in CBOR, as printed in §6.
const RFC_CBOR_HEX: &str = "87a721781b75726e3a6465763a6f773a3130653230373361303130383030363a22fb41d303a15b00106223614120050067766f6c7461676501615602fb405e066666666666a300676375727265\
6e740624 02fb3ff3333333333333a3006763757272656e740623 02fb3ff4cccccccccccda3006763757272656e740622 02fb3ff6666666666666a3006763757272656e74062102f93e00a3006763757272656e74062002fb3ff999999999999aa3006763757272656e74060002fb3ffb333333333333";

fn rfc_cbor() -> Vec<u8> {
    let hex: String = RFC_CBOR_HEX
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn senml_packs_are_acked_by_ordinal_and_stored() {
    let influx = Influxd::start().await;
    influx.create_db("senml").await;
    let server = TestServer::start(test_config(&influx.url, "senml")).await;

    let mut ws = connect(&server.ws_url("/v1/devices/probe-1"), Some("senml+json")).await;
    ws.send(Message::text(
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"n":"temp","u":"Cel","v":23.1},
            {"n":"label","vs":"Machine Room"},{"n":"open","vb":false}]"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"ack": 1}));
    ws.send(Message::text(r#"[{"n":"_bad","v":1}]"#))
        .await
        .unwrap();
    let nack = next_json(&mut ws).await;
    assert_eq!(
        (nack["nack"].clone(), nack["error"].clone()),
        (json!(2), json!("invalid_message")),
        "{nack}"
    );

    let mut cbor = connect(&server.ws_url("/v1/devices/meter-1"), Some("senml+cbor")).await;
    cbor.send(Message::binary(rfc_cbor())).await.unwrap();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::StreamExt::next(&mut cbor),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let Message::Binary(b) = reply else {
        panic!("senml+cbor replies in CBOR: {reply:?}")
    };
    let v: ciborium::Value = ciborium::from_reader(&b[..]).unwrap();
    assert_eq!(serde_json::to_value(v).unwrap(), json!({"ack": 1}));

    // `name` must be quoted in InfluxQL.
    let q = "SELECT v, vs, vb, unit FROM senml WHERE device = 'probe-1' GROUP BY \"name\"";
    let rows = influx.rows("senml", q).await;
    assert_eq!(
        rows,
        vec![
            vec![
                json!(1320067464000000000u64),
                json!(null),
                json!("Machine Room"),
                json!(null),
                json!(null)
            ],
            vec![
                json!(1320067464000000000u64),
                json!(null),
                json!(null),
                json!(false),
                json!(null)
            ],
            vec![
                json!(1320067464000000000u64),
                json!(23.1),
                json!(null),
                json!(null),
                json!("Cel")
            ],
        ]
    );
    let rows = influx
        .rows("senml", "SELECT v, unit FROM senml WHERE device = 'meter-1' AND \"name\" = 'urn:dev:ow:10e2073a0108006:current'")
        .await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_f64().unwrap(), r[2].clone()))
        .collect();
    assert_eq!(got.len(), 6);
    assert_eq!(got[0], (1276020071001000000, 1.2, json!("A")));
    assert_eq!(got[5], (1276020076001000000, 1.7, json!("A")));
    server.stop().await;
}
