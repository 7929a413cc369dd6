//! The protocol state of one device, sans-IO: the one implementation of the
//! rules that [`crate::Client`] and `wsingest simulate` both run.
//!
//! - Every message gets the next `seq` ([`Outbox::take_seq`]), counting on
//!   across reconnects; its encoded frame is kept, byte for byte, until it is
//!   answered. At most `buffer` messages are held, at most `window` of them
//!   in flight on the connection.
//! - [`Outbox::session_started`]: after a (re)connect everything unanswered
//!   goes out again, oldest first, before anything new.
//! - [`Outbox::receive`] matches acks and nacks in any order. A permanent
//!   nack ends the message ([`Answer::Failed`]); a transient one
//!   ([`crate::wire::is_transient`]) puts it back in the queue and pauses the
//!   session for a backoff, after which one message at a time goes out and
//!   the window opens again ack by ack.
//! - SenML sessions number data frames instead of carrying a `seq`: the
//!   server's number is mapped back to the seq here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use crate::timing::Backoff;
use crate::wire::{self, Downlink, Encoding, Frame};

/// After a transient nack the pause grows until this long passes without one.
const NACK_QUIET: Duration = Duration::from_secs(30);

/// How an [`Outbox`] behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub encoding: Encoding,
    /// Messages held (in flight plus waiting) at most.
    pub buffer: usize,
    /// Messages in flight at most.
    pub window: usize,
    /// Resend after transient nacks (`false`: every nack ends the message,
    /// as a load generator that counts nacks wants).
    pub retry_transient: bool,
    /// Pause after a transient nack: base, doubling to max.
    pub nack_backoff: (Duration, Duration),
}

impl OutboxConfig {
    pub fn new(encoding: Encoding, window: usize) -> OutboxConfig {
        OutboxConfig {
            encoding,
            buffer: window,
            window,
            retry_transient: true,
            nack_backoff: (Duration::from_millis(500), Duration::from_secs(5)),
        }
    }
}

/// A message the server refused for good: a permanent nack, or close 1009
/// for the largest unanswered message. It is not resent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub seq: u64,
    /// `reserved_tag`, `rejected_by_database`, `too_large`, ...
    pub error: String,
    pub detail: String,
    pub points: u32,
    /// The frame as it was sent.
    #[serde(skip)]
    pub frame: Frame,
}

/// What the outbox counted (the client adds connection counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Messages taken (each once).
    pub sent: u64,
    pub acked: u64,
    /// Refused for good.
    pub nacked: u64,
    /// Sent again after a reconnect.
    pub resent: u64,
    /// Sent again after a transient nack.
    pub retried: u64,
    pub points_sent: u64,
    pub points_acked: u64,
    /// Nacks by error (permanent and transient, matched or not).
    pub nacks: BTreeMap<String, u64>,
}

/// How a message leaves the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    First,
    /// After a reconnect.
    Resend,
    /// After a transient nack.
    Retry,
}

/// A message to put on the wire now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub seq: u64,
    pub frame: Frame,
    pub points: u32,
    pub sending: Sending,
}

/// What a frame from the server meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A control frame: nothing to do.
    None,
    /// Not an ack, nack or command.
    Invalid(String),
    Acked {
        seq: u64,
        points: u32,
        latency: Duration,
    },
    /// Refused for good: tell the caller.
    Failed(Failure),
    /// A transient nack: queued again, the session paused until `until`.
    Retrying {
        seq: u64,
        error: String,
        until: Instant,
    },
    /// A nack without a seq (a message whose seq the server could not read).
    NackWithoutSeq { error: String, detail: String },
    /// An answer for a seq not in flight.
    Unexpected,
    Command {
        id: String,
        name: String,
        args: serde_json::Value,
    },
}

#[derive(Debug, Clone)]
struct Held {
    frame: Frame,
    points: u32,
    in_flight: bool,
    sent_before: bool,
    /// Goes out again because its connection was lost.
    resend: bool,
    sent_at: Instant,
}

/// The sans-IO state of one device: seqs, held messages, what to send next,
/// matching answers.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    next_seq: u64,
    held: BTreeMap<u64, Held>,
    queue: BTreeSet<u64>,
    in_flight: usize,
    /// In flight allowed now: `window`, down to 1 after a transient nack.
    cwnd: usize,
    hold_until: Option<Instant>,
    nack_backoff: Backoff,
    last_transient: Option<Instant>,
    last_progress: Instant,
    /// Data frames sent on this connection (SenML numbering).
    session_frames: u64,
    /// Server's number → our seq (`None`: a frame without one).
    ordinals: BTreeMap<u64, Option<u64>>,
    pub counts: Counts,
}

