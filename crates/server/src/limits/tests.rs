use super::*;
use crate::auth::DevicePolicy;
use wsingest_proto::point::FieldValue;

fn who(device: &str, policy: DevicePolicy) -> Identity {
    Identity {
        device: device.into(),
        token: None,
        policy,
    }
}

fn pts(n: usize, measurement: &str) -> Vec<Point> {
    (0..n)
        .map(|_| Point {
            measurement: measurement.into(),
            tags: vec![("device".into(), "d".into())],
            fields: vec![("f".into(), FieldValue::Float(1.0))],
            time_ns: 0,
            int_fields: false,
        })
        .collect()
}

#[tokio::test]
async fn replace_kicks_the_oldest_and_refuse_refuses() {
    let l = Limits::new(LimitsConfig::default());
    let g1 = l.admit(&who("d", DevicePolicy::default())).unwrap();
    let g2 = l.admit(&who("d", DevicePolicy::default())).unwrap();
    assert_eq!(
        g1.kick().wait().await,
        (1008, "replaced by a newer session of this device".into())
    );
    assert_eq!(l.sessions_of("d"), 1);
    drop(g1);
    assert_eq!(
        l.sessions_of("d"),
        1,
        "dropping a replaced guard leaves the new one"
    );
    drop(g2);
    assert_eq!(l.sessions_of("d"), 0);

    let l = Limits::new(LimitsConfig {
        session_policy: SessionPolicy::Refuse,
        ..Default::default()
    });
    let _g = l
        .admit(&who(
            "d",
            DevicePolicy {
                max_sessions: Some(2),
                ..Default::default()
            },
        ))
        .unwrap();
    let _g2 = l
        .admit(&who(
            "d",
            DevicePolicy {
                max_sessions: Some(2),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(
        l.admit(&who(
            "d",
            DevicePolicy {
                max_sessions: Some(2),
                ..Default::default()
            }
        ))
        .is_err()
    );
    assert_eq!(l.metrics.handshakes_refused("device_sessions"), 1);
}

#[test]
fn rate_limit_nacks_then_closes() {
    let l = Limits::new(LimitsConfig {
        messages_per_sec: 1.0,
        burst_secs: 3.0,
        rate_limit_close_after: 5,
        ..Default::default()
    });
    let mut g = l.admit(&who("d", DevicePolicy::default())).unwrap();
    for _ in 0..3 {
        g.check(&pts(1, "m")).unwrap();
    }
    for i in 0..6 {
        let r = g.check(&pts(1, "m")).unwrap_err();
        assert_eq!(r.error, "rate_limited");
        assert_eq!(r.close.is_some(), i == 5, "closes on the 6th refusal");
    }
    // Another session of the device shares the bucket.
    let l2 = l.clone();
    drop(g);
    let mut g = l2
        .admit(&who(
            "d",
            DevicePolicy {
                max_sessions: Some(2),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(g.check(&pts(1, "m")).unwrap_err().error, "rate_limited");
}

#[test]
fn points_rate_and_measurements_and_series() {
    let l = Limits::new(LimitsConfig {
        points_per_sec: 10.0,
        burst_secs: 1.0,
        ..Default::default()
    });
    let policy = DevicePolicy {
        allowed_measurements: Some(vec!["m".into()]),
        ..Default::default()
    };
    let mut g = l.admit(&who("d", policy)).unwrap();
    assert_eq!(
        g.check(&pts(1, "x")).unwrap_err().error,
        "forbidden_measurement"
    );
    g.check(&pts(10, "m")).unwrap();
    assert_eq!(g.check(&pts(1, "m")).unwrap_err().error, "rate_limited");

    let l = Limits::new(LimitsConfig {
        new_series_per_minute: 1,
        ..Default::default()
    });
    let mut g = l.admit(&who("e", DevicePolicy::default())).unwrap();
    g.check(&pts(1, "a")).unwrap();
    g.check(&pts(1, "a")).unwrap();
    assert_eq!(g.check(&pts(1, "b")).unwrap_err().error, "too_many_series");
}

#[test]
fn every_transport_spends_the_same_budget_and_idle_states_are_bounded() {
    let l = Limits::new(LimitsConfig {
        messages_per_sec: 1.0,
        burst_secs: 2.0,
        ..Default::default()
    });
    let mut session = l.admit(&who("d", DevicePolicy::default())).unwrap();
    let mut stream = l.limiter(&who("d", DevicePolicy::default()));
    session.check(&pts(1, "m")).unwrap();
    stream.check(&pts(1, "m")).unwrap();
    assert_eq!(
        session.check(&pts(1, "m")).unwrap_err().error,
        "rate_limited"
    );
    let mut request = l.limiter(&who("d", DevicePolicy::default()));
    let refused = request.check(&pts(1, "m")).unwrap_err();
    assert_eq!(refused.error, "rate_limited");
    assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1));
    assert_eq!(l.sessions_of("d"), 1, "a limiter is not a session");

    // Requests under ever new ids: the map stays bounded, and the state
    // of the device with a session (its spent bucket) is kept.
    for i in 0..EVICT_AT + 10 {
        l.limiter(&who(&format!("x{i}"), DevicePolicy::default()));
    }
    assert!(l.devices.lock().unwrap().len() <= EVICT_AT);
    assert_eq!(
        session.check(&pts(1, "m")).unwrap_err().error,
        "rate_limited"
    );
}

#[tokio::test]
async fn revalidate_kicks_sessions_with_dead_tokens() {
    let l = Limits::new(LimitsConfig::default());
    let h = crate::auth::Token::new("wsi_x").hash();
    let g = l
        .admit(&Identity {
            device: "d".into(),
            token: Some(h),
            policy: Default::default(),
        })
        .unwrap();
    l.revalidate(|_, t| t.is_none());
    assert_eq!(g.kick().wait().await.0, 1008);
    assert_eq!(l.metrics.sessions_revoked.get(), 1);
}

/// Records what the hook is told.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl SessionHook for Recorder {
    fn opened(
        &self,
        device: &str,
        session: u64,
        _kick: &Kick,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.0
            .lock()
            .unwrap()
            .push(format!("open {device} {session}"));
        None
    }
    fn closed(&self, device: &str, session: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("close {device} {session}"));
    }
}

#[tokio::test]
async fn the_session_hook_hears_of_exclusive_sessions_only() {
    let l = Limits::new(LimitsConfig::default());
    let rec = Arc::new(Recorder::default());
    l.set_hook(rec.clone());
    let mut g = l.admit(&who("d", DevicePolicy::default())).unwrap();
    g.announced(Duration::from_millis(10)).await; // nothing to wait for
    let several = DevicePolicy {
        max_sessions: Some(2),
        ..Default::default()
    };
    let m = l.admit(&who("m", several)).unwrap();
    drop(g);
    drop(m);
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(seen[0], "open d 1");
    assert!(!seen.iter().any(|s| s.starts_with("open m")), "{seen:?}");
    assert!(seen.contains(&"close d 1".to_string()), "{seen:?}");
}
