use rand::SeedableRng;
use rand::rngs::StdRng;
use wsingest_proto::decode::Format;
use wsingest_proto::protocol::Downlink as Server;

use super::*;
use crate::wire::from_server;

fn frame(d: Server) -> Frame {
    from_server(d.encode(Format::Json))
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Take `n` messages `m<seq>` and send them all.
fn send_n(o: &mut Outbox, n: usize, points: u32, now: Instant) -> Vec<Outgoing> {
    for _ in 0..n {
        let seq = o.take_seq();
        o.push(seq, Frame::text(format!("m{seq}")), points);
    }
    std::iter::from_fn(|| o.pop_sendable(now)).collect()
}

fn texts(out: &[Outgoing]) -> Vec<String> {
    out.iter()
        .map(|o| o.frame.to_text().unwrap().to_string())
        .collect()
}

#[test]
fn acks_in_any_order_empty_the_window() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::Json, 3));
    let t0 = Instant::now();
    assert_eq!(send_n(&mut o, 3, 2, t0).len(), 3);
    assert!(!o.has_room());
    let t1 = t0 + Duration::from_millis(40);
    let r = &mut rng();
    assert_eq!(
        o.receive(&frame(Server::Ack { ack: 3 }), t1, r),
        Answer::Acked {
            seq: 3,
            points: 2,
            latency: Duration::from_millis(40)
        }
    );
    assert!(o.has_room());
    let Answer::Failed(f) = o.receive(&frame(Server::nack(Some(1), "too_large", "x")), t1, r)
    else {
        panic!()
    };
    assert_eq!(
        (f.seq, f.error.as_str(), f.frame.to_text().unwrap()),
        (1, "too_large", "m1")
    );
    assert_eq!(
        o.receive(&frame(Server::Ack { ack: 3 }), t1, r),
        Answer::Unexpected
    );
    assert!(matches!(
        o.receive(&frame(Server::Ack { ack: 2 }), t1, r),
        Answer::Acked { seq: 2, .. }
    ));
    assert!(o.is_idle());
    let c = &o.counts;
    assert_eq!(
        (c.sent, c.acked, c.nacked, c.points_sent, c.points_acked),
        (3, 2, 1, 6, 4)
    );
    assert_eq!(c.nacks.get("too_large"), Some(&1));
}

#[test]
fn the_window_limits_what_is_in_flight_and_the_buffer_what_is_held() {
    let mut c = OutboxConfig::new(Encoding::Json, 2);
    c.buffer = 4;
    let mut o = Outbox::new(c);
    let t0 = Instant::now();
    assert_eq!(texts(&send_n(&mut o, 4, 1, t0)), ["m1", "m2"]);
    assert!(!o.has_room());
    assert_eq!(o.in_flight(), 2);
    o.receive(&frame(Server::Ack { ack: 2 }), t0, &mut rng());
    assert_eq!(o.pop_sendable(t0).unwrap().seq, 3);
    assert!(o.pop_sendable(t0).is_none());
}

#[test]
fn resend_after_reconnect_keeps_bytes_and_order_and_seqs_count_on() {
    let mut c = OutboxConfig::new(Encoding::Json, 3);
    c.buffer = 10;
    let mut o = Outbox::new(c);
    let t0 = Instant::now();
    send_n(&mut o, 5, 1, t0); // m1..m3 in flight, m4 m5 queued
    o.receive(&frame(Server::Ack { ack: 2 }), t0, &mut rng());
    o.session_started();
    let again: Vec<Outgoing> = std::iter::from_fn(|| o.pop_sendable(t0)).collect();
    assert_eq!(texts(&again), ["m1", "m3", "m4"]);
    let kinds: Vec<Sending> = again.iter().map(|a| a.sending).collect();
    assert_eq!(kinds, [Sending::Resend, Sending::Resend, Sending::First]);
    assert_eq!(o.counts.resent, 2);
    assert_eq!(o.take_seq(), 6);
    assert_eq!(o.abandon(), (4, 4));
}

