//! The high-level client: [`Client::connect`] starts a background task that
//! keeps the session (see [`crate::session`]); [`Client::send`] takes points,
//! [`Client::flush`] waits for their acks. The rules themselves live in the
//! sans-IO [`Outbox`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::connect::{Target, WireBytes};
use crate::disk::DiskBuffer;
use crate::error::{AuthError, Error};
use crate::outbox::{Failure, Outbox, OutboxConfig};
use crate::point::{self, Point};
use crate::timing::Clock;
use crate::wire::{Encoding, frame_len};

/// Where unacked messages are held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Buffer {
    /// In memory: lost when the process ends.
    #[default]
    Memory,
    /// Also in a log in this directory (the Python/Node clients' format): a
    /// process started later on it resends what was never answered.
    Disk(PathBuf),
}

/// How a [`Client`] connects and how much it holds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The device id (the session's path is `/v1/devices/{device}`).
    pub device: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// `Json` or `Cbor`.
    pub encoding: Encoding,
    /// Messages in flight at most (sent, not yet acked). Default 64.
    pub window: usize,
    /// Messages held at most (in flight plus waiting, e.g. offline); when
    /// full, `send` waits and `try_send` fails. Default 10 000.
    pub max_buffered: usize,
    pub buffer: Buffer,
    /// fsync every disk-buffer append (survives power loss). Default off.
    pub fsync: bool,
    /// No answer for this long while messages are in flight: the connection
    /// counts as dead. Default 30 s.
    pub ack_timeout: Duration,
    pub connect_timeout: Duration,
    /// Reconnect backoff: base × 2ⁿ up to max, times 0.5–1. Defaults 0.5 s, 30 s.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The server's `server.max_message_bytes` (1 MiB by default); larger
    /// messages are refused by `send`.
    pub max_message_bytes: usize,
    /// For `wss://`: a PEM file of CA certificates to trust besides the
    /// system's (a private CA that signed the server's certificate).
    pub ca_file: Option<std::path::PathBuf>,
}

impl ClientConfig {
    pub fn new(device: impl Into<String>) -> ClientConfig {
        ClientConfig {
            device: device.into(),
            token: None,
            encoding: Encoding::Json,
            window: 64,
            max_buffered: 10_000,
            buffer: Buffer::Memory,
            fsync: false,
            ack_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_message_bytes: 1 << 20,
            ca_file: None,
        }
    }
}

/// What the client did since it was created: the same keys as the Python,
/// JavaScript and C clients' stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Messages taken by `send` (each once).
    pub sent: u64,
    /// Messages acked (durable on the server).
    pub acked: u64,
    /// Messages refused for good (permanent nack or 1009).
    pub nacked: u64,
    /// Messages sent again after a reconnect (same seq, ts and bytes).
    pub resent: u64,
    /// Messages sent again after a transient nack and its backoff.
    pub retried: u64,
    /// Sessions established after a lost one.
    pub reconnects: u64,
    /// Sessions established in all.
    pub connects: u64,
    pub points_sent: u64,
    pub points_acked: u64,
    /// Messages restored from the disk buffer at start.
    pub restored: u64,
    /// Commands received and answered.
    pub commands: u64,
    /// Nacks by error code (permanent and transient).
    pub nacks: BTreeMap<String, u64>,
    /// Close codes received from the server (and `ack_timeout`).
    pub closes: BTreeMap<String, u64>,
    /// Failed connection attempts by reason (`refused`, `http_503`, ...).
    pub connect_errors: BTreeMap<String, u64>,
    /// Unacked messages held now.
    pub buffered: u64,
    /// Sent on the current connection and not answered yet.
    pub in_flight: u64,
}

/// A downlink command `{"cmd": id, "name": ..., "args": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
}

/// Answers a command: `Ok(())` is `{"ok": true}`, `Err(detail)` is
/// `{"ok": false, "detail": ...}`.
pub type CommandHandler = Arc<dyn Fn(&Command) -> Result<(), String> + Send + Sync>;
pub(crate) type FailureHandler = Arc<dyn Fn(&Failure) + Send + Sync>;

pub(crate) struct Inner {
    pub outbox: Outbox,
    pub disk: Option<DiskBuffer>,
    pub clock: Clock,
    pub stats: Stats,
    pub failures: Vec<Failure>,
    pub fatal: Option<AuthError>,
    pub closed: bool,
    pub max_message_bytes: usize,
    pub on_command: Option<CommandHandler>,
    pub on_failure: Option<FailureHandler>,
}

