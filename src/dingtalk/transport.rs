//! What the API client and the reply sender share about talking to DingTalk over HTTP:
//! the pooled reqwest client's settings, sending a request and reading its answer without
//! leaking the URL, the legacy host's `errcode` envelope, and the retry loop.
//!
//! Both [`super::client`] and [`super::sender`] build on this module; neither imports the
//! other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::endpoint::Endpoint;
use super::error::ApiError;
use crate::telemetry;

/// How hard to try before giving up on one logical call.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total (first try included).
    pub attempts: u32,
    /// Pause before the first retry; doubles each time, with ±50 % jitter.
    pub base_delay: Duration,
    /// Give up when the next attempt would start after this much time in total.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            deadline: Duration::from_secs(8),
        }
    }
}

/// The token header of the `/v1.0` API host.
pub const ACS_TOKEN: &str = "x-acs-dingtalk-access-token";

/// `Accept` of the `/v1.0` calls: without it an endpoint may answer XML (Node SDK note).
pub const JSON: &str = "application/json";

/// A boxed, sendable future (what [`TokenSource`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where access tokens come from: the API client's cache, shared with the reply sender's
/// fallback through this trait so that neither imports the other.
pub trait TokenSource: Send + Sync {
    /// A valid access token (cached, or fetched one at a time).
    fn access_token(&self) -> BoxFuture<'_, Result<Arc<str>, ApiError>>;
    /// Forgets `bad` if it is still the cached token (DingTalk refused it).
    fn invalidate(&self, bad: &str);
}

/// Requests to DingTalk on the wire at once unless configured otherwise.
pub const DEFAULT_PARALLEL_REQUESTS: usize = 32;

/// `User-Agent` of every outbound request.
pub const USER_AGENT: &str = concat!("dingbot/", env!("CARGO_PKG_VERSION"));

/// Idle pooled connections are closed after this long: below common server keep-alive
/// limits, so a pooled connection is rarely reused just as the server closes it (a reply
/// POST lost that way is not retried).
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// The connect timeout that goes with a request timeout.
pub fn connect_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(3))
}

/// Builds the shared outbound HTTP client.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout(timeout))
        .pool_idle_timeout(POOL_IDLE)
        .tcp_nodelay(true)
        // A redirect would carry a reply past the sessionWebhook allow-list (and the
        // token to another host); DingTalk's APIs do not redirect.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
}

/// Runs `call` until it succeeds, fails in a way `retryable` rejects, runs out of
/// attempts, or the next attempt would start after the policy's deadline. Pauses double
/// each time with ±50 % jitter.
pub async fn with_retries_if<T, F, Fut>(
    policy: &RetryPolicy,
    endpoint: Endpoint,
    retryable: fn(&ApiError) -> bool,
    call: F,
) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let started = Instant::now();
    let mut delay = policy.base_delay;
    let mut attempt = 1;
    loop {
        let err = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.5));
        let out_of_time = started.elapsed() + jittered >= policy.deadline;
        if !retryable(&err) || attempt >= policy.attempts || out_of_time {
            return Err(err);
        }
        tracing::debug!(endpoint = endpoint.label(), attempt, error = %err, "retrying DingTalk call");
        telemetry::api_retry(endpoint.label());
        tokio::time::sleep(jittered).await;
        delay = delay.saturating_mul(2);
        attempt += 1;
    }
}

/// Counts a finished call (success or failure) and its latency.
pub fn record<T>(endpoint: Endpoint, result: &Result<T, ApiError>, started: Instant) {
    let failure = result.as_ref().err().map(ApiError::metric_code);
    telemetry::api_call(endpoint.label(), failure, started.elapsed());
}

/// Reads a legacy-host answer: HTTP 2xx with `errcode` absent or 0 is success.
pub fn oapi_answer<T: DeserializeOwned>(
    endpoint: Endpoint,
    status: u16,
    body: &[u8],
) -> Result<T, ApiError> {
    // Fast path: a 2xx whose errcode is absent or 0 parses straight into `T`.
    #[derive(Deserialize)]
    struct Envelope {
        errcode: Option<i64>,
    }
    if (200..300).contains(&status)
        && let Ok(Envelope {
            errcode: None | Some(0),
        }) = serde_json::from_slice(body)
    {
        return serde_json::from_slice(body).map_err(|_| ApiError::BadBody { endpoint, status });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ApiError::BadBody { endpoint, status })?;
    let errcode = value.get("errcode").and_then(|v| v.as_i64()).unwrap_or(0);
    if errcode != 0 {
        let text = |k: &str| {
            value.get(k).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        return Err(ApiError::DingTalk {
            endpoint,
            errcode,
            errmsg: text("errmsg").unwrap_or_default(),
            sub_code: text("sub_code"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(ApiError::BadBody { endpoint, status });
    }
    serde_json::from_value(value).map_err(|_| ApiError::BadBody { endpoint, status })
}

/// Reads a new-host (`/v1.0`) answer: 2xx with a JSON body is success; 4xx/5xx carries
/// `code`, `message` and, for a missing permission, the scopes DingTalk requires.
pub fn api_answer<T: DeserializeOwned>(
    endpoint: Endpoint,
    status: u16,
    body: &[u8],
) -> Result<T, ApiError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body).map_err(|_| ApiError::BadBody { endpoint, status });
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Failure {
        code: String,
        message: String,
        #[serde(rename = "accessdenieddetail")]
        access_denied_detail: Option<Denied>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Denied {
        required_scopes: Vec<String>,
    }
    match serde_json::from_slice::<Failure>(body) {
        Ok(f) => Err(ApiError::Http {
            endpoint,
            status,
            code: f.code,
            message: f.message,
            required_scopes: f
                .access_denied_detail
                .map(|d| d.required_scopes)
                .unwrap_or_default(),
        }),
        Err(_) if status >= 500 => Err(ApiError::BadBody { endpoint, status }),
        Err(_) => Err(ApiError::Http {
            endpoint,
            status,
            code: String::new(),
            message: String::new(),
            required_scopes: Vec::new(),
        }),
    }
}

/// Sends `req` and reads the whole answer: `(status, body)`. Transport errors lose their
/// URL (it may hold a token or a session).
pub async fn send(
    endpoint: Endpoint,
    req: reqwest::RequestBuilder,
) -> Result<(u16, bytes::Bytes), ApiError> {
    let transport = |e: reqwest::Error| ApiError::Transport {
        endpoint,
        timeout: e.is_timeout(),
        connect: e.is_connect(),
        detail: e.without_url().to_string(),
    };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(transport)?;
    Ok((status, body))
}
