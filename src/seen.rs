//! Bounded memory of recent callbacks: which msgIds were handled (dedupe) and which
//! message each (timestamp, sign) pair carried (replay defence).
//!
//! Keys are 64-bit keyed hashes (random key per process), values a fingerprint of the
//! message plus an expiry. Entries live for the signature window: after it, the same
//! headers are refused as stale anyway. Memory is bounded by a capacity: when full (after
//! dropping expired entries) new callbacks are refused with 503 instead of forgetting
//! entries, which would reopen the replay window. Each entry costs a few dozen bytes.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// What a set keeps per key. There can be millions, so every byte counts twice (the
/// hash table keeps between 1.1 and 2.3 buckets per entry).
pub trait SlotKind: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// A slot for a first message with `fingerprint`, forgotten at `expires_ms`.
    fn new(expires_ms: i64, fingerprint: u64) -> Self;
    /// When the slot may be forgotten, ms since the epoch.
    fn expires_ms(&self) -> i64;
    /// Fingerprint of the first message (0 where none is kept).
    fn first(&self) -> u64;
}

/// Expiry and the fingerprint of the first message: 16 bytes (replay defence).
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    expires_ms: i64,
    first: u64,
}

impl SlotKind for Slot {
    fn new(expires_ms: i64, first: u64) -> Slot {
        Slot { expires_ms, first }
    }
    fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
    fn first(&self) -> u64 {
        self.first
    }
}

/// Expiry only, 8 bytes: for sets that only ask "seen before?" (msgId dedupe), whose
/// fingerprint is always 0.
#[derive(Debug, Clone, Copy)]
pub struct KeyOnly {
    expires_ms: i64,
}

impl SlotKind for KeyOnly {
    fn new(expires_ms: i64, _fingerprint: u64) -> KeyOnly {
        KeyOnly { expires_ms }
    }
    fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
    fn first(&self) -> u64 {
        0
    }
}

/// What [`SeenSet::record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: recorded.
    New,
    /// This exact message was recorded before.
    Again,
    /// Other messages already used every slot of this key.
    Exhausted,
    /// The set is full of live entries: nothing recorded.
    Full,
}

/// A bounded, expiring map from key to up to `per_key` message fingerprints.
#[derive(Debug)]
pub struct SeenSet<S: SlotKind = Slot> {
    /// key hash → slot.
    map: DashMap<u64, S>,
    /// Expiry and fingerprints of further distinct messages per key; only used when
    /// `per_key` > 1. Locked only while holding the key's `map` entry (never the reverse).
    more: DashMap<u64, (i64, Vec<u64>)>,
    /// Keyed hasher for keys and fingerprints.
    hasher: RandomState,
    /// Most entries kept.
    capacity: usize,
    /// Lifetime of an entry in ms.
    ttl_ms: i64,
    /// Distinct messages allowed per key.
    per_key: usize,
    /// When a full set was last swept on the request path, ms since the epoch.
    last_full_sweep_ms: AtomicI64,
}

impl SeenSet<Slot> {
    /// A set of at most `capacity` keys living `ttl_ms`, each allowing `per_key` messages.
    pub fn new(capacity: usize, ttl_ms: i64, per_key: usize) -> SeenSet<Slot> {
        SeenSet::build(capacity, ttl_ms, per_key)
    }
}

impl SeenSet<KeyOnly> {
    /// A set of at most `capacity` keys living `ttl_ms` that records keys only: `record`
    /// must be given fingerprint 0, and a known key is always [`Seen::Again`].
    pub fn keys_only(capacity: usize, ttl_ms: i64) -> SeenSet<KeyOnly> {
        SeenSet::build(capacity, ttl_ms, 1)
    }
}

