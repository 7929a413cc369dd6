//! Router unit tests: routing, store, takeover, statuses.

use super::*;

fn router(store: bool, bridge: bool) -> (Arc<Router>, Option<mpsc::Receiver<Outbound>>) {
    let (tx, rx) = mpsc::channel(16);
    let config = CommandsConfig {
        store,
        ..CommandsConfig::default()
    };
    let r = Router::new(config, bridge.then_some(tx));
    (Arc::new(r), bridge.then_some(rx))
}

fn submit(r: &Router, device: &str, id: &str, origin: Origin) -> Result<View, SubmitError> {
    r.submit(device, id.into(), "reboot".into(), None, None, origin)
}

#[tokio::test]
async fn local_session_gets_the_command_and_reports_back() {
    let (r, out) = router(false, true);
    let mut out = out.unwrap();
    let mut s = r.register("d1");
    assert_eq!(
        submit(&r, "d1", "c1", Origin::Http).unwrap().status,
        Status::Pending
    );
    let cmd = s.recv().await.unwrap();
    assert_eq!(cmd.id, "c1");
    s.delivered(&cmd);
    assert_eq!(r.status("d1", "c1").unwrap().status, Status::Delivered);
    s.result("c1", false, Some("busy".into()));
    let v = r.wait("d1", "c1", Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        (v.status, v.ok, v.detail.as_deref()),
        (Status::Failed, Some(false), Some("busy"))
    );
    assert!(matches!(
        out.try_recv().unwrap(),
        Outbound::Status {
            status: Status::Delivered,
            ..
        }
    ));
    assert!(matches!(
        out.try_recv().unwrap(),
        Outbound::Result { ok: false, .. }
    ));
    // The same id again (e.g. a QoS 1 duplicate) is not delivered twice.
    assert_eq!(
        submit(&r, "d1", "c1", Origin::Mqtt).unwrap().status,
        Status::Failed
    );
    assert!(s.rx.try_recv().is_none());
}

#[tokio::test]
async fn without_session_http_is_refused_or_forwarded() {
    let (r, _) = router(false, false);
    assert!(matches!(
        submit(&r, "d1", "c1", Origin::Http),
        Err(SubmitError::NotConnected(_))
    ));
    assert!(r.status("d1", "c1").is_none());
    let (r, out) = router(false, true);
    assert_eq!(
        submit(&r, "d1", "c1", Origin::Http).unwrap().status,
        Status::Pending
    );
    assert!(matches!(
        out.unwrap().try_recv().unwrap(),
        Outbound::Command { .. }
    ));
    // Another instance delivered it.
    r.remote_status("d1", "c1", Status::Delivered, None);
    assert_eq!(r.status("d1", "c1").unwrap().status, Status::Delivered);
}

#[tokio::test]
async fn stored_commands_are_delivered_on_connect_and_dropped_when_delivered_elsewhere() {
    let (r, _) = router(true, true);
    submit(&r, "d1", "c1", Origin::Mqtt).unwrap();
    submit(&r, "d1", "c2", Origin::Mqtt).unwrap();
    r.remote_status("d1", "c1", Status::Delivered, None);
    let mut s = r.register("d1");
    assert_eq!(s.recv().await.unwrap().id, "c2");
    assert!(s.rx.try_recv().is_none());
}

#[tokio::test]
async fn a_newer_session_takes_over_and_leftovers_move_to_it() {
    let (r, _) = router(false, false);
    let old = r.register("d1");
    submit(&r, "d1", "c1", Origin::Mqtt).unwrap();
    let mut new = r.register("d1");
    drop(old);
    assert_eq!(new.recv().await.unwrap().id, "c1");
    assert_eq!(r.sessions(), 1);
    drop(new);
    assert_eq!(r.sessions(), 0);
}

#[tokio::test]
async fn undelivered_without_store_fails() {
    let (r, _) = router(false, false);
    let mut s = r.register("d1");
    submit(&r, "d1", "c1", Origin::Http).unwrap();
    let cmd = s.recv().await.unwrap();
    drop(s);
    r.reroute("d1", cmd);
    assert_eq!(r.status("d1", "c1").unwrap().status, Status::Failed);
}

#[tokio::test]
async fn with_a_cluster_relay_commands_follow_the_device_to_another_gateway() {
    let (r, mqtt) = router(false, true);
    let mut mqtt = mqtt.unwrap();
    let (tx, mut relay) = mpsc::channel(16);
    r.set_cluster(tx);
    // Not here: the relay, not the broker, takes an HTTP command.
    assert_eq!(
        submit(&r, "d1", "c1", Origin::Http).unwrap().status,
        Status::Pending
    );
    assert!(
        matches!(relay.try_recv().unwrap(), Outbound::Command { device, .. } if device == "d1")
    );
    assert!(mqtt.try_recv().is_err());
    // A command relayed here for a device elsewhere is no error.
    assert!(submit(&r, "d2", "c2", Origin::Cluster).is_ok());
    assert!(relay.try_recv().is_err(), "never relayed back");
    // A session closed (replaced on another gateway) with a command in
    // hand: the command goes through the relay instead of failing.
    let s = r.register("d3");
    submit(&r, "d3", "c3", Origin::Http).unwrap();
    drop(s);
    assert!(
        matches!(relay.try_recv().unwrap(), Outbound::Command { device, .. } if device == "d3")
    );
    assert_eq!(r.status("d3", "c3").unwrap().status, Status::Pending);
    // Results go to both: the other gateways and the broker.
    let s = r.register("d4");
    s.result("c9", true, None);
    assert!(matches!(relay.try_recv().unwrap(), Outbound::Result { .. }));
    assert!(matches!(mqtt.try_recv().unwrap(), Outbound::Result { .. }));
}
