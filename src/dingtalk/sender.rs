//! Stage 3 of the pipeline: delivering a finished message to the group.
//!
//! [`ReplySender`] owns everything about posting a reply: the reply HTTP client
//! ([`ReplyHttp`]), its own cap on POSTs in flight (separate from API calls, so a slow API
//! never holds up replies), the rule that a reply is retried only when DingTalk surely did
//! not take it, and reading DingTalk's answer. The caller gets a [`Delivery`], not an error
//! code: whether DingTalk throttled the group (errcode 130101) is decided here, and the
//! caller only applies the silence it asks for.
//!
//! When the sessionWebhook refuses for good (300001 "session 不存在", or it surely did not
//! take the message and retrying gave up) or has expired before the reply was ready, the
//! same message goes through the robot send APIs (protocol doc §3.4), if configured
//! (`reply.fallback = "robot_api"`): `groupMessages/send` in groups,
//! `oToMessages/batchSend` in 1:1 chats. Never after a failure that may hide a delivered
//! message, so a reply is never doubled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Uri;
use serde::Deserialize;

use super::endpoint::Endpoint;
use super::error::{ApiError, ErrorKind, FLOW_CONTROLLED, ROBOT_SEND_SCOPE};
use super::inbound::ConversationKind;
use super::outbound::Reply;
use super::reply_http::ReplyHttp;
use super::transport::{
    self, ACS_TOKEN, DEFAULT_PARALLEL_REQUESTS, JSON, RetryPolicy, TokenSource,
};
use crate::telemetry;

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

/// Longest `msgParam` `groupMessages/send` takes, in bytes (protocol doc §3.4, §9).
pub const MAX_MSG_PARAM: usize = 15_000;

/// Where a reply goes: the sessionWebhook, and what the robot send APIs need if it
/// cannot be used.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTarget<'a> {
    /// The callback's sessionWebhook, already checked against the allow-list.
    pub webhook: &'a Uri,
    /// Whether it expired before the reply was ready (then it is not tried at all).
    pub webhook_expired: bool,
    /// Group or 1:1.
    pub kind: ConversationKind,
    /// The conversation's openConversationId (`groupMessages/send`).
    pub open_conversation_id: &'a str,
    /// The sender's userid (`oToMessages/batchSend`'s recipient).
    pub sender_staff_id: Option<&'a str>,
    /// The callback's `robotCode`, if it had one.
    pub robot_code: Option<&'a str>,
}

/// The robot send APIs, for replies the sessionWebhook cannot carry.
pub struct RobotApi {
    /// The shared API client (the robot APIs need a token header; proxies are honoured).
    http: reqwest::Client,
    /// `dingtalk.api_base`, without trailing slash.
    api: String,
    /// Access tokens (the API client's cache).
    tokens: Arc<dyn TokenSource>,
    /// `reply.robot_code` when set: wins over the callback's.
    pinned_code: Option<String>,
    /// The last resort: `dingtalk.app_key` (an internal app's robotCode is its AppKey).
    app_key: String,
}

impl std::fmt::Debug for RobotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotApi")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl RobotApi {
    /// The robot send APIs on `api_base`, with tokens from `tokens`; `robot_code` from the
    /// config (else the callback's, else `app_key`).
    pub fn new(
        http: reqwest::Client,
        api_base: &str,
        tokens: Arc<dyn TokenSource>,
        robot_code: Option<String>,
        app_key: &str,
    ) -> RobotApi {
        RobotApi {
            http,
            api: api_base.trim_end_matches('/').to_string(),
            tokens,
            pinned_code: robot_code.filter(|c| !c.trim().is_empty()),
            app_key: app_key.to_string(),
        }
    }

    /// The `robotCode` for a reply: configured, else the callback's, else the AppKey.
    fn robot_code<'a>(&'a self, target: &ReplyTarget<'a>) -> &'a str {
        self.pinned_code
            .as_deref()
            .or(target.robot_code)
            .unwrap_or(&self.app_key)
    }
}

