//! Logs and metrics: one place that names every metric and sets up `tracing`.
//!
//! Metrics are recorded through the `metrics` facade into a process-wide Prometheus
//! recorder installed on first use; `/metrics` renders it. Labels are small fixed sets
//! (outcome, command, endpoint, code): never a group id, user id or token.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handles of the metrics every answered callback touches, registered once when the
/// recorder is installed. A `counter!` with labels builds and hashes its key and looks it
/// up in the registry on every call (what that cost is measured in `bench/README.md`); a
/// handle is one atomic add. Until the recorder is installed (tests that never scrape) the
/// macros are used, and record nowhere, as before.
static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Endpoints whose successful calls are counted through a cached handle.
const HOT_ENDPOINTS: [&str; 3] = ["sendBySession", "chat/get", "gettoken"];
/// Commands counted through a cached handle (the name of every bot command).
const HOT_COMMANDS: [&str; 5] = ["info", "help", "bind", "unknown", "not_text"];

struct Handles {
    callbacks: [Counter; Outcome::ALL.len()],
    commands: [Counter; HOT_COMMANDS.len()],
    replies: [Counter; 3],
    group_info_cache: [Counter; 2],
    api_ok: [(Counter, Histogram); HOT_ENDPOINTS.len()],
    clock_skew: Gauge,
}

impl Handles {
    fn register() -> Handles {
        Handles {
            callbacks: Outcome::ALL
                .map(|o| counter!("dingbot_callbacks_total", "outcome" => o.as_str())),
            commands: HOT_COMMANDS.map(|c| counter!("dingbot_commands_total", "command" => c)),
            replies: REPLY_RESULTS.map(|r| counter!("dingbot_replies_total", "result" => r)),
            group_info_cache: ["miss", "hit"]
                .map(|r| counter!("dingbot_cache_total", "cache" => "group_info", "result" => r)),
            api_ok: HOT_ENDPOINTS.map(|e| {
                (
                    counter!("dingbot_api_calls_total", "endpoint" => e, "code" => "0"),
                    histogram!("dingbot_api_latency_seconds", "endpoint" => e),
                )
            }),
            clock_skew: gauge!("dingbot_clock_skew_seconds"),
        }
    }
}

/// Results of `dingbot_replies_total`.
const REPLY_RESULTS: [&str; 3] = ["sent", "failed", "throttled"];

/// The process's Prometheus recorder, installed on first call. `None` when another
/// recorder was installed first (metrics then go there).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("dingbot_api_latency_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
        .inspect(|_| {
            HANDLES.get_or_init(Handles::register);
        })
}

/// Folds the histogram samples recorded since the last call into their buckets. The
/// exporter keeps every sample until then (8 bytes and more per API call and reply), so
/// this runs every few seconds whether or not anyone scrapes `/metrics`.
pub fn upkeep() {
    if let Some(h) = prometheus() {
        h.run_upkeep();
    }
}

/// Renders every metric in Prometheus text format.
pub fn render_metrics() -> String {
    match prometheus() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

/// How a callback ended, as counted by `dingbot_callbacks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, parsed and handed to the bot.
    Accepted,
    /// Missing/malformed/mismatching signature.
    BadSignature,
    /// Timestamp outside the window.
    StaleTimestamp,
    /// (timestamp, sign) pair reused with another body.
    Replayed,
    /// Body unreadable or invalid.
    BadRequest,
    /// Body over the limit.
    TooLarge,
    /// sessionWebhook missing, expired or on a host not allowed.
    WebhookRefused,
    /// Same msgId seen before.
    Duplicate,
    /// Group over its per-minute budget.
    RateLimited,
    /// Too many callbacks in flight.
    Shed,
}

impl Outcome {
    /// Every outcome, in declaration order (`self as usize` indexes it).
    const ALL: [Outcome; 10] = [
        Outcome::Accepted,
        Outcome::BadSignature,
        Outcome::StaleTimestamp,
        Outcome::Replayed,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::WebhookRefused,
        Outcome::Duplicate,
        Outcome::RateLimited,
        Outcome::Shed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::BadSignature => "bad_signature",
            Outcome::StaleTimestamp => "stale_timestamp",
            Outcome::Replayed => "replayed",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::WebhookRefused => "webhook_refused",
            Outcome::Duplicate => "duplicate",
            Outcome::RateLimited => "rate_limited",
            Outcome::Shed => "shed",
        }
    }
}

/// Counts a callback outcome.
pub fn callback(outcome: Outcome) {
    // `ALL` lists the outcomes in declaration order (checked by a test below); an outcome
    // missing from it falls through to the macro instead of panicking.
    if let Some(h) = HANDLES.get()
        && let Some(c) = h.callbacks.get(outcome as usize)
    {
        return c.increment(1);
    }
    counter!("dingbot_callbacks_total", "outcome" => outcome.as_str()).increment(1);
}

