//! Delivery guarantees against real processes: influxd stopped and restarted
//! mid-run, `wsingest serve` killed with SIGKILL under load, a corrupt spool,
//! a full spool. The rule every test checks: an acked point is in InfluxDB in
//! the end, once; nothing is dropped silently.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wsingest_harness::devices::{DeviceReport, DeviceSpec, MakeMessage, run_device};
use wsingest_harness::process::WsingestProcess;
use wsingest_harness::services::http;
use wsingest_harness::*;
use wsingest_server::config::{AckMode, Config};

/// Bytes in the spool's segment files.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

/// A config whose writer notices an outage (and its end) quickly.
fn fault_config(influx_url: &str, db: &str, spool_dir: &Path) -> Config {
    let mut c = test_config(influx_url, db);
    c.spool.dir = spool_dir.to_path_buf();
    c.influx.batch_size = 200;
    c.influx.retry_initial_ms = 20;
    c.influx.retry_max_ms = 200;
    c.influx.retry_max_elapsed_ms = 500;
    c.influx.timeout_ms = 3_000;
    c
}

/// The values of field `n` stored for `device`, in time order.
async fn stored_n(influx: &Influxd, db: &str, device: &str) -> Vec<u64> {
    influx
        .rows(
            db,
            &format!("SELECT n FROM telemetry WHERE device = '{device}'"),
        )
        .await
        .iter()
        .map(|r| r[1].as_f64().unwrap() as u64)
        .collect()
}

