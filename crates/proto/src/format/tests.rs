use std::collections::BTreeMap;

use serde_json::json;

use super::path::{Path, Seg, glob_match};
use super::presets::samples::*;
use super::*;
use crate::clock::ServerClock;
use crate::decode::{Decoder, DecoderConfig, Format, Message};
use crate::point::{FieldValue, Point};

fn decode(format: &str, v: serde_json::Value) -> Result<Vec<Point>, crate::decode::DecodeError> {
    let d = Decoder::new(DecoderConfig::default());
    let m = d.config().formats.get(format).expect("known").clone();
    let bytes = serde_json::to_vec(&v).unwrap();
    match d.decode_mapped(
        &bytes,
        Format::Json,
        &m,
        "dev-1",
        &ServerClock::frozen_at(1_000),
    )? {
        Message::Points { points, .. } => Ok(points),
        other => panic!("{other:?}"),
    }
}

fn custom(toml_text: &str) -> Mapping {
    let c: FormatConfig = toml::from_str(toml_text).expect("config parses");
    Mapping::compile("t", &c).expect("compiles")
}

fn apply(m: &Mapping, v: serde_json::Value) -> Result<Vec<Point>, crate::decode::DecodeError> {
    let d = Decoder::new(DecoderConfig::default());
    let bytes = serde_json::to_vec(&v).unwrap();
    match d.decode_mapped(
        &bytes,
        Format::Json,
        m,
        "dev-1",
        &ServerClock::frozen_at(1_000),
    )? {
        Message::Points { points, .. } => Ok(points),
        other => panic!("{other:?}"),
    }
}

fn field<'a>(p: &'a Point, name: &str) -> &'a FieldValue {
    &p.fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name} in {p:?}"))
        .1
}

fn num(p: &Point, name: &str) -> f64 {
    match field(p, name) {
        FieldValue::Float(f) => *f,
        FieldValue::Int(i) => *i as f64,
        FieldValue::UInt(u) => *u as f64,
        other => panic!("{name} is {other:?}"),
    }
}