/// Posts replies.
pub struct ReplySender {
    /// The HTTP client replies go through.
    http: ReplyHttp,
    /// Reply POSTs on the wire at once.
    slots: tokio::sync::Semaphore,
    /// Their number.
    parallel: usize,
    /// Retry behaviour (only for failures that surely did not deliver).
    retry: RetryPolicy,
    /// The fallback (`reply.fallback = "robot_api"`), or none.
    robot: Option<RobotApi>,
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
            parallel: parallel.max(1),
            retry,
            robot: None,
        }
    }

    /// Falls back to the robot send APIs when the sessionWebhook cannot carry a reply.
    #[must_use]
    pub fn with_fallback(mut self, robot: RobotApi) -> ReplySender {
        self.robot = Some(robot);
        self
    }

    /// Reply POSTs allowed at once (`dingtalk.max_parallel_requests`).
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Whether replies fall back to the robot send APIs (then an expired sessionWebhook
    /// can still be answered).
    pub fn falls_back(&self) -> bool {
        self.robot.is_some()
    }

    /// A sender with the default cap.
    pub fn with_defaults(http: ReplyHttp, retry: RetryPolicy) -> ReplySender {
        ReplySender::new(http, DEFAULT_PARALLEL_REQUESTS, retry)
    }

    /// The reply client in use (`direct` or `reqwest`).
    pub fn client_name(&self) -> &'static str {
        self.http.name()
    }

    /// POSTs `body` (a sessionWebhook message) to the target's sessionWebhook; when that
    /// refuses for good or has expired, sends it through the robot send APIs instead (if
    /// configured). At most one of the two ever takes the message.
    pub async fn deliver(&self, target: &ReplyTarget<'_>, reply: &Reply) -> Delivery {
        let reason = if target.webhook_expired {
            "expired"
        } else {
            match self.post(target.webhook, reply).await {
                Ok(()) => return Delivery::Sent,
                Err(e) if e.kind() == ErrorKind::SendTooFast => return throttled(),
                Err(e) if self.robot.is_some() && e.allows_fallback() => {
                    tracing::info!(
                        error = %e,
                        "the sessionWebhook refused the reply for good; sending it through the robot send API"
                    );
                    if e.kind() == ErrorKind::SessionGone {
                        "session_gone"
                    } else {
                        "webhook_failed"
                    }
                }
                Err(e) => return Delivery::Failed(e),
            }
        };
        let Some(robot) = &self.robot else {
            // Admission refuses expired webhooks when there is no fallback.
            return Delivery::Failed(ApiError::InvalidInput {
                endpoint: Endpoint::SendBySession,
                what: "expired sessionWebhook",
            });
        };
        let result = Box::pin(self.robot_send(robot, target, &reply.body())).await;
        let delivery = match result {
            Ok(()) => Delivery::Sent,
            Err(e) if e.kind() == ErrorKind::SendTooFast => throttled(),
            Err(e) => {
                if e.kind() == ErrorKind::NoPermission {
                    // DingTalk's own words (escaped): normally the same scope.
                    let named = e.missing_scope();
                    tracing::error!(
                        endpoint = e.endpoint().label(),
                        permission = ROBOT_SEND_SCOPE,
                        dingtalk_named = ?named,
                        "the app lacks the {ROBOT_SEND_SCOPE} permission the robot send APIs need: grant it in the developer console and publish the app (or set reply.fallback = \"none\")"
                    );
                }
                Delivery::Failed(e)
            }
        };
        let result = match &delivery {
            Delivery::Sent => "sent",
            Delivery::Throttled { .. } => "throttled",
            Delivery::Failed(_) => "failed",
        };
        telemetry::reply_fallback(reason, result);
        delivery
    }

    /// Sends the message through `groupMessages/send` (groups) or
    /// `oToMessages/batchSend` (1:1, to the sender) as `sampleMarkdown`. Repeated only
    /// when DingTalk surely did not take it and the failure may pass
    /// ([`ApiError::worth_resending`]); a refused token is replaced once.
    async fn robot_send(
        &self,
        robot: &RobotApi,
        target: &ReplyTarget<'_>,
        body: &Bytes,
    ) -> Result<(), ApiError> {
        let (endpoint, path) = match target.kind {
            ConversationKind::Group => (Endpoint::RobotGroupSend, "groupMessages/send"),
            ConversationKind::OneToOne => (Endpoint::RobotOtoSend, "oToMessages/batchSend"),
        };
        let msg_param = sample_markdown(body).ok_or(ApiError::InvalidInput {
            endpoint,
            what: "message",
        })?;
        let robot_code = robot.robot_code(target);
        let request = match target.kind {
            ConversationKind::Group => serde_json::json!({
                "robotCode": robot_code,
                "openConversationId": target.open_conversation_id,
                "msgKey": "sampleMarkdown",
                "msgParam": msg_param,
            }),
            ConversationKind::OneToOne => {
                let user = target.sender_staff_id.ok_or(ApiError::InvalidInput {
                    endpoint,
                    what: "senderStaffId",
                })?;
                serde_json::json!({
                    "robotCode": robot_code,
                    "userIds": [user],
                    "msgKey": "sampleMarkdown",
                    "msgParam": msg_param,
                })
            }
        };
        let url = format!("{}/v1.0/robot/{path}", robot.api);
        let attempt = |token: Arc<str>| {
            let (url, request) = (&url, &request);
            transport::with_retries_if(
                &self.retry,
                endpoint,
                ApiError::worth_resending,
                move || {
                    let token = token.clone();
                    async move {
                        let started = Instant::now();
                        let result = async {
                            let _slot = self.slots.acquire().await;
                            let req = robot
                                .http
                                .post(url.as_str())
                                .header(ACS_TOKEN, &*token)
                                .header(reqwest::header::ACCEPT, JSON)
                                .json(request);
                            let (status, answer) = transport::send(endpoint, req).await?;
                            read_send_answer(endpoint, status, &answer, target.sender_staff_id)
                        }
                        .await;
                        transport::record(endpoint, &result, started);
                        result
                    }
                },
            )
        };
        let token = robot.tokens.access_token().await?;
        match attempt(token.clone()).await {
            Err(e) if e.is_invalid_token() => {
                tracing::warn!(
                    endpoint = endpoint.label(),
                    "access token refused; fetching a new one"
                );
                robot.tokens.invalidate(&token);
                let token = robot.tokens.access_token().await?;
                attempt(token).await
            }
            other => other,
        }
    }

    /// Sending is not idempotent: a POST is repeated only when DingTalk surely did not take
    /// the message ([`ApiError::surely_not_delivered`]), so a group never sees a reply twice.
    async fn post(&self, webhook: &Uri, reply: &Reply) -> Result<(), ApiError> {
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
                    // Serialized and boxed once the turn is here: a reply waiting for a
                    // connection is then a few hundred bytes, not its message and the
                    // whole HTTP exchange's state.
                    let body = reply.body();
                    let (status, answer) = Box::pin(self.http.post_json(webhook, &body)).await?;
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

fn throttled() -> Delivery {
    Delivery::Throttled {
        silence: SEND_TOO_FAST_SILENCE,
    }
}

/// Reads a robot send API's answer: 2xx is taken, unless `oToMessages/batchSend` lists
/// the recipient as invalid, flow-controlled or filtered (then nothing was sent to them).
fn read_send_answer(
    endpoint: Endpoint,
    status: u16,
    answer: &[u8],
    recipient: Option<&str>,
) -> Result<(), ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Answer {
        invalid_staff_id_list: Vec<String>,
        flow_controlled_staff_id_list: Vec<String>,
        filtered_staff_id_list: Vec<String>,
    }
    let answer: Answer = transport::api_answer(endpoint, status, answer)?;
    let Some(user) = recipient.filter(|_| endpoint == Endpoint::RobotOtoSend) else {
        return Ok(());
    };
    let listed = |list: &[String]| list.iter().any(|u| u == user);
    let list = if listed(&answer.flow_controlled_staff_id_list) {
        FLOW_CONTROLLED
    } else if listed(&answer.invalid_staff_id_list) {
        "invalidStaffIdList"
    } else if listed(&answer.filtered_staff_id_list) {
        "filteredStaffIdList"
    } else {
        return Ok(());
    };
    Err(ApiError::NotSent { endpoint, list })
}

