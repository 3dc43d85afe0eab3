//! Stage 1 state: what admission remembers between callbacks, behind one small trait.
//!
//! [`AdmissionState`] answers two questions per callback. From the headers alone, before
//! any body is read: may this signature pair carry another message
//! ([`AdmissionState::check_pair`])? And once the body is parsed: may this message be
//! answered ([`AdmissionState::admit`])? The answers come from three memories: the replay
//! record (how many messages a signed millisecond carried), the msgId dedupe set and the
//! per-group budget (plus DingTalk's 130101 back-off). It is the seam where another backend
//! (shared state for several replicas) drops in: the doors and the pipeline only see the
//! trait.
//!
//! [`MemoryAdmission`] is the single-process backend: a [`ReplayRing`] and a [`DedupeSet`]
//! of fixed size, and governor's keyed GCRA limiter; it keeps the ring and the set across a
//! graceful restart in `<data_dir>/admission.state`. Its answers are ready at once;
//! [`Pending`] lets a backend that needs I/O return a boxed future instead without costing
//! the memory backend an allocation per callback.

use std::future::{Future, Ready, ready};
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::ratelimit::{Decision, GroupLimiter};
use crate::seen::{Admit, DedupeImage, DedupeSet, ReplayRing, RingImage, Take};
pub use crate::state::BackendStatus;

/// What admission needs to know about one callback. Nothing in it is DingTalk JSON.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    /// The message's id (dedupe key).
    pub msg_id: &'a str,
    /// The group (or 1:1 conversation) whose budget it spends.
    pub group: &'a str,
    /// The verified signature pair, for doors that have one (HTTP); the Stream door's
    /// socket is authenticated as a whole and has none.
    pub signature: Option<SignedPair<'a>>,
}

/// A verified (timestamp, sign) pair.
#[derive(Debug, Clone, Copy)]
pub struct SignedPair<'a> {
    /// The signed timestamp, ms since the epoch.
    pub timestamp_ms: i64,
    /// The raw `sign` header.
    pub sign: &'a [u8],
}

/// Admission's answer for one callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: answer the command.
    Answer,
    /// Over budget, first time in the notice window: send the group one slow-down notice.
    SlowDown {
        /// Seconds until the group may send again (at least 1).
        retry_after_secs: u64,
    },
    /// Over budget (or DingTalk throttled the group) and already told: stay silent.
    Limited,
    /// This msgId was admitted before: a redelivery, not answered again.
    Duplicate,
    /// The signature pair already carried as many messages as it may.
    Replayed,
    /// Signed before this process started, after an unclean stop lost the replay record
    /// of that time: refused until the window has passed. Nothing was recorded.
    SignedBeforeRestart,
    /// The backend cannot record the callback now (a shared store unreachable): refuse
    /// rather than forget. Nothing was recorded. The memory backend never answers this.
    Full,
}

/// [`AdmissionState::check_pair`]'s answer, from the headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairCheck {
    /// The pair may carry a (further) message: read the body.
    Open,
    /// The pair carried as many messages as it may: refuse without reading the body.
    Spent,
    /// Signed before an unclean restart: refuse without reading the body.
    SignedBeforeRestart,
}

/// A result that is either ready now or needs to be awaited.
pub enum Pending<'a, T> {
    /// Known at once (the in-memory backend).
    Ready(Ready<T>),
    /// Needs I/O.
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<T> Pending<'_, T> {
    /// A value known at once.
    pub fn now(value: T) -> Self {
        Pending::Ready(ready(value))
    }
}

impl<T> Future for Pending<'_, T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Both variants are `Unpin` (`Ready<T>` is, and so is a `Pin<Box<_>>`).
        match self.get_mut() {
            Pending::Ready(r) => Pin::new(r).poll(cx),
            Pending::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> Unpin for Pending<'_, T> {}

/// Sizes of what a backend remembers, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remembered {
    /// msgIds remembered for dedupe.
    pub dedupe: usize,
    /// Signed milliseconds that carried a message, for replay defence.
    pub replay: usize,
    /// Groups the budget tracks.
    pub groups: usize,
}

