//! Resend dedupe: a device that lost an ack (its connection dropped first)
//! resends the message, and a message without `ts` would then be stamped
//! with a new receive time and stored twice. This window remembers, per
//! (device, seq), the message's bytes (as a hash) and the receive time it was
//! stamped with:
//!
//! - resent after its ack: acked again, not written again;
//! - resent while the first copy is still in flight (or its outcome was lost
//!   with the old session): written again with the *first* receive time, so
//!   InfluxDB overwrites the same point instead of adding one;
//! - same seq but different bytes: a new message (a device that restarted
//!   its seq), written normally;
//! - nacked: forgotten, so the resend is written.
//!
//! Only messages with a `seq` and at least one point without `ts` are
//! remembered; a point with `ts` is idempotent in InfluxDB anyway. Entries
//! expire after the window, and the window is bounded (oldest evicted first):
//! an evicted or expired entry only means a resend is treated as new.
//!
//! Layout: per device, its remembered messages in arrival order, their seqs
//! increasing. A device's seqs normally go up by one, so a seq is found by
//! its distance from the newest (no hashing, and the slots in use are the
//! recent ones, in cache), else by binary search. A seq at or below the
//! newest that is not remembered (a device that restarted its seqs) starts
//! that device's window afresh. One arrival queue per shard expires and
//! bounds the entries oldest first. (The previous design, one map of
//! (device, seq) pairs, cost ~27 % of the server's CPU on single-point
//! messages: every eviction was a cache miss on a random bucket.)

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::time::Instant;

const SHARDS: usize = 16;

/// What the window knows about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen (or different bytes): write it, stamped `now`.
    New,
    /// Already acked: ack again, do not write.
    Acked,
    /// Seen and not acked yet: write again with this receive time.
    InFlight { ts_ns: i64 },
}

struct Slot {
    seq: u64,
    hash: u64,
    ts_ns: i64,
    acked: bool,
    /// Nacked: a resend is a new message.
    forgotten: bool,
    /// Which insertion of the shard this is, to match `order` entries.
    id: u64,
}

/// One device's remembered messages, in arrival order, seqs increasing.
#[derive(Default)]
struct Window {
    slots: VecDeque<Slot>,
}

impl Window {
    fn find(&self, seq: u64) -> Option<usize> {
        let newest = self.slots.back()?.seq;
        if seq > newest {
            return None;
        }
        let len = self.slots.len();
        if let Ok(back) = usize::try_from(newest - seq)
            && back < len
            && self.slots[len - 1 - back].seq == seq
        {
            return Some(len - 1 - back);
        }
        self.slots.binary_search_by_key(&seq, |s| s.seq).ok()
    }
}

/// foldhash, randomly seeded per process: SipHash (std's default) was ~8 % of
/// the server's CPU on single-point messages; the random seed keeps devices
/// from choosing colliding names.
type Hasher = foldhash::fast::RandomState;

#[derive(Default)]
struct Shard {
    devices: HashMap<Arc<str>, Window, Hasher>,
    /// Arrival order over the shard's devices, for expiry and eviction; may
    /// hold slots since dropped (a restarted window), which are skipped.
    order: VecDeque<(Arc<str>, u64, Instant)>,
    next_id: u64,
}

pub struct Dedupe {
    window: Duration,
    per_shard: usize,
    shards: Vec<Mutex<Shard>>,
    hasher: Hasher,
}

/// The hash of a message's bytes, to tell a resend from a new message.
pub fn message_hash(bytes: &[u8]) -> u64 {
    static SEED: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(bytes)
}

