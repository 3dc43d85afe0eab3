//! Fixed-size memory of recent callbacks, sized at start and never growing with traffic:
//!
//! - [`ReplayRing`]: how many messages each millisecond of the clock window has carried.
//!   DingTalk's `sign` is a function of the timestamp alone, so a verified (timestamp, sign)
//!   pair *is* its millisecond; one small counter per millisecond of the window replaces a
//!   record per callback.
//! - [`DedupeSet`]: msgIds answered recently, in a preallocated set-associative table with
//!   a TTL; when a bucket is full of live entries the one expiring first is replaced.
//!
//! Both can be written out as plain words and read back (`export`/`import`), so the
//! pipeline can keep them across a restart. No I/O here.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Milliseconds past the clock window the ring keeps before a cell is reused: time for the
/// lazy clearing to catch up (see [`ReplayRing::advance`]).
const GUARD_MS: i64 = 60_000;
/// Pages are given back only this far above the lowest millisecond whose cell nobody can
/// write: that cell is also the one of `now + window + 1`, which a caller whose clock
/// reading is a little later than the newest the ring has seen may already count in.
const RELEASE_MARGIN_MS: i64 = 5_000;
/// The clearing stays this far behind the window's lower edge, so that a caller whose
/// clock reading is slightly older than another's never finds its cell cleared under it.
const CLEAR_LAG_MS: i64 = 1_000;

/// `n` atomics set to zero, taken from the allocator already zeroed (`calloc`; for tables
/// this size, fresh pages from the kernel): a page of the table becomes resident only
/// when a cell on it is first written. The replay ring covers an hour into the future that
/// genuine callbacks never use, so about half of it is never touched; the dedupe table
/// fills as msgIds arrive. Building the table with `AtomicU64::new(0)` per element wrote
/// every page at start (4.1 MiB resident at idle, measured with `/proc/<pid>/smaps`).
fn zeroed_atomics(n: usize) -> Box<[AtomicU64]> {
    let zeroed = Box::<[AtomicU64]>::new_zeroed_slice(n);
    // SAFETY: `AtomicU64` has the same in-memory representation as `u64`, and all-zero
    // bytes are the `u64` 0: every element is a valid `AtomicU64::new(0)`.
    unsafe { zeroed.assume_init() }
}

/// Gives the whole pages inside `words` back to the kernel (`MADV_DONTNEED`): they read as
/// zero afterwards and are not resident until written again. The caller guarantees the
/// words are zero and nobody writes them meanwhile, so nothing observable changes.
fn release_pages(words: &[AtomicU64]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysconf` has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        if page == 0 {
            return;
        }
        let begin = words.as_ptr() as usize;
        let end = begin + std::mem::size_of_val(words);
        let first = begin.div_ceil(page) * page;
        let last = end / page * page;
        if last > first {
            // SAFETY: [first, last) lies inside `words`, memory this ring owns (private,
            // anonymous, from the allocator), and holds only zeros no one may write now
            // (see `ReplayRing::advance`);
            // MADV_DONTNEED on such memory makes it read as zero, which it already is. The
            // result is ignored: if the kernel refuses, the pages simply stay resident.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = words;
}

/// Per-millisecond message counters for the clock window `[now − window, now + window]`.
///
/// Cells are `bits` wide (just enough for `limit`) and packed into 64-bit words; a cell is
/// reused every `len` ms and cleared lazily once its millisecond has left the window.
#[derive(Debug)]
pub struct ReplayRing {
    words: Box<[AtomicU64]>,
    /// Bits per cell.
    bits: u32,
    /// Cells per word.
    per_word: u64,
    /// Mask of one cell, unshifted.
    mask: u64,
    /// Cells in the ring: one per millisecond of twice the window, plus [`GUARD_MS`].
    len: i64,
    /// The clock window (one side), ms.
    window_ms: i64,
    /// Messages allowed per millisecond (k).
    limit: u64,
    /// Every millisecond up to this one has been cleared (or was never used).
    cleared_through: AtomicI64,
    /// The newest clock reading passed to [`ReplayRing::advance`].
    latest_now: AtomicI64,
    /// Serialises clearing.
    clearing: Mutex<()>,
}

/// What [`ReplayRing::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted: the millisecond had carried fewer than k messages.
    Taken,
    /// The millisecond already carried k messages.
    Spent,
    /// The timestamp is outside what the ring covers at `now` (left the window while its
    /// body was read): refused like a spent one.
    OutOfWindow,
}

