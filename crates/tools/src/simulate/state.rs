//! The protocol state of one simulated device, sans-IO. Sequence numbers, the
//! window of messages sent but not yet acknowledged, what to resend after a
//! reconnect and matching acks and nacks (in any order) are the SDK's
//! [`Outbox`], the same code every `wsingest-device` client runs (with
//! transient nacks counted, not retried: a load generator reports them).
//! This module adds the simulator's counters, its faulty messages and what a
//! simulated device does with commands. The network loop in
//! [`super::device`] feeds it frames and sends what it returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use wsingest_device::outbox::{Answer, Outbox, OutboxConfig, Sending};

use super::message::{self, Encoding, Fault, Frame};

/// Everything one device counted; summed per profile and fleet in the report.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Counters {
    /// Telemetry messages and points sent (each once, resends apart).
    pub messages_sent: u64,
    pub points_sent: u64,
    pub messages_acked: u64,
    pub points_acked: u64,
    pub messages_nacked: u64,
    pub points_nacked: u64,
    /// Nacks of telemetry by their `error`.
    pub nacks: BTreeMap<String, u64>,
    /// Telemetry messages sent again after a reconnect (same seq and ts).
    pub messages_resent: u64,
    pub points_resent: u64,
    /// Still unacknowledged when the run ended: possibly lost.
    pub messages_unacked: u64,
    pub points_unacked: u64,
    /// Injected faulty messages, by kind; each should be nacked.
    pub faulty_sent: BTreeMap<Fault, u64>,
    pub faulty_nacked: u64,
    /// Faulty messages nacked, by the nack's `error`.
    pub faulty_nacks: BTreeMap<String, u64>,
    /// Faulty messages whose nack never came (the connection dropped first).
    pub faulty_unanswered: u64,
    /// Acks for a seq we were not waiting for (a server bug if not zero).
    pub unexpected_acks: u64,
    /// Frames from the server we could not read.
    pub invalid_downlinks: u64,
    /// Commands received, by name.
    pub commands: BTreeMap<String, u64>,
    /// Connections established (handshake done).
    pub sessions: u64,
    /// Connections re-established after a loss (not counting duty-cycle wakes).
    pub reconnects: u64,
    /// Failed connection attempts, by reason (`refused`, `timeout`, `http_401`, ...).
    pub connect_errors: BTreeMap<String, u64>,
    /// Close codes the server sent us.
    pub server_closes: BTreeMap<u16, u64>,
    /// Connections given up because an ack did not come in time.
    pub ack_timeouts: u64,
    /// Connections dropped on purpose by fault injection.
    pub drops_injected: u64,
    /// Times a message was due while the window was full.
    pub window_stalls: u64,
}

impl Counters {
    /// Add `other` into `self`.
    pub fn add(&mut self, o: &Counters) {
        fn map<K: Ord + Clone>(a: &mut BTreeMap<K, u64>, b: &BTreeMap<K, u64>) {
            for (k, v) in b {
                *a.entry(k.clone()).or_default() += v;
            }
        }
        self.messages_sent += o.messages_sent;
        self.points_sent += o.points_sent;
        self.messages_acked += o.messages_acked;
        self.points_acked += o.points_acked;
        self.messages_nacked += o.messages_nacked;
        self.points_nacked += o.points_nacked;
        map(&mut self.nacks, &o.nacks);
        self.messages_resent += o.messages_resent;
        self.points_resent += o.points_resent;
        self.messages_unacked += o.messages_unacked;
        self.points_unacked += o.points_unacked;
        map(&mut self.faulty_sent, &o.faulty_sent);
        self.faulty_nacked += o.faulty_nacked;
        map(&mut self.faulty_nacks, &o.faulty_nacks);
        self.faulty_unanswered += o.faulty_unanswered;
        self.unexpected_acks += o.unexpected_acks;
        self.invalid_downlinks += o.invalid_downlinks;
        map(&mut self.commands, &o.commands);
        self.sessions += o.sessions;
        self.reconnects += o.reconnects;
        map(&mut self.connect_errors, &o.connect_errors);
        map(&mut self.server_closes, &o.server_closes);
        self.ack_timeouts += o.ack_timeouts;
        self.drops_injected += o.drops_injected;
        self.window_stalls += o.window_stalls;
    }

    pub fn faulty_sent_total(&self) -> u64 {
        self.faulty_sent.values().sum()
    }
}

/// What a command asks the device to do once it has answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// Send every this often from now on.
    SetInterval(Duration),
    /// Close the connection, stay offline this long, reconnect.
    Reboot(Duration),
}