/// The `msgParam` of a `sampleMarkdown` message with the title and text of a
/// sessionWebhook message body (a JSON string, at most [`MAX_MSG_PARAM`] bytes). The
/// robot send APIs have no `at` block, so the @-mention is written into the text (unless
/// it already is); a text too long is cut at a character boundary and ends in `…`.
pub fn sample_markdown(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Message {
        markdown: Markdown,
        #[serde(default)]
        at: At,
    }
    #[derive(Deserialize)]
    struct Markdown {
        title: String,
        text: String,
    }
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct At {
        at_user_ids: Vec<String>,
    }
    let Message { markdown, at } = serde_json::from_slice(body).ok()?;
    let mut mentions = String::new();
    for id in &at.at_user_ids {
        let mention = format!("@{id}");
        if !markdown.text.contains(&mention) {
            mentions.push_str("\n\n");
            mentions.push_str(&mention);
        }
    }
    let param = |text: &str, cut: &str| {
        let text = format!("{text}{cut}{mentions}");
        serde_json::json!({ "title": markdown.title, "text": text }).to_string()
    };
    let text = markdown.text.as_str();
    let whole = param(text, "");
    if whole.len() <= MAX_MSG_PARAM {
        return Some(whole);
    }
    // The longest prefix (cut at a character) that fits: escaping makes the JSON longer
    // than the text by a varying amount, so search rather than compute.
    let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let fits = |cut: usize| param(&text[..cut], "…").len() <= MAX_MSG_PARAM;
    let n = cuts.partition_point(|&cut| fits(cut));
    let out = param(&text[..*cuts.get(n.checked_sub(1)?)?], "…");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::outbound::markdown_message;

    #[test]
    fn the_markdown_reply_becomes_sample_markdown_with_the_mention_in_the_text() {
        let body = markdown_message("群信息", "**a** \"b\"", Some("user1"));
        let param = sample_markdown(&body).unwrap();
        let v: serde_json::Value = serde_json::from_str(&param).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "title": "群信息", "text": "**a** \"b\"\n\n@user1" })
        );
        // An inline mention already in the text is not repeated.
        let body = markdown_message("t", "x\n\n@user1", Some("user1"));
        let v: serde_json::Value = serde_json::from_str(&sample_markdown(&body).unwrap()).unwrap();
        assert_eq!(v["text"], "x\n\n@user1");
        let body = markdown_message("t", "x", None);
        let v: serde_json::Value = serde_json::from_str(&sample_markdown(&body).unwrap()).unwrap();
        assert_eq!(v["text"], "x");
    }

    #[test]
    fn a_long_text_is_cut_to_the_msg_param_limit() {
        for unit in ["a", "群", "\"", "\u{1}"] {
            let text = unit.repeat(20_000);
            let body = markdown_message("标题", &text, Some("u"));
            let param = sample_markdown(&body).unwrap();
            assert!(param.len() <= MAX_MSG_PARAM, "{unit:?}: {}", param.len());
            assert!(
                param.len() > MAX_MSG_PARAM - 64,
                "{unit:?}: {}",
                param.len()
            );
            let v: serde_json::Value = serde_json::from_str(&param).unwrap();
            assert!(v["text"].as_str().unwrap().ends_with("…\n\n@u"), "{unit:?}");
            assert_eq!(v["title"], "标题");
        }
    }

    #[test]
    fn batch_send_lists_mean_not_sent() {
        let ep = Endpoint::RobotOtoSend;
        let ok =
            br#"{"processQueryKey":"k","invalidStaffIdList":[],"flowControlledStaffIdList":[]}"#;
        assert_eq!(read_send_answer(ep, 200, ok, Some("u")), Ok(()));
        let flow = br#"{"processQueryKey":"k","flowControlledStaffIdList":["u"]}"#;
        let e = read_send_answer(ep, 200, flow, Some("u")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SendTooFast);
        let invalid = br#"{"invalidStaffIdList":["u"]}"#;
        let e = read_send_answer(ep, 200, invalid, Some("u")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other);
        assert!(e.to_string().contains("invalidStaffIdList"), "{e}");
        let group = br#"{"processQueryKey":"k"}"#;
        assert_eq!(
            read_send_answer(Endpoint::RobotGroupSend, 200, group, None),
            Ok(())
        );
    }
}