/// Where admission state lives. Implementations must be atomic per callback: a refused
/// callback leaves nothing recorded, and two concurrent callbacks never both get
/// [`Verdict::Answer`] for one msgId.
pub trait AdmissionState: Send + Sync + 'static {
    /// From the headers alone: may `pair` carry a (further) message at `now_ms`? Advisory
    /// (nothing is recorded); [`AdmissionState::admit`] decides atomically.
    fn check_pair<'a>(&'a self, pair: SignedPair<'a>, now_ms: i64) -> Pending<'a, PairCheck>;

    /// msgId dedupe, then replay defence, then the group's budget, at `now_ms`.
    fn admit<'a>(&'a self, ticket: &Ticket<'a>, now_ms: i64) -> Pending<'a, Verdict>;

    /// DingTalk refused to deliver to `group` (130101): keep it silent for `period`.
    fn throttle<'a>(&'a self, group: &'a str, period: Duration) -> Pending<'a, ()>;

    /// Whether `msg_id` was admitted within the dedupe window.
    fn handled(&self, msg_id: &str, now_ms: i64) -> bool;

    /// Periodic upkeep (expired entries, idle groups); returns the sizes after it.
    fn maintain(&self, now_ms: i64) -> Remembered;

    /// The sizes now, without upkeep.
    fn remembered(&self) -> Remembered;

    /// At shutdown, after the last admission: keep what must survive a restart. An error
    /// is a sentence for the log.
    fn persist(&self) -> Pending<'_, Result<(), String>>;

    /// Which backend this is and whether its shared state is in use now (`/readyz`).
    fn status(&self) -> BackendStatus {
        BackendStatus::MEMORY
    }
}

/// Settings of the in-memory backend.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// The signature clock window (one side), ms: the replay ring covers twice this.
    pub window_ms: i64,
    /// Messages one signed millisecond may carry (k, `dingtalk.max_messages_per_signature`).
    pub messages_per_millisecond: usize,
    /// Entries of the msgId dedupe table.
    pub dedupe_capacity: usize,
    /// How long a msgId is remembered, ms.
    pub dedupe_ttl_ms: i64,
    /// The group budget.
    pub per_group_per_minute: NonZeroU32,
    /// Where the ring and the dedupe table are kept across a restart (none: not kept).
    pub state_file: Option<PathBuf>,
}

/// File name of the admission state under `storage.data_dir`.
pub const STATE_FILE: &str = "admission.state";

/// What [`MemoryAdmission::restore`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No state file: the first start on this data dir.
    FirstStart,
    /// The state saved at a graceful stop was loaded.
    Clean {
        /// When it was saved, ms since the epoch.
        saved_at_ms: i64,
    },
    /// The previous process did not stop gracefully, or its file cannot be used: the
    /// timestamps signed before this start are refused until they leave the window.
    Unclean {
        /// Why, for the log.
        reason: String,
    },
}

/// Admission state in this process's memory.
#[derive(Debug)]
pub struct MemoryAdmission {
    /// msgIds already admitted.
    dedupe: DedupeSet,
    /// Messages per signed millisecond.
    replay: ReplayRing,
    /// Per-group budget and 130101 back-off.
    limiter: Arc<GroupLimiter>,
    /// Signed timestamps before this are refused (after an unclean stop); `i64::MIN` if
    /// none are.
    not_before_ms: AtomicI64,
    /// The options it was built with.
    options: MemoryOptions,
    /// Sizes found by the last upkeep.
    last_dedupe: AtomicUsize,
    last_replay: AtomicUsize,
}

