//! Shared state of a running sandbox: the org, the current token, call counters,
//! queued faults and the messages received on `sendBySession`.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::Notify;

use super::faults::{Endpoint, FaultBook};
use super::org::{Group, Org, User};

/// How many messages the sandbox keeps; older ones are dropped but still counted.
pub const MESSAGE_CAPACITY: usize = 100_000;

/// One message a client sent: POSTed to `/robot/sendBySession`, or through the robot
/// send APIs (`groupMessages/send`, `oToMessages/batchSend`).
#[derive(Clone, Debug)]
pub struct SentMessage {
    /// The `session` query parameter of the webhook URL; empty for the robot send APIs.
    pub session: String,
    /// The API it came through.
    pub via: Endpoint,
    /// Who it went to: the session, the `openConversationId` (`groupMessages/send`) or the
    /// userids, comma-separated (`oToMessages/batchSend`).
    pub to: String,
    /// The JSON body as received.
    pub body: Value,
    /// When the sandbox received it.
    pub at: Instant,
}

impl SentMessage {
    /// The `msgParam` of a robot send API message, parsed.
    pub fn msg_param(&self) -> Option<Value> {
        let param = self.body.get("msgParam")?.as_str()?;
        serde_json::from_str(param).ok()
    }

    /// The visible text: `markdown.text`, else `text.content`, else the `text` of an
    /// `actionCard` or `link`, else a robot send API's `msgParam` `text` (`sampleMarkdown`)
    /// or `content` (`sampleText`); empty if none of these is present.
    pub fn text(&self) -> String {
        if let Some(param) = self.msg_param() {
            return ["text", "content"]
                .iter()
                .find_map(|k| param.get(k).and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned();
        }
        [
            "/markdown/text",
            "/text/content",
            "/actionCard/text",
            "/link/text",
        ]
        .iter()
        .find_map(|p| self.body.pointer(p).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned()
    }

    /// The `msgtype` field, empty if missing.
    pub fn msgtype(&self) -> &str {
        self.body
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The markdown title, if this is a markdown message (of a sessionWebhook).
    pub fn title(&self) -> Option<&str> {
        self.body.pointer("/markdown/title").and_then(Value::as_str)
    }

    /// The `robotCode` of a robot send API message.
    pub fn robot_code(&self) -> Option<&str> {
        self.body.get("robotCode").and_then(Value::as_str)
    }

    /// The userids in `at.atUserIds`.
    pub fn at_user_ids(&self) -> Vec<String> {
        self.body
            .pointer("/at/atUserIds")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The single token the app currently holds.
#[derive(Debug)]
struct IssuedToken {
    value: String,
    expires_at: Instant,
}

/// Messages received on the session webhook, bounded to [`MESSAGE_CAPACITY`].
#[derive(Debug, Default)]
struct Sink {
    log: Mutex<VecDeque<SentMessage>>,
    /// All messages recorded since start or the last reset, including dropped ones.
    total: AtomicU64,
    /// Woken on every recorded message, for `wait_for_messages`.
    recorded: Notify,
}

/// Everything the HTTP handlers and the [`super::Sandbox`] handle share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) app_key: String,
    app_secret: String,
    /// Value reported as `expires_in` by `/gettoken`.
    pub(crate) token_expires_in: i64,
    token_ttl: Duration,
    token: Mutex<Option<IssuedToken>>,
    /// Groups by openConversationId.
    groups: DashMap<String, Group>,
    /// chatid → openConversationId, for the groups that have a chatid.
    chatids: DashMap<String, String>,
    users: DashMap<String, User>,
    calls: [AtomicU64; Endpoint::ALL.len()],
    pub(crate) faults: FaultBook,
    sink: Sink,
    /// Sessions whose webhook answers 300001 "session 不存在" from now on.
    ended_sessions: Mutex<HashSet<String>>,
    /// Whether the app lacks `qyapi_robot_sendmsg` (the robot send APIs answer 403).
    robot_send_denied: AtomicBool,
    /// Userids `oToMessages/batchSend` lists as flow-controlled instead of sending to.
    flow_controlled: Mutex<HashSet<String>>,
}

impl State {
    pub(crate) fn new(org: Org) -> State {
        let Org {
            app_key,
            app_secret,
            token_expires_in,
            groups,
            users,
        } = org;
        let state = State {
            app_key,
            app_secret,
            token_expires_in,
            token_ttl: Duration::from_secs(u64::try_from(token_expires_in).unwrap_or(0)),
            token: Mutex::new(None),
            groups: DashMap::with_capacity(groups.len()),
            chatids: DashMap::new(),
            users: users.into_iter().map(|u| (u.userid.clone(), u)).collect(),
            calls: Default::default(),
            faults: FaultBook::default(),
            sink: Sink::default(),
            ended_sessions: Mutex::new(HashSet::new()),
            robot_send_denied: AtomicBool::new(false),
            flow_controlled: Mutex::new(HashSet::new()),
        };
        for group in groups {
            state.put_group(group);
        }
        state
    }

    // ---- credentials and tokens -------------------------------------------------

    pub(crate) fn credentials_match(
        &self,
        app_key: Option<&str>,
        app_secret: Option<&str>,
    ) -> bool {
        app_key == Some(self.app_key.as_str()) && app_secret == Some(self.app_secret.as_str())
    }

    /// Returns the current token, renewing it, or issues a new one if there is none
    /// or it expired.
    pub(crate) fn issue_token(&self) -> String {
        let now = Instant::now();
        let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(token) if token.expires_at > now => {
                token.expires_at = now + self.token_ttl;
                token.value.clone()
            }
            _ => {
                let value = format!("{:032x}", rand::random::<u128>());
                *slot = Some(IssuedToken {
                    value: value.clone(),
                    expires_at: now + self.token_ttl,
                });
                value
            }
        }
    }

    pub(crate) fn token_valid(&self, candidate: Option<&str>) -> bool {
        let Some(candidate) = candidate else {
            return false;
        };
        let slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .is_some_and(|t| t.value == candidate && t.expires_at > Instant::now())
    }

    pub(crate) fn current_token(&self) -> Option<String> {
        let slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .filter(|t| t.expires_at > Instant::now())
            .map(|t| t.value.clone())
    }

    pub(crate) fn revoke_tokens(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    // ---- org data ---------------------------------------------------------------

    /// Inserts or replaces a group (keyed by openConversationId) and indexes its chatid.
    pub(crate) fn put_group(&self, group: Group) {
        self.remove_group(&group.open_conversation_id);
        if let Some(chatid) = &group.chatid {
            self.chatids
                .insert(chatid.clone(), group.open_conversation_id.clone());
        }
        self.groups
            .insert(group.open_conversation_id.clone(), group);
    }

    pub(crate) fn remove_group(&self, open_conversation_id: &str) {
        if let Some((_, old)) = self.groups.remove(open_conversation_id)
            && let Some(chatid) = old.chatid
        {
            self.chatids.remove(&chatid);
        }
    }

    pub(crate) fn group(&self, open_conversation_id: &str) -> Option<Group> {
        self.groups.get(open_conversation_id).map(|g| g.clone())
    }

    pub(crate) fn group_by_chatid(&self, chatid: &str) -> Option<Group> {
        // Clone the id and release the index entry before touching `groups`.
        let cid = self.chatids.get(chatid).map(|c| c.clone())?;
        self.group(&cid)
    }

    pub(crate) fn user(&self, userid: &str) -> Option<User> {
        self.users.get(userid).map(|u| u.clone())
    }

    // ---- sessions and the robot send permission ------------------------------------

    /// Makes `session`'s webhook answer 300001 from now on (DingTalk's expired session).
    pub(crate) fn end_session(&self, session: &str) {
        let mut ended = self
            .ended_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ended.insert(session.to_owned());
    }

    pub(crate) fn session_ended(&self, session: &str) -> bool {
        let ended = self
            .ended_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ended.contains(session)
    }

    pub(crate) fn set_robot_send_denied(&self, denied: bool) {
        self.robot_send_denied.store(denied, Ordering::Relaxed);
    }

    pub(crate) fn robot_send_denied(&self) -> bool {
        self.robot_send_denied.load(Ordering::Relaxed)
    }

    pub(crate) fn flow_control(&self, userid: &str) {
        let mut users = self
            .flow_controlled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        users.insert(userid.to_owned());
    }

    pub(crate) fn flow_controlled(&self, userid: &str) -> bool {
        let users = self
            .flow_controlled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        users.contains(userid)
    }

    // ---- counters -----------------------------------------------------------------

    pub(crate) fn count(&self, ep: Endpoint) {
        self.calls[ep.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn calls(&self, ep: Endpoint) -> u64 {
        self.calls[ep.index()].load(Ordering::Relaxed)
    }

    // ---- message sink -----------------------------------------------------------

    pub(crate) fn record(&self, message: SentMessage) {
        {
            let mut log = self.sink.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() >= MESSAGE_CAPACITY {
                log.pop_front();
            }
            log.push_back(message);
            // Counted under the lock so `total` never runs ahead of the log.
            self.sink.total.fetch_add(1, Ordering::Release);
        }
        self.sink.recorded.notify_waiters();
    }

    pub(crate) fn message_total(&self) -> u64 {
        self.sink.total.load(Ordering::Acquire)
    }

    pub(crate) fn messages(&self, session: Option<&str>) -> Vec<SentMessage> {
        let log = self.sink.log.lock().unwrap_or_else(|e| e.into_inner());
        match session {
            None => log.iter().cloned().collect(),
            Some(s) => log.iter().filter(|m| m.session == s).cloned().collect(),
        }
    }

    /// Waits until `done()` holds (checked now and after every recorded message) or
    /// `timeout` passed.
    pub(crate) async fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.sink.recorded.notified();
            tokio::pin!(notified);
            // Register before checking so a message recorded in between is not missed.
            notified.as_mut().enable();
            if done() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Forgets all messages and zeroes all counters (faults and tokens stay).
    pub(crate) fn reset(&self) {
        {
            let mut log = self.sink.log.lock().unwrap_or_else(|e| e.into_inner());
            log.clear();
            log.shrink_to_fit();
            self.sink.total.store(0, Ordering::Release);
        }
        for counter in &self.calls {
            counter.store(0, Ordering::Relaxed);
        }
    }
}
