//! The device generator against a real server and a real influxd: what the
//! summary says was acked is what InfluxDB holds, per device; drops and
//! resends lose nothing and store nothing twice; faulty messages are nacked
//! by reason. Commands, tokens, source addresses and reconnect backoff are
//! driven by a small WebSocket server on the test side.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use wsingest_harness::*;
use wsingest_tools::simulate::device::DeviceResult;
use wsingest_tools::simulate::faults::Faults;
use wsingest_tools::simulate::message::{Encoding, Fault};
use wsingest_tools::simulate::profile::{self, Profile};
use wsingest_tools::simulate::tokens::Tokens;
use wsingest_tools::simulate::{Fleet, FleetConfig, Report};

fn devices_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("devices")
}

fn shipped(name: &str) -> Profile {
    Profile::load(&devices_dir().join(format!("{name}.toml"))).unwrap()
}

fn config(url: String, profiles: Vec<(Profile, usize)>) -> FleetConfig {
    FleetConfig {
        url,
        profiles,
        duration: Some(Duration::from_secs(3)),
        drain_timeout: Duration::from_secs(20),
        seed: 42,
        per_device: true,
        ..FleetConfig::default()
    }
}

async fn run(config: FleetConfig) -> Report {
    tokio::time::timeout(Duration::from_secs(90), async {
        Fleet::start(config).await.unwrap().finish().await
    })
    .await
    .expect("the fleet finishes")
}

async fn setup(db: &str) -> (Influxd, TestServer) {
    let influx = Influxd::start().await;
    influx.create_db(db).await;
    let server = TestServer::start(test_config(&influx.url, db)).await;
    (influx, server)
}

/// Points acked per device, from the report.
fn acked_points(devices: &[DeviceResult], profile: &str) -> BTreeMap<String, u64> {
    devices
        .iter()
        .filter(|d| d.profile == profile && d.counters.points_acked > 0)
        .map(|d| (d.id.clone(), d.counters.points_acked))
        .collect()
}

fn assert_consistent(r: &Report) {
    assert!(
        r.inconsistencies().is_empty(),
        "{:?}\n{}",
        r.inconsistencies(),
        r.table()
    );
    let t = &r.totals;
    assert_eq!(t.messages_unacked, 0, "{}", r.table());
    assert_eq!(
        t.messages_sent,
        t.messages_acked + t.messages_nacked,
        "{}",
        r.table()
    );
    assert_eq!(
        t.points_sent,
        t.points_acked + t.points_nacked,
        "{}",
        r.table()
    );
}

/// 50 devices of every shipped profile for a few seconds: per device, the
/// points in InfluxDB are the points acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_lands_in_influxdb_per_device() {
    let (influx, server) = setup("sim_mixed").await;
    let profiles: Vec<(Profile, usize)> = profile::list(&devices_dir())
        .unwrap()
        .iter()
        .map(|p| (Profile::load(p).unwrap(), 10))
        .collect();
    assert_eq!(profiles.len(), 5);
    let r = run(config(server.ws_url(""), profiles.clone())).await;
    assert_consistent(&r);
    assert_eq!(r.devices, 50);
    assert_eq!(r.totals.messages_nacked, 0, "{}", r.table());
    for (p, _) in &profiles {
        let field = p.fields.keys().next().unwrap();
        let stored = influx
            .count_by("sim_mixed", &p.measurement, field, "device")
            .await;
        let acked = acked_points(&r.per_device, &p.name);
        assert!(
            !acked.is_empty(),
            "{}: nothing acked\n{}",
            p.name,
            r.table()
        );
        assert_eq!(stored, acked, "{}: InfluxDB vs acked per device", p.name);
    }
    // Batch profiles really batch: 100 points per vibration message.
    let vib = r
        .profiles
        .iter()
        .find(|p| p.name == "vibration_sensor")
        .unwrap();
    assert_eq!(vib.counters.points_sent, 100 * vib.counters.messages_sent);
    // Battery sensors slept after their burst: one session each, 3 messages.
    let soil = r
        .profiles
        .iter()
        .find(|p| p.name == "battery_sensor")
        .unwrap();
    assert_eq!(
        (soil.counters.sessions, soil.counters.messages_sent),
        (10, 30),
        "{}",
        r.table()
    );
    assert!(r.ack_latency.as_ref().unwrap().count == r.totals.messages_acked);
    assert!(r.wire.bytes_sent > 0 && r.wire.bytes_received > 0);
    server.stop().await;
}

