//! The Stream door: an outbound WebSocket to DingTalk's gateway that brings the same robot
//! messages as the HTTP callback (protocol doc §7), handed to the same
//! [`Pipeline`](crate::pipeline::Pipeline).
//!
//! Per frame: parse it, ACK it at once (before any work, so a slow lookup never causes a
//! redelivery), drop a `messageId` seen recently, turn `data` into a `Callback`, take a
//! slot, admit, dispatch. No signature applies: the ticket authenticates the socket.
//!
//! The connection is held forever: exponential backoff with full jitter between attempts
//! (reset after a connection that stayed up `stream.healthy_after_ms`), a slow fixed retry
//! when DingTalk refuses the credentials, WebSocket pings from our side and a watchdog that
//! replaces a connection silent for `stream.idle_timeout_ms`. A `disconnect` frame opens
//! the next connection while the old one is still read, and only then closes the old one.
//! Shutdown finishes the frame in hand, handles and acks the frames already received, and
//! closes the socket, still handling frames that were already on their way; the
//! pipeline's drain then finishes the replies.

mod dial;
mod recent;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use dial::{ConnectError, Dialer, Socket};
pub use status::{Count, StreamCounts, StreamStatus};

use crate::config::StreamSettings;
use crate::dingtalk::stream::{self as wire, Frame, OpenError};
use crate::pipeline::{Decision, Pipeline, Refusal};
use crate::telemetry::{self, Outcome, StreamMetrics};
use recent::RecentIds;

/// How long a replaced connection is still read after our close frame.
const RETIRE_WAIT: Duration = Duration::from_secs(2);
/// How long a clean close may take at shutdown (frames read meanwhile are still handled).
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Frame `messageId`s remembered for frame-level dedupe.
const RECENT_FRAMES: usize = 4096;

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `0..=min(max, base·2ⁿ)`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The current step (the most the next wait can be).
    pub fn step(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait; the step doubles after it.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=ms))
    }

    /// Back to the base after a healthy connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How a connection ended.
enum End {
    /// Shutdown was requested; the socket is closed.
    Shutdown,
    /// A `disconnect` was followed by a new connection, already open.
    Replaced(Box<Socket>),
    /// The connection is gone; reconnect after a backoff.
    Lost {
        /// Metrics label: `dropped`, `watchdog`, `oversize`, `error`, `disconnect`.
        cause: &'static str,
        /// For the log and `/readyz`.
        detail: String,
    },
}

/// The Stream door.
pub struct StreamDoor {
    pipeline: Arc<Pipeline>,
    dialer: Arc<Dialer>,
    timings: StreamSettings,
    status: Arc<StreamStatus>,
    metrics: StreamMetrics,
    recent: RecentIds,
}

impl StreamDoor {
    /// A door into `pipeline` that connects with `dialer`.
    pub fn new(pipeline: Arc<Pipeline>, dialer: Dialer, timings: &StreamSettings) -> StreamDoor {
        let idle = Duration::from_millis(timings.idle_timeout_ms);
        StreamDoor {
            pipeline,
            dialer: Arc::new(dialer),
            timings: timings.clone(),
            status: Arc::new(StreamStatus::new(idle)),
            metrics: StreamMetrics::new(),
            recent: RecentIds::new(RECENT_FRAMES),
        }
    }