/// The raw parts of a [`ReplayRing`], for persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingImage {
    /// Bits per cell.
    pub bits: u32,
    /// Cells in the ring.
    pub len: i64,
    /// Every millisecond up to this one was cleared.
    pub cleared_through: i64,
    /// The packed cells.
    pub words: Vec<u64>,
}

impl ReplayRing {
    /// A ring for a clock window of `window_ms` either side of now, allowing `limit`
    /// messages per millisecond (at least 1), empty as of `now_ms`.
    pub fn new(window_ms: i64, limit: usize, now_ms: i64) -> ReplayRing {
        let limit = u64::try_from(limit.max(1)).unwrap_or(u64::MAX);
        let bits = (u64::BITS - limit.leading_zeros()).clamp(1, 32);
        let per_word = u64::from(u64::BITS / bits);
        let window_ms = window_ms.max(1);
        let len = window_ms.saturating_mul(2).saturating_add(GUARD_MS);
        let words = usize::try_from((len as u64).div_ceil(per_word)).unwrap_or(usize::MAX);
        ReplayRing {
            words: zeroed_atomics(words),
            bits,
            per_word,
            mask: (1u64 << bits) - 1,
            len,
            window_ms,
            limit,
            cleared_through: AtomicI64::new(now_ms - window_ms - CLEAR_LAG_MS),
            latest_now: AtomicI64::new(now_ms),
            clearing: Mutex::new(()),
        }
    }

    /// Bytes of cells (fixed).
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Messages allowed per millisecond.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn cell(&self, ts_ms: i64) -> (usize, u32) {
        let slot = ts_ms.rem_euclid(self.len) as u64;
        let word = usize::try_from(slot / self.per_word).unwrap_or(usize::MAX);
        let shift = u32::try_from((slot % self.per_word) * u64::from(self.bits)).unwrap_or(0);
        (word, shift)
    }

    /// Whether the ring covers `ts_ms` at `now_ms`.
    fn covers(&self, ts_ms: i64, now_ms: i64) -> bool {
        ts_ms > self.cleared_through.load(Ordering::Acquire)
            && ts_ms <= now_ms.saturating_add(self.window_ms)
    }

    /// Messages `ts_ms` has carried (0 outside the covered range).
    pub fn count(&self, ts_ms: i64, now_ms: i64) -> u64 {
        self.advance(now_ms);
        if !self.covers(ts_ms, now_ms) {
            return 0;
        }
        let (w, shift) = self.cell(ts_ms);
        self.words.get(w).map_or(0, |word| {
            (word.load(Ordering::Acquire) >> shift) & self.mask
        })
    }

    /// Whether `ts_ms` already carried k messages, or the ring no longer covers it.
    pub fn spent(&self, ts_ms: i64, now_ms: i64) -> bool {
        self.advance(now_ms);
        !self.covers(ts_ms, now_ms) || self.count(ts_ms, now_ms) >= self.limit
    }

