//! Ack modes and resends: `received` acks before storage, `durable` after;
//! a resent message is acked again, not written twice.

use super::*;

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
