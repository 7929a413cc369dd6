//! Session ownership across gateways: one session per device holds for the
//! whole deployment, as it does on one gateway, and the newest wins.
//!
//! Every exclusive session (one per device, `replace`) a gateway admits is
//! claimed in the sessions bucket: key = the device, value = [`Owner`]
//! (gateway, session). Every gateway watches the bucket. The bucket is one
//! ordered log, so each claim has a revision and every gateway sees claims
//! in the same order; the rule ([`Claims::seen`]) is:
//!
//! > a local session is closed (1008, "replaced by a newer session of this
//! > device") when a claim of another session for its device appears with
//! > a higher revision than its own claim.
//!
//! So of two quick reconnects on two gateways, the one whose claim landed
//! last survives, on both gateways' reading; a claim seen before a local
//! session's own claim has landed is older than it and closes nothing.
//! The handshake answers 101 only once its own claim landed (at most
//! [`crate::limits::ANNOUNCE_WAIT`]): a device that reconnects after
//! its handshake completed always makes the newer claim, so its newest
//! session is the one that stays (without that wait, a reconnect within a
//! millisecond could claim first; measured in tests/cluster.rs).
//! Nothing waits on other sessions' claims, so a stale claim left by a
//! crashed gateway never blocks a device: the new session is admitted, and
//! its claim supersedes the stale one (claims also expire after a day, and
//! a session that ends deletes its claim if still current).
//!
//! When NATS is unreachable, sessions are admitted and kept as on a single
//! gateway (logged once). A claim that could not be written is written
//! again (backing off up to 5 s) while its session lasts: once NATS answers,
//! it lands as the newest claim and closes the device's older sessions
//! elsewhere, as it would have at once. Until it lands, no claim closes it
//! (its revision is unknown), except one seen newer when it lands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::keys::{device_key, key_device};
use super::lag::{Lag, check_timer, head, refollow_backoff};
use crate::limits::{Kick, POLICY, SessionHook};
use prometheus_client::metrics::counter::Counter;

/// The close reason of a replaced session, the same on one gateway or many.
pub const REPLACED: &str = "replaced by a newer session of this device";

/// A claim: who holds a device's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub gateway: String,
    pub session: u64,
    /// Wall clock of the claim, for operators reading the bucket.
    #[serde(default)]
    pub at_ms: i64,
}

/// One local session and the revision of its claim.
struct Local {
    session: u64,
    /// `None` until its claim is seen or acknowledged.
    revision: Option<u64>,
    kick: Kick,
}

/// A device's local sessions, and the newest claim seen for it.
#[derive(Default)]
struct Device {
    locals: Vec<Local>,
    /// The newest claim seen in the bucket while the device had a session
    /// here: a local claim that turns out older loses at once.
    newest: Option<(u64, Owner)>,
}

/// The sans-IO core: this gateway's exclusive sessions and the claim rule.
#[derive(Default)]
pub struct Claims {
    gateway: String,
    devices: HashMap<String, Device>,
}

impl Claims {
    pub fn new(gateway: &str) -> Claims {
        Claims {
            gateway: gateway.into(),
            devices: HashMap::new(),
        }
    }

    pub fn opened(&mut self, device: &str, session: u64, kick: Kick) {
        self.devices
            .entry(device.into())
            .or_default()
            .locals
            .push(Local {
                session,
                revision: None,
                kick,
            });
    }

    /// The session ended; returns its claim's revision if it is known.
    pub fn closed(&mut self, device: &str, session: u64) -> Option<u64> {
        let d = self.devices.get_mut(device)?;
        let i = d.locals.iter().position(|l| l.session == session)?;
        let local = d.locals.swap_remove(i);
        if d.locals.is_empty() {
            self.devices.remove(device);
        }
        local.revision
    }

    /// Whether `session` of `device` is still open here.
    pub fn is_open(&self, device: &str, session: u64) -> bool {
        self.devices
            .get(device)
            .is_some_and(|d| d.locals.iter().any(|l| l.session == session))
    }

    /// The claim of a local session was written at `revision`, by the put's
    /// answer: the kick, if a newer
    /// claim of another session was seen already (the watch may deliver
    /// that one before this answer, or before this claim).
    pub fn claimed(&mut self, device: &str, session: u64, revision: u64) -> Option<Kick> {
        let me = self.gateway.clone();
        let d = self.devices.get_mut(device)?;
        let i = d.locals.iter().position(|l| l.session == session)?;
        let own = *d.locals[i].revision.get_or_insert(revision);
        let newer_elsewhere = d
            .newest
            .as_ref()
            .is_some_and(|(rev, o)| *rev > own && !(o.gateway == me && o.session == session));
        if !newer_elsewhere {
            return None;
        }
        let local = d.locals.swap_remove(i);
        if d.locals.is_empty() {
            self.devices.remove(device);
        }
        Some(local.kick)
    }

