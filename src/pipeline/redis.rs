//! Admission state shared by replicas, in Redis, with this replica's memory as the
//! fallback.
//!
//! [`RedisAdmission::admit`] is one `EVALSHA` of [`ADMIT`]: replay defence, msgId dedupe,
//! the 130101 silence, the group's GCRA budget and the one-notice-per-minute window, decided
//! atomically on the server, so every replica sees one truth. Keys (all under
//! `state.key_prefix`, all with a TTL):
//!
//! | key | holds | TTL |
//! |---|---|---|
//! | `r:<timestamp>:<sign>` | set of message fingerprints the pair carried | until the timestamp leaves the clock window |
//! | `m:<msgId>` | `<attempt token>:<verdict>:<retry after>` (`1` when written back from a backlog) | the clock window |
//! | `g:<cid>` | GCRA theoretical arrival time (ms, Redis clock) | until the budget is full again |
//! | `n:<cid>` | `1`: the slow-down notice was sent | 60 s |
//! | `t:<cid>` | `1`: DingTalk throttled the group (130101) | DingTalk's penalty |
//!
//! **Degraded mode.** Every callback Redis takes is also recorded in a [`MemoryAdmission`]
//! of this replica (dedupe, replay, and the replica's share of the budget). When a call
//! fails or exceeds `state.command_timeout_ms` twice (the script is sent again once, with
//! the same attempt token, so the repeat cannot count the callback twice), the backend is
//! marked down and that
//! callback — and every later one until Redis is back — is decided by the local memory:
//! budgets and dedupe are then per replica. **A call whose outcome is unknown (a timeout
//! after Redis may have applied it) counts as taken by this replica**: it is decided
//! locally (so it is answered at most once here, and a redelivery to this replica is a
//! duplicate) and its msgId and signature pair go into a backlog that [`RedisAdmission::watch`]
//! writes into Redis (`SET NX`, `SADD`) before shared state resumes, so a redelivery to
//! another replica afterwards is a duplicate too. If Redis had applied it, that write
//! changes nothing.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::admission::{
    AdmissionState, MemoryAdmission, MemoryOptions, PairCheck, Pending, Remembered, SignedPair,
    Ticket, Verdict,
};
use crate::state::{BackendStatus, Redis};
use crate::telemetry;

/// How long the slow-down notice window lasts.
const NOTICE_WINDOW_MS: u64 = 60_000;
/// Most callbacks remembered for writing into Redis when it is back.
const BACKLOG_MAX: usize = 200_000;
/// How often the watcher pings Redis while it is down.
const PING_WHILE_DOWN: Duration = Duration::from_millis(500);
/// How often it pings while up (to notice an idle outage).
const PING_WHILE_UP: Duration = Duration::from_secs(5);

/// Dedupe, replay, 130101 silence, GCRA and the notice window in one atomic call (the
/// memory backend's order).
///
/// KEYS: replay, dedupe, gcra, notice, throttle. ARGV: signed (0/1), fingerprint,
/// replay TTL ms, messages per signature, dedupe TTL ms, emission interval ms, burst,
/// notice window ms, attempt token. Returns `{code, retry_after_secs}`: 0 answer, 1 slow
/// down, 2 limited, 3 duplicate, 4 replayed.
///
/// The dedupe key keeps `token:code:retry`: the same call sent again (a retry after a
/// dropped connection, when the first may or may not have been applied) gets the verdict
/// the first one got instead of "duplicate", so a retry is safe.
const ADMIT: &str = r"
local token = ARGV[9]
local prior = redis.call('GET', KEYS[2])
if prior and string.sub(prior, 1, #token + 1) == token .. ':' then
  local code, retry = string.match(prior, ':(%d+):(%d+)$')
  return {tonumber(code), tonumber(retry)}
end
if prior then
  return {3, 0}
end
if ARGV[1] == '1' and redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return {4, 0}
  end
  redis.call('SADD', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local code, retry = 0, 0
local silenced = redis.call('PTTL', KEYS[5])
if silenced > 0 then
  code, retry = 2, math.ceil(silenced / 1000)
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local interval = tonumber(ARGV[6])
  local burst = tonumber(ARGV[7])
  local tat = tonumber(redis.call('GET', KEYS[3]) or now)
  if tat < now then tat = now end
  local wait = tat - (burst - 1) * interval - now
  if wait <= 0 then
    local next_tat = tat + interval
    redis.call('SET', KEYS[3], next_tat, 'PX', next_tat - now)
  else
    retry = math.max(1, math.ceil(wait / 1000))
    if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[8]) then
      code = 1
    else
      code = 2
    end
  end
end
redis.call('SET', KEYS[2], token .. ':' .. code .. ':' .. retry, 'PX', ARGV[5])
return {code, retry}
";

/// A callback decided locally, to be written into Redis when it is back.
#[derive(Debug, Clone)]
struct Backlogged {
    dedupe_key: String,
    dedupe_ttl_ms: u64,
    /// Replay key, fingerprint and the pair's remaining lifetime (ms) when it was decided.
    replay: Option<(String, String, u64)>,
}

/// Settings of the shared backend's admission.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The local fallback's settings (also the window, per-signature count and budget).
    pub memory: MemoryOptions,
}