impl MemoryAdmission {
    /// An empty state as of `now_ms`.
    pub fn new(options: MemoryOptions, now_ms: i64) -> MemoryAdmission {
        MemoryAdmission {
            dedupe: DedupeSet::new(options.dedupe_capacity, options.dedupe_ttl_ms),
            replay: ReplayRing::new(options.window_ms, options.messages_per_millisecond, now_ms),
            limiter: Arc::new(GroupLimiter::new(options.per_group_per_minute)),
            not_before_ms: AtomicI64::new(i64::MIN),
            options,
            last_dedupe: AtomicUsize::new(0),
            last_replay: AtomicUsize::new(0),
        }
    }

    /// Fixed bytes of the replay ring and the dedupe table.
    pub fn footprint(&self) -> (usize, usize) {
        (self.replay.bytes(), self.dedupe.bytes())
    }

    /// Loads the state file (if configured) as of `start_ms`, then replaces it with a
    /// "running" marker, so that a stop without [`AdmissionState::persist`] is recognised
    /// at the next start. Only the marker write can fail (the data dir is not writable);
    /// an unreadable, corrupt or foreign file is reported as [`Restored::Unclean`].
    pub fn restore(&mut self, start_ms: i64) -> std::io::Result<Restored> {
        let Some(path) = self.options.state_file.clone() else {
            return Ok(Restored::FirstStart);
        };
        crate::store::remove_stale_temp_files_of(&path);
        let restored = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Restored::FirstStart,
            Err(e) => Restored::Unclean {
                reason: format!("{} cannot be read: {e}", path.display()),
            },
            Ok(bytes) => match decode(&bytes) {
                Err(problem) => Restored::Unclean {
                    reason: format!("{} is not a usable state file: {problem}", path.display()),
                },
                Ok(State::Running { since_ms }) => Restored::Unclean {
                    reason: format!(
                        "the process started at {since_ms} (ms since the epoch) did not stop gracefully"
                    ),
                },
                Ok(State::Saved {
                    saved_at_ms,
                    ring,
                    dedupe,
                }) => self.load(saved_at_ms, &ring, &dedupe),
            },
        };
        if matches!(restored, Restored::Unclean { .. }) {
            self.not_before_ms.store(start_ms, Ordering::Release);
        }
        crate::store::write_atomically(&path, &encode_running(start_ms))?;
        Ok(restored)
    }

    fn load(&mut self, saved_at_ms: i64, ring: &RingImage, dedupe: &DedupeImage) -> Restored {
        if !self.replay.import(ring) {
            return Restored::Unclean {
                reason: "it was saved with another dingtalk.max_clock_skew_secs or \
                         max_messages_per_signature"
                    .into(),
            };
        }
        match DedupeSet::import(
            dedupe,
            self.options.dedupe_capacity,
            self.options.dedupe_ttl_ms,
        ) {
            Some(set) => self.dedupe = set,
            None => tracing::warn!(
                "the saved msgId dedupe table has another size (dingtalk.dedupe_capacity \
                 changed): starting it empty; the replay record was kept"
            ),
        }
        Restored::Clean { saved_at_ms }
    }

    /// Signed timestamps before this are refused; `None` if none are.
    pub fn not_before_ms(&self) -> Option<i64> {
        Some(self.not_before_ms.load(Ordering::Acquire)).filter(|&t| t != i64::MIN)
    }

    fn signed_before_restart(&self, timestamp_ms: i64) -> bool {
        timestamp_ms < self.not_before_ms.load(Ordering::Acquire)
    }

    /// The decision, synchronously.
    fn decide(&self, t: &Ticket<'_>, now_ms: i64) -> Verdict {
        if let Some(pair) = t.signature
            && self.signed_before_restart(pair.timestamp_ms)
        {
            return Verdict::SignedBeforeRestart;
        }
        // 1. Dedupe by msgId, and under its lock 2. replay defence: the signed millisecond
        // carries at most k messages. A redelivery costs the millisecond nothing; a refused
        // callback records nothing.
        let admitted = self.dedupe.admit(t.msg_id, now_ms, || match t.signature {
            None => Ok(()),
            Some(pair) => match self.replay.take(pair.timestamp_ms, now_ms) {
                Take::Taken => Ok(()),
                Take::Spent | Take::OutOfWindow => Err(()),
            },
        });
        match admitted {
            Admit::Recorded(()) => {}
            Admit::Duplicate => return Verdict::Duplicate,
            Admit::Refused(()) => return Verdict::Replayed,
        }
        // 3. The group's budget.
        match self.limiter.check(t.group) {
            Decision::Allow => Verdict::Answer,
            Decision::Limit {
                notify: true,
                retry_after_secs,
            } => Verdict::SlowDown { retry_after_secs },
            Decision::Limit { notify: false, .. } => Verdict::Limited,
        }
    }

    /// Writes the ring and the dedupe table to the state file, straight from memory: a
    /// copy of both and the encoded file (8 MB at the defaults) made the stop the
    /// process's memory peak.
    fn save(&self, path: &Path) -> Result<(), String> {
        let now = crate::clock::now_ms();
        self.replay.advance(now);
        crate::store::write_atomically_with(path, |file| {
            write_saved(file, now, &self.replay, &self.dedupe)
        })
        .map_err(|e| format!("{} cannot be written: {e}", path.display()))
    }
}

