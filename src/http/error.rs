//! Every way an HTTP request to dingbot is refused, mapped to a status in one place.
//!
//! Bodies are terse JSON (`{"error": code, "message": text}`); messages never contain a
//! secret, a token or the request body.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use crate::dingtalk::{SignatureError, inbound::InvalidCallback};
use crate::pipeline::Refusal;
use crate::telemetry::Outcome;

/// A refused callback.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Signature headers missing, malformed or wrong.
    #[error("{0}")]
    Signature(SignatureError),
    /// The pipeline did not take it (replay, webhook, overload, shutdown).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// Body larger than `server.body_limit_bytes`.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Content-Type is not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body did not arrive within `server.read_timeout_ms`.
    #[error("the body did not arrive in time")]
    BodyTimeout,
    /// Body not readable as the JSON we expect.
    #[error("body is not a valid callback: {0}")]
    BadJson(String),
    /// Body is JSON but misses what we need.
    #[error("{0}")]
    Invalid(InvalidCallback),
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Signature(_)
            | Rejection::Refused(Refusal::Replayed | Refusal::SignedBeforeRestart) => {
                StatusCode::UNAUTHORIZED
            }
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::BadJson(_)
            | Rejection::Invalid(_)
            | Rejection::Refused(Refusal::Webhook(_)) => StatusCode::BAD_REQUEST,
            Rejection::Refused(Refusal::Overloaded | Refusal::ShuttingDown) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Signature(SignatureError::Stale { .. }) => "stale_timestamp",
            Rejection::Signature(_) => "bad_signature",
            Rejection::Refused(Refusal::Replayed) => "replayed",
            Rejection::Refused(Refusal::SignedBeforeRestart) => "signed_before_restart",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::TooLarge(_) => "too_large",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::BadJson(_) => "bad_json",
            Rejection::Invalid(_) => "invalid_callback",
            Rejection::Refused(Refusal::Webhook(_)) => "webhook_refused",
            Rejection::Refused(Refusal::Overloaded) => "overloaded",
            Rejection::Refused(Refusal::ShuttingDown) => "shutting_down",
        }
    }

    /// The metrics outcome.
    pub fn outcome(&self) -> Outcome {
        match self {
            Rejection::Signature(SignatureError::Stale { .. }) => Outcome::StaleTimestamp,
            Rejection::Signature(_) => Outcome::BadSignature,
            Rejection::Refused(Refusal::Replayed | Refusal::SignedBeforeRestart) => {
                Outcome::Replayed
            }
            Rejection::BodyTimeout => Outcome::BadRequest,
            Rejection::TooLarge(_) => Outcome::TooLarge,
            Rejection::UnsupportedMediaType | Rejection::BadJson(_) | Rejection::Invalid(_) => {
                Outcome::BadRequest
            }
            Rejection::Refused(Refusal::Webhook(_)) => Outcome::WebhookRefused,
            Rejection::Refused(Refusal::Overloaded | Refusal::ShuttingDown) => Outcome::Shed,
        }
    }

    /// The response.
    pub fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        match self {
            Rejection::Refused(Refusal::Overloaded) => {
                builder.insert_header(("Retry-After", "1"));
            }
            // Ask a proxy to reconnect: its next attempt reaches a process that is up.
            Rejection::Refused(Refusal::ShuttingDown) => {
                builder.insert_header(("Retry-After", "1"));
                builder.force_close();
            }
            // The rest of a stalled body is not waited for.
            Rejection::BodyTimeout => {
                builder.force_close();
            }
            _ => {}
        }
        #[derive(serde::Serialize)]
        struct ErrorBody<'a> {
            error: &'static str,
            message: &'a str,
        }
        let message = self.to_string();
        let body = ErrorBody {
            error: self.code(),
            message: &message,
        };
        // A struct of two strings serializes into memory without error.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        builder.content_type("application/json").body(json)
    }
}