    /// A claim seen in the bucket: the kicks it causes here (already removed).
    pub fn seen(&mut self, device: &str, owner: &Owner, revision: u64) -> Vec<Kick> {
        let Some(d) = self.devices.get_mut(device) else {
            return Vec::new();
        };
        if d.newest.as_ref().is_none_or(|(rev, _)| *rev < revision) {
            d.newest = Some((revision, owner.clone()));
        }
        let mine = owner.gateway == self.gateway;
        let mut kicks = Vec::new();
        d.locals.retain_mut(|l| {
            if mine && l.session == owner.session {
                l.revision.get_or_insert(revision);
                return true;
            }
            match l.revision {
                Some(own) if own < revision => {
                    kicks.push(l.kick.clone());
                    false
                }
                _ => true,
            }
        });
        if d.locals.is_empty() {
            self.devices.remove(device);
        }
        kicks
    }

    /// Local sessions tracked (for tests and logs).
    pub fn len(&self) -> usize {
        self.devices.values().map(|d| d.locals.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

enum Work {
    Claim {
        device: String,
        session: u64,
        /// Writes of this claim that failed so far.
        attempt: u32,
        /// Told once the first write landed (or failed).
        done: Option<oneshot::Sender<()>>,
    },
    Release {
        device: String,
        revision: u64,
    },
}

/// Claims queued before more are dropped (and count as unwritten).
const QUEUE: usize = 16_384;
/// Claims written at once.
const IN_FLIGHT: usize = 64;

/// The [`SessionHook`] that claims sessions, and the bucket it claims in.
pub struct Ownership {
    gateway: String,
    claims: Arc<Mutex<Claims>>,
    work: mpsc::Sender<Work>,
    store: kv::Store,
    bucket: String,
    /// Set while NATS refuses claims: logged once per outage.
    degraded: Arc<AtomicBool>,
    /// `wsingest_sessions_replaced_total`, as for a replacement on one gateway.
    replaced: Counter,
}

impl Ownership {
    /// Open (or create) the sessions bucket, start watching it, and start
    /// the task that writes claims, until `shutdown`.
    pub async fn start(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        startup: Duration,
        gateway: &str,
        replaced: Counter,
        shutdown: CancellationToken,
    ) -> Result<Arc<Ownership>, ClusterError> {
        let store = super::open_bucket(
            js,
            super::BucketSpec {
                name: bucket,
                description: "wsingest session ownership: device -> gateway, session",
                history: 1,
                // A crashed gateway's claims go away by themselves.
                max_age: Duration::from_secs(24 * 3600),
                replicas,
                startup,
            },
        )
        .await?;
        let bucket_err = |e: &dyn std::fmt::Display| ClusterError::Bucket {
            bucket: bucket.into(),
            detail: e.to_string(),
        };
        let watch = store.watch_all().await.map_err(|e| bucket_err(&e))?;
        // Where to follow again from if the watch fails before it saw a claim.
        let last = store
            .status()
            .await
            .map_err(|e| bucket_err(&e))?
            .info
            .state
            .last_sequence;
        let (tx, rx) = mpsc::channel(QUEUE);
        let me = Arc::new(Ownership {
            gateway: gateway.into(),
            claims: Arc::new(Mutex::new(Claims::new(gateway))),
            work: tx,
            store,
            bucket: bucket.into(),
            degraded: Arc::new(AtomicBool::new(false)),
            replaced,
        });
        tokio::spawn(me.clone().write_claims(rx, shutdown.clone()));
        tokio::spawn(me.clone().follow(watch, last, shutdown));
        Ok(me)
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who holds `device` now, by the bucket; `None` also when NATS does not
    /// answer within half a second (the caller then asks every gateway).
    pub async fn owner_of(&self, device: &str) -> Option<Owner> {
        let entry = tokio::time::timeout(
            Duration::from_millis(500),
            self.store.entry(device_key(device)),
        )
        .await
        .ok()?
        .ok()??;
        if entry.operation != kv::Operation::Put {
            return None;
        }
        serde_json::from_slice(&entry.value).ok()
    }

    fn outage(&self, error: &dyn std::fmt::Display) {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(bucket = %self.bucket, error = %error,
                "cannot write session claims to NATS: sessions keep working on this gateway, \
                 but a device's older session on another gateway is not closed until NATS answers again");
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(bucket = %self.bucket, "session claims written to NATS again");
        }
    }

    async fn write_claims(self: Arc<Self>, mut rx: mpsc::Receiver<Work>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            let work = tokio::select! {
                _ = stop.cancelled() => return,
                w = rx.recv() => match w { Some(w) => w, None => return },
            };
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match work {
                    Work::Claim {
                        device,
                        session,
                        attempt,
                        done,
                    } => {
                        let landed = me.claim(&device, session).await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        if !landed {
                            me.claim_again(device, session, attempt + 1);
                        }
                    }
                    Work::Release { device, revision } => {
                        // Only if still ours: a newer claim must stay.
                        let _ = me
                            .store
                            .delete_expect_revision(device_key(&device), Some(revision))
                            .await;
                    }
                }
            });
        }
    }

