//! `/bind` bindings in Redis: one hash, `<prefix>bindings`, openConversationId → the
//! binding as JSON (the same shape as an entry of `bindings.json`).
//!
//! The hash is the one key without a TTL: bindings must survive, so Redis needs
//! persistence (AOF, README › Running several replicas). Entries of a local
//! `bindings.json` are imported with `HSETNX` (an entry already in Redis wins), so a
//! single instance moved to the Redis backend keeps its bindings.

use std::sync::Arc;

use redis::AsyncCommands;

use super::Redis;
use crate::store::Binding;

/// The bindings hash.
#[derive(Debug, Clone)]
pub struct SharedBindings {
    redis: Arc<Redis>,
    key: String,
}

impl SharedBindings {
    /// The bindings of `redis`.
    pub fn new(redis: Arc<Redis>) -> SharedBindings {
        let key = redis.key("bindings", "all");
        SharedBindings { redis, key }
    }

    /// The hash's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Copies `local` bindings into Redis where the group has none yet; returns how many
    /// were new. None when Redis is unreachable (retried later by the caller).
    pub async fn import(&self, local: &[(String, Binding)]) -> Option<usize> {
        if local.is_empty() {
            return Some(0);
        }
        let mut pipe = redis::pipe();
        for (cid, binding) in local {
            let json = serde_json::to_string(binding).ok()?;
            pipe.hset_nx(&self.key, cid, json);
        }
        let mut conn = self.redis.conn();
        let added: Vec<bool> = self.redis.run("bind", pipe.query_async(&mut conn)).await?;
        Some(added.into_iter().filter(|a| *a).count())
    }

    /// Every binding in Redis (entries that do not parse are skipped with a warning).
    pub async fn all(&self) -> Option<Vec<(String, Binding)>> {
        let mut conn = self.redis.conn();
        let raw: Vec<(String, String)> = self.redis.run("bind", conn.hgetall(&self.key)).await?;
        Some(
            raw.into_iter()
                .filter_map(|(cid, json)| match serde_json::from_str(&json) {
                    Ok(b) => Some((cid, b)),
                    Err(e) => {
                        tracing::warn!(conversation_id = %cid, error = %e, "unreadable binding in Redis; ignored");
                        None
                    }
                })
                .collect(),
        )
    }

    /// Stores the binding of `cid`; false when Redis did not take it (nothing changed).
    pub async fn put(&self, cid: &str, binding: &Binding) -> bool {
        let Ok(json) = serde_json::to_string(binding) else {
            return false;
        };
        let mut conn = self.redis.conn();
        self.redis
            .run("bind", conn.hset::<_, _, _, ()>(&self.key, cid, json))
            .await
            .is_some()
    }
}

/// Parses a binding read from the hash.
pub fn parse(json: &str) -> Option<Binding> {
    serde_json::from_str(json).ok()
}