#[test]
fn a_transient_nack_requeues_pauses_and_reopens_the_window_ack_by_ack() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::Json, 4));
    let t0 = Instant::now();
    let r = &mut rng();
    send_n(&mut o, 4, 1, t0);
    let Answer::Retrying { seq, until, .. } = o.receive(
        &frame(Server::nack(Some(2), "storage_unavailable", "x")),
        t0,
        r,
    ) else {
        panic!()
    };
    assert_eq!(seq, 2);
    assert!(until > t0 && until <= t0 + Duration::from_millis(500));
    assert_eq!(o.held_back_until(t0), Some(until));
    assert!(o.pop_sendable(t0).is_none(), "paused");
    // Acks of the others: the window grows back from 1.
    for s in [1, 3, 4] {
        assert!(matches!(
            o.receive(&frame(Server::Ack { ack: s }), t0, r),
            Answer::Acked { .. }
        ));
    }
    let again = o.pop_sendable(until).unwrap();
    assert_eq!((again.seq, again.sending), (2, Sending::Retry));
    assert_eq!(o.counts.retried, 1);
    assert_eq!(o.counts.nacked, 0);
    // Without retries (the simulator), the same nack ends the message.
    let mut c = OutboxConfig::new(Encoding::Json, 4);
    c.retry_transient = false;
    let mut o = Outbox::new(c);
    send_n(&mut o, 1, 1, t0);
    let a = o.receive(&frame(Server::nack(Some(1), "rate_limited", "x")), t0, r);
    assert!(matches!(a, Answer::Failed(Failure { seq: 1, .. })), "{a:?}");
}

#[test]
fn close_1009_fails_the_largest_message() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::Json, 4));
    for text in ["small", "the largest one", "medium."] {
        let seq = o.take_seq();
        o.push(seq, Frame::text(text), 1);
    }
    let f = o.fail_largest("").unwrap();
    assert_eq!((f.seq, f.error.as_str()), (2, "too_large"));
    assert!(f.detail.contains("15 bytes"), "{}", f.detail);
    assert_eq!(o.held(), 2);
}

#[test]
fn senml_answers_by_session_number_map_back_to_seqs() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::SenmlJson, 10));
    let t0 = Instant::now();
    let r = &mut rng();
    send_n(&mut o, 1, 2, t0); // frame 1
    o.sent_unnumbered(); // frame 2
    send_n(&mut o, 1, 3, t0); // frame 3
    assert_eq!(
        o.receive(&frame(Server::nack(Some(2), "invalid_json", "x")), t0, r),
        Answer::NackWithoutSeq {
            error: "invalid_json".into(),
            detail: "x".into()
        }
    );
    assert!(matches!(
        o.receive(&frame(Server::Ack { ack: 3 }), t0, r),
        Answer::Acked {
            seq: 2,
            points: 3,
            ..
        }
    ));
    assert_eq!(
        o.receive(&frame(Server::Ack { ack: 3 }), t0, r),
        Answer::Unexpected
    );
    // Reconnect: numbering restarts, the unacked seq 1 is frame 1 again.
    o.session_started();
    assert_eq!(o.pop_sendable(t0).unwrap().seq, 1);
    send_n(&mut o, 1, 1, t0); // frame 2
    assert!(matches!(
        o.receive(&frame(Server::Ack { ack: 2 }), t0, r),
        Answer::Acked { seq: 3, .. }
    ));
    assert!(matches!(
        o.receive(&frame(Server::Ack { ack: 1 }), t0, r),
        Answer::Acked { seq: 1, .. }
    ));
    assert!(o.is_idle());
}

#[test]
fn restored_messages_are_resent_first_and_seqs_continue() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::Json, 8));
    o.restore(41, Frame::text("m41"), 1);
    o.restore(40, Frame::text("m40"), 1);
    o.set_next_seq(43);
    assert_eq!(o.take_seq(), 43);
    o.push(43, Frame::text("m43"), 1);
    let t0 = Instant::now();
    let out: Vec<Outgoing> = std::iter::from_fn(|| o.pop_sendable(t0)).collect();
    assert_eq!(texts(&out), ["m40", "m41", "m43"]);
    assert_eq!(o.counts.resent, 2);
    assert_eq!(
        o.ack_deadline(Duration::from_secs(30)),
        Some(t0 + Duration::from_secs(30))
    );
    assert_eq!(o.oldest_sent(), Some(t0));
}

#[test]
fn commands_and_garbage() {
    let mut o = Outbox::new(OutboxConfig::new(Encoding::Json, 1));
    let t0 = Instant::now();
    let cmd = Server::Command {
        cmd: "c-1".into(),
        name: "reboot".into(),
        args: None,
    };
    assert!(
        matches!(o.receive(&frame(cmd), t0, &mut rng()), Answer::Command { ref id, .. } if id == "c-1")
    );
    assert!(matches!(
        o.receive(&Frame::text("nope"), t0, &mut rng()),
        Answer::Invalid(_)
    ));
    assert_eq!(
        o.receive(&Frame::Ping(Default::default()), t0, &mut rng()),
        Answer::None
    );
}