impl Outbox {
    pub fn new(mut config: OutboxConfig) -> Outbox {
        config.window = config.window.max(1);
        config.buffer = config.buffer.max(config.window);
        let (base, max) = config.nack_backoff;
        Outbox {
            cwnd: config.window,
            nack_backoff: Backoff::new(base, max),
            config,
            next_seq: 1,
            held: BTreeMap::new(),
            queue: BTreeSet::new(),
            in_flight: 0,
            hold_until: None,
            last_transient: None,
            last_progress: Instant::now(),
            session_frames: 0,
            ordinals: BTreeMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.config.encoding
    }

    /// Room to take one more message.
    pub fn has_room(&self) -> bool {
        self.held.len() < self.config.buffer
    }

    /// Nothing unanswered.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    /// Messages held (in flight or waiting).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn held_points(&self) -> u64 {
        self.held.values().map(|h| h.points as u64).sum()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The lowest seq still unanswered.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.held.keys().next().copied()
    }

    /// The held messages in seq order: `(seq, frame, points)`.
    pub fn iter_held(&self) -> impl Iterator<Item = (u64, &Frame, u32)> {
        self.held.iter().map(|(s, h)| (*s, &h.frame, h.points))
    }

    /// The seq the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq for the next message: per device, increasing across
    /// reconnects, so a resend keeps its number.
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Take a new message (encoded with `seq` from [`Outbox::take_seq`]).
    pub fn push(&mut self, seq: u64, frame: Frame, points: u32) {
        self.counts.sent += 1;
        self.counts.points_sent += points as u64;
        self.insert(seq, frame, points, false);
    }

    /// A message restored from a disk buffer: sent before, resent now.
    pub fn restore(&mut self, seq: u64, frame: Frame, points: u32) {
        self.next_seq = self.next_seq.max(seq + 1);
        self.insert(seq, frame, points, true);
    }

    /// Never hand out a seq below `next` (from a disk buffer).
    pub fn set_next_seq(&mut self, next: u64) {
        self.next_seq = self.next_seq.max(next);
    }

    fn insert(&mut self, seq: u64, frame: Frame, points: u32, sent_before: bool) {
        self.held.insert(
            seq,
            Held {
                frame,
                points,
                in_flight: false,
                sent_before,
                resend: sent_before,
                sent_at: Instant::now(),
            },
        );
        self.queue.insert(seq);
    }

    /// A new connection: the server's numbering restarts and everything
    /// unanswered goes out again, in seq order, with the same bytes.
    pub fn session_started(&mut self) {
        self.session_frames = 0;
        self.ordinals.clear();
        self.in_flight = 0;
        for (seq, h) in self.held.iter_mut() {
            if h.sent_before {
                h.resend = true;
            }
            h.in_flight = false;
            self.queue.insert(*seq);
        }
    }

