//! Faults under load: influxd stopped mid-run, `wsingest serve` killed with
//! SIGKILL, and a generator run through both.

use super::*;

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
    let metrics = wsingest_harness::security::metrics(&server).await;
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

/// The scenario with the device generator (`wsingest simulate`'s
/// fleet, in process) for load: influxd stopped mid-run, then `wsingest serve`
/// killed with SIGKILL while the spool holds acked points, then both back
/// (the new process on the same port, so devices reconnect to it). The
/// generator resends what was not acked, as the very same bytes. In the end
/// every device's stored points are exactly the points it sent: every acked
/// point survived, none is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_run_through_an_outage_and_a_kill_9_stores_exactly_what_was_sent() {
    let mut influx = Influxd::start().await;
    influx.create_db("g").await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = fault_config(&influx.url, "g", &spool);
    let port = free_port();
    let mut first = WsingestProcess::start_on(config.clone(), dir.path(), port).await;
    let fleet = meters::start(port, 50.0, 8, 5).await;
    let acked = meters::acked;
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
    let report = meters::finish(fleet).await;
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