    /// Counts one more message for `ts_ms` if it carried fewer than k.
    pub fn take(&self, ts_ms: i64, now_ms: i64) -> Take {
        self.advance(now_ms);
        if !self.covers(ts_ms, now_ms) {
            return Take::OutOfWindow;
        }
        let (w, shift) = self.cell(ts_ms);
        let Some(word) = self.words.get(w) else {
            return Take::OutOfWindow;
        };
        let result = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            ((current >> shift) & self.mask < self.limit).then(|| current + (1u64 << shift))
        });
        match result {
            Ok(_) => Take::Taken,
            Err(_) => Take::Spent,
        }
    }

    /// Undoes one [`ReplayRing::take`] of `ts_ms` (the callback was refused later).
    pub fn give_back(&self, ts_ms: i64) {
        let (w, shift) = self.cell(ts_ms);
        if let Some(word) = self.words.get(w) {
            let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                ((current >> shift) & self.mask > 0).then(|| current - (1u64 << shift))
            });
        }
    }

    /// Clears the cells of milliseconds that left the window. Cheap unless the clearing is
    /// more than half the guard behind; then one caller clears (at most the whole ring)
    /// while the others wait. Correct because a cell is reused by `ts` only when `ts − len`
    /// ≤ `now − window − GUARD_MS`, which this keeps cleared.
    pub fn advance(&self, now_ms: i64) {
        let latest = self
            .latest_now
            .fetch_max(now_ms, Ordering::AcqRel)
            .max(now_ms);
        let edge = now_ms - self.window_ms;
        if self.cleared_through.load(Ordering::Acquire) >= edge - GUARD_MS / 2 {
            return;
        }
        let _guard = self.clearing.lock().unwrap_or_else(|e| e.into_inner());
        let from = self.cleared_through.load(Ordering::Acquire) + 1;
        let to = edge - CLEAR_LAG_MS;
        if to < from {
            return;
        }
        // Only cells that hold a count are written: a page nothing was ever counted on
        // stays untouched (not resident), see [`zeroed_atomics`].
        if to - from + 1 >= self.len {
            for word in &*self.words {
                if word.load(Ordering::Acquire) != 0 {
                    word.store(0, Ordering::Release);
                }
            }
        } else {
            for ts in from..=to {
                let (w, shift) = self.cell(ts);
                if let Some(word) = self.words.get(w)
                    && word.load(Ordering::Acquire) & (self.mask << shift) != 0
                {
                    word.fetch_and(!(self.mask << shift), Ordering::AcqRel);
                }
            }
        }
        self.cleared_through.store(to, Ordering::Release);
        // Cells of milliseconds in (latest − window − GUARD_MS, to] are zero, and the
        // timestamps that share them (a ring later) are beyond `now + window` for every
        // caller whose clock reading is not ahead of `latest` by RELEASE_MARGIN_MS: whole
        // pages of them go back to the kernel. Every page passes through that stretch
        // (≈ 54 s; sweeps come at most ≈ 31 s apart, see `Pipeline::maintain`, and a 4 KiB
        // page is 16 s at 2-bit cells), so what stays resident is what the past hour used.
        // With 16 or 64 KiB pages nothing fits in the stretch and nothing is given back.
        self.release(latest - self.window_ms - GUARD_MS + RELEASE_MARGIN_MS, to);
    }

    /// Returns whole pages of the cells of `[from_ts, to_ts]` (all zero, not writable) to
    /// the kernel; they read as zero again and cost nothing until written.
    fn release(&self, from_ts: i64, to_ts: i64) {
        let n = to_ts - from_ts + 1;
        if n <= 0 || n >= self.len {
            return;
        }
        let start = from_ts.rem_euclid(self.len);
        let per_word = self.per_word as i64;
        let stretches = if start + n <= self.len {
            [(start, start + n), (0, 0)]
        } else {
            [(start, self.len), (0, start + n - self.len)]
        };
        for (p0, p1) in stretches {
            // Words all of whose cells are in the stretch.
            let (w0, w1) = ((p0 + per_word - 1) / per_word, p1 / per_word);
            if let (Ok(w0), Ok(w1)) = (usize::try_from(w0), usize::try_from(w1))
                && let Some(words) = self.words.get(w0..w1)
            {
                release_pages(words);
            }
        }
    }

    /// Milliseconds with at least one message (a scan; for gauges).
    pub fn used(&self) -> usize {
        let mut n = 0usize;
        for word in &*self.words {
            let mut w = word.load(Ordering::Relaxed);
            while w != 0 {
                if w & self.mask != 0 {
                    n += 1;
                }
                w >>= self.bits;
            }
        }
        n
    }

    /// Bits per cell, cells, and the millisecond cleared through: with [`Self::words`],
    /// what a [`RingImage`] holds, for saving without a copy of the ring.
    pub fn shape(&self) -> (u32, i64, i64) {
        let cleared_through = self.cleared_through.load(Ordering::Acquire);
        (self.bits, self.len, cleared_through)
    }

    /// The packed cells, in order.
    pub fn words(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.words.iter().map(|w| w.load(Ordering::Acquire))
    }

    /// A copy of the cells.
    #[cfg(test)]
    pub fn export(&self) -> RingImage {
        let (bits, len, cleared_through) = self.shape();
        RingImage {
            bits,
            len,
            cleared_through,
            words: self.words().collect(),
        }
    }

    /// Replaces the cells with `image` if it has this ring's shape; false (nothing
    /// changed) if not. Cells that left the window meanwhile are cleared on next use.
    pub fn import(&self, image: &RingImage) -> bool {
        if image.bits != self.bits || image.len != self.len || image.words.len() != self.words.len()
        {
            return false;
        }
        let _guard = self.clearing.lock().unwrap_or_else(|e| e.into_inner());
        for (cell, value) in self.words.iter().zip(&image.words) {
            // Zero over zero is skipped: an untouched page stays so.
            if *value != 0 || cell.load(Ordering::Acquire) != 0 {
                cell.store(*value, Ordering::Release);
            }
        }
        self.cleared_through
            .store(image.cleared_through, Ordering::Release);
        true
    }
}

