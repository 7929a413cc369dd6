use super::*;
use wsingest_proto::point::FieldValue;

fn point(v: f64) -> Point {
    Point {
        measurement: "m".into(),
        tags: vec![],
        fields: vec![("v".into(), FieldValue::Float(v))],
        time_ns: 0,
        int_fields: false,
    }
}

#[test]
fn sessions_counters_and_history() {
    let metrics = Arc::new(Metrics::new());
    let fleet = Arc::new(Fleet::new(metrics.clone(), Duration::from_secs(600), 100));
    let g = fleet.open_session("d1");
    let o = g.observer();
    o.message(10);
    o.points(vec![point(1.0), point(2.0)]);
    o.acked();
    o.decode_error("invalid_json", "expected value at line 1");
    assert_eq!(fleet.online(), 1);
    let c = fleet.device("d1").unwrap().counters();
    assert_eq!(
        (
            c.messages,
            c.points,
            c.bytes,
            c.errors,
            c.acks,
            c.sessions_open
        ),
        (1, 2, 10, 1, 1, 1)
    );
    assert_eq!(fleet.device("d1").unwrap().last_point(), Some(point(2.0)));
    assert_eq!(
        fleet.device("d1").unwrap().last_measurement().as_deref(),
        Some("m")
    );
    assert_eq!(fleet.measurement_points(), vec![(Arc::from("m"), 2)]);
    o.points_seen(&[point(3.0), point(4.0)]);
    assert_eq!(fleet.measurement_points(), vec![(Arc::from("m"), 4)]);
    assert_eq!(fleet.device("d1").unwrap().last_point(), Some(point(4.0)));
    assert_eq!(fleet.device("d1").unwrap().counters().points, 4);
    g.close(Some(1007), "20 invalid messages in a row");
    assert_eq!(fleet.online(), 0);
    let (closed, dropped) = fleet.take_closed();
    assert_eq!(dropped, 0);
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (closed[0].close_code, closed[0].messages, closed[0].points),
        (SessionEnd::Server(1007), 1, 4)
    );
    let errors = fleet.recent_errors();
    assert_eq!(
        errors.iter().map(|e| e.code).collect::<Vec<_>>(),
        ["invalid_json", "session_closed"]
    );
    let s = metrics.snapshot();
    assert_eq!(
        (s.sessions_open, s.sessions_opened, s.sessions_closed),
        (0, 1, 1)
    );
    assert_eq!(metrics.sessions_closed_with(Some(1007)), 1);
    // Within the retention the entry stays; a dropped guard counts as closed.
    fleet.sweep();
    assert!(fleet.device("d1").is_some());
    drop(fleet.open_session("d2"));
    assert_eq!(metrics.sessions_closed_with(None), 1);
}

#[test]
fn bounded_by_max_devices() {
    let fleet = Arc::new(Fleet::new(
        Arc::new(Metrics::new()),
        Duration::from_secs(600),
        3,
    ));
    let keep = fleet.open_session("online");
    for i in 0..10 {
        fleet
            .open_session(&format!("gone-{i}"))
            .close(Some(1000), "bye");
    }
    assert!(fleet.devices().len() <= 3, "{}", fleet.devices().len());
    assert!(fleet.device("online").is_some());
    drop(keep);
    let zero = Arc::new(Fleet::new(Arc::new(Metrics::new()), Duration::ZERO, 10));
    zero.open_session("x").close(None, "");
    std::thread::sleep(Duration::from_millis(2));
    zero.sweep();
    assert!(zero.devices().is_empty());
}

#[test]
fn measurement_names_are_capped() {
    let fleet = Arc::new(Fleet::new(
        Arc::new(Metrics::new()),
        Duration::from_secs(1),
        10,
    ));
    let o = fleet.open_session("d").observer();
    for i in 0..(MAX_MEASUREMENTS + 5) {
        let mut p = point(1.0);
        p.measurement = format!("m{i}");
        o.points(vec![p.clone(), p]);
    }
    let counts = fleet.measurement_points();
    assert_eq!(counts.len(), MAX_MEASUREMENTS + 1);
    let other = counts
        .iter()
        .find(|(k, _)| &**k == OTHER_MEASUREMENTS)
        .unwrap()
        .1;
    assert_eq!(other, 10);
    assert_eq!(
        counts.iter().map(|(_, n)| n).sum::<u64>(),
        2 * (MAX_MEASUREMENTS as u64 + 5)
    );
}

#[test]
fn error_ring_is_bounded() {
    let fleet = Arc::new(Fleet::new(
        Arc::new(Metrics::new()),
        Duration::from_secs(1),
        10,
    ));
    let g = fleet.open_session("d");
    for _ in 0..(MAX_ERRORS * 3) {
        g.observer()
            .decode_error("invalid_json", &"x".repeat(10_000));
    }
    let errors = fleet.recent_errors();
    assert_eq!(errors.len(), MAX_ERRORS);
    assert!(errors.iter().all(|e| e.detail.len() == MAX_DETAIL));
}