    /// Queue the claim once more after a backoff, unless its session ended.
    fn claim_again(self: &Arc<Self>, device: String, session: u64, attempt: u32) {
        let me = self.clone();
        tokio::spawn(async move {
            let wait =
                Duration::from_millis(200 * 2u64.pow(attempt.min(5))).min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
            if me.claims().is_open(&device, session) {
                let work = Work::Claim {
                    device,
                    session,
                    attempt,
                    done: None,
                };
                let _ = me.work.send(work).await;
            }
        });
    }

    /// Write the claim; whether it landed.
    async fn claim(&self, device: &str, session: u64) -> bool {
        let owner = Owner {
            gateway: self.gateway.clone(),
            session,
            at_ms: wsingest_proto::clock::wall_ms(),
        };
        let value = serde_json::to_vec(&owner).expect("owner serializes");
        let revision = match self.store.put(device_key(device), value.into()).await {
            Ok(revision) => {
                self.recovered();
                revision
            }
            Err(e) => {
                self.outage(&e);
                return false;
            }
        };
        let kick = self.claims().claimed(device, session, revision);
        if let Some(kick) = kick {
            self.replace(device, &kick);
        }
        true
    }

    fn replace(&self, device: &str, kick: &Kick) {
        tracing::info!(device = %device, "closing session: the device connected to another gateway");
        kick.kick(POLICY, REPLACED);
        self.replaced.inc();
    }

    /// Apply claims seen in the bucket; follow it again after a failure,
    /// from the revision after the last one seen.
    async fn follow(self: Arc<Self>, mut watch: kv::Watch, mut last: u64, stop: CancellationToken) {
        let mut backoff = refollow_backoff();
        // As the registry's follower: a watch that stays behind the bucket
        // for two checks is replaced (see `super::registry::spawn`).
        let mut check = check_timer();
        loop {
            let mut lag = Lag::default();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = watch.next() => n,
                    _ = check.tick() => {
                        if lag.fell_behind(head(&self.store).await, last) {
                            tracing::warn!(bucket = %self.bucket, "the session ownership watch fell behind the bucket; following it again");
                            break;
                        }
                        continue;
                    }
                };
                match next {
                    Some(Ok(entry)) => {
                        last = last.max(entry.revision);
                        backoff.reset();
                        self.seen(&entry);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "session ownership watch failed");
                        break;
                    }
                    None => break,
                }
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next(None)) => {}
                }
                let again = self.store.watch_all_from_revision(last + 1).await;
                match again {
                    Ok(w) => {
                        watch = w;
                        break;
                    }
                    Err(e) => self.outage(&e),
                }
            }
        }
    }

    fn seen(&self, entry: &kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let (Some(device), Ok(owner)) = (
            key_device(&entry.key),
            serde_json::from_slice::<Owner>(&entry.value),
        ) else {
            return;
        };
        let kicks = self.claims().seen(&device, &owner, entry.revision);
        for kick in kicks {
            self.replace(&device, &kick);
        }
    }
}

impl SessionHook for Arc<Ownership> {
    fn opened(&self, device: &str, session: u64, kick: &Kick) -> Option<oneshot::Receiver<()>> {
        self.claims().opened(device, session, kick.clone());
        let (done, landed) = oneshot::channel();
        let work = Work::Claim {
            device: device.into(),
            session,
            attempt: 0,
            done: Some(done),
        };
        if self.work.try_send(work).is_err() {
            self.outage(&"the claim queue is full");
            self.claim_again(device.into(), session, 1);
            return None;
        }
        // While NATS refuses claims, handshakes do not wait for them.
        (!self.degraded.load(Ordering::Relaxed)).then_some(landed)
    }