impl AdmissionState for MemoryAdmission {
    fn check_pair<'a>(&'a self, pair: SignedPair<'a>, now_ms: i64) -> Pending<'a, PairCheck> {
        Pending::now(if self.signed_before_restart(pair.timestamp_ms) {
            PairCheck::SignedBeforeRestart
        } else if self.replay.spent(pair.timestamp_ms, now_ms) {
            PairCheck::Spent
        } else {
            PairCheck::Open
        })
    }

    fn admit<'a>(&'a self, ticket: &Ticket<'a>, now_ms: i64) -> Pending<'a, Verdict> {
        Pending::now(self.decide(ticket, now_ms))
    }

    fn throttle<'a>(&'a self, group: &'a str, period: Duration) -> Pending<'a, ()> {
        self.limiter.throttle(group, period);
        Pending::now(())
    }

    fn handled(&self, msg_id: &str, now_ms: i64) -> bool {
        self.dedupe.contains(msg_id, now_ms)
    }

    fn maintain(&self, now_ms: i64) -> Remembered {
        self.limiter.evict_idle();
        self.replay.advance(now_ms);
        self.last_dedupe
            .store(self.dedupe.live(now_ms), Ordering::Relaxed);
        self.last_replay
            .store(self.replay.used(), Ordering::Relaxed);
        self.remembered()
    }

    fn remembered(&self) -> Remembered {
        Remembered {
            dedupe: self.last_dedupe.load(Ordering::Relaxed),
            replay: self.last_replay.load(Ordering::Relaxed),
            groups: self.limiter.tracked_groups(),
        }
    }

    fn persist(&self) -> Pending<'_, Result<(), String>> {
        Pending::now(match &self.options.state_file {
            Some(path) => self.save(path),
            None => Ok(()),
        })
    }
}

/// The state file's contents.
enum State {
    /// Written at start: a process is running (its replay record is in its memory).
    Running {
        /// When it started.
        since_ms: i64,
    },
    /// Written at a graceful stop.
    Saved {
        saved_at_ms: i64,
        ring: RingImage,
        dedupe: DedupeImage,
    },
}

/// First bytes of the file.
const MAGIC: &[u8; 16] = b"dingbot-admit-1\n";

/// The file's format: [`MAGIC`], a kind byte, little-endian fields, then the SHA-256 of
/// everything before it. `Running` (kind 0): `since_ms`.
fn encode_running(since_ms: i64) -> Vec<u8> {
    let mut out = Hashed::new(Vec::new());
    out.put(MAGIC);
    out.put(&[0]);
    out.put(&since_ms.to_le_bytes());
    // Writing to a `Vec` cannot fail.
    out.finish().unwrap_or_default()
}