/// What a frame from the server meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A control frame or nothing to act on.
    None,
    Acked {
        points: u32,
        latency: Duration,
    },
    Nacked {
        points: u32,
        faulty: bool,
    },
    /// A command: send `reply` (none on SenML sessions), then apply `effect`.
    Command {
        reply: Option<Frame>,
        effect: Effect,
    },
    /// Unreadable, or an ack for a message we do not have.
    Unexpected,
}

/// The sans-IO state of one device.
#[derive(Debug)]
pub struct Protocol {
    outbox: Outbox,
    /// Faulty messages sent on this connection and not yet nacked.
    faulty_in_flight: u64,
    pub counters: Counters,
}

/// Longest interval a `set_interval` command may set.
const MAX_INTERVAL_S: f64 = 86_400.0;

impl Protocol {
    pub fn new(encoding: Encoding, window_limit: usize) -> Protocol {
        let mut config = OutboxConfig::new(encoding, window_limit);
        config.retry_transient = false;
        Protocol {
            outbox: Outbox::new(config),
            faulty_in_flight: 0,
            counters: Counters::default(),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.outbox.encoding()
    }

    /// Room for one more unacknowledged message.
    pub fn has_room(&self) -> bool {
        self.outbox.has_room()
    }

    /// Nothing waits for an ack.
    pub fn is_idle(&self) -> bool {
        self.outbox.is_idle()
    }

    pub fn unacked(&self) -> usize {
        self.outbox.held()
    }

    /// The seq for the next telemetry message: per device and increasing
    /// across reconnects, so a resend keeps its number.
    pub fn take_seq(&mut self) -> u64 {
        self.outbox.take_seq()
    }

    /// A telemetry message goes out for the first time (the caller sends
    /// `frame` right away: the window had room).
    pub fn sent(&mut self, seq: u64, frame: Frame, points: u32, now: Instant) {
        self.outbox.push(seq, frame, points);
        let out = self.outbox.pop_sendable(now);
        debug_assert_eq!(out.map(|o| o.seq), Some(seq), "sent at once");
        self.counters.messages_sent += 1;
        self.counters.points_sent += points as u64;
    }

    pub fn sent_faulty(&mut self, fault: Fault) {
        self.outbox.sent_unnumbered();
        *self.counters.faulty_sent.entry(fault).or_default() += 1;
        self.faulty_in_flight += 1;
    }

    /// At the start of every session (the server's numbering restarts):
    /// every unacknowledged message again, oldest first.
    pub fn resend(&mut self, now: Instant) -> Vec<Frame> {
        self.outbox.session_started();
        let mut out = Vec::with_capacity(self.outbox.held());
        while let Some(o) = self.outbox.pop_sendable(now) {
            if o.sending == Sending::Resend {
                self.counters.messages_resent += 1;
                self.counters.points_resent += o.points as u64;
            }
            out.push(o.frame);
        }
        out
    }

    /// When the oldest unacknowledged message was (last) sent.
    pub fn oldest_sent(&self) -> Option<Instant> {
        self.outbox.oldest_sent()
    }

    /// The connection is gone: nacks for faulty messages will not come.
    pub fn connection_lost(&mut self) {
        self.counters.faulty_unanswered += self.faulty_in_flight;
        self.faulty_in_flight = 0;
    }

    /// The run is over: what is still in the window is counted as unacked.
    pub fn finish(&mut self) {
        self.connection_lost();
        let (messages, points) = self.outbox.abandon();
        self.counters.messages_unacked += messages;
        self.counters.points_unacked += points;
    }

    /// Handle a frame from the server.
    pub fn receive(&mut self, frame: &Frame, now: Instant) -> Event {
        match self.outbox.receive(frame, now, &mut rand::rng()) {
            Answer::None | Answer::Retrying { .. } => Event::None,
            Answer::Invalid(_) => {
                self.counters.invalid_downlinks += 1;
                Event::Unexpected
            }
            Answer::Unexpected => {
                self.counters.unexpected_acks += 1;
                Event::Unexpected
            }
            Answer::Acked {
                points, latency, ..
            } => {
                self.counters.messages_acked += 1;
                self.counters.points_acked += points as u64;
                Event::Acked { points, latency }
            }
            Answer::Failed(f) => {
                self.counters.messages_nacked += 1;
                self.counters.points_nacked += f.points as u64;
                *self.counters.nacks.entry(f.error).or_default() += 1;
                Event::Nacked {
                    points: f.points,
                    faulty: false,
                }
            }
            Answer::NackWithoutSeq { error, .. } => {
                // Telemetry always carries a seq, so a nack without one is
                // for one of our faulty messages.
                self.faulty_in_flight = self.faulty_in_flight.saturating_sub(1);
                self.counters.faulty_nacked += 1;
                *self.counters.faulty_nacks.entry(error).or_default() += 1;
                Event::Nacked {
                    points: 0,
                    faulty: true,
                }
            }
            Answer::Command { id, name, args } => {
                *self.counters.commands.entry(name.clone()).or_default() += 1;
                let (ok, detail, effect) = command(&name, &args);
                let reply = message::command_result(self.encoding(), &id, ok, detail.as_deref());
                Event::Command { reply, effect }
            }
        }
    }
}

/// What a device does with a command: `(ok, detail, effect)`.
pub fn command(name: &str, args: &serde_json::Value) -> (bool, Option<String>, Effect) {
    let seconds = args.get("seconds").and_then(|v| v.as_f64());
    match name {
        "set_interval" => match seconds {
            Some(s) if s.is_finite() && s > 0.0 && s <= MAX_INTERVAL_S => {
                (true, None, Effect::SetInterval(Duration::from_secs_f64(s)))
            }
            _ => (
                false,
                Some(format!(
                    "set_interval needs args.seconds: a number above 0 and at most {MAX_INTERVAL_S}"
                )),
                Effect::None,
            ),
        },
        "reboot" => match args.get("seconds") {
            None => (true, None, Effect::Reboot(Duration::from_secs(1))),
            Some(_) => match seconds {
                Some(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => {
                    (true, None, Effect::Reboot(Duration::from_secs_f64(s)))
                }
                _ => (
                    false,
                    Some("reboot takes args.seconds between 0 and 3600".into()),
                    Effect::None,
                ),
            },
        },
        other => (
            false,
            Some(format!(
                "unknown command {other:?}: this device knows set_interval and reboot"
            )),
            Effect::None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use wsingest_proto::decode::Format;
    use wsingest_proto::protocol::Downlink as Server;

    fn frame(d: Server) -> Frame {
        wsingest_device::wire::from_server(d.encode(Format::Json))
    }

    #[test]
    fn acks_in_any_order_empty_the_window() {
        let mut p = Protocol::new(Encoding::Json, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            let seq = p.take_seq();
            p.sent(seq, Frame::text(format!("m{seq}")), 2, t0);
        }
        assert!(!p.has_room());
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(
            p.receive(&frame(Server::Ack { ack: 3 }), t1),
            Event::Acked {
                points: 2,
                latency: Duration::from_millis(40)
            }
        );
        assert!(p.has_room());
        assert!(matches!(
            p.receive(&frame(Server::nack(Some(1), "too_large", "x")), t1),
            Event::Nacked {
                points: 2,
                faulty: false
            }
        ));
        assert_eq!(
            p.receive(&frame(Server::Ack { ack: 3 }), t1),
            Event::Unexpected
        );
        assert!(matches!(
            p.receive(&frame(Server::Ack { ack: 2 }), t1),
            Event::Acked { .. }
        ));
        assert!(p.is_idle());
        let c = &p.counters;
        assert_eq!(
            (
                c.messages_sent,
                c.messages_acked,
                c.messages_nacked,
                c.unexpected_acks
            ),
            (3, 2, 1, 1)
        );
        assert_eq!((c.points_sent, c.points_acked, c.points_nacked), (6, 4, 2));
        assert_eq!(c.nacks.get("too_large"), Some(&1));
    }

    #[test]
    fn resend_keeps_frames_and_order() {
        let mut p = Protocol::new(Encoding::Json, 10);
        let t0 = Instant::now();
        for _ in 0..4 {
            let seq = p.take_seq();
            p.sent(seq, Frame::text(format!("m{seq}")), 1, t0);
        }
        p.receive(&frame(Server::Ack { ack: 2 }), t0);
        let later = t0 + Duration::from_secs(5);
        let again = p.resend(later);
        assert_eq!(
            again,
            vec![Frame::text("m1"), Frame::text("m3"), Frame::text("m4")]
        );
        assert_eq!(p.oldest_sent(), Some(later));
        assert_eq!(p.counters.messages_resent, 3);
        // Seqs keep counting after the resend.
        assert_eq!(p.take_seq(), 5);
        p.finish();
        assert_eq!(
            (p.counters.messages_unacked, p.counters.points_unacked),
            (3, 3)
        );
    }

    #[test]
    fn senml_answers_by_session_number_map_back_to_seqs() {
        let mut p = Protocol::new(Encoding::SenmlJson, 10);
        let t0 = Instant::now();
        assert!(p.resend(t0).is_empty());
        let s1 = p.take_seq();
        p.sent(s1, Frame::text("m1"), 2, t0); // frame 1
        p.sent_faulty(Fault::Garbage); // frame 2
        let s2 = p.take_seq();
        p.sent(s2, Frame::text("m2"), 3, t0); // frame 3
        assert_eq!(
            p.receive(&frame(Server::nack(Some(2), "invalid_json", "x")), t0),
            Event::Nacked {
                points: 0,
                faulty: true
            }
        );
        assert!(matches!(
            p.receive(&frame(Server::Ack { ack: 3 }), t0),
            Event::Acked { points: 3, .. }
        ));
        assert_eq!(
            p.receive(&frame(Server::Ack { ack: 3 }), t0),
            Event::Unexpected
        );
        // Reconnect: numbering restarts, the unacked m1 is frame 1 again,
        // the next new message frame 2.
        assert_eq!(p.resend(t0), vec![Frame::text("m1")]);
        let s3 = p.take_seq();
        p.sent(s3, Frame::text("m3"), 1, t0);
        assert!(matches!(
            p.receive(&frame(Server::Ack { ack: 2 }), t0),
            Event::Acked { points: 1, .. }
        ));
        assert!(matches!(
            p.receive(&frame(Server::Ack { ack: 1 }), t0),
            Event::Acked { points: 2, .. }
        ));
        assert!(p.is_idle());
        let c = &p.counters;
        assert_eq!(
            (c.messages_acked, c.faulty_nacked, c.unexpected_acks),
            (3, 1, 1)
        );
    }

    #[test]
    fn faulty_messages_are_matched_by_null_nacks() {
        let mut p = Protocol::new(Encoding::Json, 10);
        p.sent_faulty(Fault::Garbage);
        p.sent_faulty(Fault::Nan);
        p.sent_faulty(Fault::Oversize);
        let now = Instant::now();
        assert_eq!(
            p.receive(&frame(Server::nack(None, "invalid_json", "x")), now),
            Event::Nacked {
                points: 0,
                faulty: true
            }
        );
        p.connection_lost();
        let c = &p.counters;
        assert_eq!(
            (c.faulty_sent_total(), c.faulty_nacked, c.faulty_unanswered),
            (3, 1, 2)
        );
        assert_eq!(c.messages_nacked, 0, "faulty nacks are not telemetry nacks");
    }

    #[test]
    fn commands() {
        assert_eq!(
            command("set_interval", &json!({"seconds": 5})),
            (true, None, Effect::SetInterval(Duration::from_secs(5)))
        );
        assert_eq!(
            command("set_interval", &json!({"seconds": 0.25})).2,
            Effect::SetInterval(Duration::from_millis(250))
        );
        for bad in [
            json!({}),
            json!({"seconds": 0}),
            json!({"seconds": "5"}),
            json!({"seconds": 1e9}),
            json!(null),
        ] {
            let (ok, detail, effect) = command("set_interval", &bad);
            assert!(
                !ok && detail.unwrap().contains("args.seconds") && effect == Effect::None,
                "{bad}"
            );
        }
        assert_eq!(
            command("reboot", &json!(null)).2,
            Effect::Reboot(Duration::from_secs(1))
        );
        assert_eq!(
            command("reboot", &json!({"seconds": 0})).2,
            Effect::Reboot(Duration::ZERO)
        );
        let (ok, detail, _) = command("selfdestruct", &json!({}));
        assert!(!ok && detail.unwrap().contains("unknown command"));
    }

    #[tokio::test]
    async fn a_command_is_answered_in_the_session_encoding() {
        let mut p = Protocol::new(Encoding::Cbor, 10);
        let cmd = Server::Command {
            cmd: "c-1".into(),
            name: "set_interval".into(),
            args: Some(json!({"seconds": 2})),
        };
        let Event::Command { reply, effect } = p.receive(
            &wsingest_device::wire::from_server(cmd.encode(Format::Cbor)),
            Instant::now(),
        ) else {
            panic!()
        };
        assert_eq!(effect, Effect::SetInterval(Duration::from_secs(2)));
        let Some(Frame::Binary(b)) = reply else {
            panic!("CBOR reply is binary")
        };
        let v: serde_json::Value = ciborium::from_reader(&b[..]).unwrap();
        assert_eq!(v, json!({"cmd_result": "c-1", "ok": true}));
        assert_eq!(p.counters.commands.get("set_interval"), Some(&1));
    }
}