    fn closed(&self, device: &str, session: u64) {
        let revision = self.claims().closed(device, session);
        if let Some(revision) = revision {
            let _ = self.work.try_send(Work::Release {
                device: device.into(),
                revision,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(gateway: &str, session: u64) -> Owner {
        Owner {
            gateway: gateway.into(),
            session,
            at_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_newer_claim_elsewhere_closes_the_local_session() {
        let mut a = Claims::new("A");
        let k = Kick::default();
        a.opened("d", 1, k.clone());
        assert!(a.seen("d", &owner("A", 1), 10).is_empty(), "its own claim");
        let kicks = a.seen("d", &owner("B", 7), 11);
        assert_eq!(kicks.len(), 1);
        kicks[0].kick(POLICY, REPLACED);
        assert_eq!(k.wait().await, (1008, REPLACED.to_string()));
        assert!(a.is_empty());
        assert!(a.seen("other", &owner("B", 8), 12).is_empty());
    }

    #[test]
    fn of_two_quick_reconnects_the_last_claim_wins_on_both_gateways() {
        // Session a1 on A and b1 on B open at once; B's claim lands first
        // (revision 5), A's second (6). Each gateway sees both, in order,
        // possibly before its own put answered.
        let mut a = Claims::new("A");
        let mut b = Claims::new("B");
        a.opened("d", 1, Kick::default());
        b.opened("d", 1, Kick::default());
        // A sees B's claim before knowing its own revision: older, kept.
        assert!(a.seen("d", &owner("B", 1), 5).is_empty());
        assert!(a.seen("d", &owner("A", 1), 6).is_empty());
        // B knows its own revision (the put answered) before seeing A's.
        assert!(b.claimed("d", 1, 5).is_none());
        assert!(b.seen("d", &owner("B", 1), 5).is_empty());
        assert_eq!(b.seen("d", &owner("A", 1), 6).len(), 1, "B's session loses");
        assert_eq!(a.len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn a_claim_written_late_wins_and_a_stale_one_blocks_nothing() {
        // NATS was down when session 1 opened: its claim is not written
        // yet. An older claim replayed meanwhile does not close it; once
        // written (revision 5), it is the newest.
        let mut a = Claims::new("A");
        a.opened("d", 1, Kick::default());
        assert!(a.seen("d", &owner("B", 3), 2).is_empty());
        assert!(a.claimed("d", 1, 5).is_none());
        assert_eq!(a.seen("d", &owner("B", 4), 6).len(), 1, "a newer one wins");
        assert!(!a.is_open("d", 1));
        // A crashed gateway's claim (revision 4) is older than a new
        // session's (9): seeing it late closes nothing.
        a.opened("d", 2, Kick::default());
        assert!(a.claimed("d", 2, 9).is_none());
        assert!(a.seen("d", &owner("C", 1), 4).is_empty());
        assert_eq!(a.closed("d", 2), Some(9));
        assert_eq!(a.closed("d", 2), None);
    }

    #[test]
    fn a_newer_claim_seen_before_the_own_put_answered_closes_at_the_answer() {
        // Observed in tests/cluster.rs: B's watch brought A's claim (7)
        // before B's own put answered with 6, and never B's own claim.
        let mut b = Claims::new("B");
        b.opened("d", 1, Kick::default());
        assert!(b.seen("d", &owner("A", 1), 7).is_empty());
        assert!(b.claimed("d", 1, 6).is_some(), "older than A's: loses");
        assert!(b.is_empty());
        // Whereas a claim that lands after the one seen wins.
        let mut a = Claims::new("A");
        a.opened("d", 2, Kick::default());
        assert!(a.seen("d", &owner("B", 1), 6).is_empty());
        assert!(a.claimed("d", 2, 7).is_none());
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn same_gateway_newer_session_replaces_the_older() {
        let mut a = Claims::new("A");
        a.opened("d", 1, Kick::default());
        assert!(a.claimed("d", 1, 3).is_none());
        a.opened("d", 2, Kick::default());
        assert_eq!(a.seen("d", &owner("A", 2), 4).len(), 1);
        assert_eq!(a.len(), 1);
    }
}