/// Counts a command.
pub fn command(name: &'static str) {
    if let Some(h) = HANDLES.get()
        && let Some(i) = HOT_COMMANDS.iter().position(|c| *c == name)
    {
        return h.commands[i].increment(1);
    }
    counter!("dingbot_commands_total", "command" => name).increment(1);
}

/// Counts a DingTalk API call and records its latency; `failure` is the failed call's
/// short code (its errcode, HTTP status or failure kind), `None` for success.
pub fn api_call(endpoint: &'static str, failure: Option<String>, elapsed: Duration) {
    if failure.is_none()
        && let Some(h) = HANDLES.get()
        && let Some(i) = HOT_ENDPOINTS.iter().position(|e| *e == endpoint)
    {
        let (calls, latency) = &h.api_ok[i];
        calls.increment(1);
        return latency.record(elapsed.as_secs_f64());
    }
    let code = failure.unwrap_or_else(|| "0".to_string());
    counter!("dingbot_api_calls_total", "endpoint" => endpoint, "code" => code).increment(1);
    histogram!("dingbot_api_latency_seconds", "endpoint" => endpoint).record(elapsed.as_secs_f64());
}

/// Counts a callback field that arrived in a shape dingbot does not use and was ignored
/// (`field` is the field's fixed name, never its value).
pub fn odd_callback_field(field: &'static str) {
    counter!("dingbot_callback_odd_fields_total", "field" => field).increment(1);
}

/// Counts a retry of a DingTalk call.
pub fn api_retry(endpoint: &'static str) {
    counter!("dingbot_api_retries_total", "endpoint" => endpoint).increment(1);
}

/// Counts an access-token fetch.
pub fn token_refreshed() {
    counter!("dingbot_token_refreshes_total").increment(1);
}

/// Counts a cache lookup.
pub fn cache(cache: &'static str, hit: bool) {
    if cache == "group_info"
        && let Some(h) = HANDLES.get()
    {
        return h.group_info_cache[usize::from(hit)].increment(1);
    }
    let result = if hit { "hit" } else { "miss" };
    counter!("dingbot_cache_total", "cache" => cache, "result" => result).increment(1);
}

/// Counts a reply that went through the robot send APIs instead of the sessionWebhook:
/// `reason` `expired`, `session_gone` or `webhook_failed`; `result` `sent`, `failed` or
/// `throttled`. (The reply is also counted once in `dingbot_replies_total`.)
pub fn reply_fallback(reason: &'static str, result: &'static str) {
    counter!("dingbot_reply_fallbacks_total", "reason" => reason, "result" => result).increment(1);
}

/// Counts a reply by result: `sent`, `failed`, `throttled`.
pub fn reply(result: &'static str) {
    if let Some(h) = HANDLES.get()
        && let Some(i) = REPLY_RESULTS.iter().position(|r| *r == result)
    {
        return h.replies[i].increment(1);
    }
    counter!("dingbot_replies_total", "result" => result).increment(1);
}

/// Sets the number of groups the rate limiter tracks.
pub fn tracked_groups(n: usize) {
    gauge!("dingbot_tracked_groups").set(n as f64);
}

/// Sets the number of callbacks holding one of the `server.max_in_flight` slots: accepted,
/// reply not out yet (callbacks still waiting for a slot are not counted).
pub fn callbacks_in_flight(n: usize) {
    gauge!("dingbot_callbacks_in_flight").set(n as f64);
}

/// Sets the number of groups whose summary is cached.
pub fn cached_groups(n: u64) {
    gauge!("dingbot_cached_groups").set(n as f64);
}

/// Sets `dingbot_state_backend_up`: 1 while the shared state backend (Redis) answers, 0
/// while this replica runs degraded on its own memory.
pub fn state_backend_up(up: bool) {
    gauge!("dingbot_state_backend_up").set(if up { 1.0 } else { 0.0 });
}

/// Counts a Redis failure by operation (`admit`, `throttle`, `bind`, `info`, `ping`).
pub fn state_error(operation: &'static str) {
    counter!("dingbot_state_errors_total", "operation" => operation).increment(1);
}

/// Counts a round trip to Redis (one command, pipeline or script) by operation.
pub fn state_round_trip(operation: &'static str) {
    counter!("dingbot_state_round_trips_total", "operation" => operation).increment(1);
}

/// Counts callbacks decided from this replica's memory because Redis was down or slow.
pub fn state_degraded_decision() {
    counter!("dingbot_state_degraded_decisions_total").increment(1);
}