impl Dedupe {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Dedupe {
            window,
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Hasher::default(),
        }
    }

    /// A device's shard: all its seqs live in one.
    fn shard(&self, device: &str) -> std::sync::MutexGuard<'_, Shard> {
        let h = self.hasher.hash_one(device);
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Look a message up, remembering it when new.
    pub fn check(&self, device: &Arc<str>, seq: u64, hash: u64, now_ns: i64) -> Seen {
        self.check_at(Instant::now(), device, seq, hash, now_ns)
    }

    fn check_at(&self, now: Instant, device: &Arc<str>, seq: u64, hash: u64, now_ns: i64) -> Seen {
        let mut guard = self.shard(device);
        guard.expire(now, self.window, self.per_shard);
        let shard = &mut *guard;
        let window = match shard.devices.get_mut(&**device) {
            Some(w) => w,
            // Room for one: most devices have a message or two in the window
            // (a push on an empty deque would make room for four).
            None => shard
                .devices
                .entry(device.clone())
                .or_insert_with(|| Window {
                    slots: VecDeque::with_capacity(1),
                }),
        };
        if let Some(i) = window.find(seq) {
            let slot = &mut window.slots[i];
            if !slot.forgotten && slot.hash == hash {
                return if slot.acked {
                    Seen::Acked
                } else {
                    Seen::InFlight { ts_ns: slot.ts_ns }
                };
            }
            // Other bytes under the same seq, or a resend after a nack: a
            // new message (it keeps the slot's place in the arrival order).
            *slot = Slot {
                hash,
                ts_ns: now_ns,
                acked: false,
                forgotten: false,
                ..*slot
            };
            return Seen::New;
        }
        if window.slots.back().is_some_and(|s| seq <= s.seq) {
            // Not remembered, yet not above the newest: the device
            // restarted its seqs. What it sent before is forgotten.
            window.slots.clear();
        }
        let id = shard.next_id;
        shard.next_id += 1;
        window.slots.push_back(Slot {
            seq,
            hash,
            ts_ns: now_ns,
            acked: false,
            forgotten: false,
            id,
        });
        shard.order.push_back((device.clone(), id, now));
        shard.expire(now, self.window, self.per_shard);
        Seen::New
    }

    /// The message was acked.
    pub fn acked(&self, device: &Arc<str>, seq: u64) {
        self.update(device, seq, |s| s.acked = true);
    }

    /// The message was nacked: a resend is a new message.
    pub fn forget(&self, device: &Arc<str>, seq: u64) {
        self.update(device, seq, |s| s.forgotten = true);
    }

    fn update(&self, device: &str, seq: u64, f: impl FnOnce(&mut Slot)) {
        let mut shard = self.shard(device);
        if let Some(w) = shard.devices.get_mut(device)
            && let Some(i) = w.find(seq)
        {
            f(&mut w.slots[i]);
        }
    }
}

impl Shard {
    fn expire(&mut self, now: Instant, window: Duration, cap: usize) {
        while let Some((device, id, at)) = self.order.front() {
            let old = now.duration_since(*at) >= window;
            if !old && self.order.len() <= cap {
                break;
            }
            if let Some(w) = self.devices.get_mut(&**device) {
                if w.slots.front().is_some_and(|s| s.id == *id) {
                    w.slots.pop_front();
                }
                if w.slots.is_empty() {
                    self.devices.remove(&**device);
                }
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_rules() {
        let d = Dedupe::new(Duration::from_secs(60), 100);
        let dev: Arc<str> = "d1".into();
        let h = message_hash(b"{\"seq\":1}");
        assert_eq!(d.check(&dev, 1, h, 1000), Seen::New);
        assert_eq!(d.check(&dev, 1, h, 2000), Seen::InFlight { ts_ns: 1000 });
        d.acked(&dev, 1);
        assert_eq!(d.check(&dev, 1, h, 3000), Seen::Acked);
        // Same seq, other bytes: a new message.
        assert_eq!(d.check(&dev, 1, h ^ 1, 4000), Seen::New);
        // Another device's seq 1 is its own.
        assert_eq!(d.check(&"d2".into(), 1, h, 5000), Seen::New);
        // Nacked: forgotten.
        d.forget(&"d2".into(), 1);
        assert_eq!(d.check(&"d2".into(), 1, h, 6000), Seen::New);
        // Expired after the window.
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(d.check_at(later, &dev, 1, h, 7000), Seen::New);
    }

    #[test]
    fn bounded() {
        let d = Dedupe::new(Duration::from_secs(60), 64);
        let dev: Arc<str> = "d".into();
        for seq in 0..10_000 {
            d.check(&dev, seq, 7, 1);
        }
        let total: usize = d
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.devices.values().map(|w| w.slots.len()).sum::<usize>()
            })
            .sum();
        let order: usize = d.shards.iter().map(|s| s.lock().unwrap().order.len()).sum();
        assert!(
            total <= 64 + SHARDS && order <= 64 + SHARDS,
            "{total} {order}"
        );
        // The newest are kept.
        assert_eq!(d.check(&dev, 9_999, 7, 2), Seen::InFlight { ts_ns: 1 });
    }

    #[test]
    fn seqs_with_gaps_and_restarts() {
        let d = Dedupe::new(Duration::from_secs(60), 1000);
        let dev: Arc<str> = "d".into();
        for seq in [1, 2, 5, 9, 10] {
            assert_eq!(d.check(&dev, seq, seq, seq as i64), Seen::New);
        }
        // Found by binary search where the seqs have gaps.
        assert_eq!(d.check(&dev, 5, 5, 0), Seen::InFlight { ts_ns: 5 });
        d.acked(&dev, 2);
        assert_eq!(d.check(&dev, 2, 2, 0), Seen::Acked);
        // Never seen, below the newest: the device restarted its seqs.
        assert_eq!(d.check(&dev, 3, 3, 30), Seen::New);
        assert_eq!(d.check(&dev, 5, 5, 50), Seen::New);
        assert_eq!(d.check(&dev, 3, 3, 0), Seen::InFlight { ts_ns: 30 });
    }
}
