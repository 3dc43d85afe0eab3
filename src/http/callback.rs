//! `POST {callback_path}`: the HTTP door. It only turns the wire into a verified
//! [`Callback`] and hands it to the [`Pipeline`](crate::pipeline::Pipeline).
//!
//! Order matters and is an invariant: the signature headers are checked before the body
//! is read, and so is whether the pair may carry another message; the body is read under
//! a total deadline (`server.read_timeout_ms`) *before* the callback may hold an in-flight
//! slot, so stalled bodies cannot crowd out real callbacks; a refused request changes no
//! state and its connection is not held (a small body is drained for at most
//! [`REFUSAL_DRAIN`], else the connection is closed); the answer (200) is sent as soon as
//! the pipeline has admitted the callback, and the reply follows from a tracked task.

use std::time::Duration;

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tracing::Instrument;

use super::error::Rejection;
use super::state::AppState;
use crate::clock::now_ms;
use crate::dingtalk::{RobotMessage, Verified};
use crate::pipeline::{Decision, Refusal, SignedPair};
use crate::telemetry::{self, Outcome};

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
            let mut response = rejection.response();
            // The body may be unread (refused from the headers) or half read: drain a small
            // one briefly to keep the connection, else close it.
            let keep = !matches!(
                rejection,
                Rejection::BodyTimeout | Rejection::Refused(Refusal::ShuttingDown)
            ) && discard_small_body(&req, &mut payload, state.body_limit).await;
            if !keep {
                response
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
            }
            response
        }
    }
}

/// The longest a refused request's body is waited for before its connection is closed.
pub const REFUSAL_DRAIN: Duration = Duration::from_secs(1);

/// Reads and drops what is left of a body whose declared size is within the limit, for at
/// most [`REFUSAL_DRAIN`], so the connection can be kept alive. False when the body is
/// larger, undeclared, broken or late: the connection is then closed.
async fn discard_small_body(req: &HttpRequest, payload: &mut web::Payload, limit: usize) -> bool {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|len| len > limit) {
        return false;
    }
    let drain = async {
        let mut seen = 0usize;
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(chunk) => seen += chunk.len(),
                Err(_) => return false,
            }
            if seen > limit {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(REFUSAL_DRAIN, drain)
        .await
        .unwrap_or(false)
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
    let deadline = tokio::time::Instant::now() + state.read_timeout;
    let pipeline = &state.pipeline;
    // A pair that carried all it may (or signed before an unclean restart) is refused from
    // the headers alone: nothing is read for it.
    let signature = single_header(req, &SIGN).map(|sign| SignedPair {
        timestamp_ms: verified.timestamp_ms,
        sign,
    });
    if let Some(pair) = signature {
        pipeline.check_pair(pair, now).await?;
    }

    // Body: declared size, media type, then read with a hard cap, within the deadline.
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
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| Rejection::BadJson("body could not be read".into()))?;
            if body.len() + chunk.len() > limit {
                return Err(Rejection::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_elapsed| Rejection::BodyTimeout)??;

    // Parse and validate.
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
    let callback = message.validate().map_err(Rejection::Invalid)?;

    // A slot, held until the reply is sent (bounds outstanding work), only now that the
    // whole body is here.
    let slot = pipeline.slot().await?;
    // The pipeline: admit (at the time it happens: the body and the slot took a while),
    // then respond and deliver in the background.
    match pipeline.admit(callback, signature, now_ms()).await? {
        Decision::Reply(job) => {
            let outcome = match job.task {
                crate::bot::Task::Answer => Outcome::Accepted,
                crate::bot::Task::SlowDown { .. } => Outcome::RateLimited,
            };
            pipeline.dispatch(job, slot);
            let body = match outcome {
                Outcome::Accepted => "{}",
                _ => r#"{"status":"rate_limited"}"#,
            };
            Ok((json_answer(body), outcome))
        }
        Decision::Duplicate => Ok((json_answer(r#"{"status":"duplicate"}"#), Outcome::Duplicate)),
        Decision::Limited => Ok((
            json_answer(r#"{"status":"rate_limited"}"#),
            Outcome::RateLimited,
        )),
    }
}

/// 200 with a fixed JSON body.
fn json_answer(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body)
}