/// Sets how many msgIds and signature pairs are remembered (dedupe and replay defence).
pub fn remembered(set: &'static str, n: usize) {
    gauge!("dingbot_remembered_entries", "set" => set).set(n as f64);
}

/// Records how far a verified caller's clock is from ours.
pub fn clock_skew(skew_ms: i64) {
    if let Some(h) = HANDLES.get() {
        return h.clock_skew.set(skew_ms as f64 / 1000.0);
    }
    gauge!("dingbot_clock_skew_seconds").set(skew_ms as f64 / 1000.0);
}

/// The Stream door's metrics, registered once per connection loop (the frame counters are
/// on its hot path, so they are looked up once, not per frame).
pub struct StreamMetrics {
    frames: [metrics::Counter; STREAM_FRAMES.len()],
    acks: [metrics::Counter; STREAM_ACKS.len()],
    connected: metrics::Gauge,
    ping_rtt: metrics::Histogram,
}

/// Frame labels of `dingbot_stream_frames_total`.
const STREAM_FRAMES: [&str; 9] = [
    "callback",
    "ping",
    "disconnect",
    "unsupported",
    "malformed",
    "bad_data",
    "duplicate",
    "oversize",
    "binary",
];
/// Code labels of `dingbot_stream_acks_total`.
const STREAM_ACKS: [&str; 2] = ["200", "404"];

impl StreamMetrics {
    /// Registers (or finds) the Stream metrics.
    pub fn new() -> StreamMetrics {
        StreamMetrics {
            frames: STREAM_FRAMES.map(|t| counter!("dingbot_stream_frames_total", "type" => t)),
            acks: STREAM_ACKS.map(|c| counter!("dingbot_stream_acks_total", "code" => c)),
            connected: gauge!("dingbot_stream_connected"),
            ping_rtt: histogram!("dingbot_stream_ping_rtt_seconds"),
        }
    }

    /// Counts a frame by type: `callback`, `ping`, `disconnect`, `unsupported`,
    /// `malformed`, `bad_data`, `duplicate`, `oversize`, `binary`.
    pub fn frame(&self, kind: &'static str) {
        match STREAM_FRAMES.iter().position(|k| *k == kind) {
            Some(i) => self.frames[i].increment(1),
            None => counter!("dingbot_stream_frames_total", "type" => kind).increment(1),
        }
    }

    /// Counts an answer written back (`200` or `404`).
    pub fn ack(&self, code: &'static str) {
        match STREAM_ACKS.iter().position(|c| *c == code) {
            Some(i) => self.acks[i].increment(1),
            None => counter!("dingbot_stream_acks_total", "code" => code).increment(1),
        }
    }

    /// Sets the connection state: 1 while a connection is open.
    pub fn connected(&self, open: bool) {
        self.connected.set(if open { 1.0 } else { 0.0 });
    }

    /// Records a WebSocket ping's round trip.
    pub fn ping_rtt(&self, rtt: Duration) {
        self.ping_rtt.record(rtt.as_secs_f64());
    }

    /// Counts a reconnect by cause (`disconnect`, `dropped`, `watchdog`, `error`,
    /// `refused`, `unavailable`, `oversize`).
    pub fn reconnect(&self, cause: &'static str) {
        counter!("dingbot_stream_reconnects_total", "cause" => cause).increment(1);
    }
}

impl Default for StreamMetrics {
    fn default() -> Self {
        StreamMetrics::new()
    }
}

/// Refusal log lines allowed per second; the rest are counted and summarised.
const REFUSAL_LOGS_PER_SECOND: u64 = 20;
static REFUSAL_SECOND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static REFUSAL_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether this refusal may be logged: at most 20 a second, so a flood of forged
/// callbacks cannot turn into a flood of log lines (metrics still count every one).
/// Returns the number of refusals not logged in the previous second, once.
pub fn refusal_log_budget() -> (bool, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let previous = REFUSAL_SECOND.swap(second, Relaxed);
    let mut suppressed = 0;
    if previous != second {
        let count = REFUSAL_COUNT.swap(0, Relaxed);
        suppressed = count.saturating_sub(REFUSAL_LOGS_PER_SECOND);
    }
    let n = REFUSAL_COUNT.fetch_add(1, Relaxed);
    (n < REFUSAL_LOGS_PER_SECOND, suppressed)
}

/// Sets up `tracing`: `RUST_LOG`-style filter (default `info`), human or JSON lines.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    // A second init (tests, demo after serve) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_indexes_its_own_counter() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(
                *outcome as usize, i,
                "{outcome:?} is out of place in Outcome::ALL"
            );
        }
        let labels: std::collections::HashSet<&str> =
            Outcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels.len(),
            Outcome::ALL.len(),
            "two outcomes share a label"
        );
    }
}