    /// Paused after a transient nack until then.
    pub fn held_back_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until
            .filter(|t| *t > now && !self.queue.is_empty())
    }

    /// The next message to send now, if the window and any pause allow.
    pub fn pop_sendable(&mut self, now: Instant) -> Option<Outgoing> {
        if self.in_flight >= self.cwnd || self.hold_until.is_some_and(|t| now < t) {
            return None;
        }
        let seq = self.queue.pop_first()?;
        let h = self.held.get_mut(&seq).expect("queued messages are held");
        let sending = if h.resend {
            self.counts.resent += 1;
            Sending::Resend
        } else if h.sent_before {
            self.counts.retried += 1;
            Sending::Retry
        } else {
            Sending::First
        };
        h.resend = false;
        h.sent_before = true;
        h.in_flight = true;
        h.sent_at = now;
        let out = Outgoing {
            seq,
            frame: h.frame.clone(),
            points: h.points,
            sending,
        };
        if self.in_flight == 0 {
            self.last_progress = now;
        }
        self.in_flight += 1;
        self.numbered(Some(seq));
        Some(out)
    }

    /// A data frame that is not a held message went out (the simulator's
    /// faulty messages): SenML sessions number it too.
    pub fn sent_unnumbered(&mut self) {
        self.numbered(None);
    }

    fn numbered(&mut self, seq: Option<u64>) {
        self.session_frames += 1;
        if self.config.encoding.numbers_messages() {
            self.ordinals.insert(self.session_frames, seq);
        }
    }

    /// When the oldest message in flight was sent.
    pub fn oldest_sent(&self) -> Option<Instant> {
        self.held
            .values()
            .filter(|h| h.in_flight)
            .map(|h| h.sent_at)
            .min()
    }

    /// When the connection counts as dead: `timeout` without any answer
    /// while messages are in flight.
    pub fn ack_deadline(&self, timeout: Duration) -> Option<Instant> {
        (self.in_flight > 0).then(|| self.last_progress + timeout)
    }

    /// Close 1009: the server refused a frame over its limit before reading
    /// it, so the largest unanswered message is over it too. It fails for
    /// good (else every reconnect would resend it and be closed again).
    pub fn fail_largest(&mut self, detail: &str) -> Option<Failure> {
        let (&seq, _) = self
            .held
            .iter()
            .max_by_key(|(s, h)| (wire::frame_len(&h.frame), std::cmp::Reverse(**s)))?;
        let size = wire::frame_len(&self.held[&seq].frame);
        let f = self.fail(
            seq,
            "too_large".into(),
            format!("the server closed the connection with 1009 (message too big): this message is {size} bytes {detail}").trim().to_string(),
        );
        Some(f)
    }

    fn remove(&mut self, seq: u64) -> Option<Held> {
        let h = self.held.remove(&seq)?;
        self.queue.remove(&seq);
        if h.in_flight {
            self.in_flight -= 1;
        }
        Some(h)
    }

    fn fail(&mut self, seq: u64, error: String, detail: String) -> Failure {
        let h = self.remove(seq).expect("failing a held message");
        self.counts.nacked += 1;
        Failure {
            seq,
            error,
            detail,
            points: h.points,
            frame: h.frame,
        }
    }

    /// Everything still held is given up (the run is over); returns
    /// (messages, points).
    pub fn abandon(&mut self) -> (u64, u64) {
        let n = (self.held.len() as u64, self.held_points());
        self.held.clear();
        self.queue.clear();
        self.in_flight = 0;
        n
    }

    /// Handle a frame from the server.
    pub fn receive(&mut self, frame: &Frame, now: Instant, rng: &mut impl Rng) -> Answer {
        let down = match wire::parse_downlink(frame) {
            None => return Answer::None,
            Some(Ok(d)) => d,
            Some(Err(e)) => return Answer::Invalid(e),
        };
        let Some(down) = self.resolve_seq(down) else {
            return Answer::Unexpected;
        };
        match down {
            Downlink::Ack(seq) => {
                self.last_progress = now;
                if !self.held.get(&seq).is_some_and(|h| h.in_flight) {
                    return Answer::Unexpected;
                }
                let h = self.remove(seq).expect("checked");
                self.counts.acked += 1;
                self.counts.points_acked += h.points as u64;
                if self.cwnd < self.config.window {
                    self.cwnd += 1; // slow start after a transient nack
                }
                if self
                    .last_transient
                    .is_none_or(|t| now.saturating_duration_since(t) > NACK_QUIET)
                {
                    self.nack_backoff.reset();
                }
                Answer::Acked {
                    seq,
                    points: h.points,
                    latency: now.saturating_duration_since(h.sent_at),
                }
            }
            Downlink::Nack { seq, error, detail } => {
                self.last_progress = now;
                *self.counts.nacks.entry(error.clone()).or_default() += 1;
                let Some(seq) = seq else {
                    return Answer::NackWithoutSeq { error, detail };
                };
                if !self.held.get(&seq).is_some_and(|h| h.in_flight) {
                    return Answer::Unexpected;
                }
                if self.config.retry_transient && wire::is_transient(&error) {
                    let h = self.held.get_mut(&seq).expect("checked");
                    h.in_flight = false;
                    self.in_flight -= 1;
                    self.queue.insert(seq);
                    self.cwnd = 1;
                    self.last_transient = Some(now);
                    let until = match self.hold_until {
                        Some(t) if t > now => t,
                        _ => now + self.nack_backoff.next_delay(rng),
                    };
                    self.hold_until = Some(until);
                    return Answer::Retrying { seq, error, until };
                }
                Answer::Failed(self.fail(seq, error, detail))
            }
            Downlink::Command { id, name, args } => Answer::Command { id, name, args },
        }
    }

    /// Where the server numbers messages, its number in an answer → our seq
    /// (`Nack { seq: None }` for a frame without one); `None` for a number
    /// we did not send or already had an answer for.
    fn resolve_seq(&mut self, down: Downlink) -> Option<Downlink> {
        if !self.config.encoding.numbers_messages() {
            return Some(down);
        }
        match down {
            Downlink::Ack(n) => self.ordinals.remove(&n)?.map(Downlink::Ack),
            Downlink::Nack {
                seq: Some(n),
                error,
                detail,
            } => Some(Downlink::Nack {
                seq: self.ordinals.remove(&n)?,
                error,
                detail,
            }),
            other => Some(other),
        }
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