/// Connections dropped every 4 messages: every message is acked in the end,
/// InfluxDB holds each exactly once (count = distinct seq = messages sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_resend_without_loss_or_duplicates() {
    let (influx, server) = setup("sim_drops").await;
    let mut c = config(
        server.ws_url(""),
        vec![
            (shipped("smart_meter"), 8),
            (shipped("vibration_sensor"), 2),
        ],
    );
    c.rate = Some(20.0);
    c.encoding = Encoding::Cbor;
    c.seq_field = Some("sim_seq".into());
    c.faults = Faults {
        drop_every: Some(4),
        ..Faults::default()
    };
    c.backoff_base = Duration::from_millis(20);
    let r = run(c).await;
    assert_consistent(&r);
    let t = &r.totals;
    assert!(
        t.drops_injected >= 10 && t.reconnects >= 10,
        "{}",
        r.table()
    );
    assert!(
        t.messages_resent > 0,
        "drops left messages to resend: {}",
        r.table()
    );
    for d in &r.per_device {
        assert_eq!(
            d.counters.messages_acked, d.counters.messages_sent,
            "{}",
            d.id
        );
    }
    let meters = influx
        .count_by("sim_drops", "meter", "sim_seq", "device")
        .await;
    let distinct = influx
        .rows(
            "sim_drops",
            "SELECT count(distinct(\"sim_seq\")) FROM meter GROUP BY device",
        )
        .await
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(meters, acked_points(&r.per_device, "smart_meter"));
    assert_eq!(
        distinct,
        meters.values().copied().collect::<Vec<_>>(),
        "no seq stored twice"
    );
    let vib = influx
        .count_by("sim_drops", "vibration", "sim_seq", "device")
        .await;
    assert_eq!(vib, acked_points(&r.per_device, "vibration_sensor"));
    server.stop().await;
}

/// SenML devices (packs carry no seq; the server numbers them per session)
/// with drops every 4 messages: every record acked is stored once, per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senml_fleet_through_drops_stores_every_acked_record_once() {
    let (influx, server) = setup("sim_senml").await;
    let mut devices = Vec::new();
    for encoding in [Encoding::SenmlJson, Encoding::SenmlCbor] {
        let mut c = config(server.ws_url(""), vec![(shipped("smart_meter"), 4)]);
        c.id_prefix = format!("{encoding:?}-").to_lowercase();
        c.rate = Some(20.0);
        c.duration = Some(Duration::from_secs(2));
        c.encoding = encoding;
        c.seq_field = Some("sim_seq".into());
        c.faults = Faults {
            drop_every: Some(4),
            garbage: 0.1,
            ..Faults::default()
        };
        c.backoff_base = Duration::from_millis(20);
        let r = run(c).await;
        assert_consistent(&r);
        let t = &r.totals;
        assert!(
            t.messages_resent > 0 && t.faulty_nacked > 0,
            "{}",
            r.table()
        );
        assert_eq!(t.messages_nacked, 0, "{}", r.table());
        devices.extend(r.per_device);
    }
    let rows = |q: &'static str| {
        let influx = &influx;
        async move {
            influx
                .rows("sim_senml", q)
                .await
                .iter()
                .map(|row| row[1].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    // Every record is a point: numbers in `v`, the relay state in `vb`.
    let numbers = influx.count_by("sim_senml", "senml", "v", "device").await;
    let bools = influx.count_by("sim_senml", "senml", "vb", "device").await;
    assert_eq!(numbers.len(), 8, "{numbers:?}");
    let stored: BTreeMap<String, u64> = numbers
        .iter()
        .map(|(d, n)| (d.clone(), n + bools.get(d).copied().unwrap_or(0)))
        .collect();
    assert_eq!(
        stored,
        acked_points(&devices, "smart_meter"),
        "InfluxDB vs acked per device"
    );
    let seqs =
        rows("SELECT count(v) FROM senml WHERE \"name\" = 'meter:sim_seq' GROUP BY device").await;
    let distinct = rows(
        "SELECT count(distinct(v)) FROM senml WHERE \"name\" = 'meter:sim_seq' GROUP BY device",
    )
    .await;
    assert_eq!(seqs, distinct, "no message stored twice");
    // Series come back sorted by device id, as `devices` is built.
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    let messages: Vec<u64> = devices.iter().map(|d| d.counters.messages_acked).collect();
    assert_eq!(seqs, messages, "one sim_seq record per message acked");
    server.stop().await;
}

/// Garbage, NaN and oversize messages are nacked and counted by reason, and
/// do not disturb the telemetry around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_messages_are_nacked_by_reason_and_valid_traffic_is_unaffected() {
    let (influx, server) = setup("sim_faults").await;
    for encoding in [Encoding::Json, Encoding::Cbor] {
        let mut c = config(server.ws_url(""), vec![(shipped("weather_station"), 6)]);
        c.id_prefix = format!("{encoding:?}-").to_lowercase();
        c.rate = Some(10.0);
        c.duration = Some(Duration::from_secs(2));
        c.encoding = encoding;
        c.faults = Faults {
            garbage: 0.2,
            nan: 0.1,
            oversize: 0.05,
            ..Faults::default()
        };
        let r = run(c).await;
        assert_consistent(&r);
        let t = &r.totals;
        assert_eq!(t.messages_nacked, 0, "{}", r.table());
        assert_eq!(
            t.faulty_nacked,
            t.faulty_sent_total(),
            "every faulty message is nacked: {}",
            r.table()
        );
        assert_eq!(t.faulty_unanswered, 0);
        let n = |f: Fault| t.faulty_sent.get(&f).copied().unwrap_or(0);
        assert!(n(Fault::Garbage) > 0 && n(Fault::Nan) > 0, "{}", r.table());
        let reasons: BTreeMap<&str, u64> = t
            .faulty_nacks
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let expected: BTreeMap<&str, u64> = match encoding {
            // NaN is not JSON at all.
            Encoding::Json | Encoding::SenmlJson => [
                ("invalid_json", n(Fault::Garbage) + n(Fault::Nan)),
                ("too_large", n(Fault::Oversize)),
            ]
            .into(),
            Encoding::Cbor | Encoding::SenmlCbor => [
                ("invalid_cbor", n(Fault::Garbage)),
                ("invalid_field", n(Fault::Nan)),
                ("too_large", n(Fault::Oversize)),
            ]
            .into(),
        };
        let expected: BTreeMap<&str, u64> = expected.into_iter().filter(|(_, v)| *v > 0).collect();
        assert_eq!(reasons, expected, "{encoding:?}");
        let stored: u64 = influx
            .count_by("sim_faults", "weather", "temp_c", "device")
            .await
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{encoding:?}-").to_lowercase()))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(stored, t.points_acked);
        assert_eq!(stored, t.points_sent);
    }
    server.stop().await;
}