/// `Saved` (kind 1): `saved_at_ms`; the ring's bits per cell, cells, cleared-through ms,
/// word count and words; the dedupe table's two key words, entry count and entries.
fn write_saved(
    file: &mut std::fs::File,
    saved_at_ms: i64,
    ring: &ReplayRing,
    dedupe: &DedupeSet,
) -> std::io::Result<()> {
    let mut out = Hashed::new(std::io::BufWriter::with_capacity(64 * 1024, file));
    out.put(MAGIC);
    out.put(&[1]);
    out.put(&saved_at_ms.to_le_bytes());
    let (bits, len, cleared_through) = ring.shape();
    out.put(&bits.to_le_bytes());
    out.put(&len.to_le_bytes());
    out.put(&cleared_through.to_le_bytes());
    let words = ring.words();
    out.put(&(words.len() as u64).to_le_bytes());
    for w in words {
        out.put(&w.to_le_bytes());
    }
    for s in dedupe.seed() {
        out.put(&s.to_le_bytes());
    }
    out.put(&(dedupe.capacity() as u64).to_le_bytes());
    dedupe.for_each_bucket(|entries| {
        for e in entries {
            out.put(&e.to_le_bytes());
        }
    });
    out.finish()?.flush()
}

/// A writer that hashes what it writes and ends with the hash; the first write error is
/// kept for [`Hashed::finish`].
struct Hashed<W: Write> {
    out: W,
    hash: Sha256,
    error: Option<std::io::Error>,
}

