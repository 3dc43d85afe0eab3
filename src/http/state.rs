//! What the HTTP door shares between requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dingtalk::{DingTalkClient, Verifier};
use crate::pipeline::Pipeline;

/// How long a failed readiness check is reused before trying DingTalk again.
const READINESS_RETRY: Duration = Duration::from_secs(10);

/// State shared by every request.
pub struct AppState {
    /// Checks callback signatures (holds the signing key).
    pub verifier: Verifier,
    /// Where verified callbacks go.
    pub pipeline: Arc<Pipeline>,
    /// The API client, for readiness (can a token be had?).
    pub client: Arc<DingTalkClient>,
    /// `server.body_limit_bytes`.
    pub body_limit: usize,
    /// `server.read_timeout_ms`: the whole body of a verified callback must arrive within
    /// it, counted from the end of its head.
    pub read_timeout: Duration,
    /// Last failed readiness check, reused for a while so probes do not hammer DingTalk.
    readiness_failure: std::sync::Mutex<Option<(Instant, String)>>,
    /// Source of request ids for logs.
    request_ids: AtomicU64,
    /// A further readiness condition (the Stream connection, when one is held).
    extra_readiness: Option<ReadinessCheck>,
}

/// A readiness condition besides the token: Ok, or the reason.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl AppState {
    /// The door's state around `pipeline`.
    pub fn new(
        verifier: Verifier,
        pipeline: Arc<Pipeline>,
        client: Arc<DingTalkClient>,
        body_limit: usize,
        read_timeout: Duration,
    ) -> AppState {
        AppState {
            verifier,
            pipeline,
            client,
            body_limit,
            read_timeout,
            readiness_failure: std::sync::Mutex::new(None),
            request_ids: AtomicU64::new(0),
            extra_readiness: None,
        }
    }

    /// Adds a readiness condition, checked before the token.
    pub fn with_readiness_check(mut self, check: ReadinessCheck) -> AppState {
        self.extra_readiness = Some(check);
        self
    }

    /// Whether a callback with this msgId was accepted within the window.
    pub fn handled_msg_id(&self, msg_id: &str) -> bool {
        self.pipeline.handled(msg_id)
    }

    /// Callbacks holding an in-flight slot: accepted, reply not yet out.
    pub fn callbacks_in_flight(&self) -> usize {
        self.pipeline.callbacks_in_flight()
    }

    /// A new request id.
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ok when an access token can be had; the reason otherwise.
    pub async fn readiness(&self) -> Result<(), String> {
        if let Some(check) = &self.extra_readiness {
            check()?;
        }
        let remembered = |state: &AppState| {
            state
                .readiness_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        if let Some((at, reason)) = remembered(self)
            && at.elapsed() < READINESS_RETRY
        {
            return Err(reason);
        }
        let result = self
            .client
            .access_token()
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot get a DingTalk access token: {e}"));
        *self
            .readiness_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = result
            .as_ref()
            .err()
            .map(|reason| (Instant::now(), reason.clone()));
        result
    }
}
