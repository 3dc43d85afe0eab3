//! Shared state in Redis (or Valkey/KeyDB): the connection, its health, and the plain
//! key/value operations the other modules build on.
//!
//! With `state.backend = "redis"` every replica behind one URL shares, through this
//! module, admission state (`pipeline::redis`), the `/bind` bindings ([`bindings`]) and
//! the group-info cache ([`cache`]). One [`Redis`] handle is built at startup and shared:
//! a multiplexed, auto-reconnecting connection (redis-rs's `ConnectionManager`) whose
//! every command is bounded by `state.command_timeout_ms`.
//!
//! [`Redis`] also holds the backend's health: a command that fails or times out marks it
//! down (logged once per change, `dingbot_state_backend_up` 0), after which callers stop
//! asking Redis and use this replica's own memory until a background ping finds Redis
//! back ([`Redis::mark_up`]). Nothing here knows DingTalk or HTTP.
//!
//! Every key starts with `state.key_prefix` and every key has a TTL, except the bindings
//! hash (which must survive: see the README on AOF).

pub mod bindings;
pub mod cache;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::StateSettings;
use crate::telemetry;

/// A failure to set up the Redis backend (the URL only; a Redis that is down at startup is
/// the degraded mode, not an error).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL is not one redis-rs accepts (the value is never shown).
    #[error("state.redis_url: not a usable Redis URL ({0}); value not shown")]
    Url(String),
}

/// How the shared backend is doing, for `/readyz` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BackendStatus {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Whether shared state is in use now (always true for `memory`).
    pub up: bool,
}

impl BackendStatus {
    /// The in-memory backend: always up.
    pub const MEMORY: BackendStatus = BackendStatus {
        backend: "memory",
        up: true,
    };
}

/// Tells [`Redis`] handles apart in the per-thread connection table (tests run several
/// replicas in one process).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connections, by [`Redis`] handle: each HTTP worker (its own
    /// single-threaded runtime) talks to Redis on a connection driven on that same thread,
    /// so a callback's round trip wakes no other thread.
    static CONNECTIONS: RefCell<Vec<(u64, ConnectionManager)>> = const { RefCell::new(Vec::new()) };
}

/// The shared Redis handle.
pub struct Redis {
    /// Tells this handle's per-thread connections apart.
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Used where a thread has no connection of its own yet and cannot make one.
    conn: ConnectionManager,
    prefix: String,
    command_timeout: Duration,
    lookup_lock: Duration,
    /// Whether Redis answered the last command (starts true: the first callback tries).
    up: AtomicBool,
    /// `host:port/db`, for logs (no credentials).
    shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("server", &self.shown)
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// `host:port/db` of a Redis URL, without user or password.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(6379),
            u.path()
        ),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// What `dingbot check` reports about Redis.
#[derive(Debug, Clone)]
pub struct Ping {
    /// `redis_version` from `INFO server` (Valkey reports a compatible one too).
    pub version: String,
    /// Round trip of a `PING`.
    pub latency: Duration,
}