impl<W: Write> Hashed<W> {
    fn new(out: W) -> Self {
        Hashed {
            out,
            hash: Sha256::new(),
            error: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        if self.error.is_none()
            && let Err(e) = self.out.write_all(bytes)
        {
            self.error = Some(e);
        }
    }

    /// Appends the hash; the writer, or the first write error.
    fn finish(mut self) -> std::io::Result<W> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.out.write_all(&self.hash.finalize())?;
        Ok(self.out)
    }
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| "truncated".to_string())?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    /// `n` u64s, refusing counts the remaining bytes cannot hold.
    fn words(&mut self, n: u64) -> Result<Vec<u64>, String> {
        let n = usize::try_from(n).map_err(|_| "implausible length".to_string())?;
        if self.0.len() / 8 < n {
            return Err("truncated".into());
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

fn decode(bytes: &[u8]) -> Result<State, String> {
    let Some(body_len) = bytes.len().checked_sub(32) else {
        return Err("too short".into());
    };
    let (body, digest) = bytes.split_at(body_len);
    if !body.starts_with(MAGIC) {
        return Err("not written by this version of dingbot".into());
    }
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch (torn or altered)".into());
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let state = match r.u8()? {
        0 => State::Running { since_ms: r.i64()? },
        1 => {
            let saved_at_ms = r.i64()?;
            let bits = r.u32()?;
            let len = r.i64()?;
            let cleared_through = r.i64()?;
            let n = r.u64()?;
            let words = r.words(n)?;
            let seed = [r.u64()?, r.u64()?];
            let n = r.u64()?;
            let entries = r.words(n)?;
            State::Saved {
                saved_at_ms,
                ring: RingImage {
                    bits,
                    len,
                    cleared_through,
                    words,
                },
                dedupe: DedupeImage { seed, entries },
            }
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn options(per_minute: u32, k: usize) -> MemoryOptions {
        MemoryOptions {
            window_ms: 3_600_000,
            messages_per_millisecond: k,
            dedupe_capacity: 1_024,
            dedupe_ttl_ms: 600_000,
            per_group_per_minute: NonZeroU32::new(per_minute).unwrap(),
            state_file: None,
        }
    }

    fn state(per_minute: u32, k: usize) -> MemoryAdmission {
        MemoryAdmission::new(options(per_minute, k), NOW)
    }

    fn ticket<'a>(msg_id: &'a str, group: &'a str, ts: i64) -> Ticket<'a> {
        Ticket {
            msg_id,
            group,
            signature: Some(SignedPair {
                timestamp_ms: ts,
                sign: b"sig",
            }),
        }
    }

    fn check(s: &MemoryAdmission, ts: i64) -> PairCheck {
        futures_util::FutureExt::now_or_never(s.check_pair(
            SignedPair {
                timestamp_ms: ts,
                sign: b"sig",
            },
            NOW,
        ))
        .unwrap()
    }

    #[test]
    fn dedupe_replay_and_budget_in_that_order() {
        let s = state(2, 2);
        let ts = NOW - 5;
        assert_eq!(s.decide(&ticket("m1", "g", ts), NOW), Verdict::Answer);
        // The same message again (same msgId): a duplicate, and it costs the pair nothing.
        assert_eq!(s.decide(&ticket("m1", "g", ts), NOW), Verdict::Duplicate);
        assert_eq!(check(&s, ts), PairCheck::Open);
        // A second message in the millisecond: allowed (k = 2); a third: a replay.
        assert_eq!(s.decide(&ticket("m2", "g", ts), NOW), Verdict::Answer);
        assert_eq!(check(&s, ts), PairCheck::Spent);
        assert_eq!(s.decide(&ticket("m3", "g", ts), NOW), Verdict::Replayed);
        assert!(!s.handled("m3", NOW), "a refused message is not recorded");
        assert!(matches!(
            s.decide(&ticket("m4", "g", NOW), NOW),
            Verdict::SlowDown { retry_after_secs } if retry_after_secs >= 1
        ));
        assert_eq!(s.decide(&ticket("m5", "g", NOW + 1), NOW), Verdict::Limited);
        assert_eq!(s.remembered().groups, 1);
    }

    #[test]
    fn unsigned_tickets_skip_the_replay_record() {
        let s = state(10, 1);
        let t = Ticket {
            msg_id: "m1",
            group: "g",
            signature: None,
        };
        assert_eq!(s.decide(&t, NOW), Verdict::Answer);
        assert_eq!(s.decide(&t, NOW), Verdict::Duplicate);
        assert_eq!(s.maintain(NOW).replay, 0);
        assert_eq!(s.maintain(NOW).dedupe, 1);
    }

    #[test]
    fn throttled_group_is_limited_without_a_notice() {
        let s = state(10, 1);
        futures_util::FutureExt::now_or_never(s.throttle("g", Duration::from_secs(600)))
            .expect("the memory backend answers at once");
        assert_eq!(s.decide(&ticket("m1", "g", NOW), NOW), Verdict::Limited);
        assert_eq!(s.decide(&ticket("m2", "h", NOW + 1), NOW), Verdict::Answer);
    }

    #[test]
    fn never_refuses_everyone_however_many_callbacks() {
        // Old design: a set of `capacity` entries answered `Full` (503) once full.
        let s = state(10_000, 3);
        for i in 0..50_000i64 {
            let id = format!("m{i}");
            let group = format!("g{}", i % 100);
            let v = s.decide(&ticket(&id, &group, NOW - 1_000_000 + i), NOW);
            assert!(
                matches!(
                    v,
                    Verdict::Answer | Verdict::SlowDown { .. } | Verdict::Limited
                ),
                "callback {i}: {v:?}"
            );
        }
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "dingbot-admission-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn file(&self) -> PathBuf {
            self.0.join(STATE_FILE)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn persisted(dir: &Dir, k: usize, start: i64) -> (MemoryAdmission, Restored) {
        let mut s = MemoryAdmission::new(
            MemoryOptions {
                state_file: Some(dir.file()),
                ..options(100, k)
            },
            start,
        );
        let restored = s.restore(start).unwrap();
        (s, restored)
    }

    #[test]
    fn a_graceful_stop_keeps_replay_and_dedupe_records() {
        let dir = Dir::new("clean");
        let (s, restored) = persisted(&dir, 1, NOW);
        assert_eq!(restored, Restored::FirstStart);
        assert_eq!(s.not_before_ms(), None);
        assert_eq!(s.decide(&ticket("m1", "g", NOW - 10), NOW), Verdict::Answer);
        futures_util::FutureExt::now_or_never(s.persist())
            .unwrap()
            .unwrap();
        let (again, restored) = persisted(&dir, 1, NOW + 1_000);
        assert!(matches!(restored, Restored::Clean { .. }), "{restored:?}");
        assert_eq!(again.not_before_ms(), None);
        assert_eq!(check(&again, NOW - 10), PairCheck::Spent);
        assert_eq!(
            again.decide(&ticket("m2", "g", NOW - 10), NOW + 1_000),
            Verdict::Replayed
        );
        assert_eq!(
            again.decide(&ticket("m1", "g", NOW + 500), NOW + 1_000),
            Verdict::Duplicate
        );
        // It left a running marker: stopping without persist is an unclean stop.
        let (third, restored) = persisted(&dir, 1, NOW + 2_000);
        assert!(matches!(restored, Restored::Unclean { .. }), "{restored:?}");
        assert_eq!(third.not_before_ms(), Some(NOW + 2_000));
        assert_eq!(
            third.decide(&ticket("m9", "g", NOW + 1_999), NOW + 2_000),
            Verdict::SignedBeforeRestart
        );
        assert_eq!(check(&third, NOW + 1_999), PairCheck::SignedBeforeRestart);
        assert_eq!(
            third.decide(&ticket("m9", "g", NOW + 2_000), NOW + 2_000),
            Verdict::Answer
        );
    }

    #[test]
    fn the_saved_file_holds_exactly_the_ring_and_the_table_written_from_memory() {
        // The real clock: saving clears the milliseconds that left the window by then.
        let now = crate::clock::now_ms();
        let dir = Dir::new("exact");
        let (s, _) = persisted(&dir, 3, now);
        for i in 0..500 {
            let msg_id = format!("m{i}");
            s.decide(&ticket(&msg_id, "g", now - 7 * i), now);
        }
        futures_util::FutureExt::now_or_never(s.persist())
            .unwrap()
            .unwrap();
        let bytes = std::fs::read(dir.file()).unwrap();
        let Ok(State::Saved { ring, dedupe, .. }) = decode(&bytes) else {
            panic!("not a saved state");
        };
        assert_eq!(ring, s.replay.export());
        assert_eq!(dedupe, s.dedupe.export());
        assert!(ring.words.iter().any(|&w| w != 0));
        assert!(dedupe.entries.iter().any(|&e| e != 0));
    }

    #[test]
    fn corrupt_torn_or_foreign_files_count_as_an_unclean_stop() {
        let dir = Dir::new("corrupt");
        for bytes in [
            b"garbage".to_vec(),
            Vec::new(),
            encode_running(1)[..20].to_vec(),
        ] {
            std::fs::write(dir.file(), &bytes).unwrap();
            let (s, restored) = persisted(&dir, 1, NOW);
            assert!(matches!(restored, Restored::Unclean { .. }), "{restored:?}");
            assert_eq!(s.not_before_ms(), Some(NOW));
        }
        // A file saved with another window or k has another ring shape.
        let (s, _) = persisted(&dir, 1, NOW);
        futures_util::FutureExt::now_or_never(s.persist())
            .unwrap()
            .unwrap();
        let (other, restored) = persisted(&dir, 4, NOW);
        assert!(matches!(restored, Restored::Unclean { .. }), "{restored:?}");
        assert_eq!(other.not_before_ms(), Some(NOW));
        // Bit flips are caught by the checksum.
        let (s, _) = persisted(&dir, 1, NOW);
        futures_util::FutureExt::now_or_never(s.persist())
            .unwrap()
            .unwrap();
        let mut bytes = std::fs::read(dir.file()).unwrap();
        bytes[40] ^= 1;
        std::fs::write(dir.file(), &bytes).unwrap();
        let (_, restored) = persisted(&dir, 1, NOW);
        assert!(
            matches!(&restored, Restored::Unclean { reason } if reason.contains("checksum")),
            "{restored:?}"
        );
    }
}