    /// Connection state, for `/readyz`, `check` and tests.
    pub fn status(&self) -> Arc<StreamStatus> {
        self.status.clone()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Holds a connection until `stop` is cancelled, then closes it.
    pub async fn run(mut self, stop: CancellationToken) {
        let t = &self.timings;
        let mut backoff = Backoff::new(Self::ms(t.backoff_base_ms), Self::ms(t.backoff_max_ms));
        let healthy_after = Self::ms(t.healthy_after_ms);
        let refused_retry = Self::ms(t.refused_retry_ms);
        let mut ready: Option<Socket> = None;
        while !stop.is_cancelled() {
            let ws = match ready.take() {
                Some(ws) => ws,
                None => {
                    let attempt = tokio::select! {
                        attempt = self.dialer.dial() => attempt,
                        () = stop.cancelled() => break,
                    };
                    match attempt {
                        Ok(ws) => ws,
                        Err(e) => {
                            let (cause, wait) = match &e {
                                ConnectError::Open(OpenError::Refused(_)) => {
                                    // Slow, with a little jitter so many instances spread out.
                                    let jitter = rand::random_range(
                                        0..=refused_retry.as_millis() as u64 / 10,
                                    );
                                    ("refused", refused_retry + Duration::from_millis(jitter))
                                }
                                _ => ("unavailable", backoff.next_wait()),
                            };
                            self.metrics.reconnect(cause);
                            self.status.counts.open_failures.inc();
                            self.status.failed(&e.to_string());
                            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Stream connection could not be opened");
                            tokio::select! {
                                () = tokio::time::sleep(wait) => continue,
                                () = stop.cancelled() => break,
                            }
                        }
                    }
                }
            };
            let opened = Instant::now();
            self.status.opened();
            self.metrics.connected(true);
            tracing::info!(
                endpoint = self.dialer.last_endpoint().as_deref().unwrap_or(""),
                "Stream connection open"
            );
            let end = self.serve(ws, &stop).await;
            self.status.closed();
            self.metrics.connected(false);
            if opened.elapsed() >= healthy_after {
                backoff.reset();
            }
            match end {
                End::Shutdown => break,
                End::Replaced(ws) => {
                    self.metrics.reconnect("disconnect");
                    tracing::info!("Stream connection replaced after disconnect");
                    ready = Some(*ws);
                }
                End::Lost { cause, detail } => {
                    self.metrics.reconnect(cause);
                    let wait = backoff.next_wait();
                    self.status
                        .failed(&format!("connection lost ({cause}): {detail}"));
                    tracing::warn!(
                        cause,
                        detail,
                        retry_in_ms = wait.as_millis() as u64,
                        "Stream connection lost"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        // Stopped right after a `disconnect` replaced the connection: the new one may
        // already carry messages.
        if let Some(ws) = ready.take() {
            self.shut(ws).await;
        }
        self.status.stopped();
        self.metrics.connected(false);
        tracing::info!("Stream door stopped");
    }

    /// Reads one connection until it ends.
    async fn serve(&mut self, mut ws: Socket, stop: &CancellationToken) -> End {
        let ping_every = Self::ms(self.timings.ping_interval_ms);
        let idle = Self::ms(self.timings.idle_timeout_ms);
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alive_at = Instant::now();
        let mut ping_sent: Option<(Instant, u64)> = None;
        let mut ping_seq = 0u64;
        let mut replacement: Option<dial::Pending> = None;
        let mut told_to_go = false;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.shut(ws).await;
                    return End::Shutdown;
                }
                () = tokio::time::sleep_until(alive_at + idle) => {
                    return End::Lost {
                        cause: "watchdog",
                        detail: format!("no frame or pong for {} ms", idle.as_millis()),
                    };
                }
                Some(next) = OptionFuture::from(replacement.as_mut()) => {
                    replacement = None;
                    match next {
                        Ok(new) => {
                            self.retire(ws, RETIRE_WAIT).await;
                            return End::Replaced(Box::new(new));
                        }
                        // Keep reading the old one; when it ends, reconnect as usual.
                        Err(e) => tracing::warn!(error = %e, "no new Stream connection after disconnect"),
                    }
                }
                _ = ping.tick() => {
                    ping_seq += 1;
                    let payload = ping_seq.to_be_bytes().to_vec();
                    if let Err(e) = ws.send(Message::Ping(payload.into())).await {
                        return lost_by(&e, &self.metrics);
                    }
                    ping_sent = Some((Instant::now(), ping_seq));
                }
                message = ws.next() => {
                    let message = match message {
                        None => return End::Lost {
                            cause: if told_to_go { "disconnect" } else { "dropped" },
                            detail: "the gateway closed the connection".into(),
                        },
                        Some(Err(e)) => return lost_by(&e, &self.metrics),
                        Some(Ok(m)) => m,
                    };
                    alive_at = Instant::now();
                    self.status.alive();
                    match message {
                        Message::Text(text) => match self.on_text(&mut ws, text.as_str(), true).await {
                            Ok(true) if replacement.is_none() => {
                                told_to_go = true;
                                replacement = Some(self.dialer.clone().dial_owned());
                            }
                            Ok(_) => {}
                            Err(e) => return lost_by(&e, &self.metrics),
                        },
                        Message::Pong(payload) => {
                            if let Some((sent, seq)) = ping_sent
                                && payload.as_ref() == seq.to_be_bytes().as_slice()
                            {
                                self.metrics.ping_rtt(sent.elapsed());
                                ping_sent = None;
                            }
                        }
                        Message::Binary(_) => {
                            self.metrics.frame("binary");
                            self.status.counts.malformed.inc();
                        }
                        Message::Close(_) => {
                            return End::Lost {
                                cause: if told_to_go { "disconnect" } else { "dropped" },
                                detail: "the gateway closed the connection".into(),
                            };
                        }
                        // Pings are answered by tungstenite on the next read or write.
                        Message::Ping(_) | Message::Frame(_) => {}
                    }
                }
            }
        }
    }

    /// Closes `old`, still handling what it brings until the gateway confirms or `wait`
    /// passes: a frame already on its way when we close is a message DingTalk will not send
    /// again. Used after `disconnect` (once the new connection is open) and at shutdown.
    async fn retire(&mut self, mut old: Socket, wait: Duration) {
        let deadline = Instant::now() + wait;
        if !matches!(
            tokio::time::timeout_at(deadline, old.close(None)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // Only the reads are bounded: a message already read is handled to the end.
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, old.next()).await {
            if let Message::Text(text) = message {
                // A frame after our close cannot be answered any more, but its message is
                // still handled.
                let _ = self.on_text(&mut old, text.as_str(), false).await;
            }
        }
    }

    /// Shutdown: the frames already received are handled and acked while the socket can
    /// still be written, then it is closed as in [`Self::retire`] (what arrives before the
    /// gateway confirms is still handled, unacked), for at most [`CLOSE_WAIT`] of reading.
    async fn shut(&mut self, mut ws: Socket) {
        while let Some(Some(Ok(message))) = ws.next().now_or_never() {
            if let Message::Text(text) = message
                && self.on_text(&mut ws, text.as_str(), true).await.is_err()
            {
                break;
            }
        }
        self.retire(ws, CLOSE_WAIT).await;
    }

    /// Handles a text frame; `Ok(true)` for `disconnect`. `answer` is false on a socket
    /// already closing (nothing can be written).
    async fn on_text(
        &mut self,
        ws: &mut Socket,
        text: &str,
        answer: bool,
    ) -> Result<bool, WsError> {
        let frame = match wire::parse_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.metrics.frame("malformed");
                self.status.counts.malformed.inc();
                sampled(
                    || tracing::warn!(error = %e, len = text.len(), "malformed Stream frame ignored"),
                );
                return Ok(false);
            }
        };
        match frame {
            Frame::BotMessage { message_id, data } => {
                if answer {
                    ws.send(Message::text(wire::ack(&message_id))).await?;
                    self.metrics.ack("200");
                    self.status.counts.acks.inc();
                }
                if !self.recent.insert(&message_id) {
                    self.metrics.frame("duplicate");
                    self.status.counts.duplicates.inc();
                    tracing::debug!(message_id, "frame already handled");
                    return Ok(false);
                }
                self.metrics.frame("callback");
                self.status.counts.callbacks.inc();
                let span = tracing::info_span!("stream_callback", message_id);
                self.admit(&data).instrument(span).await;
                Ok(false)
            }
            Frame::Ping { message_id, data } => {
                self.metrics.frame("ping");
                if answer {
                    ws.send(Message::text(wire::pong(&message_id, &data)))
                        .await?;
                    self.metrics.ack("200");
                }
                Ok(false)
            }
            Frame::Disconnect { reason, .. } => {
                self.metrics.frame("disconnect");
                tracing::info!(
                    reason = reason.as_deref().unwrap_or(""),
                    "Stream disconnect requested; opening a new connection"
                );
                Ok(true)
            }
            Frame::Unsupported {
                message_id,
                kind,
                topic,
            } => {
                self.metrics.frame("unsupported");
                self.status.counts.unsupported.inc();
                sampled(|| {
                    tracing::warn!(
                        kind,
                        topic,
                        "Stream frame of a type or topic dingbot does not handle; answered 404"
                    )
                });
                if answer {
                    ws.send(Message::text(wire::not_supported(&message_id)))
                        .await?;
                    self.metrics.ack("404");
                }
                Ok(false)
            }
        }
    }

    /// `data` → `Callback` → slot → admit → dispatch, as the HTTP door does.
    async fn admit(&self, data: &str) {
        let now = crate::clock::now_ms();
        let callback =
            match wire::robot_message(data).and_then(|m| m.validate().map_err(|e| e.to_string())) {
                Ok(callback) => callback,
                Err(e) => {
                    self.metrics.frame("bad_data");
                    self.status.counts.bad_data.inc();
                    telemetry::callback(Outcome::BadRequest);
                    sampled(|| tracing::warn!(error = %e, "Stream message not usable"));
                    return;
                }
            };
        let pipeline = &self.pipeline;
        let slot = match pipeline.slot_for_taken().await {
            Ok(slot) => slot,
            Err(refusal) => return refused(&refusal),
        };
        match pipeline.admit(callback, None, now).await {
            Ok(Decision::Reply(job)) => {
                telemetry::callback(if job.is_slow_down() {
                    Outcome::RateLimited
                } else {
                    Outcome::Accepted
                });
                pipeline.dispatch(job, slot);
            }
            Ok(Decision::Duplicate) => telemetry::callback(Outcome::Duplicate),
            Ok(Decision::Limited) => telemetry::callback(Outcome::RateLimited),
            Err(refusal) => refused(&refusal),
        }
    }
}

/// A refused Stream message: counted and (sampled) logged. There is no one to answer.
fn refused(refusal: &Refusal) {
    telemetry::callback(match refusal {
        Refusal::Webhook(_) => Outcome::WebhookRefused,
        Refusal::Replayed | Refusal::SignedBeforeRestart => Outcome::Replayed,
        Refusal::Overloaded | Refusal::ShuttingDown => Outcome::Shed,
    });
    sampled(|| tracing::warn!(reason = %refusal, "Stream message refused"));
}

/// Logs through the shared refusal budget (a flood of bad frames cannot flood the log).
fn sampled(log: impl FnOnce()) {
    let (log_this, suppressed) = telemetry::refusal_log_budget();
    if suppressed > 0 {
        tracing::warn!(suppressed, "more refusals than logged");
    }
    if log_this {
        log();
    }
}

/// The end of a connection after a read or write error.
fn lost_by(e: &WsError, metrics: &StreamMetrics) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            metrics.frame("oversize");
            End::Lost {
                cause: "oversize",
                detail: format!("a frame of {size} bytes is over the {max_size}-byte limit"),
            }
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => End::Lost {
            cause: "dropped",
            detail: "connection closed".into(),
        },
        WsError::Io(io) => End::Lost {
            cause: "dropped",
            detail: io.to_string(),
        },
        other => End::Lost {
            cause: "error",
            detail: dial::describe(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let steps: Vec<u128> = (0..6)
            .map(|_| {
                let step = b.step().as_millis();
                assert!(b.next_wait().as_millis() <= step);
                step
            })
            .collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
        for _ in 0..100 {
            b.next_wait();
        }
        assert_eq!(b.step().as_millis(), 1000);
    }
}
