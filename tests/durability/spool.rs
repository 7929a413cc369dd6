//! The disk spool: torn and corrupt files, a full spool, shutdown while
//! InfluxDB is down, and replay's share of the write slots.

use super::*;

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
