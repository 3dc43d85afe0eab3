//! Stage 1 state: what admission remembers between callbacks, behind one small trait.
//!
//! [`AdmissionState`] answers one question per callback — may this message be answered? —
//! from three memories: the replay record (how many messages a (timestamp, sign) pair
//! carried), the msgId dedupe set and the per-group budget (plus DingTalk's 130101
//! back-off). It is the seam where another backend (shared state for several replicas)
//! drops in: the doors and the pipeline only see the trait.
//!
//! [`MemoryAdmission`] is the single-process backend: [`SeenSet`]s on dashmap and
//! governor's keyed GCRA limiter. Its answers are ready at once; [`Pending`] lets a backend
//! that needs I/O return a boxed future instead without costing the memory backend an
//! allocation per callback.

use std::future::{Future, Ready, ready};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::ratelimit::{Decision, GroupLimiter};
use crate::seen::{KeyOnly, Seen, SeenSet};
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
    /// The exact bytes of the message, to tell a redelivery from another message carried
    /// by the same signature pair.
    pub body: &'a [u8],
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
    /// The signature pair already carried other messages.
    Replayed,
    /// The memory is full of live entries: refuse rather than forget (forgetting would
    /// reopen the replay window). Nothing was recorded.
    Full,
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
    /// Signature pairs remembered for replay defence.
    pub replay: usize,
    /// Groups the budget tracks.
    pub groups: usize,
}

/// Where admission state lives. Implementations must be atomic per callback: a refused
/// callback leaves nothing recorded, and two concurrent callbacks never both get
/// [`Verdict::Answer`] for one msgId.
pub trait AdmissionState: Send + Sync + 'static {
    /// Replay defence, then msgId dedupe, then the group's budget, at `now_ms`.
    fn admit<'a>(&'a self, ticket: &Ticket<'a>, now_ms: i64) -> Pending<'a, Verdict>;

    /// DingTalk refused to deliver to `group` (130101): keep it silent for `period`.
    fn throttle<'a>(&'a self, group: &'a str, period: Duration) -> Pending<'a, ()>;

    /// Whether `msg_id` was admitted within the dedupe window.
    fn handled(&self, msg_id: &str, now_ms: i64) -> bool;

    /// Periodic upkeep (expired entries, idle groups); returns the sizes after it.
    fn maintain(&self, now_ms: i64) -> Remembered;

    /// The sizes now, without upkeep.
    fn remembered(&self) -> Remembered;

    /// Which backend this is and whether its shared state is in use now (`/readyz`).
    fn status(&self) -> BackendStatus {
        BackendStatus::MEMORY
    }
}

/// Settings of the in-memory backend.
#[derive(Debug, Clone, Copy)]
pub struct MemoryOptions {
    /// Most entries each of the dedupe and replay sets keeps.
    pub capacity: usize,
    /// How long entries are kept: the signature clock window, in ms.
    pub window_ms: i64,
    /// Distinct messages one (timestamp, sign) pair may carry.
    pub messages_per_signature: usize,
    /// The group budget.
    pub per_group_per_minute: NonZeroU32,
}

/// Admission state in this process's memory.
#[derive(Debug)]
pub struct MemoryAdmission {
    /// msgIds already admitted.
    dedupe: SeenSet<KeyOnly>,
    /// (timestamp, sign) → the message(s) it carried.
    replay: SeenSet,
    /// Per-group budget and 130101 back-off.
    limiter: Arc<GroupLimiter>,
}

impl MemoryAdmission {
    /// An empty state.
    pub fn new(options: MemoryOptions) -> MemoryAdmission {
        MemoryAdmission {
            // A (timestamp, sign) pair is only accepted within the clock window of its
            // timestamp, and DingTalk's redeliveries carry the same msgId within minutes:
            // remembering both for one window is enough.
            dedupe: SeenSet::keys_only(options.capacity, options.window_ms),
            replay: SeenSet::new(
                options.capacity,
                options.window_ms,
                options.messages_per_signature,
            ),
            limiter: Arc::new(GroupLimiter::new(options.per_group_per_minute)),
        }
    }

    fn hash_replay(&self, value: impl Hash) -> u64 {
        self.replay.hash(value)
    }

