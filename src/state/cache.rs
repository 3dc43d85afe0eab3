//! The group-info cache shared by replicas, behind each replica's own (moka) cache.
//!
//! A summary looked up by one replica is stored as bytes under `<prefix>info:<cid>` for
//! `bot.info_cache_ttl_secs` and reused by the others. Concurrent lookups of one cold group
//! across replicas share one DingTalk call: the first takes a short lock
//! (`SET <prefix>lock:<cid> <token> NX PX state.lookup_lock_ms`), the others poll for its
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

/// What Redis knows about a group, read in one round trip.
#[derive(Debug, Default)]
pub struct Known {
    /// The cached summary's bytes.
    pub summary: Option<Vec<u8>>,
    /// The group's `/bind` binding.
    pub binding: Option<Binding>,
}

/// The outcome of asking for the lookup lock.
#[derive(Debug)]
pub enum Lock {
    /// Ours: look the group up, store it, then unlock with this token.
    Acquired(String),
    /// Another replica is looking it up.
    Held,
    /// Redis is down: look it up locally.
    Unavailable,
}

/// The shared cache and bindings, as the bot uses them.
#[derive(Debug)]
pub struct SharedGroups {
    redis: Arc<Redis>,
    bindings: SharedBindings,
    unlock: redis::Script,
}

impl SharedGroups {
    /// On `redis`.
    pub fn new(redis: Arc<Redis>) -> SharedGroups {
        SharedGroups {
            bindings: SharedBindings::new(redis.clone()),
            redis,
            unlock: redis::Script::new(UNLOCK),
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

    /// The cached summary and the binding of `cid`, in one round trip; None while Redis
    /// is down.
    pub async fn known(&self, cid: &str) -> Option<Known> {
        if !self.redis.is_up() {
            return None;
        }
        let mut conn = self.redis.conn();
        let mut pipe = redis::pipe();
        pipe.get(self.redis.key("info", cid))
            .hget(self.bindings.key(), cid);
        let (summary, binding): (Option<Vec<u8>>, Option<String>) =
            self.redis.run("info", pipe.query_async(&mut conn)).await?;
        Some(Known {
            summary,
            binding: binding.as_deref().and_then(bindings::parse),
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

    /// Asks for the lookup lock of `cid`.
    pub async fn lock(&self, cid: &str) -> Lock {
        if !self.redis.is_up() {
            return Lock::Unavailable;
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let ms = u64::try_from(self.redis.lookup_lock().as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.redis.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis.key("lock", cid))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms);
        let set = cmd.query_async::<Option<String>>(&mut conn);
        match self.redis.run("info", set).await {
            Some(Some(_)) => Lock::Acquired(token),
            Some(None) => Lock::Held,
            None => Lock::Unavailable,
        }
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
