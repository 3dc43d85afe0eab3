//! `POST {callback_path}`: verify, parse, dedupe, limit, answer 200 at once, reply later.
//!
//! Order matters and is an invariant: the signature headers are checked before the body
//! is read; nothing is recorded (dedupe, replay, rate-limit budget) for a request that is
//! refused; the reply is sent by a tracked background task so the HTTP answer is prompt and
//! graceful shutdown can wait for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};
use tracing::Instrument;

use super::error::Rejection;
use crate::dingtalk::{ApiError, Callback, RobotMessage, Verified};
use crate::ratelimit::Decision;
use crate::render::{Template, escape_markdown};
use crate::seen::Seen;
use crate::startup::AppState;
use crate::telemetry::{self, Outcome};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The handler.
pub async fn callback(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let request_id = state.next_request_id();
    // 1. Signature, from headers only: a forged request costs a hash, never waits for a
    // slot, and gets no span (its one log line, if sampled, names the request itself).
    let now = now_ms();
    let (result, span) = match state.verifier.verify(
        single_header(&req, &TIMESTAMP),
        single_header(&req, &SIGN),
        now,
    ) {
        Ok(verified) => {
            let span = tracing::info_span!("callback", request_id);
            let result = handle(&req, &mut payload, &state, now, verified)
                .instrument(span.clone())
                .await;
            (result, Some(span))
        }
        Err(e) => (Err(Rejection::Signature(e)), None),
    };
    match result {
        Ok((response, outcome)) => {
            telemetry::callback(outcome);
            response
        }
        Err(rejection) => {
            telemetry::callback(rejection.outcome());
            let (log_this, suppressed) = telemetry::refusal_log_budget();
            if suppressed > 0 {
                tracing::warn!(suppressed, "more callbacks were refused than logged");
            }
            if log_this {
                let status = rejection.status().as_u16();
                match &span {
                    Some(span) => span.in_scope(
                        || tracing::warn!(status, reason = %rejection, "callback refused"),
                    ),
                    None => {
                        tracing::warn!(request_id, status, reason = %rejection, "callback refused")
                    }
                }
            }
            if matches!(rejection, Rejection::Signature(_) | Rejection::Overloaded) {
                discard_small_body(&req, &mut payload, state.body_limit).await;
            }
            rejection.response()
        }
    }
}

/// Reads and drops an unread body whose declared size is within the limit, so the
/// connection can be kept alive; larger or undeclared bodies are left unread (actix then
/// closes the connection).
async fn discard_small_body(req: &HttpRequest, payload: &mut web::Payload, limit: usize) {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|len| len > limit) {
        return;
    }
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = payload.next().await {
        seen += chunk.len();
        if seen > limit {
            return;
        }
    }
}

/// An in-flight slot: at once when one is free, else after waiting up to
/// `server.queue_wait_ms` (first come, first served); refused while shutting down.
async fn acquire_slot(state: &AppState) -> Result<OwnedSemaphorePermit, Rejection> {
    let permit = match state.in_flight.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(TryAcquireError::Closed) => return Err(Rejection::ShuttingDown),
        Err(TryAcquireError::NoPermits) if state.queue_wait.is_zero() => {
            return Err(Rejection::Overloaded);
        }
        Err(TryAcquireError::NoPermits) => {
            let wait = state.in_flight.clone().acquire_owned();
            match tokio::time::timeout(state.queue_wait, wait).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return Err(Rejection::ShuttingDown),
                Err(_elapsed) => return Err(Rejection::Overloaded),
            }
        }
    };
    if state.draining.load(Ordering::SeqCst) {
        return Err(Rejection::ShuttingDown);
    }
    Ok(permit)
}

/// DingTalk's signature headers. Looked up by a prebuilt name: a `&str` that is not a
/// standard header name is converted (and allocated) on every lookup.
static TIMESTAMP: HeaderName = HeaderName::from_static("timestamp");
static SIGN: HeaderName = HeaderName::from_static("sign");

/// A single header's raw bytes; `None` when absent or repeated.
fn single_header<'a>(req: &'a HttpRequest, name: &HeaderName) -> Option<&'a [u8]> {
    let mut values = req.headers().get_all(name);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(first.as_bytes())
}

