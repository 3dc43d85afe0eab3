//! Stage 3 of the pipeline: delivering a finished message to the group.
//!
//! [`ReplySender`] owns everything about posting a reply: the reply HTTP client
//! ([`ReplyHttp`]), its own cap on POSTs in flight (separate from API calls, so a slow API
//! never holds up replies), the rule that a reply is retried only when DingTalk surely did
//! not take it, and reading DingTalk's answer. The caller gets a [`Delivery`], not an error
//! code: whether DingTalk throttled the group (errcode 130101) is decided here, and the
//! caller only applies the silence it asks for.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use serde::Deserialize;

use super::endpoint::Endpoint;
use super::error::{ApiError, ErrorKind};
use super::reply_http::ReplyHttp;
use super::transport::{self, DEFAULT_PARALLEL_REQUESTS, RetryPolicy};

/// How long DingTalk silences a robot in a group after "send too fast" (130101; protocol
/// doc §3.5: more than 20 messages a minute → 10 minutes of throttling).
pub const SEND_TOO_FAST_SILENCE: Duration = Duration::from_secs(600);

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// DingTalk took the message.
    Sent,
    /// DingTalk refused it because the robot sent too much to this group: keep the group
    /// silent for `silence` (nothing sent there would arrive anyway).
    Throttled {
        /// How long DingTalk's penalty lasts.
        silence: Duration,
    },
    /// Not delivered (or not known to be). Never retried further by the caller.
    Failed(ApiError),
}

/// Posts replies.
pub struct ReplySender {
    /// The HTTP client replies go through.
    http: ReplyHttp,
    /// Reply POSTs on the wire at once.
    slots: tokio::sync::Semaphore,
    /// Retry behaviour (only for failures that surely did not deliver).
    retry: RetryPolicy,
}

impl std::fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplySender")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl ReplySender {
    /// A sender through `http`, at most `parallel` POSTs at once, retrying per `retry`.
    pub fn new(http: ReplyHttp, parallel: usize, retry: RetryPolicy) -> ReplySender {
        ReplySender {
            http,
            slots: tokio::sync::Semaphore::new(parallel.max(1)),
            retry,
        }
    }

    /// A sender with the default cap.
    pub fn with_defaults(http: ReplyHttp, retry: RetryPolicy) -> ReplySender {
        ReplySender::new(http, DEFAULT_PARALLEL_REQUESTS, retry)
    }

    /// The reply client in use (`direct` or `reqwest`).
    pub fn client_name(&self) -> &'static str {
        self.http.name()
    }

    /// POSTs `body` to a sessionWebhook already checked against the allow-list.
    pub async fn deliver(&self, webhook: &Uri, body: &Bytes) -> Delivery {
        match self.post(webhook, body).await {
            Ok(()) => Delivery::Sent,
            Err(e) if e.kind() == ErrorKind::SendTooFast => Delivery::Throttled {
                silence: SEND_TOO_FAST_SILENCE,
            },
            Err(e) => Delivery::Failed(e),
        }
    }

    /// Sending is not idempotent: a POST is repeated only when DingTalk surely did not take
    /// the message ([`ApiError::surely_not_delivered`]), so a group never sees a reply twice.
    async fn post(&self, webhook: &Uri, body: &Bytes) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct Ack {}
        transport::with_retries_if(
            &self.retry,
            Endpoint::SendBySession,
            ApiError::surely_not_delivered,
            || async {
                let started = Instant::now();
                let result = async {
                    // Held per attempt only, never while backing off.
                    let _slot = self.slots.acquire().await;
                    let (status, answer) = self.http.post_json(webhook, body).await?;
                    transport::oapi_answer::<Ack>(Endpoint::SendBySession, status, &answer)
                }
                .await;
                transport::record(Endpoint::SendBySession, &result, started);
                result.map(|_| ())
            },
        )
        .await
    }
}