impl Inner {
    /// The stats with the outbox's counts and the current levels.
    fn stats(&self) -> Stats {
        let c = &self.outbox.counts;
        Stats {
            sent: c.sent,
            acked: c.acked,
            nacked: c.nacked,
            resent: c.resent,
            retried: c.retried,
            points_sent: c.points_sent,
            points_acked: c.points_acked,
            nacks: c.nacks.clone(),
            buffered: self.outbox.held() as u64,
            in_flight: self.outbox.in_flight() as u64,
            ..self.stats.clone()
        }
    }

    /// `seq` was answered: mark it in the disk buffer.
    pub fn answered(&mut self, seq: u64) {
        if let Some(d) = &mut self.disk
            && let Err(e) = d.done(seq, self.outbox.iter_held(), self.outbox.next_seq())
        {
            tracing::warn!(error = %e, "disk buffer: cannot mark a message done");
        }
    }
}

pub(crate) struct Shared {
    pub config: ClientConfig,
    pub target: Target,
    pub state: Mutex<Inner>,
    /// Something was answered or the client stopped: senders and flushers look.
    pub changed: Notify,
    /// Something to send (or close): the session task looks.
    pub wake: Notify,
    pub closed: watch::Sender<bool>,
    pub wire: Arc<WireBytes>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A device's connection to wsingest. See the crate docs for the rules.
pub struct Client {
    shared: Arc<Shared>,
    runner: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Check the configuration, open the disk buffer (restoring what it
    /// holds) and start connecting in the background. `url` is the server's
    /// base URL (`ws://host:8765`) or one with `{device}` in its path.
    /// Returns at once: messages are held until the session is up.
    pub async fn connect(url: &str, config: ClientConfig) -> Result<Client, Error> {
        if config.encoding.numbers_messages() {
            return Err(Error::Config("encoding: json or cbor".into()));
        }
        if config.window == 0 || config.max_buffered == 0 || config.device.is_empty() {
            return Err(Error::Config(
                "device must be set, window and max_buffered at least 1".into(),
            ));
        }
        let target = Target::resolve_with_ca(url, config.ca_file.as_deref()).await?;
        let mut outbox = Outbox::new(OutboxConfig {
            encoding: config.encoding,
            buffer: config.max_buffered.max(config.window),
            window: config.window,
            retry_transient: true,
            nack_backoff: (
                config.backoff_base,
                config.backoff_max.min(Duration::from_secs(5)),
            ),
        });
        let mut stats = Stats::default();
        let disk = match &config.buffer {
            Buffer::Memory => None,
            Buffer::Disk(dir) => {
                let (disk, stored, next) =
                    DiskBuffer::open(dir, config.fsync).map_err(|source| Error::Disk {
                        path: dir.clone(),
                        source,
                    })?;
                stats.restored = stored.len() as u64;
                for s in stored {
                    outbox.restore(s.seq, s.frame, s.points);
                }
                outbox.set_next_seq(next);
                Some(disk)
            }
        };
        let inner = Inner {
            outbox,
            disk,
            clock: Clock::new(0),
            stats,
            failures: Vec::new(),
            fatal: None,
            closed: false,
            max_message_bytes: config.max_message_bytes,
            on_command: None,
            on_failure: None,
        };
        let shared = Arc::new(Shared {
            config,
            target,
            state: Mutex::new(inner),
            changed: Notify::new(),
            wake: Notify::new(),
            closed: watch::channel(false).0,
            wire: Arc::new(WireBytes::default()),
        });
        let runner = tokio::spawn(crate::session::run(shared.clone()));
        Ok(Client {
            shared,
            runner: Mutex::new(Some(runner)),
        })
    }

    /// Take one point; returns its `seq`. Returns once the message is held
    /// (and in the disk buffer), not once acked: [`Client::flush`] waits for
    /// that. Waits while `max_buffered` messages are held.
    pub async fn send(&self, point: Point) -> Result<u64, Error> {
        self.send_batch(vec![point]).await
    }

    /// Take several points as one message (one seq, one ack).
    pub async fn send_batch(&self, points: Vec<Point>) -> Result<u64, Error> {
        let mut points = Some(points);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.take(&mut points) {
                Err(Error::BufferFull { .. }) => changed.await,
                other => return other,
            }
        }
    }