/// Entries per dedupe bucket.
const WAYS: usize = 8;

/// What [`DedupeSet::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit<R> {
    /// The msgId is live in the set: a redelivery.
    Duplicate,
    /// `first` ran and said yes: the msgId is now recorded.
    Recorded(R),
    /// `first` ran and said no: nothing recorded.
    Refused(R),
}

/// The raw parts of a [`DedupeSet`], for persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeImage {
    /// The hash key.
    pub seed: [u64; 2],
    /// Packed entries, bucket by bucket.
    pub entries: Vec<u64>,
}

/// Bucket locks: bucket `i` is guarded by lock `i % LOCKS`. A lock per bucket cost 8 bytes
/// per 8 entries (256 KiB of the default table); 1,024 locks keep contention nil for the
/// one or two threads that admit callbacks.
const LOCKS: usize = 1024;

/// Recently answered msgIds: a fixed table of buckets of [`WAYS`] entries, each entry a
/// 32-bit tag of the msgId's keyed hash and its expiry in whole seconds. A bucket whose
/// entries are all live drops the one expiring first (and counts it in `evicted`).
#[derive(Debug)]
pub struct DedupeSet {
    /// Entries, bucket after bucket; read and written only under the bucket's lock.
    entries: Box<[AtomicU64]>,
    locks: Box<[Mutex<()>]>,
    seed: [u64; 2],
    ttl_ms: i64,
    evicted: AtomicU64,
}

/// An entry: tag in the high half, expiry (s since the epoch, never 0) in the low half.
fn entry(tag: u32, expires_s: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(expires_s)
}

fn expires_s(entry: u64) -> u32 {
    (entry & 0xffff_ffff) as u32
}

fn tag(entry: u64) -> u32 {
    (entry >> 32) as u32
}

/// `ms` as whole seconds (rounded up), saturating into `u32`.
fn secs(ms: i64) -> u32 {
    u32::try_from((ms.max(0) + 999) / 1000).unwrap_or(u32::MAX)
}

/// A bucket's entries, read while its lock is held.
fn load(cells: &[AtomicU64]) -> [u64; WAYS] {
    let mut out = [0; WAYS];
    for (o, c) in out.iter_mut().zip(cells) {
        *o = c.load(Ordering::Relaxed);
    }
    out
}

impl DedupeSet {
    /// A set of about `capacity` entries (rounded up to whole buckets) kept `ttl_ms`,
    /// hashing with a random key.
    pub fn new(capacity: usize, ttl_ms: i64) -> DedupeSet {
        DedupeSet::with_seed(capacity, ttl_ms, [rand::random(), rand::random()])
    }

    fn with_seed(capacity: usize, ttl_ms: i64, seed: [u64; 2]) -> DedupeSet {
        let buckets = capacity.div_ceil(WAYS).max(1);
        DedupeSet {
            entries: zeroed_atomics(buckets * WAYS),
            locks: (0..buckets.min(LOCKS)).map(|_| Mutex::new(())).collect(),
            seed,
            ttl_ms,
            evicted: AtomicU64::new(0),
        }
    }

