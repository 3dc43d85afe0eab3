//! The group-info cache shared by replicas, behind each replica's own (moka) cache.
//!
//! A summary looked up by one replica is stored as bytes under `<prefix>info:<cid>` for
//! `bot.info_cache_ttl_secs` and reused by the others. Concurrent lookups of one cold group
//! across replicas share one DingTalk call: the first takes a short lock
//! (`SET <prefix>lock:<cid> <token> NX PX state.lookup_lock_ms`, in the same script that
//! found the summary missing), the others poll for its
//! result until the lock time is over and then look the group up themselves (a lost or
//! slow lock holder costs one extra lookup, never an answer). The bytes are opaque here:
//! the bot serializes its summary.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use super::Redis;
use super::bindings::{self, SharedBindings};
use crate::store::Binding;

/// How often a replica waiting for another's lookup checks for the result.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Deletes the lock only if it is still ours.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The binding, then the cached summary, else the lookup lock, in one atomic call (so a
/// lookup that finishes between a miss and the lock is never repeated).
///
/// KEYS: summary, lock, bindings hash. ARGV: token, lock ms (0 = no caching: binding
/// only), openConversationId. Returns `{code, summary, binding}` (`''` when absent):
/// 1 cached, 2 lock acquired, 3 lock held, 4 no caching.
const CLAIM: &str = r"
local b = redis.call('HGET', KEYS[3], ARGV[3]) or ''
if ARGV[2] == '0' then
  return {4, '', b}
end
local v = redis.call('GET', KEYS[1])
if v then
  return {1, v, b}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, '', b}
end
return {3, '', b}
";

/// What Redis says about a group, read in one round trip.
#[derive(Debug)]
pub struct Claim {
    /// The group's `/bind` binding.
    pub binding: Option<Binding>,
    /// What to do about its summary.
    pub summary: Summary,
}

/// The shared cache's answer for a summary.
#[derive(Debug)]
pub enum Summary {
    /// Another replica looked it up: these bytes.
    Cached(Vec<u8>),
    /// Ours to look up: store the result, then unlock with this token.
    Acquired(String),
    /// Another replica is looking it up: [`SharedGroups::wait`] for it.
    Held,
    /// Not cached (caching off): look it up.
    Uncached,
}

/// The shared cache and bindings, as the bot uses them.
#[derive(Debug)]
pub struct SharedGroups {
    redis: Arc<Redis>,
    bindings: SharedBindings,
    unlock: redis::Script,
    claim: redis::Script,
}

impl SharedGroups {
    /// On `redis`.
    pub fn new(redis: Arc<Redis>) -> SharedGroups {
        SharedGroups {
            bindings: SharedBindings::new(redis.clone()),
            redis,
            unlock: redis::Script::new(UNLOCK),
            claim: redis::Script::new(CLAIM),
        }
    }

    /// Whether Redis is in use now (when not, callers skip it).
    pub fn is_up(&self) -> bool {
        self.redis.is_up()
    }

    /// The bindings hash.
    pub fn bindings(&self) -> &SharedBindings {
        &self.bindings
    }

    /// The binding of `cid` and its cached summary, or the lookup lock, in one round trip;
    /// None while Redis is down. `cache` false: the binding only.
    pub async fn claim(&self, cid: &str, cache: bool) -> Option<Claim> {
        if !self.redis.is_up() {
            return None;
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lock_ms = if cache {
            u64::try_from(self.redis.lookup_lock().as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let mut call = self.claim.key(self.redis.key("info", cid));
        call.key(self.redis.key("lock", cid))
            .key(self.bindings.key())
            .arg(&token)
            .arg(lock_ms)
            .arg(cid);
        let mut conn = self.redis.conn();
        let (code, bytes, binding): (i64, Vec<u8>, String) =
            self.redis.run("info", call.invoke_async(&mut conn)).await?;
        let summary = match code {
            1 => Summary::Cached(bytes),
            2 => Summary::Acquired(token),
            3 => Summary::Held,
            _ => Summary::Uncached,
        };
        Some(Claim {
            binding: (!binding.is_empty())
                .then(|| bindings::parse(&binding))
                .flatten(),
            summary,
        })
    }

    /// Stores a summary for `ttl`.
    pub async fn store(&self, cid: &str, bytes: &[u8], ttl: Duration) {
        if !self.redis.is_up() {
            return;
        }
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.redis.conn();
        let key = self.redis.key("info", cid);
        let _: Option<()> = self.redis.run("info", conn.pset_ex(key, bytes, ms)).await;
    }

    /// Drops the cached summary of `cid` (after a `/bind`).
    pub async fn forget(&self, cid: &str) {
        if !self.redis.is_up() {
            return;
        }
        let mut conn = self.redis.conn();
        let key = self.redis.key("info", cid);
        let _: Option<()> = self.redis.run("info", conn.del(key)).await;
    }

    /// Releases our lock.
    pub async fn unlock(&self, cid: &str, token: &str) {
        let mut conn = self.redis.conn();
        let mut call = self.unlock.key(self.redis.key("lock", cid));
        call.arg(token);
        let _: Option<i64> = self.redis.run("info", call.invoke_async(&mut conn)).await;
    }

    /// Waits up to the lock time for another replica's summary of `cid`; None when it did
    /// not come (or Redis went down).
    pub async fn wait(&self, cid: &str) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + self.redis.lookup_lock();
        let key = self.redis.key("info", cid);
        let lock = self.redis.key("lock", cid);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_EVERY).await;
            if !self.redis.is_up() {
                return None;
            }
            let mut conn = self.redis.conn();
            let mut pipe = redis::pipe();
            pipe.get(&key).exists(&lock);
            let (bytes, locked): (Option<Vec<u8>>, bool) =
                self.redis.run("info", pipe.query_async(&mut conn)).await?;
            if bytes.is_some() {
                return bytes;
            }
            if !locked {
                // The holder finished without storing (its lookup failed): our turn.
                return None;
            }
        }
        None
    }
}