    /// Like [`Client::send`], but fails with [`Error::BufferFull`] instead
    /// of waiting.
    pub fn try_send(&self, point: Point) -> Result<u64, Error> {
        self.take(&mut Some(vec![point]))
    }

    fn take(&self, points: &mut Option<Vec<Point>>) -> Result<u64, Error> {
        let mut st = self.shared.lock();
        usable(&st)?;
        let list = points.as_mut().expect("points are taken once");
        if list.is_empty() {
            return Err(Error::InvalidPoint("no points".into()));
        }
        for p in list.iter() {
            p.check()?;
        }
        if !st.outbox.has_room() {
            return Err(Error::BufferFull {
                held: st.outbox.held(),
            });
        }
        let mut list = points.take().expect("checked");
        for p in &mut list {
            if p.ts.is_none() {
                p.ts = Some(st.clock.stamp());
            }
        }
        let seq = st.outbox.next_seq();
        let frame = point::encode(self.shared.config.encoding, seq, &list)?;
        let size = frame_len(&frame);
        if size > st.max_message_bytes {
            return Err(Error::TooLarge {
                size,
                max: st.max_message_bytes,
            });
        }
        if let Some(d) = &mut st.disk {
            d.append(seq, &frame, list.len() as u32)
                .map_err(|source| Error::Disk {
                    path: d.path().to_path_buf(),
                    source,
                })?;
        }
        let seq = st.outbox.take_seq();
        st.outbox.push(seq, frame, list.len() as u32);
        drop(st);
        self.shared.wake.notify_one();
        Ok(seq)
    }

    /// Wait until every message taken so far is answered. Errors: the
    /// [`AuthError`] that stopped the client, [`Error::DeliveryFailed`] for
    /// messages refused since the last flush (unless `on_failure` is set),
    /// [`Error::Timeout`].
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let last = self.shared.lock().outbox.next_seq() - 1;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if let Some(e) = &st.fatal {
                    return Err(e.clone().into());
                }
                if st.outbox.oldest_seq().is_none_or(|s| s > last) {
                    if st.failures.is_empty() {
                        return Ok(());
                    }
                    return Err(Error::DeliveryFailed(std::mem::take(&mut st.failures)));
                }
                if st.closed {
                    return Err(Error::Closed);
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let st = self.shared.lock();
                let unacked = st.outbox.iter_held().filter(|(s, _, _)| *s <= last).count();
                if unacked > 0 {
                    return Err(Error::Timeout { unacked, timeout });
                }
            }
        }
    }

    /// Handle downlink commands; without a handler every command is
    /// answered `ok: false`.
    pub fn on_command(
        &self,
        handler: impl Fn(&Command) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.shared.lock().on_command = Some(Arc::new(handler));
    }

    /// Get refused messages here as they happen, instead of from `flush`.
    pub fn on_failure(&self, handler: impl Fn(&Failure) + Send + Sync + 'static) {
        self.shared.lock().on_failure = Some(Arc::new(handler));
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Bytes on the wire (WebSocket framing and handshakes included).
    pub fn wire_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let w = &self.shared.wire;
        (w.sent.load(Relaxed), w.received.load(Relaxed))
    }

    /// The error that stopped the client, if any.
    pub fn auth_error(&self) -> Option<AuthError> {
        self.shared.lock().fatal.clone()
    }

    /// Close the session (1000) and stop. Does not wait for acks: flush
    /// first. Unacked messages stay in the disk buffer, if any.
    pub async fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.closed.send_replace(true);
        self.shared.wake.notify_one();
        self.shared.changed.notify_waiters();
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = runner {
            let _ = r.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(r) = self.runner.lock().unwrap_or_else(|p| p.into_inner()).take() {
            r.abort();
        }
    }
}

fn usable(st: &Inner) -> Result<(), Error> {
    if let Some(e) = &st.fatal {
        return Err(e.clone().into());
    }
    if st.closed {
        return Err(Error::Closed);
    }
    Ok(())
}

/// A refused message: to the callback, or kept for the next `flush`.
pub(crate) fn report_failure(shared: &Shared, f: Failure) {
    let handler = {
        let mut st = shared.lock();
        st.answered(f.seq);
        match st.on_failure.clone() {
            Some(h) => h,
            None => {
                st.failures.push(f);
                return;
            }
        }
    };
    handler(&f);
}
