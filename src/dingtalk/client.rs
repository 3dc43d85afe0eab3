//! The DingTalk server-API client: access token, `chat/get`, chatid conversion, scene-group
//! and base-info lookups, user names, and posting replies to a sessionWebhook.
//!
//! One pooled `reqwest::Client` serves every API call; replies are not sent here but by
//! [`super::sender`]. Every call has a timeout; retryable
//! failures ([`ApiError::is_transient`]) are retried with exponential backoff and jitter
//! inside an overall deadline; a refused access token is dropped and the call retried once
//! with a fresh one. Tokens are fetched one at a time and reused until shortly before
//! they expire. URLs (which carry the token) never appear in errors or logs.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::endpoint::Endpoint;
use super::error::{ApiError, ErrorKind};
use super::lenient;
use super::transport::{
    self, ACS_TOKEN, BoxFuture, DEFAULT_PARALLEL_REQUESTS, JSON, RetryPolicy, TokenSource,
};
use crate::telemetry;

/// `chat_info` of a `chat/get` answer (protocol doc §5.2).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct ChatInfo {
    /// Group name.
    pub name: String,
    /// Owner's userid.
    pub owner: String,
    /// Member userids of the organisation's own staff.
    pub useridlist: Vec<String>,
    /// External members (外部联系人); the member count is both lists together.
    pub extidlist: Vec<String>,
    /// 0 normal, 1 everyone muted (全员禁言).
    #[serde(deserialize_with = "lenient::number")]
    pub chat_banned_type: Option<i64>,
    /// 0/1: the group can be found by search.
    #[serde(deserialize_with = "lenient::number")]
    pub searchable: Option<i64>,
    /// 0/1: joining needs approval.
    #[serde(deserialize_with = "lenient::number")]
    pub validation_type: Option<i64>,
    /// 0 everyone, 1 only owner/admins may @all.
    #[serde(deserialize_with = "lenient::number")]
    pub mention_all_authority: Option<i64>,
    /// 0 everyone, 1 only owner/admins manage the group.
    #[serde(deserialize_with = "lenient::number")]
    pub management_type: Option<i64>,
    /// 0/1: new members see the history.
    #[serde(deserialize_with = "lenient::number")]
    pub show_history_type: Option<i64>,
    /// 1 normal, 2 dissolved.
    #[serde(deserialize_with = "lenient::number")]
    pub status: Option<i64>,
}

impl ChatInfo {
    /// Members of the group: staff and external members (`chat/get` has no count field).
    pub fn member_count(&self) -> usize {
        self.useridlist.len() + self.extidlist.len()
    }
}

/// `result` of `topapi/im/chat/scenegroup/get` (protocol doc §6.2): a scene group of this app.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SceneGroupInfo {
    /// Group title.
    pub title: String,
    /// Owner's userid.
    pub owner_staff_id: String,
    /// The group's policy flags.
    pub management_options: ManagementOptions,
    /// Number of members, when DingTalk says (the official example has it; older answers
    /// may not).
    #[serde(deserialize_with = "lenient::number")]
    pub member_amount: Option<u64>,
}

/// `management_options` of a scene group (same meanings as the `chat/get` flags). DingTalk
/// sends them as `"0"`/`"1"` strings (the official TOP SDK types them `String`); numbers
/// are read as well.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ManagementOptions {
    /// 0 normal, 1 everyone muted.
    #[serde(deserialize_with = "lenient::number")]
    pub chat_banned_type: Option<i64>,
    /// 0/1: the group can be found by search.
    #[serde(deserialize_with = "lenient::number")]
    pub searchable: Option<i64>,
    /// 0/1: joining needs approval.
    #[serde(deserialize_with = "lenient::number")]
    pub validation_type: Option<i64>,
    /// 0 everyone, 1 only owner/admins may @all.
    #[serde(deserialize_with = "lenient::number")]
    pub mention_all_authority: Option<i64>,
    /// 0 everyone, 1 only owner/admins manage the group.
    #[serde(deserialize_with = "lenient::number")]
    pub management_type: Option<i64>,
    /// 0/1: new members see the history.
    #[serde(deserialize_with = "lenient::number")]
    pub show_history_type: Option<i64>,
}

/// `result` of `POST /v1.0/im/groups/baseInfos/query` (protocol doc §6.2).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct GroupBaseInfo {
    /// Group title.
    pub title: String,
    /// Number of members, when DingTalk says.
    #[serde(deserialize_with = "lenient::number")]
    pub member_count: Option<u64>,
}

/// A cached access token.
#[derive(Debug, Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