fn tag<'a>(p: &'a Point, name: &str) -> Option<&'a str> {
    p.tags
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn paths_parse() {
    let p = Path::parse("a.b[0]").unwrap();
    assert_eq!(
        p.segs,
        vec![Seg::Key("a".into()), Seg::Key("b".into()), Seg::Index(0)]
    );
    let p = Path::parse(r#"params."switch:0".apower"#).unwrap();
    assert_eq!(p.segs[1], Seg::Key("switch:0".into()));
    let p = Path::parse(r#""a.b"[2].c"#).unwrap();
    assert_eq!(
        p.segs,
        vec![Seg::Key("a.b".into()), Seg::Index(2), Seg::Key("c".into())]
    );
    assert!(Path::parse("readings[*]").unwrap().has_each());
    assert!(Path::parse("$.src").unwrap().root);
    assert!(Path::parse("$key").unwrap().member_name);
    for bad in ["a..b", "a[", "a[x]", "\"open", "$x", "a.", ".a", "a\"b\""] {
        let e = Path::parse(bad).expect_err(bad);
        assert_eq!(e.path, bad);
    }
    assert_eq!(
        Path::parse(r#"a."x.y"[1]"#).unwrap().to_string(),
        r#"a."x.y"[1]"#
    );
}

#[test]
fn globs() {
    assert!(glob_match("meta.*", "meta.time"));
    assert!(glob_match("*", "a.b[0]"));
    assert!(glob_match("a?c", "abc"));
    assert!(!glob_match("meta.*", "data.meta"));
    assert!(glob_match("*_total", "aenergy_total"));
}

#[test]
fn flatten_tags_ts_and_globs() {
    let m = custom(
        r#"
        ts = { path = "meta.time", unit = "s" }
        measurement = "env"
        tags = { room = "meta.room" }
        fields = { exclude = ["meta.*"] }
        "#,
    );
    let p = apply(
        &m,
        json!({"meta": {"time": 1700000000, "room": "kitchen", "fw": "1.2"},
               "temp": 21.5, "ok": true, "name": "x", "nested": {"a": {"b": 1}}, "list": [1, 2], "skip": null}),
    )
    .unwrap();
    assert_eq!(p.len(), 1);
    let p = &p[0];
    assert_eq!(p.measurement, "env");
    assert_eq!(p.time_ns, 1_700_000_000_000_000_000);
    assert_eq!(tag(p, "room"), Some("kitchen"));
    assert_eq!(tag(p, "device"), Some("dev-1"));
    assert_eq!(num(p, "temp"), 21.5);
    assert_eq!(*field(p, "ok"), FieldValue::Bool(true));
    assert_eq!(*field(p, "name"), FieldValue::Str("x".into()));
    assert_eq!(num(p, "nested_a_b"), 1.0);
    assert_eq!(num(p, "list_1"), 2.0);
    assert!(
        p.fields.iter().all(|(k, _)| !k.starts_with("meta")),
        "{p:?}"
    );
    assert_eq!(p.fields.len(), 6);
}

#[test]
fn split_arrays_with_root_paths_and_units() {
    let m = custom(
        r#"
        split = "readings[*]"
        measurement = { path = "kind", default = "reading" }
        ts = { path = "t", unit = "ms" }
        tags = { gw = "$.gateway" }
        "#,
    );
    let p = apply(
        &m,
        json!({"gateway": "gw-7", "readings": [
            {"t": 1700000000123_u64, "kind": "temp", "v": 1.5},
            {"t": 1700000000124_u64, "v": 2}
        ]}),
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].measurement, "temp");
    assert_eq!(p[1].measurement, "reading");
    assert_eq!(p[0].time_ns, 1_700_000_000_123_000_000);
    assert_eq!(tag(&p[1], "gw"), Some("gw-7"));
    assert_eq!(p[1].fields.len(), 1);
    // Units: us, ns, text numbers, strftime with an offset.
    for (unit, v, want) in [
        (
            "us",
            json!(1700000000123456_u64),
            1_700_000_000_123_456_000_i64,
        ),
        (
            "ns",
            json!(1700000000123456789_u64),
            1_700_000_000_123_456_789,
        ),
        ("s", json!("1700000000.5"), 1_700_000_000_500_000_000),
        ("s", json!(1700000000.25), 1_700_000_000_250_000_000),
        ("auto", json!(1700000000), 1_700_000_000_000_000_000),
        ("auto", json!(1700000000123_u64), 1_700_000_000_123_000_000),
        (
            "rfc3339",
            json!("2023-11-14T22:13:20.5Z"),
            1_700_000_000_500_000_000,
        ),
    ] {
        let m = custom(&format!("ts = {{ path = \"t\", unit = \"{unit}\" }}"));
        let p = apply(&m, json!({"t": v, "x": 1})).unwrap();
        assert_eq!(p[0].time_ns, want, "{unit} {v}");
    }
    let m = custom(r#"ts = { path = "t", format = "%d/%m/%Y %H:%M:%S", tz = "+01:00" }"#);
    let p = apply(&m, json!({"t": "14/11/2023 23:13:20", "x": 1})).unwrap();
    assert_eq!(p[0].time_ns, 1_700_000_000_000_000_000);
}

#[test]
fn refusals_name_the_path() {
    let m = custom(r#"ts = { path = "t", unit = "rfc3339", required = true }"#);
    let e = apply(&m, json!({"x": 1})).unwrap_err();
    assert_eq!(e.code(), "invalid_timestamp");
    assert!(e.to_string().contains("(t) is absent"), "{e}");
    let e = apply(&m, json!({"t": "yesterday", "x": 1})).unwrap_err();
    assert!(
        e.to_string().contains("t: \"yesterday\" is not RFC 3339"),
        "{e}"
    );
    let m = custom(r#"split = "r[*]""#);
    let e = apply(&m, json!({"r": 5})).unwrap_err();
    assert_eq!(e.code(), "invalid_message");
    assert!(e.to_string().contains("split: r is a number"), "{e}");
    let e = apply(&m, json!({"r": [1]})).unwrap_err();
    assert!(e.to_string().contains("r[0] is a number"), "{e}");
    let e = apply(&m, json!({})).unwrap_err();
    assert!(e.to_string().contains("r is absent"), "{e}");
    // Two values flattening to one name.
    let m = custom("");
    let e = apply(&m, json!({"a_b": 1, "a": {"b": 2}})).unwrap_err();
    assert!(e.to_string().contains("both become field \"a_b\""), "{e}");
    let e = apply(&m, json!([1, 2])).unwrap_err();
    assert!(e.to_string().contains("not a JSON object"), "{e}");
    let e = apply(&m, json!({"nothing": null})).unwrap_err();
    assert!(
        e.to_string().contains("no value of the message is a field"),
        "{e}"
    );
    // The usual point checks still apply: a tag named device.
    let m = custom(r#"tags = { device = "d" }"#);
    let e = apply(&m, json!({"d": "x", "v": 1})).unwrap_err();
    assert_eq!(e.code(), "reserved_tag", "{e}");
    // Config errors name the key.
    let c: FormatConfig = toml::from_str(r#"split = "a.b""#).unwrap();
    let e = Mapping::compile("bad", &c).unwrap_err();
    assert!(e.to_string().starts_with("formats.bad.split:"), "{e}");
    let c: FormatConfig = toml::from_str(r#"tags = { x = "a[" }"#).unwrap();
    assert!(
        Mapping::compile("bad", &c)
            .unwrap_err()
            .to_string()
            .contains("formats.bad.tags.x")
    );
    assert!(toml::from_str::<FormatConfig>("bogus = 1").is_err());
}

#[test]
fn hostile_documents_are_refused_not_panicking() {
    let d = Decoder::new(DecoderConfig::default());
    let flat = d.config().formats.get("flat").unwrap().clone();
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let e = d.decode_mapped(
        deep.as_bytes(),
        Format::Json,
        &flat,
        "d",
        ServerClock::global(),
    );
    assert!(e.is_err());
    let mut many = serde_json::Map::new();
    for i in 0..100_000 {
        many.insert(format!("k{i}"), json!(i));
    }
    let e = decode("flat", serde_json::Value::Object(many)).unwrap_err();
    assert_eq!(e.code(), "too_large", "{e}");
    assert!(e.to_string().contains("100000 given"), "{e}");
    // Keys that need escaping in line protocol are escaped, not split.
    let p = decode("flat", json!({"a b,c=d": 1, "q\"": "x y"})).unwrap();
    let mut line = Vec::new();
    crate::lineproto::encode_point(&p[0], &mut line);
    assert_eq!(
        line.iter().filter(|b| **b == b'\n').count(),
        1,
        "{}",
        String::from_utf8_lossy(&line)
    );
    // Arrays of objects flatten with indexes.
    let p = decode("flat", json!({"l": [{"a": 1}, {"a": 2}]})).unwrap();
    assert_eq!(num(&p[0], "l_1_a"), 2.0);
    // Not JSON at all.
    let e = d.decode_mapped(b"{nope", Format::Json, &flat, "d", ServerClock::global());
    assert_eq!(e.unwrap_err().code(), "invalid_json");
}

#[test]
fn cbor_maps_like_json() {
    let d = Decoder::new(DecoderConfig::default());
    let flat = d.config().formats.get("flat").unwrap().clone();
    let v = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("ts".into()),
            ciborium::Value::Integer(1_700_000_000.into()),
        ),
        (
            ciborium::Value::Text("env".into()),
            ciborium::Value::Map(vec![(
                ciborium::Value::Integer(1.into()),
                ciborium::Value::Float(2.5),
            )]),
        ),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&v, &mut bytes).unwrap();
    let Message::Points { points, .. } = d
        .decode_mapped(&bytes, Format::Cbor, &flat, "d", ServerClock::global())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(points[0].time_ns, 1_700_000_000_000_000_000);
    assert_eq!(num(&points[0], "env_1"), 2.5);
}

#[test]
fn server_stamps_distinct_times_when_there_is_none() {
    let d = Decoder::new(DecoderConfig::default());
    let m = custom(r#"split = "r[*]""#);
    let bytes = serde_json::to_vec(&json!({"r": [{"v": 1}, {"v": 2}, {"v": 3}]})).unwrap();
    let Message::Points {
        points, stamped, ..
    } = d
        .decode_mapped(
            &bytes,
            Format::Json,
            &m,
            "d",
            &ServerClock::frozen_at(5_000),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(stamped.end - stamped.start, 3);
    let times: std::collections::HashSet<i64> = points.iter().map(|p| p.time_ns).collect();
    assert_eq!(times.len(), 3);
}

#[test]
fn seq_path_and_require() {
    let m = custom(
        r#"
        seq = "id"
        require = { kind = "data" }
        "#,
    );
    let d = Decoder::new(DecoderConfig::default());
    let bytes = serde_json::to_vec(&json!({"id": 7, "kind": "data", "v": 1})).unwrap();
    let Message::Points { seq, points, .. } = d
        .decode_mapped(&bytes, Format::Json, &m, "d", ServerClock::global())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(seq, Some(7));
    assert_eq!(points[0].fields.len(), 1, "id and kind are not fields");
    let e = apply(&m, json!({"id": 8, "kind": "other", "v": 1})).unwrap_err();
    assert_eq!(e.seq(), Some(8));
    assert!(e.to_string().contains("kind = \"data\""), "{e}");
}

// ---- presets, on payloads in the shapes the vendors document ----

#[test]
fn shelly_notify_status() {
    let p = decode(
        "shelly",
        serde_json::from_str(SHELLY_NOTIFY_STATUS).unwrap(),
    )
    .unwrap();
    assert_eq!(p.len(), 1);
    let p = &p[0];
    assert_eq!(p.measurement, "shelly");
    assert_eq!(tag(p, "component"), Some("switch:0"));
    assert_eq!(tag(p, "src"), Some("shellyplus1pm-441793d69718"));
    assert_eq!(p.time_ns, 1_732_543_391_520_000_000);
    assert_eq!(num(p, "apower"), 12.5);
    assert_eq!(num(p, "aenergy_total"), 1234.567);
    assert_eq!(num(p, "aenergy_by_minute_2"), 209.9);
    assert_eq!(num(p, "temperature_tC"), 41.2);
    assert!(p.fields.iter().all(|(k, _)| k != "id"));
}

#[test]
fn shelly_full_status_one_point_per_component() {
    let p = decode("shelly", serde_json::from_str(SHELLY_FULL_STATUS).unwrap()).unwrap();
    let comps: Vec<&str> = p.iter().map(|p| tag(p, "component").unwrap()).collect();
    // `ble: {}` and `available_updates: {}` have nothing to store.
    assert_eq!(
        comps,
        [
            "cloud",
            "devicepower:0",
            "humidity:0",
            "sys",
            "temperature:0",
            "wifi",
            "ws"
        ]
    );
    let wifi = &p[5];
    assert_eq!(*field(wifi, "ssid"), FieldValue::Str("Wohnung ü".into()));
    assert_eq!(num(wifi, "rssi"), -61.0);
    assert_eq!(num(&p[1], "battery_percent"), 83.0);
    assert!(p.iter().all(|p| p.time_ns == 1_732_543_400_000_000_000));
    // A NotifyEvent has no component status: refused, not dropped.
    let e = decode(
        "shelly",
        json!({"src":"shellyplus1-a8032ab12345","dst":"ws","method":"NotifyEvent",
               "params":{"ts":1732543401.0,"events":[{"component":"input:0","id":0,"event":"single_push","ts":1732543401.0}]}}),
    )
    .unwrap_err();
    assert_eq!(e.code(), "invalid_message");
}

#[test]
fn tasmota_sensor_and_state() {
    let p = decode("tasmota", serde_json::from_str(TASMOTA_SENSOR).unwrap()).unwrap();
    let p = &p[0];
    assert_eq!(p.measurement, "tasmota");
    assert_eq!(p.time_ns, 1_732_543_391_000_000_000);
    assert_eq!(num(p, "BME280_Temperature"), 21.3);
    assert_eq!(num(p, "ENERGY_Power"), 45.0);
    assert_eq!(
        *field(p, "ENERGY_TotalStartTime"),
        FieldValue::Str("2024-01-10T09:12:01".into())
    );
    assert!(p.fields.iter().all(|(k, _)| k != "Time" && k != "TempUnit"));
    let p = decode("tasmota", serde_json::from_str(TASMOTA_STATE).unwrap()).unwrap();
    assert_eq!(*field(&p[0], "POWER"), FieldValue::Str("ON".into()));
    assert_eq!(num(&p[0], "Wifi_RSSI"), 80.0);
    // SetOption52 adds the offset: still understood.
    let p = decode(
        "tasmota",
        json!({"Time": "2024-11-25T15:03:11+01:00", "ANALOG": {"A0": 512}}),
    )
    .unwrap();
    assert_eq!(p[0].time_ns, 1_732_543_391_000_000_000);
    // Without Time (older firmware): the server's time.
    let p = decode("tasmota", json!({"ANALOG": {"A0": 3}})).unwrap();
    assert_eq!(p[0].fields.len(), 1);
}

#[test]
fn owntracks_location() {
    let p = decode(
        "owntracks",
        serde_json::from_str(OWNTRACKS_LOCATION).unwrap(),
    )
    .unwrap();
    let p = &p[0];
    assert_eq!(p.measurement, "location");
    assert_eq!(tag(p, "tid"), Some("JJ"));
    assert_eq!(p.time_ns, 1_732_543_391_000_000_000);
    assert_eq!(num(p, "lat"), 48.856826);
    assert_eq!(*field(p, "conn"), FieldValue::Str("w".into()));
    assert!(
        p.fields
            .iter()
            .all(|(k, _)| k != "SSID" && k != "topic" && k != "tst")
    );
    // Optional fields missing (iOS sends fewer).
    let p = decode(
        "owntracks",
        json!({"_type":"location","lat":1.5,"lon":2.5,"tst":1732543391,"tid":"ip"}),
    )
    .unwrap();
    assert_eq!(p[0].fields.len(), 2);
    let e = decode("owntracks", json!({"_type":"lwt","tst":1732543391})).unwrap_err();
    assert!(e.to_string().contains("_type = \"location\""), "{e}");
}

#[test]
fn ttn_uplink() {
    let p = decode("ttn", serde_json::from_str(TTN_UPLINK).unwrap()).unwrap();
    let p = &p[0];
    assert_eq!(p.measurement, "lorawan");
    assert_eq!(p.time_ns, 1_732_543_391_123_456_789);
    assert_eq!(tag(p, "application"), Some("greenhouse"));
    assert_eq!(tag(p, "dev_eui"), Some("70B3D57ED005D0D3"));
    assert_eq!(tag(p, "ttn_device"), Some("eui-70b3d57ed005d0d3"));
    assert_eq!(num(p, "temperature"), 22.38);
    assert_eq!(num(p, "battery_voltage"), 3.61);
    assert_eq!(*field(p, "battery_low"), FieldValue::Bool(false));
    assert_eq!(*field(p, "label"), FieldValue::Str("nördlich".into()));
    assert_eq!(num(p, "rssi"), -87.0);
    assert_eq!(num(p, "snr"), 7.25);
    assert_eq!(num(p, "f_cnt"), 317.0);
    // No payload formatter: no decoded_payload, still the radio fields.
    let mut v: serde_json::Value = serde_json::from_str(TTN_UPLINK).unwrap();
    v["uplink_message"]
        .as_object_mut()
        .unwrap()
        .remove("decoded_payload");
    let p = decode("ttn", v).unwrap();
    assert_eq!(p[0].fields.len(), 4);
}

#[test]
fn flat_preset() {
    let p = decode(
        "flat",
        json!({"time": "2024-11-25T14:03:11Z", "a": {"b": {"c": 1}}, "s": "x"}),
    )
    .unwrap();
    assert_eq!(p[0].measurement, "telemetry");
    assert_eq!(p[0].time_ns, 1_732_543_391_000_000_000);
    assert_eq!(num(&p[0], "a_b_c"), 1.0);
}

#[test]
fn presets_compile_and_round_trip() {
    let f = Formats::default();
    assert_eq!(
        f.names().collect::<Vec<_>>(),
        ["flat", "owntracks", "shelly", "tasmota", "ttn"]
    );
    let e = f.lookup("nope").unwrap_err();
    assert!(
        e.to_string()
            .contains("use one of flat, owntracks, shelly, tasmota, ttn"),
        "{e}"
    );
    // A custom format may replace a preset.
    let mut custom = BTreeMap::new();
    custom.insert("tasmota".to_string(), FormatConfig::default());
    assert!(
        Formats::build(&custom)
            .unwrap()
            .get("tasmota")
            .unwrap()
            .description()
            .is_empty()
    );
    let mut bad = BTreeMap::new();
    bad.insert("a b".to_string(), FormatConfig::default());
    assert!(Formats::build(&bad).is_err());
}
