//! A small bounded memory of frame `messageId`s, for frame-level dedupe (DingTalk says a
//! frame may arrive again even after a correct ACK). Admission's msgId dedupe stays the
//! main defence; this one also catches a redelivered frame whose payload cannot be read.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

/// The last `capacity` ids, as 64-bit keyed hashes.
#[derive(Debug)]
pub(super) struct RecentIds {
    hasher: std::hash::RandomState,
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl RecentIds {
    pub(super) fn new(capacity: usize) -> RecentIds {
        RecentIds {
            hasher: std::hash::RandomState::new(),
            set: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Remembers `id`; false if it was already remembered.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        let key = self.hasher.hash_one(id);
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_ids_only() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "the oldest id was forgotten");
        assert!(!r.insert("c"));
    }
}