/// Talks to DingTalk's legacy (oapi) and new (api) hosts.
pub struct DingTalkClient {
    /// Pooled HTTP client shared by every call.
    http: reqwest::Client,
    /// `oapi_base` from the config, without trailing slash.
    oapi: String,
    /// `api_base` from the config, without trailing slash.
    api: String,
    /// AppKey for `gettoken`.
    app_key: String,
    /// AppSecret for `gettoken`.
    app_secret: SecretString,
    /// The current token, if any.
    token: RwLock<Option<Token>>,
    /// Held while fetching a token so that only one fetch runs at a time.
    refresh: tokio::sync::Mutex<()>,
    /// Retry behaviour for API calls.
    retry: RetryPolicy,
    /// API calls on the wire at once (`dingtalk.max_parallel_requests`).
    api_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for DingTalkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkClient")
            .field("oapi", &self.oapi)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// Longest chatid accepted (DingTalk's are `chat` and 32 hex digits).
pub const MAX_CHATID_LEN: usize = 128;

/// Whether `chatid` looks like a DingTalk chatid (`chat` and hex in every documented
/// example, e.g. `chate39f540dxxxx`): 1–128 characters, starting with an ASCII letter or
/// digit, made of ASCII letters, digits, `-`, `_`, `=` and `+` only. No `.`, `/`, `%`, `?`
/// or `#`, so it can never change the URL path it is put in.
pub fn valid_chatid(chatid: &str) -> bool {
    chatid.len() <= MAX_CHATID_LEN
        && chatid
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && chatid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'+'))
}

