//! `POST {callback_path}`: the HTTP door. It only turns the wire into a verified
//! [`Callback`] and hands it to the [`Pipeline`](crate::pipeline::Pipeline).
//!
//! Order matters and is an invariant: the signature headers are checked before the body
//! is read; a refused request changes no state; the answer (200) is sent as soon as the
//! pipeline has admitted the callback, and the reply follows from a tracked task.

use actix_web::http::header::{self, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tracing::Instrument;

use super::error::Rejection;
use super::state::AppState;
use crate::clock::now_ms;
use crate::dingtalk::{RobotMessage, Verified};
use crate::pipeline::{Decision, SignedPair};
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
            if matches!(
                rejection,
                Rejection::Signature(_) | Rejection::Refused(crate::pipeline::Refusal::Overloaded)
            ) {
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
    let pipeline = &state.pipeline;
    // A slot, held until the reply is sent (bounds memory and outstanding work).
    let slot = pipeline.slot().await?;

    // Body: declared size, media type, then read with a hard cap.
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

    // The pipeline: admit, then respond and deliver in the background.
    let signature = single_header(req, &SIGN).map(|sign| SignedPair {
        timestamp_ms: verified.timestamp_ms,
        sign,
    });
    match pipeline.admit(callback, signature, &body, now).await? {
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