impl Redis {
    /// A handle on `settings.redis_url`. Connects lazily: a Redis that is down now makes
    /// the first callbacks run degraded, it does not stop startup.
    pub fn connect(settings: &StateSettings) -> Result<Arc<Redis>, StateError> {
        let url = settings.redis_url.expose_secret();
        // redis-rs's errors about a URL do not quote it, but be sure: only the kind.
        let client =
            redis::Client::open(url).map_err(|e| StateError::Url(format!("{:?}", e.kind())))?;
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StateError::Url(format!("{:?}", e.kind())))?;
        telemetry::state_backend_up(true);
        Ok(Arc::new(Redis {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            config,
            conn,
            prefix: settings.key_prefix.clone(),
            command_timeout,
            lookup_lock: Duration::from_millis(settings.lookup_lock_ms),
            up: AtomicBool::new(true),
            shown: shown_url(url),
        }))
    }

    /// `state.key_prefix` + `kind` + `:` + `id`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 1 + id.len());
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push(':');
        key.push_str(id);
        key
    }

    /// The server, for logs (no credentials).
    pub fn server(&self) -> &str {
        &self.shown
    }

    /// This thread's connection (multiplexed, auto-reconnecting), made on first use: its
    /// driver task then runs on this thread's runtime, so an HTTP worker's round trip to
    /// Redis involves no other thread (a shared connection driven elsewhere costs two
    /// cross-thread wake-ups per command). One connection per worker thread.
    pub fn conn(&self) -> ConnectionManager {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.conn.clone();
        }
        CONNECTIONS.with(|table| {
            let mut table = table.borrow_mut();
            if let Some((_, conn)) = table.iter().find(|(id, _)| *id == self.id) {
                return conn.clone();
            }
            match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            {
                Ok(conn) => {
                    table.push((self.id, conn.clone()));
                    conn
                }
                Err(_) => self.conn.clone(),
            }
        })
    }

    /// `state.command_timeout_ms`.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// `state.lookup_lock_ms`.
    pub fn lookup_lock(&self) -> Duration {
        self.lookup_lock
    }

    /// Whether shared state is in use now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// For `/readyz`.
    pub fn status(&self) -> BackendStatus {
        BackendStatus {
            backend: "redis",
            up: self.is_up(),
        }
    }

    /// A command failed or timed out: run degraded until a ping succeeds. Logged once per
    /// change.
    pub fn mark_down(&self, operation: &'static str, reason: &str) {
        telemetry::state_error(operation);
        if self.up.swap(false, Ordering::SeqCst) {
            telemetry::state_backend_up(false);
            tracing::error!(
                server = %self.shown,
                operation,
                reason,
                "Redis is unreachable: running degraded on this replica's memory (budgets and dedupe per replica) until it is back"
            );
        }
    }

    /// Redis answers again: shared state from now on. Logged once per change.
    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            telemetry::state_backend_up(true);
            tracing::warn!(server = %self.shown, "Redis is back: shared state resumed");
        }
    }

    /// Runs one command (or pipeline, or script) within `state.command_timeout_ms`; a
    /// failure marks the backend down.
    pub async fn run<T, F>(&self, operation: &'static str, command: F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        telemetry::state_round_trip(operation);
        match tokio::time::timeout(self.command_timeout, command).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.mark_down(operation, &redis_reason(&e));
                None
            }
            Err(_) => {
                self.mark_down(operation, "timed out");
                None
            }
        }
    }

    /// `PING`, then `INFO server`: the version and the PING's round trip. Does not change
    /// the health flag.
    pub async fn ping(&self) -> Result<Ping, String> {
        let mut conn = self.conn();
        let started = Instant::now();
        let pong = tokio::time::timeout(
            self.command_timeout.max(Duration::from_secs(1)),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        let latency = started.elapsed();
        match pong {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(redis_reason(&e)),
            Err(_) => return Err("timed out".into()),
        }
        let info = tokio::time::timeout(
            self.command_timeout.max(Duration::from_secs(1)),
            redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut conn),
        )
        .await;
        let version = match info {
            Ok(Ok(text)) => text
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .unwrap_or("unknown")
                .trim()
                .to_string(),
            Ok(Err(e)) => return Err(redis_reason(&e)),
            Err(_) => return Err("timed out".into()),
        };
        Ok(Ping { version, latency })
    }
}

/// A Redis error for logs: its kind and redis-rs's text (which never holds the URL or the
/// password).
pub fn redis_reason(e: &redis::RedisError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_has_no_credentials() {
        let shown = shown_url("rediss://user:hunter2@redis.internal:6380/2");
        assert_eq!(shown, "rediss://redis.internal:6380/2");
        assert_eq!(shown_url("redis://127.0.0.1/0"), "redis://127.0.0.1:6379/0");
    }
}