/// `segment` percent-encoded for use as one URL path segment: everything but ASCII
/// letters, digits and `-_~=+` is encoded (so `/`, `%`, `?`, `#` and `.` cannot act). A
/// segment of dots only would still be read as `.`/`..` by URL parsers, which also decode
/// `%2E`: callers refuse such values before (see [`valid_chatid`]).
pub fn path_segment(segment: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'=' | b'+') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl DingTalkClient {
    /// A client for the given hosts and credentials.
    pub fn new(
        http: reqwest::Client,
        oapi_base: &str,
        api_base: &str,
        app_key: &str,
        app_secret: SecretString,
        retry: RetryPolicy,
    ) -> DingTalkClient {
        DingTalkClient {
            http,
            oapi: oapi_base.trim_end_matches('/').to_string(),
            api: api_base.trim_end_matches('/').to_string(),
            app_key: app_key.to_string(),
            app_secret,
            token: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            retry,
            api_slots: tokio::sync::Semaphore::new(DEFAULT_PARALLEL_REQUESTS),
        }
    }

    /// The client for `[dingtalk]` settings, with `retry` (the service and `dingbot check`
    /// retry differently).
    pub fn from_settings(
        dt: &crate::config::DingTalkSettings,
        http: reqwest::Client,
        retry: RetryPolicy,
    ) -> DingTalkClient {
        DingTalkClient::new(
            http,
            dt.oapi_base.as_str(),
            dt.api_base.as_str(),
            &dt.app_key,
            dt.app_secret.clone(),
            retry,
        )
        .with_parallel_requests(dt.max_parallel_requests.get())
    }

    /// Caps the API calls on the wire at once (default 32). Calls beyond it wait their
    /// turn, so the pool keeps a few warm connections (and their buffers) instead of opening
    /// one per pending lookup. Reply POSTs have a cap of their own in the sender, so a slow
    /// API never holds up replies.
    pub fn with_parallel_requests(mut self, n: usize) -> DingTalkClient {
        self.api_slots = tokio::sync::Semaphore::new(n.max(1));
        self
    }

    /// The shared HTTP client of the API calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A valid access token: the cached one, or a fresh one (one fetch at a time).
    pub async fn access_token(&self) -> Result<Arc<str>, ApiError> {
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let _guard = self.refresh.lock().await;
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let token = self
            .with_retries(Endpoint::GetToken, || self.fetch_token())
            .await?;
        Ok(token)
    }

    fn cached_token(&self) -> Option<Arc<str>> {
        let guard = self.token.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.value.clone())
    }

    /// Forgets `bad` if it is still the cached token.
    fn invalidate(&self, bad: &str) {
        let mut guard = self.token.write().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|t| &*t.value == bad) {
            *guard = None;
        }
    }

    async fn fetch_token(&self) -> Result<Arc<str>, ApiError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: String,
            #[serde(default, deserialize_with = "lenient::number")]
            expires_in: Option<i64>,
        }
        let url = format!("{}/gettoken", self.oapi);
        let req = self.http.get(url).query(&[
            ("appkey", self.app_key.as_str()),
            ("appsecret", self.app_secret.expose_secret()),
        ]);
        let answer: TokenAnswer = self.send_oapi(Endpoint::GetToken, req).await?;
        if answer.access_token.is_empty() {
            return Err(ApiError::BadBody {
                endpoint: Endpoint::GetToken,
                status: 200,
            });
        }
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(0).clamp(60, 86_400) as u64);
        // Refresh a little early: 5 minutes, or a tenth of short lifetimes.
        let margin = Duration::from_secs(300).min(lifetime / 10);
        let value: Arc<str> = Arc::from(answer.access_token);
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        telemetry::token_refreshed();
        Ok(value)
    }

    /// `GET {oapi}/chat/get?access_token=…&chatid=…`
    pub async fn chat_get(&self, chatid: &str) -> Result<ChatInfo, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            chat_info: ChatInfo,
        }
        let answer: Answer = self
            .with_token(Endpoint::ChatGet, |token| {
                let url = format!("{}/chat/get", self.oapi);
                let req = self
                    .http
                    .get(url)
                    .query(&[("access_token", token), ("chatid", chatid)]);
                self.send_oapi(Endpoint::ChatGet, req)
            })
            .await?;
        Ok(answer.chat_info)
    }

    /// `POST {api}/v1.0/im/chat/{chatid}/convertToOpenConversationId`, without a body (as
    /// the official SDK sends it). A chatid that is not [`valid_chatid`] is refused before
    /// anything is sent: it becomes a URL path segment next to the token.
    pub async fn convert_to_open_conversation_id(&self, chatid: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            open_conversation_id: String,
        }
        const ENDPOINT: Endpoint = Endpoint::ConvertToOpenConversationId;
        if !valid_chatid(chatid) {
            return Err(ApiError::InvalidInput {
                endpoint: ENDPOINT,
                what: "chatid",
            });
        }
        let url = format!(
            "{}/v1.0/im/chat/{}/convertToOpenConversationId",
            self.api,
            path_segment(chatid)
        );
        let answer: Answer = self
            .with_token(ENDPOINT, |token| {
                let req = self
                    .http
                    .post(url.as_str())
                    .header(ACS_TOKEN, token)
                    .header(reqwest::header::ACCEPT, JSON);
                self.send_api(ENDPOINT, req)
            })
            .await?;
        Ok(answer.open_conversation_id)
    }

    /// `POST {oapi}/topapi/im/chat/scenegroup/get?access_token=…` with
    /// `{"open_conversation_id"}`: title, owner and flags of a scene group of this app.
    /// DingTalk answers 400020 (or 40035) for a group that is not one.
    pub async fn scene_group_get(
        &self,
        open_conversation_id: &str,
    ) -> Result<SceneGroupInfo, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            result: SceneGroupInfo,
        }
        let body = serde_json::json!({ "open_conversation_id": open_conversation_id });
        let answer: Answer = self
            .with_token(Endpoint::SceneGroupGet, |token| {
                let url = format!("{}/topapi/im/chat/scenegroup/get", self.oapi);
                let req = self
                    .http
                    .post(url)
                    .query(&[("access_token", token)])
                    .json(&body);
                self.send_oapi(Endpoint::SceneGroupGet, req)
            })
            .await?;
        Ok(answer.result)
    }

    /// `POST {api}/v1.0/im/groups/baseInfos/query` with `{"openConversationId"}`: title and
    /// member count of any group the app can see.
    pub async fn group_base_info(
        &self,
        open_conversation_id: &str,
    ) -> Result<GroupBaseInfo, ApiError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            result: GroupBaseInfo,
        }
        let url = format!("{}/v1.0/im/groups/baseInfos/query", self.api);
        let body = serde_json::json!({ "openConversationId": open_conversation_id });
        let answer: Answer = self
            .with_token(Endpoint::GroupBaseInfos, |token| {
                let req = self
                    .http
                    .post(url.as_str())
                    .header(ACS_TOKEN, token)
                    .header(reqwest::header::ACCEPT, JSON)
                    .json(&body);
                self.send_api(Endpoint::GroupBaseInfos, req)
            })
            .await?;
        Ok(answer.result)
    }

    /// `POST {oapi}/topapi/v2/user/get?access_token=…` with `{"userid"}`: the user's display
    /// name (`result.name`).
    pub async fn user_name(&self, userid: &str) -> Result<String, ApiError> {
        #[derive(Deserialize, Default)]
        struct User {
            #[serde(default)]
            name: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            result: User,
        }
        let body = serde_json::json!({ "userid": userid });
        let answer: Answer = self
            .with_token(Endpoint::UserGet, |token| {
                let url = format!("{}/topapi/v2/user/get", self.oapi);
                let req = self
                    .http
                    .post(url)
                    .query(&[("access_token", token)])
                    .json(&body);
                self.send_oapi(Endpoint::UserGet, req)
            })
            .await?;
        Ok(answer.result.name)
    }

    /// Whether the app may use the robot send APIs (`qyapi_robot_sendmsg`), for `dingbot
    /// check`: `groupMessages/send` without an `openConversationId`, which cannot send
    /// anything. A refusal of the parameters means the permission is there; a permission
    /// failure (or no answer) is the error. (That DingTalk checks the permission before
    /// the parameters is how its API gateway behaves elsewhere; unconfirmed for this API.)
    pub async fn probe_robot_send(&self, robot_code: &str) -> Result<(), ApiError> {
        const ENDPOINT: Endpoint = Endpoint::RobotGroupSend;
        let url = format!("{}/v1.0/robot/groupMessages/send", self.api);
        let body = serde_json::json!({
            "robotCode": robot_code,
            "msgKey": "sampleMarkdown",
            "msgParam": r#"{"title":"dingbot check","text":"dingbot check"}"#,
        });
        let answer = self
            .with_token(ENDPOINT, |token| {
                let req = self
                    .http
                    .post(url.as_str())
                    .header(ACS_TOKEN, token)
                    .header(reqwest::header::ACCEPT, JSON)
                    .json(&body);
                self.send_api::<serde_json::Value>(ENDPOINT, req)
            })
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e @ ApiError::Http { status, .. })
                if (400..500).contains(&status) && e.kind() == ErrorKind::Other =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `call` with a token; on an invalid-token answer drops it and tries once more.
    async fn with_token<T, F, Fut>(&self, endpoint: Endpoint, call: F) -> Result<T, ApiError>
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let token = self.access_token().await?;
        match self.with_retries(endpoint, || call(&token)).await {
            Err(e) if e.is_invalid_token() => {
                tracing::warn!(
                    endpoint = endpoint.label(),
                    "access token refused; fetching a new one"
                );
                self.invalidate(&token);
                let token = self.access_token().await?;
                self.with_retries(endpoint, || call(&token)).await
            }
            other => other,
        }
    }

    /// Retries transient failures with exponential backoff and jitter inside the deadline.
    async fn with_retries<T, F, Fut>(&self, endpoint: Endpoint, call: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.with_retries_if(endpoint, ApiError::is_transient, call)
            .await
    }

    /// Retries failures for which `retryable` holds, with backoff inside the deadline.
    async fn with_retries_if<T, F, Fut>(
        &self,
        endpoint: Endpoint,
        retryable: fn(&ApiError) -> bool,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        transport::with_retries_if(&self.retry, endpoint, retryable, call).await
    }

    /// Sends a legacy-host request: HTTP 200 with `errcode` 0 is success.
    async fn send_oapi<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.send_oapi_inner(endpoint, req).await;
        transport::record(endpoint, &result, started);
        result
    }

    async fn send_oapi_inner<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let (status, body) = self.send(endpoint, req).await?;
        transport::oapi_answer(endpoint, status, &body)
    }

    /// Sends a new-host request: 2xx with a JSON body is success, 4xx/5xx carries `code`.
    async fn send_api<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.send_api_inner(endpoint, req).await;
        transport::record(endpoint, &result, started);
        result
    }

    async fn send_api_inner<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let (status, body) = self.send(endpoint, req).await?;
        transport::api_answer(endpoint, status, &body)
    }
}