/// What a test-side WebSocket server saw of one connection.
#[derive(Debug)]
struct Seen {
    peer: SocketAddr,
    authorization: Option<String>,
    protocol: Option<String>,
}

/// A WebSocket server on the test side: records each handshake, acks every
/// telemetry message, reports messages on `rx` and sends what is pushed into
/// the per-connection command channel.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// (connection number, message) for every data frame received.
    rx: mpsc::Receiver<(usize, serde_json::Value)>,
    /// Commands for the current connection.
    cmd: Arc<Mutex<Option<mpsc::Sender<serde_json::Value>>>>,
}

impl Fake {
    async fn start(listener: TcpListener) -> Fake {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cmd: Arc<Mutex<Option<mpsc::Sender<serde_json::Value>>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel(10_000);
        let (seen2, cmd2) = (seen.clone(), cmd.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, peer)) = listener.accept().await {
                n += 1;
                let conn = n;
                let seen = seen2.clone();
                // tungstenite's callback signature, not ours.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, mut resp: Response| {
                    let h = |k: &str| {
                        req.headers()
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let protocol = h("sec-websocket-protocol");
                    if let Some(p) = &protocol {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", p.parse().unwrap());
                    }
                    seen.lock().unwrap().push(Seen {
                        peer,
                        authorization: h("authorization"),
                        protocol,
                    });
                    Ok(resp)
                };
                let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
                    .await
                    .unwrap();
                let (ctx, mut crx) = mpsc::channel::<serde_json::Value>(16);
                *cmd2.lock().unwrap() = Some(ctx);
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            m = ws.next() => match m {
                                Some(Ok(Message::Text(t))) => {
                                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                                    if let Some(seq) = v.get("seq") {
                                        let ack = json!({"ack": seq}).to_string();
                                        if ws.send(Message::text(ack)).await.is_err() { break; }
                                    }
                                    let _ = tx.send((conn, v)).await;
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                            Some(c) = crx.recv() => {
                                if ws.send(Message::text(c.to_string())).await.is_err() { break; }
                            }
                        }
                    }
                });
            }
        });
        Fake {
            addr,
            seen,
            rx,
            cmd,
        }
    }

    async fn next(&mut self) -> (usize, serde_json::Value) {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a message within 10 s")
            .unwrap()
    }

    fn command(&self, v: serde_json::Value) {
        self.cmd
            .lock()
            .unwrap()
            .as_ref()
            .expect("a device is connected")
            .try_send(v)
            .unwrap();
    }

    /// The next message that is not telemetry.
    async fn next_reply(&mut self) -> (usize, serde_json::Value) {
        loop {
            let (c, v) = self.next().await;
            if v.get("seq").is_none() {
                return (c, v);
            }
        }
    }
}

