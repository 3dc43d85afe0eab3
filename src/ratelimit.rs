//! Per-group reply budget: governor's keyed GCRA limiter on a DashMap, keyed by
//! conversationId, plus at most one "slow down" notice per group per minute.
//!
//! A group may send `per_group_per_minute` commands at once, then one more every
//! `60 / per_group_per_minute` seconds. Other groups are unaffected. [`GroupLimiter::evict_idle`]
//! (run on a timer by `startup`) forgets groups whose budget is full again, so memory
//! follows the number of recently active groups, not of all groups ever seen. When DingTalk
//! answers a reply with errcode 130101 ("send too fast"), [`GroupLimiter::throttle`] silences
//! that group for DingTalk's documented 10-minute penalty.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How long after a notice the next one may be sent to the same group.
pub const NOTICE_WINDOW: Duration = Duration::from_secs(60);

/// The verdict for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within budget: answer it.
    Allow,
    /// Over budget. `notify` is true for the first refusal in a notice window: send the
    /// group one short notice; otherwise stay silent.
    Limit {
        /// Send the slow-down notice now.
        notify: bool,
        /// Seconds until the group may send again (at least 1).
        retry_after_secs: u64,
    },
}

/// Per-group limiter.
pub struct GroupLimiter {
    /// GCRA state per conversationId.
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
    /// When each limited group last got a notice.
    notices: DashMap<Arc<str>, Instant>,
    /// Clock of `limiter`, to compute wait times.
    clock: DefaultClock,
    /// Groups DingTalk throttled (errcode 130101), silenced until the given instant.
    throttled: DashMap<Arc<str>, Instant>,
}

impl std::fmt::Debug for GroupLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLimiter")
            .field("groups", &self.limiter.len())
            .finish()
    }
}

impl GroupLimiter {
    /// `per_minute` commands per group per minute (burst of the same size).
    pub fn new(per_minute: NonZeroU32) -> GroupLimiter {
        GroupLimiter {
            limiter: DefaultKeyedRateLimiter::dashmap(Quota::per_minute(per_minute)),
            notices: DashMap::new(),
            clock: DefaultClock::default(),
            throttled: DashMap::new(),
        }
    }

    /// Takes one unit of `group`'s budget, or says how long to wait.
    pub fn check(&self, group: &str) -> Decision {
        if let Some(until) = self.throttled.get(group).map(|u| *u) {
            let now = Instant::now();
            if until > now {
                let left = until - now;
                return Decision::Limit {
                    notify: false,
                    retry_after_secs: left.as_secs().max(1),
                };
            }
            self.throttled.remove(group);
        }
        let key: Arc<str> = Arc::from(group);
        match self.limiter.check_key(&key) {
            Ok(()) => Decision::Allow,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let now = Instant::now();
                let mut notify = false;
                self.notices
                    .entry(key)
                    .and_modify(|last| {
                        if now.duration_since(*last) >= NOTICE_WINDOW {
                            *last = now;
                            notify = true;
                        }
                    })
                    .or_insert_with(|| {
                        notify = true;
                        now
                    });
                Decision::Limit {
                    notify,
                    retry_after_secs: retry_after_secs.max(1),
                }
            }
        }
    }

    /// Silences `group` for `period` because DingTalk refused to deliver to it (130101).
    pub fn throttle(&self, group: &str, period: Duration) {
        self.throttled
            .insert(Arc::from(group), Instant::now() + period);
    }

    /// Forgets groups that are back to a full budget and notices older than the window.
    pub fn evict_idle(&self) {
        let now = Instant::now();
        self.throttled.retain(|_, until| *until > now);
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.notices
            .retain(|_, last| last.elapsed() < NOTICE_WINDOW);
        self.notices.shrink_to_fit();
    }

    /// Groups currently tracked.
    pub fn tracked_groups(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_notice_then_silence_per_group() {
        let l = GroupLimiter::new(NonZeroU32::new(3).unwrap());
        for _ in 0..3 {
            assert_eq!(l.check("a"), Decision::Allow);
        }
        match l.check("a") {
            Decision::Limit {
                notify,
                retry_after_secs,
            } => {
                assert!(notify);
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            l.check("a"),
            Decision::Limit { notify: false, .. }
        ));
        // Another group has its own budget.
        assert_eq!(l.check("b"), Decision::Allow);
        assert_eq!(l.tracked_groups(), 2);
    }

    #[test]
    fn throttled_group_is_silent_until_the_period_ends() {
        let l = GroupLimiter::new(NonZeroU32::new(10).unwrap());
        l.throttle("a", Duration::from_secs(600));
        assert!(matches!(
            l.check("a"),
            Decision::Limit { notify: false, retry_after_secs } if retry_after_secs > 590
        ));
        assert_eq!(l.check("b"), Decision::Allow);
        l.throttle("b", Duration::ZERO);
        assert_eq!(l.check("b"), Decision::Allow);
    }
}