/// The reply sender's fallback takes its tokens from the same cache.
impl TokenSource for DingTalkClient {
    fn access_token(&self) -> BoxFuture<'_, Result<Arc<str>, ApiError>> {
        Box::pin(DingTalkClient::access_token(self))
    }

    fn invalidate(&self, bad: &str) {
        DingTalkClient::invalidate(self, bad);
    }
}

/// Sends and reads the whole body; transport errors lose their URL (it may hold a token).
impl DingTalkClient {
    /// Sends `req` once a slot is free and reads the whole answer. A slot is held per
    /// attempt only, never while backing off, and never while waiting for another slot.
    async fn send(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes), ApiError> {
        let _slot = self.api_slots.acquire().await;
        transport::send(endpoint, req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatids_are_checked_conservatively() {
        for ok in [
            "chate39f540dxxxx",
            "chatbound0001",
            "0chat",
            "chat-a_b=+",
            "C",
        ] {
            assert!(valid_chatid(ok), "{ok}");
        }
        let long = "c".repeat(MAX_CHATID_LEN + 1);
        for bad in [
            "", ".", "..", "chat.x", "../x", "a/b", "-chat", "_chat", "=", "chat%2e", "chat?x",
            "chat#x", "chat x", "chät", &long,
        ] {
            assert!(!valid_chatid(bad), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("chat0001"), "chat0001");
        assert_eq!(path_segment("a+b=c-d_e~"), "a+b=c-d_e~");
        assert_eq!(path_segment("../a/b?c#d%"), "%2E%2E%2Fa%2Fb%3Fc%23d%25");
        assert_eq!(path_segment("群"), "%E7%BE%A4");
    }
}