    /// The decision, synchronously.
    fn decide(&self, t: &Ticket<'_>, now_ms: i64) -> Verdict {
        // 1. Replay defence: a (timestamp, sign) pair carries at most N distinct messages,
        // and stays acceptable until its timestamp leaves the window: remember it as long.
        let replay_key = match t.signature {
            Some(pair) => {
                let key = self.hash_replay((pair.timestamp_ms, pair.sign));
                let fingerprint = self.hash_replay((t.msg_id, t.body));
                match self
                    .replay
                    .record(key, fingerprint, now_ms, pair.timestamp_ms)
                {
                    Seen::New | Seen::Again => {}
                    Seen::Exhausted => return Verdict::Replayed,
                    Seen::Full => return Verdict::Full,
                }
                Some(key)
            }
            None => None,
        };
        // 2. Dedupe by msgId.
        match self
            .dedupe
            .record(self.dedupe.hash(t.msg_id), 0, now_ms, now_ms)
        {
            Seen::New => {}
            Seen::Again | Seen::Exhausted => return Verdict::Duplicate,
            Seen::Full => {
                // Nothing of this callback may stay recorded.
                if let Some(key) = replay_key {
                    self.replay.forget(key);
                }
                return Verdict::Full;
            }
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
}

impl AdmissionState for MemoryAdmission {
    fn admit<'a>(&'a self, ticket: &Ticket<'a>, now_ms: i64) -> Pending<'a, Verdict> {
        Pending::now(self.decide(ticket, now_ms))
    }

    fn throttle<'a>(&'a self, group: &'a str, period: Duration) -> Pending<'a, ()> {
        self.limiter.throttle(group, period);
        Pending::now(())
    }

    fn handled(&self, msg_id: &str, now_ms: i64) -> bool {
        self.dedupe.contains(self.dedupe.hash(msg_id), now_ms)
    }

    fn maintain(&self, now_ms: i64) -> Remembered {
        self.limiter.evict_idle();
        self.dedupe.sweep(now_ms);
        self.replay.sweep(now_ms);
        self.remembered()
    }

    fn remembered(&self) -> Remembered {
        Remembered {
            dedupe: self.dedupe.len(),
            replay: self.replay.len(),
            groups: self.limiter.tracked_groups(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(per_minute: u32, per_signature: usize) -> MemoryAdmission {
        MemoryAdmission::new(MemoryOptions {
            capacity: 100,
            window_ms: 3_600_000,
            messages_per_signature: per_signature,
            per_group_per_minute: NonZeroU32::new(per_minute).unwrap(),
        })
    }

    fn ticket<'a>(msg_id: &'a str, group: &'a str, ts: i64, body: &'a [u8]) -> Ticket<'a> {
        Ticket {
            msg_id,
            group,
            signature: Some(SignedPair {
                timestamp_ms: ts,
                sign: b"sig",
            }),
            body,
        }
    }

    #[test]
    fn replay_dedupe_and_budget_in_that_order() {
        let s = state(2, 1);
        let now = 1_000_000;
        assert_eq!(s.decide(&ticket("m1", "g", 1, b"a"), now), Verdict::Answer);
        // The same delivery again: same pair, same bytes → a duplicate, not a replay.
        assert_eq!(
            s.decide(&ticket("m1", "g", 1, b"a"), now),
            Verdict::Duplicate
        );
        // Another message under a spent pair → replay.
        assert_eq!(
            s.decide(&ticket("m2", "g", 1, b"b"), now),
            Verdict::Replayed
        );
        assert!(!s.handled("m2", now), "a refused message is not recorded");
        assert_eq!(s.decide(&ticket("m3", "g", 2, b"c"), now), Verdict::Answer);
        assert!(matches!(
            s.decide(&ticket("m4", "g", 3, b"d"), now),
            Verdict::SlowDown { retry_after_secs } if retry_after_secs >= 1
        ));
        assert_eq!(s.decide(&ticket("m5", "g", 4, b"e"), now), Verdict::Limited);
        assert_eq!(s.remembered().groups, 1);
    }

    #[test]
    fn unsigned_tickets_skip_the_replay_record() {
        let s = state(10, 1);
        let t = Ticket {
            msg_id: "m1",
            group: "g",
            signature: None,
            body: b"x",
        };
        assert_eq!(s.decide(&t, 5), Verdict::Answer);
        assert_eq!(s.decide(&t, 5), Verdict::Duplicate);
        assert_eq!(s.remembered().replay, 0);
        assert_eq!(s.remembered().dedupe, 1);
    }

    #[test]
    fn throttled_group_is_limited_without_a_notice() {
        let s = state(10, 1);
        futures_util::FutureExt::now_or_never(s.throttle("g", Duration::from_secs(600)))
            .expect("the memory backend answers at once");
        assert_eq!(s.decide(&ticket("m1", "g", 1, b"a"), 5), Verdict::Limited);
        assert_eq!(s.decide(&ticket("m2", "h", 2, b"a"), 5), Verdict::Answer);
    }
}