/// Everything after the signature check (`now` is the time it was checked at).
async fn handle(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    now: i64,
    verified: Verified,
) -> Result<(HttpResponse, Outcome), Rejection> {
    telemetry::clock_skew(verified.skew_ms);
    let sign = single_header(req, &SIGN);

    // A slot, held until the reply is sent (bounds memory and outstanding work).
    let permit = acquire_slot(state).await?;

    // 2. Body: declared size, media type, then read with a hard cap.
    let limit = state.body_limit;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(Rejection::TooLarge(limit));
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Rejection::UnsupportedMediaType);
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| Rejection::BadJson("body could not be read".into()))?;
        if body.len() + chunk.len() > limit {
            return Err(Rejection::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }

    // 3. Parse and validate.
    let message: RobotMessage = serde_json::from_slice(&body).map_err(|e| {
        Rejection::BadJson(match e.classify() {
            serde_json::error::Category::Io | serde_json::error::Category::Eof => {
                "truncated JSON".to_string()
            }
            serde_json::error::Category::Syntax => format!("invalid JSON at column {}", e.column()),
            // serde's own text would quote the offending value: say only where it is.
            serde_json::error::Category::Data => {
                format!(
                    "a field is missing or has the wrong type (column {})",
                    e.column()
                )
            }
        })
    })?;
    let cb = message.validate().map_err(Rejection::Invalid)?;
    let webhook = state
        .webhooks
        .check(&cb.session_webhook, cb.session_webhook_expired_time, now)
        .map_err(Rejection::Webhook)?;

    // 4. Replay defence: a (timestamp, sign) pair carries at most N distinct messages.
    let fingerprint = state.replay.hash((&cb.msg_id, &body[..]));
    let replay_key = state.replay.hash((verified.timestamp_ms, sign));
    // The pair stays acceptable until its timestamp leaves the window: remember it as long.
    match state
        .replay
        .record(replay_key, fingerprint, now, verified.timestamp_ms)
    {
        Seen::New | Seen::Again => {}
        Seen::Exhausted => return Err(Rejection::Replayed),
        Seen::Full => return Err(Rejection::Overloaded),
    }

    // 5. Dedupe by msgId.
    let msg_key = state.dedupe.hash(&cb.msg_id);
    match state.dedupe.record(msg_key, 0, now, now) {
        Seen::New => {}
        Seen::Again | Seen::Exhausted => {
            tracing::debug!("duplicate msgId; already handled");
            return Ok((json_answer(r#"{"status":"duplicate"}"#), Outcome::Duplicate));
        }
        Seen::Full => {
            // Nothing of this request may stay recorded.
            state.replay.forget(replay_key);
            return Err(Rejection::Overloaded);
        }
    }

    // 6. Per-group budget.
    match state.limiter.check(&cb.conversation_id) {
        Decision::Allow => {
            spawn_reply(state, cb, webhook, permit, Reply::Command);
            Ok((json_answer("{}"), Outcome::Accepted))
        }
        Decision::Limit {
            notify,
            retry_after_secs,
        } => {
            tracing::info!(notify, retry_after_secs, "group over its budget");
            if notify {
                spawn_reply(
                    state,
                    cb,
                    webhook,
                    permit,
                    Reply::SlowDown(retry_after_secs),
                );
            }
            Ok((
                json_answer(r#"{"status":"rate_limited"}"#),
                Outcome::RateLimited,
            ))
        }
    }
}

/// 200 with a fixed JSON body.
fn json_answer(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body)
}

/// DingTalk's "send too fast, exceed 20 times per minute" errcode.
const SEND_TOO_FAST: i64 = 130101;
/// How long DingTalk throttles a robot after 130101 (protocol doc §3.5).
const SEND_TOO_FAST_PENALTY: std::time::Duration = std::time::Duration::from_secs(600);

/// What the background task sends.
enum Reply {
    /// Answer the command.
    Command,
    /// Tell the group to slow down.
    SlowDown(u64),
}

fn spawn_reply(
    state: &AppState,
    cb: Callback,
    webhook: hyper::Uri,
    permit: OwnedSemaphorePermit,
    reply: Reply,
) {
    let bot = state.bot.clone();
    let client = state.client.clone();
    let limiter = state.limiter.clone();
    let inline_mention = state.inline_mention;
    let task = async move {
        let head = match reply {
            // Boxed, like the send below: the task then stays a few hundred bytes instead
            // of ~25 KB copied at every spawn.
            Reply::Command => Box::pin(bot.respond(&cb)).await,
            Reply::SlowDown(secs) => {
                #[derive(serde::Serialize)]
                struct SlowView {
                    retry_after_secs: u64,
                }
                let rendered = bot.renderer().render(
                    Template::SlowDown,
                    &SlowView {
                        retry_after_secs: secs,
                    },
                );
                Arc::new(crate::bot::head(&rendered))
            }
        };
        let mention = cb.sender_staff_id.as_deref();
        let inline = match (inline_mention, mention) {
            (true, Some(id)) => Some(format!("\n\n@{}", escape_markdown(id))),
            _ => None,
        };
        let message = head.finish(inline.as_deref(), mention);
        match Box::pin(client.send_to_webhook(&webhook, &message)).await {
            Ok(()) => {
                telemetry::reply("sent");
                tracing::debug!("reply sent");
            }
            Err(e) => {
                if let ApiError::DingTalk {
                    errcode: SEND_TOO_FAST,
                    ..
                } = e
                {
                    telemetry::reply("throttled");
                    limiter.throttle(&cb.conversation_id, SEND_TOO_FAST_PENALTY);
                    tracing::warn!(
                        "DingTalk throttled this group's replies (130101); silent for 10 minutes"
                    );
                } else {
                    telemetry::reply("failed");
                    tracing::warn!(error = %e, "reply could not be delivered");
                }
            }
        }
        drop(permit);
    }
    .instrument(tracing::Span::current());
    // On this HTTP worker's own runtime: no wake-up of another thread per reply, and the
    // pooled connection's I/O stays on the same thread. Shutdown drains these tasks before
    // it stops the workers (`Application::run_until`).
    state.tasks.spawn(task);
}