/// Admission state in Redis, falling back to this replica's memory.
pub struct RedisAdmission {
    redis: Arc<Redis>,
    local: MemoryAdmission,
    script: redis::Script,
    window_ms: i64,
    dedupe_ttl_ms: i64,
    per_signature: usize,
    interval_ms: u64,
    burst: NonZeroU32,
    backlog: Mutex<Vec<Backlogged>>,
}

impl std::fmt::Debug for RedisAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdmission")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// The message's fingerprint in a pair's replay set: its msgId, hashed to a fixed size.
fn fingerprint(msg_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(msg_id.as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(32);
    for b in &digest[..16] {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

fn positive_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).max(1)
}

impl RedisAdmission {
    /// Admission on `redis`, with a local fallback of `options.memory`.
    pub fn new(redis: Arc<Redis>, options: RedisOptions) -> RedisAdmission {
        let m = options.memory;
        let per_minute = m.per_group_per_minute;
        let (window_ms, per_signature) = (m.window_ms, m.messages_per_millisecond);
        let dedupe_ttl_ms = m.dedupe_ttl_ms;
        RedisAdmission {
            redis,
            local: MemoryAdmission::new(m, crate::clock::now_ms()),
            script: redis::Script::new(ADMIT),
            window_ms,
            dedupe_ttl_ms,
            per_signature,
            interval_ms: (60_000 / u64::from(per_minute.get())).max(1),
            burst: per_minute,
            backlog: Mutex::new(Vec::new()),
        }
    }

    /// The keys and TTLs of a ticket.
    fn keys(&self, t: &Ticket<'_>, now_ms: i64) -> Backlogged {
        let replay = t.signature.map(|pair| {
            let id = format!(
                "{}:{}",
                pair.timestamp_ms,
                String::from_utf8_lossy(pair.sign)
            );
            let ttl = now_ms.max(pair.timestamp_ms).saturating_add(self.window_ms) - now_ms;
            (
                self.redis.key("r", &id),
                fingerprint(t.msg_id),
                positive_ms(ttl),
            )
        });
        Backlogged {
            dedupe_key: self.redis.key("m", t.msg_id),
            dedupe_ttl_ms: positive_ms(self.dedupe_ttl_ms),
            replay,
        }
    }

    /// Decides from local memory; a callback it takes is remembered for Redis.
    fn degraded(&self, t: &Ticket<'_>, now_ms: i64) -> Verdict {
        telemetry::state_degraded_decision();
        let verdict = self.local_admit(t, now_ms);
        if matches!(
            verdict,
            Verdict::Answer | Verdict::SlowDown { .. } | Verdict::Limited
        ) {
            let entry = self.keys(t, now_ms);
            let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
            if backlog.len() < BACKLOG_MAX {
                backlog.push(entry);
            }
        }
        verdict
    }

    fn local_admit(&self, t: &Ticket<'_>, now_ms: i64) -> Verdict {
        match self.local.admit(t, now_ms) {
            Pending::Ready(ready) => ready.into_inner(),
            // The memory backend always answers at once; were it ever not to, refuse
            // rather than block (the door answers 503 and DingTalk may retry).
            Pending::Boxed(_) => Verdict::Full,
        }
    }

    /// The shared decision, or None when Redis failed (then marked down).
    async fn shared(&self, t: &Ticket<'_>, now_ms: i64) -> Option<Verdict> {
        let keys = self.keys(t, now_ms);
        let (replay_key, fp, replay_ttl, signed) = match &keys.replay {
            Some((k, fp, ttl)) => (k.as_str(), fp.as_str(), *ttl, "1"),
            None => ("", "", 1, "0"),
        };
        let token = format!("{:016x}", rand::random::<u64>());
        let mut call = self.script.key(replay_key);
        call.key(&keys.dedupe_key)
            .key(self.redis.key("g", t.group))
            .key(self.redis.key("n", t.group))
            .key(self.redis.key("t", t.group))
            .arg(signed)
            .arg(fp)
            .arg(replay_ttl)
            .arg(self.per_signature)
            .arg(keys.dedupe_ttl_ms)
            .arg(self.interval_ms)
            .arg(self.burst.get())
            .arg(NOTICE_WINDOW_MS)
            .arg(&token);
        // Sent again once if it fails (a dropped connection, e.g. after Redis restarted):
        // the token makes a repeat return the first call's verdict. A second failure
        // decides the callback locally (see the module docs).
        let mut failure = String::new();
        let mut answer = None;
        for _ in 0..2 {
            telemetry::state_round_trip("admit");
            let mut conn = self.redis.conn();
            let sent = call.invoke_async::<(i64, u64)>(&mut conn);
            match tokio::time::timeout(self.redis.command_timeout(), sent).await {
                Ok(Ok(value)) => {
                    answer = Some(value);
                    break;
                }
                Ok(Err(e)) => failure = crate::state::redis_reason(&e),
                Err(_) => failure = "timed out".into(),
            }
        }
        let Some((code, retry)) = answer else {
            self.redis.mark_down("admit", &failure);
            return None;
        };
        let verdict = match code {
            0 => Verdict::Answer,
            1 => Verdict::SlowDown {
                retry_after_secs: retry.max(1),
            },
            2 => Verdict::Limited,
            3 => Verdict::Duplicate,
            4 => Verdict::Replayed,
            other => {
                self.redis
                    .mark_down("admit", &format!("unexpected script answer {other}"));
                return None;
            }
        };
        Some(verdict)
    }

    /// Writes the backlog into Redis; false (and the backlog kept) when Redis fails.
    async fn flush_backlog(&self) -> bool {
        let pending = std::mem::take(&mut *self.backlog.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return true;
        }
        for chunk in pending.chunks(1000) {
            let mut pipe = redis::pipe();
            for b in chunk {
                pipe.cmd("SET")
                    .arg(&b.dedupe_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(b.dedupe_ttl_ms)
                    .ignore();
                if let Some((key, fp, ttl)) = &b.replay {
                    pipe.cmd("SADD").arg(key).arg(fp).ignore();
                    pipe.cmd("PEXPIRE").arg(key).arg(*ttl).ignore();
                }
            }
            let mut conn = self.redis.conn();
            let sent = tokio::time::timeout(
                self.redis.command_timeout().max(Duration::from_secs(2)),
                pipe.query_async::<()>(&mut conn),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                // Keep everything (re-sending a chunk is harmless: SET NX, SADD).
                let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
                let mut restored = pending;
                restored.append(&mut backlog);
                *backlog = restored;
                return false;
            }
        }
        tracing::info!(
            callbacks = pending.len(),
            "callbacks taken while Redis was down are now recorded in Redis"
        );
        true
    }

    /// The health loop: a ping at once, then while Redis is down, every 500 ms and, once it answers,
    /// record the backlog in Redis and resume shared state; while up, ping every 5 s so
    /// an outage is noticed (and shown) even without traffic. Runs until aborted.
    pub async fn watch(self: Arc<Self>) {
        // The first ping at once: a Redis that is down at startup is known before the
        // first callback would wait for it.
        let mut pause = Duration::ZERO;
        loop {
            tokio::time::sleep(pause).await;
            match self.redis.ping().await {
                Ok(_) if self.redis.is_up() => {}
                Ok(_) => {
                    if self.flush_backlog().await {
                        self.redis.mark_up();
                    }
                }
                Err(reason) => self.redis.mark_down("ping", &reason),
            }
            pause = if self.redis.is_up() {
                PING_WHILE_UP
            } else {
                PING_WHILE_DOWN
            };
        }
    }

    /// Callbacks waiting to be written into Redis.
    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl AdmissionState for RedisAdmission {
    /// Advisory, from this replica's memory (which mirrors what Redis admitted here): no
    /// round trip before the body is read; [`AdmissionState::admit`] decides in Redis.
    fn check_pair<'a>(&'a self, pair: SignedPair<'a>, now_ms: i64) -> Pending<'a, PairCheck> {
        self.local.check_pair(pair, now_ms)
    }

    fn admit<'a>(&'a self, ticket: &Ticket<'a>, now_ms: i64) -> Pending<'a, Verdict> {
        if !self.redis.is_up() {
            return Pending::now(self.degraded(ticket, now_ms));
        }
        let t = *ticket;
        Pending::Boxed(Box::pin(async move {
            match self.shared(&t, now_ms).await {
                Some(verdict) => {
                    if matches!(
                        verdict,
                        Verdict::Answer | Verdict::SlowDown { .. } | Verdict::Limited
                    ) {
                        // Remember it here too, for the next outage.
                        let _ = self.local_admit(&t, now_ms);
                    }
                    verdict
                }
                None => self.degraded(&t, now_ms),
            }
        }))
    }

    fn throttle<'a>(&'a self, group: &'a str, period: Duration) -> Pending<'a, ()> {
        let local = self.local.throttle(group, period);
        if !self.redis.is_up() {
            return local;
        }
        Pending::Boxed(Box::pin(async move {
            local.await;
            let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut conn = self.redis.conn();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.redis.key("t", group)).arg(1).arg("PX").arg(ms);
            let set = cmd.query_async::<()>(&mut conn);
            let _ = self.redis.run("throttle", set).await;
        }))
    }

    fn handled(&self, msg_id: &str, now_ms: i64) -> bool {
        self.local.handled(msg_id, now_ms)
    }

    fn maintain(&self, now_ms: i64) -> Remembered {
        self.local.maintain(now_ms)
    }

    fn remembered(&self) -> Remembered {
        self.local.remembered()
    }

    fn persist(&self) -> Pending<'_, Result<(), String>> {
        // Redis holds the shared record; the local mirror is not kept.
        Pending::now(Ok(()))
    }

    fn status(&self) -> BackendStatus {
        self.redis.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_by_msg_id() {
        let a = fingerprint("m1");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("m1"));
        assert_ne!(a, fingerprint("m2"));
    }
}