/// `set_interval` changes the rate (seen in the devices' own timestamps),
/// `reboot` reconnects and seq numbers go on; both answered with
/// `cmd_result`. The handshake carries the device's token and subprotocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_change_the_rate_and_reboot() {
    let mut fake = Fake::start(TcpListener::bind("127.0.0.1:0").await.unwrap()).await;
    let mut c = config(
        format!("ws://{}", fake.addr),
        vec![(shipped("smart_meter"), 1)],
    );
    c.rate = Some(20.0);
    c.duration = Some(Duration::from_secs(30));
    c.tokens = Some(Tokens::parse("meter-0001 tok-secret-1\n", Path::new("tokens")).unwrap());
    let fleet = Fleet::start(c).await.unwrap();
    let gaps =
        |ts: &[i64]| ts.windows(2).map(|w| w[1] - w[0]).sum::<i64>() as f64 / (ts.len() - 1) as f64;
    let mut ts = Vec::new();
    while ts.len() < 10 {
        ts.push(fake.next().await.1["ts"].as_i64().unwrap());
    }
    let fast = gaps(&ts);
    fake.command(json!({"cmd": "c-1", "name": "set_interval", "args": {"seconds": 0.25}}));
    assert_eq!(
        fake.next_reply().await.1,
        json!({"cmd_result": "c-1", "ok": true})
    );
    let mut ts = Vec::new();
    while ts.len() < 6 {
        ts.push(fake.next().await.1["ts"].as_i64().unwrap());
    }
    let slow = gaps(&ts[1..]);
    assert!(
        (35.0..=65.0).contains(&fast),
        "about 50 ms apart at 20/s, got {fast}"
    );
    assert!(
        (200.0..=300.0).contains(&slow),
        "about 250 ms apart after set_interval, got {slow}"
    );

    fake.command(json!({"cmd": "c-2", "name": "reboot", "args": {"seconds": 0}}));
    let (conn, reply) = fake.next_reply().await;
    assert_eq!((conn, reply), (1, json!({"cmd_result": "c-2", "ok": true})));
    let (conn, first_after) = fake.next().await;
    assert_eq!(conn, 2, "the device reconnected after its reboot");
    assert!(
        first_after["seq"].as_u64().unwrap() > 16,
        "seqs go on across sessions: {first_after}"
    );
    fake.command(json!({"cmd": 7, "name": "selfdestruct"}));
    let reply = fake.next_reply().await.1;
    assert_eq!(
        (reply["cmd_result"].as_str(), reply["ok"].as_bool()),
        (Some("7"), Some(false)),
        "{reply}"
    );

    fleet.stop();
    let r = fleet.finish().await;
    assert_consistent(&r);
    assert_eq!(
        r.totals.commands,
        [
            ("reboot".to_string(), 1),
            ("selfdestruct".into(), 1),
            ("set_interval".into(), 1)
        ]
        .into()
    );
    assert_eq!(
        (r.totals.sessions, r.totals.reconnects),
        (2, 0),
        "a reboot is not a loss"
    );
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for s in seen.iter() {
        assert_eq!(s.authorization.as_deref(), Some("Bearer tok-secret-1"));
        assert_eq!(s.protocol.as_deref(), Some("wsingest.v1.json"));
    }
}

/// With the server down, devices retry with growing backoff and connect as
/// soon as it is up; connections come from the given source addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_with_backoff_until_the_server_is_up_from_chosen_addresses() {
    let port = free_port();
    let mut c = config(
        format!("ws://127.0.0.1:{port}"),
        vec![(shipped("weather_station"), 4)],
    );
    c.rate = Some(10.0);
    c.duration = None;
    c.messages = Some(5);
    c.backoff_base = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(400);
    c.source_addrs = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    let fleet = Fleet::start(c).await.unwrap();
    eventually(10, "refused connection attempts", || async {
        (wsingest_tools::simulate::stats::Live::get(&fleet.live().connect_errors) >= 8)
            .then_some(())
    })
    .await;
    let mut fake = Fake::start(TcpListener::bind(("127.0.0.1", port)).await.unwrap()).await;
    let r = tokio::time::timeout(Duration::from_secs(30), fleet.finish())
        .await
        .expect("finishes once the server is up");
    assert_consistent(&r);
    assert_eq!(r.totals.messages_acked, 20, "{}", r.table());
    assert!(
        r.totals.connect_errors.get("refused").copied().unwrap_or(0) >= 8,
        "{}",
        r.table()
    );
    let peers: std::collections::BTreeSet<IpAddr> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.peer.ip())
        .collect();
    assert_eq!(
        peers,
        ["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()].into()
    );
    while fake.rx.try_recv().is_ok() {}
}