/// Start `devices` devices; device `d` connects to `url(d)` and sends the
/// seqs `seqs(d)`, built by `make`.
fn fleet(
    url: impl Fn(u64) -> String,
    devices: u64,
    seqs: impl Fn(u64) -> Vec<u64>,
    make: MakeMessage,
    gap: Duration,
    stop: &CancellationToken,
    acks: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<DeviceReport>> {
    (0..devices)
        .map(|d| {
            tokio::spawn(run_device(DeviceSpec {
                url: url(d),
                seqs: seqs(d),
                make: make.clone(),
                gap,
                settle: Duration::from_secs(60),
                stop: stop.clone(),
                acks: acks.clone(),
            }))
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<DeviceReport>>) -> Vec<DeviceReport> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_outage_loses_no_acked_point_and_writes_none_twice() {
    let mut influx = Influxd::start().await;
    influx.create_db("o").await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let server = TestServer::start(fault_config(&influx.url, "o", &spool)).await;
    const DEVICES: u64 = 4;
    const N: u64 = 600;
    let acks = Arc::new(AtomicU64::new(0));
    // No `ts`: points are stamped on receipt, so writing one twice (a retry
    // and a replay, say) would show as an extra point.
    let devices = fleet(
        |d| server.ws_url(&format!("/v1/devices/o{d}")),
        DEVICES,
        |_| (1..=N).collect(),
        Arc::new(|seq| json!({"seq": seq, "fields": {"n": seq}})),
        Duration::from_millis(5),
        &CancellationToken::new(),
        &acks,
    );
    eventually(30, "points in InfluxDB before the outage", || async {
        (influx.count("o", "telemetry", "n").await > 100).then_some(())
    })
    .await;
    influx.stop();
    eventually(30, "batches in the spool", || async {
        (spool_bytes(&spool) > 0).then_some(())
    })
    .await;
    // Acks go on while InfluxDB is down: they come from the spool's fsync.
    let before = acks.load(Ordering::Relaxed);
    eventually(30, "acks during the outage", || async {
        (acks.load(Ordering::Relaxed) > before + 200).then_some(())
    })
    .await;
    influx.restart().await;
    for (d, r) in join(devices).await.iter().enumerate() {
        assert_eq!(r.acked.len() as u64, N, "device o{d}: {r:?}");
        assert!(r.nacked.is_empty(), "device o{d}: {:?}", r.nacked);
    }
    eventually(60, "every point in InfluxDB", || async {
        (influx.count("o", "telemetry", "n").await == DEVICES * N).then_some(())
    })
    .await;
    for d in 0..DEVICES {
        let mut n = stored_n(&influx, "o", &format!("o{d}")).await;
        n.sort_unstable();
        assert_eq!(
            n,
            (1..=N).collect::<Vec<_>>(),
            "device o{d}: each point exactly once"
        );
    }
    eventually(30, "the spool drained and its segments deleted", || async {
        (segment_count(&spool) == 0).then_some(())
    })
    .await;
    let metrics = http()
        .get(server.http_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
    };
    let spooled = value("wsingest_spool_written_points");
    assert!(spooled > 0.0);
    assert_eq!(
        value("wsingest_spool_replayed_points"),
        spooled,
        "everything spooled was replayed"
    );
    assert_eq!(value("wsingest_spool_bytes"), 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acked_point() {
    let mut influx = Influxd::start().await;
    influx.create_db("k").await;
    let dir = tempfile::tempdir().unwrap();
    let config = fault_config(&influx.url, "k", &dir.path().join("spool"));
    // InfluxDB down: every ack in the first run comes from the spool.
    influx.stop();
    let mut first = WsingestProcess::start(config.clone(), dir.path()).await;
    const DEVICES: u64 = 4;
    const N: u64 = 5000;
    // With `ts`, so that the resends at the end are idempotent and the total
    // can be compared exactly.
    let message: MakeMessage =
        Arc::new(|seq| json!({"seq": seq, "ts": 1_700_000_000_000u64 + seq, "fields": {"n": seq}}));
    let acks = Arc::new(AtomicU64::new(0));
    let devices = fleet(
        |d| first.ws_url(&format!("/v1/devices/k{d}")),
        DEVICES,
        |_| (1..=N).collect(),
        message.clone(),
        Duration::ZERO,
        &CancellationToken::new(),
        &acks,
    );
    eventually(60, "acks from the spool", || async {
        (acks.load(Ordering::Relaxed) >= 1000).then_some(())
    })
    .await;
    first.kill9(); // under load: the devices are still sending
    let reports = join(devices).await;
    let acked: Vec<BTreeSet<u64>> = reports.iter().map(|r| r.acked.clone()).collect();
    let total_acked: usize = acked.iter().map(BTreeSet::len).sum();
    let total_sent: usize = reports.iter().map(|r| r.sent.len()).sum();
    eprintln!(
        "kill -9: {total_sent} messages handed to sockets, {total_acked} acked from the spool"
    );
    assert!(total_acked >= 1000, "{total_acked}");
    assert!(
        reports.iter().any(|r| r.sent.len() > r.acked.len()),
        "the kill happened with messages in flight"
    );

    // InfluxDB back; a new process finds the spool and replays it. Kill that
    // one too as soon as replay has begun, and start a third.
    influx.restart().await;
    let mut second = WsingestProcess::start(config.clone(), dir.path()).await;
    eventually(60, "replay under way", || async {
        (influx.count("k", "telemetry", "n").await > 0).then_some(())
    })
    .await;
    second.kill9();
    let third = WsingestProcess::start(config.clone(), dir.path()).await;
    for (d, want) in acked.iter().enumerate() {
        let device = format!("k{d}");
        eventually(
            60,
            &format!("every point acked to {device} in InfluxDB"),
            || async {
                let stored: BTreeSet<u64> =
                    stored_n(&influx, "k", &device).await.into_iter().collect();
                stored.is_superset(want).then_some(())
            },
        )
        .await;
    }
    eprintln!("second run:\n{}\nthird run:\n{}", second.log(), third.log());
    assert!(third.log().contains("spool opened"), "{}", third.log());

    // The devices resend what was not acked; then the total is what was sent.
    let retry = fleet(
        |d| third.ws_url(&format!("/v1/devices/k{d}")),
        DEVICES,
        |d| {
            (1..=N)
                .filter(|seq| !acked[d as usize].contains(seq))
                .collect()
        },
        message,
        Duration::ZERO,
        &CancellationToken::new(),
        &Arc::new(AtomicU64::new(0)),
    );
    for r in join(retry).await {
        assert_eq!(r.acked.len(), r.sent.len(), "{r:?}");
    }
    eventually(60, "every point sent is in InfluxDB", || async {
        (influx.count("k", "telemetry", "n").await == DEVICES * N).then_some(())
    })
    .await;
    eventually(30, "the spool drained", || async {
        (segment_count(&dir.path().join("spool")) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn torn_and_corrupt_spool_files_are_moved_aside_and_the_rest_replayed() {
    use wsingest_server::sink::spool::{MessageMeta, Spool, SpoolConfig};
    let influx = Influxd::start().await;
    influx.create_db("c").await;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // A spool left by an earlier process: five records of ten points each...
    let spool_config = SpoolConfig {
        dir: spool_dir.clone(),
        ..SpoolConfig::default()
    };
    let mut record_len = 0;
    {
        let (spool, _) = Spool::open(&spool_config).unwrap();
        for r in 0..5u64 {
            let mut body = Vec::new();
            for i in 0..10u64 {
                let n = 100 + r * 10 + i; // three digits: records of one size
                body.extend_from_slice(
                    format!(
                        "telemetry,device=c n={n} {}\n",
                        1_700_000_000_000_000_000u64 + n
                    )
                    .as_bytes(),
                );
            }
            let meta = [MessageMeta {
                bytes: body.len() as u32,
                points: 10,
            }];
            spool.append(&meta, &body).unwrap();
            record_len = wsingest_server::sink::spool::record::encoded_len(1, body.len());
        }
    }
    // ...then a byte flipped in the third record, and half a record torn off
    // the end (a crash in the middle of an append).
    let segment = std::fs::read_dir(&spool_dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8 + 2 * record_len + 30] ^= 0x55;
    let last = bytes[bytes.len() - record_len..].to_vec();
    bytes.extend_from_slice(&last[..record_len / 2]);
    std::fs::write(&segment, bytes).unwrap();

    let mut config = test_config(&influx.url, "c");
    config.spool.dir = spool_dir.clone();
    let server = TestServer::start(config).await;
    eventually(30, "the good records replayed", || async {
        (influx.count("c", "telemetry", "n").await == 40).then_some(())
    })
    .await;
    let mut n = stored_n(&influx, "c", "c").await;
    n.sort_unstable();
    let want: Vec<u64> = (100..150).filter(|n| !(120..130).contains(n)).collect();
    assert_eq!(n, want, "records 0, 1, 3, 4 replayed; the corrupt one not");
    let aside: Vec<_> = std::fs::read_dir(spool_dir.join("corrupt"))
        .unwrap()
        .collect();
    assert_eq!(
        aside.len(),
        2,
        "the corrupt record and the torn tail are kept aside"
    );
    eventually(30, "the spool drained", || async {
        (segment_count(&spool_dir) == 0).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_closes_sessions_with_1013_and_memory_stays_bounded() {
    let mut influx = Influxd::start().await;
    influx.create_db("f").await;
    influx.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fault_config(&influx.url, "f", &dir.path().join("spool"));
    config.spool.max_bytes = 256 * 1024;
    config.influx.batch_size = 100;
    config.influx.queue_capacity = 200;
    config.influx.concurrency = 2;
    config.server.max_inflight_messages = 100;
    config.server.backpressure_timeout_ms = 1_000;
    config.server.shutdown_timeout_secs = 2;
    let server = WsingestProcess::start(config, dir.path()).await;
    let ready = || async {
        http()
            .get(server.http_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        ready().await,
        200,
        "InfluxDB is down but the spool has room"
    );

    // Each device would send 40 MB (20,000 messages of 2 KB) if nothing
    // stopped it; the spool holds 256 KiB.
    const DEVICES: u64 = 8;
    let pad = "x".repeat(2000);
    let acks = Arc::new(AtomicU64::new(0));
    let devices = fleet(
        |d| server.ws_url(&format!("/v1/devices/f{d}")),
        DEVICES,
        |_| (1..=20_000).collect(),
        Arc::new(
            move |seq| json!({"seq": seq, "ts": 1_700_000_000_000u64 + seq, "fields": {"n": seq, "pad": pad}}),
        ),
        Duration::ZERO,
        &CancellationToken::new(),
        &acks,
    );
    let reports = join(devices).await;
    for r in &reports {
        assert_eq!(
            r.close_code,
            Some(1013),
            "sessions are told to come back later: {r:?}"
        );
        assert!(r.nacked.is_empty(), "{:?}", r.nacked);
    }
    let (rss, peak) = server.rss_kib();
    let sent: usize = reports.iter().map(|r| r.sent.len()).sum();
    let acked: usize = reports.iter().map(|r| r.acked.len()).sum();
    eprintln!(
        "spool full: {sent} messages handed to sockets, {acked} acked; server RSS {rss} KiB, peak {peak} KiB"
    );
    assert!(acked > 0 && acked < sent);
    // What the server holds is bounded by its queues, not by what devices
    // push: well under the 320 MB the devices tried to send.
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    eventually(
        30,
        "/readyz failing: neither InfluxDB nor the spool can take data",
        || async { (ready().await == 503).then_some(()) },
    )
    .await;

    // InfluxDB back: every acked point reaches it.
    influx.restart().await;
    for (d, r) in reports.iter().enumerate() {
        let device = format!("f{d}");
        eventually(
            60,
            &format!("every point acked to {device} in InfluxDB"),
            || async {
                let stored: BTreeSet<u64> =
                    stored_n(&influx, "f", &device).await.into_iter().collect();
                stored.is_superset(&r.acked).then_some(())
            },
        )
        .await;
    }
    eventually(30, "/readyz passing again", || async {
        (ready().await == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn shutdown_with_influxd_down_spools_acks_and_closes_with_1001() {
    let mut influx = Influxd::start().await;
    influx.create_db("s").await;
    influx.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fault_config(&influx.url, "s", &dir.path().join("spool"));
    // Only the shutdown ends these retries.
    config.influx.retry_max_elapsed_ms = 120_000;
    let server = TestServer::start(config.clone()).await;
    let mut ws = connect(&server.ws_url("/v1/devices/s"), None).await;
    for seq in 1..=20u64 {
        send_json(&mut ws, json!({"seq": seq, "fields": {"n": seq}})).await;
    }
    // The server has read them all once this nack comes back.
    send_json(&mut ws, json!({"seq": 21})).await;
    assert_eq!(next_json(&mut ws).await["nack"], json!(21));
    let stopping = tokio::spawn(server.stop());
    let mut acked = Vec::new();
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(20),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                acked.push(
                    v["ack"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("an ack, not {v}")),
                );
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(c))) => {
                break c.map(|c| u16::from(c.code));
            }
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    stopping.await.unwrap();
    acked.sort_unstable();
    assert_eq!(acked, (1..=20).collect::<Vec<_>>(), "acked from the spool");
    assert_eq!(code, Some(1001));
    // The next start, with InfluxDB up, drains them.
    influx.restart().await;
    let server = TestServer::start(config).await;
    eventually(30, "the spooled points in InfluxDB", || async {
        (influx.count("s", "telemetry", "n").await == 20).then_some(())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn received_mode_acks_before_storage_and_durable_mode_does_not() {
    // Nothing listens on this port, and without a spool nothing can be stored.
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut config = test_config(&url, "r");
    config.spool.enabled = false;
    config.influx.retry_initial_ms = 10;
    config.influx.retry_max_elapsed_ms = 200;
    for (mode, first) in [(AckMode::Received, "ack"), (AckMode::Durable, "nack")] {
        config.server.ack_mode = mode;
        let server = TestServer::start(config.clone()).await;
        let mut ws = connect(&server.ws_url("/v1/devices/r"), None).await;
        send_json(&mut ws, json!({"seq": 1, "fields": {"n": 1}})).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply[first], json!(1), "{mode:?}: {reply}");
        if mode == AckMode::Received {
            // The trade-off: acked on receipt, then found unstorable.
            let late = next_json(&mut ws).await;
            assert_eq!(
                (late["nack"].clone(), late["error"].clone()),
                (json!(1), json!("storage_unavailable"))
            );
        } else {
            assert_eq!(reply["error"], json!("storage_unavailable"));
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn resent_message_without_ts_is_acked_again_not_written_twice() {
    let influx = Influxd::start().await;
    influx.create_db("d").await;
    let server = TestServer::start(test_config(&influx.url, "d")).await;
    let msg = json!({"seq": 7, "fields": {"n": 1}});
    let mut ws = connect(&server.ws_url("/v1/devices/dd"), None).await;
    send_json(&mut ws, msg.clone()).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 7}));
    drop(ws);
    // The device did not see that ack (say): it reconnects and resends.
    let mut ws = connect(&server.ws_url("/v1/devices/dd"), None).await;
    send_json(&mut ws, msg.clone()).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 7}));
    // The same seq with other content is a new message (a restarted counter).
    send_json(&mut ws, json!({"seq": 7, "fields": {"n": 2}})).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": 7}));
    // Another device's seq 7 is its own.
    let mut other = connect(&server.ws_url("/v1/devices/de"), None).await;
    send_json(&mut other, msg).await;
    assert_eq!(next_json(&mut other).await, json!({"ack": 7}));
    let mut n = stored_n(&influx, "d", "dd").await;
    n.sort_unstable();
    assert_eq!(n, vec![1, 2]);
    assert_eq!(stored_n(&influx, "d", "de").await, vec![1]);
    server.stop().await;
}

/// The issue's scenario with the device generator (`wsingest simulate`'s
/// fleet, in process) for load: influxd stopped mid-run, then `wsingest serve`
/// killed with SIGKILL while the spool holds acked points, then both back
/// (the new process on the same port, so devices reconnect to it). The
/// generator resends what was not acked, as the very same bytes. In the end
/// every device's stored points are exactly the points it sent: every acked
/// point survived, none is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_run_through_an_outage_and_a_kill_9_stores_exactly_what_was_sent() {
    use wsingest_tools::simulate::profile::Profile;
    use wsingest_tools::simulate::stats::Live;
    use wsingest_tools::simulate::{Fleet, FleetConfig};
    let mut influx = Influxd::start().await;
    influx.create_db("g").await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = fault_config(&influx.url, "g", &spool);
    let port = free_port();
    let mut first = WsingestProcess::start_on(config.clone(), dir.path(), port).await;
    let meter =
        Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/smart_meter.toml"))
            .unwrap();
    let fleet = Fleet::start(FleetConfig {
        url: format!("ws://127.0.0.1:{port}"),
        profiles: vec![(meter, 20)],
        rate: Some(50.0),
        duration: Some(Duration::from_secs(8)),
        drain_timeout: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        seed: 5,
        per_device: true,
        ..FleetConfig::default()
    })
    .await
    .unwrap();
    let acked = |fleet: &Fleet| Live::get(&fleet.live().messages_acked);
    eventually(30, "acks with InfluxDB up", || async {
        (acked(&fleet) > 500).then_some(())
    })
    .await;
    influx.stop();
    let before = acked(&fleet);
    eventually(30, "acks from the spool", || async {
        (acked(&fleet) > before + 500 && spool_bytes(&spool) > 0).then_some(())
    })
    .await;
    first.kill9();
    influx.restart().await;
    let second = WsingestProcess::start_on(config, dir.path(), port).await;
    let report = tokio::time::timeout(Duration::from_secs(120), fleet.finish())
        .await
        .expect("the fleet finishes");
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}\n{}",
        report.inconsistencies(),
        report.table()
    );
    let t = &report.totals;
    assert_eq!(
        (t.messages_unacked, t.messages_nacked),
        (0, 0),
        "{}",
        report.table()
    );
    assert!(
        t.messages_resent > 0,
        "the kill left messages to resend\n{}",
        report.table()
    );
    let sent: std::collections::BTreeMap<String, u64> = report
        .per_device
        .iter()
        .map(|d| (d.id.clone(), d.counters.points_sent))
        .collect();
    eventually(
        60,
        "InfluxDB holding exactly what each device sent",
        || async {
            (influx.count_by("g", "meter", "power_w", "device").await == sent).then_some(())
        },
    )
    .await;
    eventually(30, "the spool drained", || async {
        (segment_count(&spool) == 0).then_some(())
    })
    .await;
    assert!(second.log().contains("spool drained"), "{}", second.log());
}

/// A fake InfluxDB whose writes each take 100 ms, counting how many are in
/// flight at once, of replayed (`old`) and live (`new`) points.
///
/// Replayed writes are held at a gate until two of them are in flight at
/// once and a live write has started (or 10 s passed): whether replay gets
/// to use its share, and live traffic its slots, is then up to the server,
/// not to how fast this machine runs the test.
#[derive(Clone)]
struct SlowInflux {
    now: Arc<std::sync::Mutex<(usize, usize)>>,
    max_old: Arc<AtomicU64>,
    max_total: Arc<AtomicU64>,
    old_done: Arc<AtomicU64>,
    /// Live writes that started while replayed ones were still to come.
    new_during_replay: Arc<AtomicU64>,
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for SlowInflux {
    fn default() -> Self {
        SlowInflux {
            now: Default::default(),
            max_old: Default::default(),
            max_total: Default::default(),
            old_done: Default::default(),
            new_during_replay: Default::default(),
            gate: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

async fn slow_write(
    axum::extract::State(s): axum::extract::State<SlowInflux>,
    uri: axum::http::Uri,
    body: String,
) -> axum::http::StatusCode {
    if uri.path() != "/write" {
        return axum::http::StatusCode::NO_CONTENT;
    }
    let old = body.starts_with("old");
    {
        let mut n = s.now.lock().unwrap();
        if old {
            n.0 += 1;
        } else {
            n.1 += 1;
            if s.old_done.load(Ordering::SeqCst) < 12 {
                s.new_during_replay.fetch_add(1, Ordering::SeqCst);
            }
        }
        s.max_old.fetch_max(n.0 as u64, Ordering::SeqCst);
        s.max_total.fetch_max((n.0 + n.1) as u64, Ordering::SeqCst);
        if s.max_old.load(Ordering::SeqCst) >= 2 && s.new_during_replay.load(Ordering::SeqCst) > 0 {
            s.gate.send_replace(true);
        }
    }
    if old {
        let mut open = s.gate.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), open.wait_for(|o| *o)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut n = s.now.lock().unwrap();
    if old {
        n.0 -= 1;
        s.old_done.fetch_add(1, Ordering::SeqCst);
    } else {
        n.1 -= 1;
    }
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_takes_its_share_of_the_write_slots_and_live_traffic_the_rest() {
    use wsingest_server::sink::spool::{MessageMeta, Spool, SpoolConfig};
    let fake = SlowInflux::default();
    let app = axum::Router::new()
        .fallback(slow_write)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // Twelve batches left in the spool by an earlier outage.
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    {
        let (spool, _) = Spool::open(&SpoolConfig {
            dir: spool_dir.clone(),
            ..SpoolConfig::default()
        })
        .unwrap();
        for r in 0..12u64 {
            let body = format!("old,device=x n={r} {r}\n");
            spool
                .append(
                    &[MessageMeta {
                        bytes: body.len() as u32,
                        points: 1,
                    }],
                    body.as_bytes(),
                )
                .unwrap();
        }
    }
    let mut config = test_config(&url, "db");
    config.spool.dir = spool_dir.clone();
    config.influx.concurrency = 4;
    config.spool.replay_share = 0.5;
    config.influx.batch_size = 1;
    let server = TestServer::start(config).await;
    // Live traffic while replay runs: acked through the other slots.
    let mut ws = connect(&server.ws_url("/v1/devices/live"), None).await;
    for seq in 1..=6u64 {
        send_json(
            &mut ws,
            json!({"seq": seq, "measurement": "new", "fields": {"n": seq}}),
        )
        .await;
    }
    let mut acks = BTreeSet::new();
    while acks.len() < 6 {
        acks.insert(next_json(&mut ws).await["ack"].as_u64().unwrap());
    }
    eventually(30, "the spool replayed", || async {
        (fake.old_done.load(Ordering::SeqCst) == 12).then_some(())
    })
    .await;
    assert_eq!(
        fake.max_old.load(Ordering::SeqCst),
        2,
        "replay holds 2 of the 4 slots (share 0.5)"
    );
    assert!(
        fake.max_total.load(Ordering::SeqCst) <= 4,
        "never more writes than influx.concurrency"
    );
    assert!(
        fake.new_during_replay.load(Ordering::SeqCst) > 0,
        "live writes went on during replay"
    );
    server.stop().await;
}
