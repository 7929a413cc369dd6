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
//! expire after the window, and the map is bounded (oldest evicted first):
//! an evicted or expired entry only means a resend is treated as new.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::time::Instant;

const SHARDS: usize = 16;

type Key = (Arc<str>, u64);

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
    hash: u64,
    ts_ns: i64,
    acked: bool,
    /// Which insertion this is, to match `order` entries.
    generation: u64,
}

/// foldhash, randomly seeded per process: SipHash (std's default) was ~8 % of
/// the server's CPU on single-point messages, three hashes per message; the
/// random seed keeps devices from choosing colliding seqs.
type Hasher = foldhash::fast::RandomState;

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Slot, Hasher>,
    /// Insertion order, for expiry and eviction; may hold keys since
    /// replaced (their `at` no longer matches) which are skipped.
    order: VecDeque<(Key, Instant, u64)>,
    generation: u64,
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

    fn shard(&self, device: &str, seq: u64) -> std::sync::MutexGuard<'_, Shard> {
        let h = self.hasher.hash_one((device, seq));
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Look a message up, remembering it when new.
    pub fn check(&self, device: &Arc<str>, seq: u64, hash: u64, now_ns: i64) -> Seen {
        self.check_at(Instant::now(), device, seq, hash, now_ns)
    }

    fn check_at(&self, now: Instant, device: &Arc<str>, seq: u64, hash: u64, now_ns: i64) -> Seen {
        let mut shard = self.shard(device, seq);
        shard.expire(now, self.window, self.per_shard);
        let key = (device.clone(), seq);
        if let Some(slot) = shard.map.get(&key)
            && slot.hash == hash
        {
            return if slot.acked {
                Seen::Acked
            } else {
                Seen::InFlight { ts_ns: slot.ts_ns }
            };
        }
        shard.generation += 1;
        let generation = shard.generation;
        shard.map.insert(
            key.clone(),
            Slot {
                hash,
                ts_ns: now_ns,
                acked: false,
                generation,
            },
        );
        shard.order.push_back((key, now, generation));
        shard.expire(now, self.window, self.per_shard);
        Seen::New
    }

    /// The message was acked.
    pub fn acked(&self, device: &Arc<str>, seq: u64) {
        if let Some(slot) = self.shard(device, seq).map.get_mut(&(device.clone(), seq)) {
            slot.acked = true;
        }
    }

    /// The message was nacked: a resend is a new message.
    pub fn forget(&self, device: &Arc<str>, seq: u64) {
        self.shard(device, seq).map.remove(&(device.clone(), seq));
    }
}

impl Shard {
    fn expire(&mut self, now: Instant, window: Duration, cap: usize) {
        while let Some((key, at, generation)) = self.order.front() {
            let old = now.duration_since(*at) >= window;
            if !old && self.order.len() <= cap {
                break;
            }
            if self
                .map
                .get(key)
                .is_some_and(|s| s.generation == *generation)
            {
                self.map.remove(key);
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
        let total: usize = d.shards.iter().map(|s| s.lock().unwrap().map.len()).sum();
        let order: usize = d.shards.iter().map(|s| s.lock().unwrap().order.len()).sum();
        assert!(
            total <= 64 + SHARDS && order <= 64 + SHARDS,
            "{total} {order}"
        );
        // The newest are kept.
        assert_eq!(d.check(&dev, 9_999, 7, 2), Seen::InFlight { ts_ns: 1 });
    }
}