    /// Entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    fn buckets(&self) -> usize {
        self.entries.len() / WAYS
    }

    /// Bytes of the table (fixed).
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.locks)
    }

    /// Live entries dropped early because their bucket was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Bucket `i`'s lock, held, and its entries.
    fn bucket(&self, i: usize) -> (std::sync::MutexGuard<'_, ()>, &[AtomicU64]) {
        let lock = self.locks[i % self.locks.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (lock, &self.entries[i * WAYS..(i + 1) * WAYS])
    }

    /// The msgId's bucket and tag.
    fn locate(&self, msg_id: &str) -> (usize, u32) {
        let mut h = DefaultHasher::new();
        self.seed.hash(&mut h);
        msg_id.hash(&mut h);
        let hash = h.finish();
        let index = usize::try_from(hash % self.buckets() as u64).unwrap_or(0);
        (index, (hash >> 32) as u32)
    }

    /// Under the msgId's bucket lock: a live entry → [`Admit::Duplicate`]; otherwise runs
    /// `first` and records the msgId if it returns `Ok`. Two concurrent calls for one
    /// msgId never both run `first`.
    pub fn admit<R>(
        &self,
        msg_id: &str,
        now_ms: i64,
        first: impl FnOnce() -> Result<R, R>,
    ) -> Admit<R> {
        let (index, t) = self.locate(msg_id);
        let now_s = secs(now_ms);
        let (_lock, cells) = self.bucket(index);
        let entries = load(cells);
        if entries.iter().any(|&e| tag(e) == t && expires_s(e) > now_s) {
            return Admit::Duplicate;
        }
        let r = match first() {
            Ok(r) => r,
            Err(r) => return Admit::Refused(r),
        };
        let fresh = entry(t, secs(now_ms.saturating_add(self.ttl_ms)).max(1));
        let victim = entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| expires_s(**e))
            .map_or(0, |(i, _)| i);
        if expires_s(entries[victim]) > now_s {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        cells[victim].store(fresh, Ordering::Relaxed);
        Admit::Recorded(r)
    }

    /// Whether `msg_id` is recorded and live at `now_ms`.
    pub fn contains(&self, msg_id: &str, now_ms: i64) -> bool {
        let (index, t) = self.locate(msg_id);
        let now_s = secs(now_ms);
        let (_lock, cells) = self.bucket(index);
        load(cells)
            .iter()
            .any(|&e| tag(e) == t && expires_s(e) > now_s)
    }

    /// Live entries (a scan; for gauges).
    pub fn live(&self, now_ms: i64) -> usize {
        let now_s = secs(now_ms);
        let mut n = 0;
        self.for_each_bucket(|b| n += b.iter().filter(|&&e| expires_s(e) > now_s).count());
        n
    }

    /// A copy of the table and its hash key.
    #[cfg(test)]
    pub fn export(&self) -> DedupeImage {
        let mut entries = Vec::with_capacity(self.capacity());
        self.for_each_bucket(|b| entries.extend_from_slice(b));
        DedupeImage {
            seed: self.seed,
            entries,
        }
    }

    /// The hash key.
    pub fn seed(&self) -> [u64; 2] {
        self.seed
    }

    /// Each bucket's entries in order, one bucket locked at a time: with [`Self::seed`],
    /// what a [`DedupeImage`] holds, for saving without a copy of the table.
    pub fn for_each_bucket(&self, mut f: impl FnMut(&[u64; WAYS])) {
        for i in 0..self.buckets() {
            let (_lock, cells) = self.bucket(i);
            f(&load(cells));
        }
    }

    /// A set restored from `image` (its key and entries), keeping `ttl_ms` for new
    /// entries; `None` if the image's size differs from `capacity`'s.
    pub fn import(image: &DedupeImage, capacity: usize, ttl_ms: i64) -> Option<DedupeSet> {
        let set = DedupeSet::with_seed(capacity, ttl_ms, image.seed);
        if image.entries.len() != set.capacity() {
            return None;
        }
        // The set is new and all zero: only entries in use are written, so a page of
        // the table without one stays untouched.
        for (cell, &value) in set.entries.iter().zip(&image.entries) {
            if value != 0 {
                cell.store(value, Ordering::Relaxed);
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn cells_are_just_wide_enough() {
        assert_eq!(ReplayRing::new(1_000, 1, T0).bits, 1);
        assert_eq!(ReplayRing::new(1_000, 3, T0).bits, 2);
        assert_eq!(ReplayRing::new(1_000, 4, T0).bits, 3);
        assert_eq!(ReplayRing::new(1_000, 1000, T0).bits, 10);
        // The default window (one hour each side) with k = 3: about 1.8 MB, fixed.
        let ring = ReplayRing::new(3_600_000, 3, T0);
        assert_eq!(ring.bytes(), (7_260_000usize).div_ceil(32) * 8);
    }

    #[test]
    fn a_millisecond_carries_at_most_k_messages() {
        let ring = ReplayRing::new(10_000, 3, T0);
        for _ in 0..3 {
            assert_eq!(ring.take(T0, T0), Take::Taken);
        }
        assert!(ring.spent(T0, T0));
        assert_eq!(ring.take(T0, T0), Take::Spent);
        assert_eq!(ring.count(T0, T0), 3);
        // Neighbours are independent.
        assert_eq!(ring.take(T0 + 1, T0), Take::Taken);
        assert_eq!(ring.take(T0 - 1, T0), Take::Taken);
        ring.give_back(T0);
        assert_eq!(ring.take(T0, T0), Take::Taken);
    }

    #[test]
    fn memory_does_not_grow_with_traffic_and_nothing_is_ever_full() {
        let ring = ReplayRing::new(3_600_000, 3, T0);
        let set = DedupeSet::new(1_024, 600_000);
        let (ring_bytes, set_bytes) = (ring.bytes(), set.bytes());
        // 100,000 callbacks, one per millisecond, each with its own msgId.
        for i in 0..100_000i64 {
            let now = T0 + i;
            let verdict = set.admit(&format!("msg{i}"), now, || match ring.take(now, now) {
                Take::Taken => Ok(()),
                _ => Err(()),
            });
            assert_eq!(verdict, Admit::Recorded(()), "callback {i}");
        }
        assert_eq!((ring.bytes(), set.bytes()), (ring_bytes, set_bytes));
        assert_eq!(ring.used(), 100_000);
        assert!(set.live(T0 + 100_000) <= set.capacity());
        assert!(set.evicted() > 0);
    }

    #[test]
    fn cells_are_cleared_as_time_moves_on() {
        let window = 10_000;
        let ring = ReplayRing::new(window, 1, T0);
        assert_eq!(ring.take(T0, T0), Take::Taken);
        // Later, the cell is reused by a millisecond one ring length on: it must be empty.
        let later = T0 + ring.len;
        assert_eq!(ring.take(later, later), Take::Taken);
        // And a timestamp that left the window is not counted at all.
        assert_eq!(ring.take(T0, later), Take::OutOfWindow);
        assert!(ring.spent(T0, later));
        // Time jumps far ahead: everything is cleared at once.
        let much_later = T0 + 10 * ring.len;
        assert_eq!(ring.used(), 1);
        assert_eq!(ring.take(much_later, much_later), Take::Taken);
        assert_eq!(ring.used(), 1);
    }

    #[test]
    fn cells_just_inside_the_window_stay_counted_while_time_moves() {
        let window = 100_000;
        let ring = ReplayRing::new(window, 1, T0);
        let ts = T0 - window + 5;
        assert_eq!(ring.take(ts, T0), Take::Taken);
        for step in 0..5 {
            assert!(ring.spent(ts, T0 + step), "step {step}");
        }
    }

    #[test]
    fn the_ring_survives_export_and_import() {
        let ring = ReplayRing::new(10_000, 3, T0);
        ring.take(T0, T0);
        ring.take(T0, T0);
        let image = ring.export();
        let again = ReplayRing::new(10_000, 3, T0 + 5);
        assert!(again.import(&image));
        assert_eq!(again.count(T0, T0 + 5), 2);
        // Another shape is refused.
        assert!(!ReplayRing::new(20_000, 3, T0).import(&image));
        assert!(!ReplayRing::new(10_000, 4, T0).import(&image));
    }

    #[test]
    fn dedupe_answers_seen_before_until_the_ttl() {
        let set = DedupeSet::new(64, 10_000);
        assert_eq!(set.admit("m1", T0, || Ok::<_, ()>(())), Admit::Recorded(()));
        assert_eq!(
            set.admit("m1", T0 + 5_000, || Ok::<_, ()>(())),
            Admit::Duplicate
        );
        assert!(set.contains("m1", T0 + 9_000));
        assert!(!set.contains("m1", T0 + 11_000));
        assert_eq!(
            set.admit("m1", T0 + 11_000, || Ok::<_, ()>(())),
            Admit::Recorded(())
        );
        // Refused by `first`: not recorded.
        assert_eq!(set.admit("m2", T0, || Err::<(), _>(())), Admit::Refused(()));
        assert!(!set.contains("m2", T0));
    }

    #[test]
    fn dedupe_survives_export_and_import() {
        let set = DedupeSet::new(64, 10_000);
        set.admit("m1", T0, || Ok::<_, ()>(()));
        let image = set.export();
        let again = DedupeSet::import(&image, 64, 10_000).unwrap();
        assert!(again.contains("m1", T0 + 1));
        assert!(!again.contains("m2", T0 + 1));
        assert!(DedupeSet::import(&image, 128, 10_000).is_none());
    }
}