impl<S: SlotKind> SeenSet<S> {
    fn build(capacity: usize, ttl_ms: i64, per_key: usize) -> SeenSet<S> {
        SeenSet {
            map: DashMap::new(),
            more: DashMap::new(),
            hasher: RandomState::new(),
            capacity,
            ttl_ms,
            per_key: per_key.max(1),
            last_full_sweep_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    /// Hashes anything with this set's key.
    pub fn hash(&self, value: impl Hash) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Records `fingerprint` under `key` at `now_ms`; the entry lives until
    /// `valid_from_ms + ttl` (at least `now_ms + ttl`).
    pub fn record(&self, key: u64, fingerprint: u64, now_ms: i64, valid_from_ms: i64) -> Seen {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            // A full set is swept at most once a second; the timer sweeps every 30 s.
            let last = self.last_full_sweep_ms.load(Ordering::Relaxed);
            if now_ms - last >= 1_000
                && self
                    .last_full_sweep_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.sweep(now_ms);
            }
            if self.map.len() >= self.capacity {
                return Seen::Full;
            }
        }
        let fresh = S::new(
            now_ms.max(valid_from_ms).saturating_add(self.ttl_ms),
            fingerprint,
        );
        match self.map.entry(key) {
            Entry::Vacant(v) => {
                v.insert(fresh);
                Seen::New
            }
            Entry::Occupied(mut o) => {
                let slot = o.get_mut();
                if slot.expires_ms() <= now_ms {
                    *slot = fresh;
                    self.more.remove(&key);
                    return Seen::New;
                }
                if slot.first() == fingerprint {
                    return Seen::Again;
                }
                if self.per_key == 1 {
                    return Seen::Exhausted;
                }
                // The slot's entry lock is held, so no other caller races on `more[key]`.
                let mut extra = self.more.entry(key).or_default();
                let (expires_ms, fingerprints) = &mut *extra;
                *expires_ms = slot.expires_ms();
                if fingerprints.contains(&fingerprint) {
                    Seen::Again
                } else if 1 + fingerprints.len() < self.per_key {
                    fingerprints.push(fingerprint);
                    Seen::New
                } else {
                    Seen::Exhausted
                }
            }
        }
    }

    /// Forgets `key` (undo of a `record` whose request was refused later).
    pub fn forget(&self, key: u64) {
        self.map.remove(&key);
        self.more.remove(&key);
    }

    /// Drops expired entries.
    pub fn sweep(&self, now_ms: i64) {
        self.map.retain(|_, slot| slot.expires_ms() > now_ms);
        self.more.retain(|_, (expires_ms, _)| *expires_ms > now_ms);
    }

    /// Live and not yet swept entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `key` is remembered and unexpired at `now_ms`.
    pub fn contains(&self, key: u64, now_ms: i64) -> bool {
        self.map.get(&key).is_some_and(|s| s.expires_ms() > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_small() {
        // One accepted callback costs one of each for the signature window (1 h).
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::size_of::<KeyOnly>(), 8);
    }

    #[test]
    fn a_key_only_set_answers_seen_before() {
        let s = SeenSet::keys_only(10, 1_000);
        assert_eq!(s.record(1, 0, 0, 0), Seen::New);
        assert_eq!(s.record(1, 0, 500, 500), Seen::Again);
        assert!(s.contains(1, 999));
        assert!(!s.contains(1, 1_000));
        assert_eq!(s.record(1, 0, 1_000, 1_000), Seen::New);
    }

    #[test]
    fn remembers_until_expiry_and_compares_fingerprints() {
        let s = SeenSet::new(10, 1_000, 1);
        assert_eq!(s.record(1, 7, 0, 0), Seen::New);
        assert_eq!(s.record(1, 7, 500, 500), Seen::Again);
        assert_eq!(s.record(1, 8, 500, 500), Seen::Exhausted);
        assert_eq!(s.record(1, 8, 1_000, 1_000), Seen::New);
    }

    #[test]
    fn per_key_allows_that_many_distinct_messages() {
        let s = SeenSet::new(10, 1_000, 2);
        assert_eq!(s.record(1, 7, 0, 0), Seen::New);
        assert_eq!(s.record(1, 8, 0, 0), Seen::New);
        assert_eq!(s.record(1, 8, 0, 0), Seen::Again);
        assert_eq!(s.record(1, 9, 0, 0), Seen::Exhausted);
    }

    #[test]
    fn entries_live_a_window_past_a_future_timestamp() {
        // A (timestamp, sign) pair from a clock 500 ms ahead stays valid until
        // timestamp + window, so its record must live that long too.
        let s = SeenSet::new(10, 1_000, 1);
        assert_eq!(s.record(1, 7, 0, 500), Seen::New);
        assert_eq!(s.record(1, 8, 1_400, 1_400), Seen::Exhausted);
        assert_eq!(s.record(1, 8, 1_500, 1_500), Seen::New);
    }

    #[test]
    fn full_set_refuses_new_keys_until_entries_expire() {
        let s = SeenSet::new(2, 1_000, 1);
        assert_eq!(s.record(1, 1, 0, 0), Seen::New);
        assert_eq!(s.record(2, 2, 0, 0), Seen::New);
        assert_eq!(s.record(3, 3, 10, 10), Seen::Full);
        assert_eq!(s.record(1, 1, 10, 10), Seen::Again);
        assert_eq!(s.record(3, 3, 1_010, 1_010), Seen::New);
        assert_eq!(s.len(), 1);
    }
}
