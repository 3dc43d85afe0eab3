//! Errors of DingTalk's server API, classified the way DingTalk reports them.
//!
//! DingTalk answers most failures with HTTP 200 and an `errcode` (legacy oapi host) or with
//! an HTTP 4xx and a `code` string (new API host). [`ApiError`] keeps the codes so that the
//! bot can explain each one, and answers the two questions callers have: should this be
//! retried ([`ApiError::is_transient`]) and is the access token bad
//! ([`ApiError::is_invalid_token`]). No variant ever holds a URL (tokens travel in query
//! strings) or a secret.

use super::endpoint::Endpoint;

/// `errcode`s that mean "busy or throttled, try again later" (protocol doc §4.3, §8).
pub const TRANSIENT_ERRCODES: &[i64] = &[-1, 90002, 90005, 90006, 90018, 90019];

/// The permission the robot send APIs need (protocol doc §3.4, §8).
pub const ROBOT_SEND_SCOPE: &str = "qyapi_robot_sendmsg";

/// The list of a `oToMessages/batchSend` answer that names recipients under flow control.
pub const FLOW_CONTROLLED: &str = "flowControlledStaffIdList";

/// What a failure means, whatever host or code DingTalk used to say it. This is the only
/// place DingTalk's error codes are interpreted; everything outside `dingtalk/` (replies,
/// the resolver, `dingbot check`) works with these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The app lacks a permission ([`ApiError::missing_scope`] names it when known).
    NoPermission,
    /// The chatid does not exist or is not visible to this app.
    BadChatid,
    /// A chatid is required and none was given.
    MissingChatid,
    /// DingTalk refused the access token (expired or invalid).
    BadToken,
    /// No access token could be had for these credentials.
    TokenFailed,
    /// The app's organisation does not exist.
    CorpMissing,
    /// The group is not a scene group of this app (`scenegroup/get`).
    NotSceneGroup,
    /// DingTalk does not know this user (`user/get`).
    UnknownUser,
    /// The robot sent too many messages to the group (130101), or a robot send API put the
    /// recipient under flow control: DingTalk throttles it.
    SendTooFast,
    /// The sessionWebhook's session no longer exists (300001 "session 不存在"): expired or
    /// never valid; a reply can only go another way.
    SessionGone,
    /// Busy or throttled: worth trying again later.
    Busy,
    /// No answer in time.
    Slow,
    /// No usable answer (connection failed, unreadable body).
    Unavailable,
    /// dingbot refused to send a value that cannot be put into the request as it is.
    InvalidInput,
    /// Anything else; the errcode and message are in the error.
    Other,
}

impl ErrorKind {
    /// The snake_case name templates and `dingbot check` use.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NoPermission => "no_permission",
            ErrorKind::BadChatid => "bad_chatid",
            ErrorKind::MissingChatid => "missing_chatid",
            ErrorKind::BadToken => "bad_token",
            ErrorKind::TokenFailed => "token_failed",
            ErrorKind::CorpMissing => "corp_missing",
            ErrorKind::NotSceneGroup => "not_scene_group",
            ErrorKind::UnknownUser => "unknown_user",
            ErrorKind::SendTooFast => "send_too_fast",
            ErrorKind::SessionGone => "session_gone",
            ErrorKind::Busy => "busy",
            ErrorKind::Slow => "slow",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Other => "other",
        }
    }
}

/// A failed DingTalk API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No HTTP answer: connection refused, reset, or the call timed out.
    #[error("{endpoint}: {detail}")]
    Transport {
        /// Which API.
        endpoint: Endpoint,
        /// What happened (never includes the URL).
        detail: String,
        /// Whether the per-call timeout or the overall deadline fired.
        timeout: bool,
        /// Whether the connection was never established (the request surely not sent).
        connect: bool,
    },
    /// The answer was not the JSON we expected (HTML error page, truncated, garbage).
    #[error("{endpoint}: unreadable answer (HTTP {status})")]
    BadBody {
        /// Which API.
        endpoint: Endpoint,
        /// HTTP status of the answer.
        status: u16,
    },
    /// Refused before sending: an argument cannot be put into the request as it is (e.g. a
    /// chatid that would change the URL path). Nothing reached DingTalk.
    #[error("{endpoint}: refused to send an invalid {what}")]
    InvalidInput {
        /// Which API.
        endpoint: Endpoint,
        /// Which argument.
        what: &'static str,
    },
    /// A robot send API answered but did not send the message to the recipient, who is
    /// listed in its answer (`invalidStaffIdList`, `flowControlledStaffIdList`,
    /// `filteredStaffIdList`).
    #[error("{endpoint}: DingTalk did not send the message (recipient in {list})")]
    NotSent {
        /// Which API.
        endpoint: Endpoint,
        /// The answer's list the recipient is in.
        list: &'static str,
    },
    /// Legacy host: HTTP 200 with a non-zero `errcode`.
    #[error("{endpoint}: errcode {errcode} ({errmsg})")]
    DingTalk {
        /// Which API.
        endpoint: Endpoint,
        /// DingTalk's error code.
        errcode: i64,
        /// DingTalk's message.
        errmsg: String,
        /// `sub_code` of errcode 88 answers.
        sub_code: Option<String>,
    },
    /// New host: HTTP 4xx/5xx with a `code` string.
    #[error("{endpoint}: HTTP {status} {code}")]
    Http {
        /// Which API.
        endpoint: Endpoint,
        /// HTTP status.
        status: u16,
        /// DingTalk's `code`, e.g. `InvalidAuthentication`, or empty.
        code: String,
        /// DingTalk's message.
        message: String,
        /// Permission scopes DingTalk says are missing.
        required_scopes: Vec<String>,
    },
}

impl ApiError {
    /// The API that failed.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            ApiError::Transport { endpoint, .. }
            | ApiError::BadBody { endpoint, .. }
            | ApiError::InvalidInput { endpoint, .. }
            | ApiError::NotSent { endpoint, .. }
            | ApiError::DingTalk { endpoint, .. }
            | ApiError::Http { endpoint, .. } => *endpoint,
        }
    }

    /// Worth retrying after a pause: busy/throttled codes, 5xx, unreadable bodies, timeouts.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::BadBody { .. } => true,
            ApiError::InvalidInput { .. } | ApiError::NotSent { .. } => false,
            ApiError::DingTalk { errcode, .. } => TRANSIENT_ERRCODES.contains(errcode),
            ApiError::Http { status, code, .. } => {
                *status >= 500 || *status == 429 || code.contains("Throttling")
            }
        }
    }

    /// Safe to send again because DingTalk surely did not take the request: no connection,
    /// a busy/throttled errcode, or a 5xx/429 answer. A timeout or an unreadable 2xx answer
    /// may hide a delivered message, so a non-idempotent POST must not be repeated then.
    pub fn surely_not_delivered(&self) -> bool {
        match self {
            ApiError::Transport { connect, .. } => *connect,
            ApiError::InvalidInput { .. } | ApiError::NotSent { .. } => true,
            ApiError::BadBody { status, .. } => *status >= 500 || *status == 429,
            ApiError::DingTalk { errcode, .. } => TRANSIENT_ERRCODES.contains(errcode),
            ApiError::Http { status, code, .. } => {
                *status >= 500 || *status == 429 || code.contains("Throttling")
            }
        }
    }

    /// Worth sending again after a pause: DingTalk surely did not take the message and the
    /// failure is a passing one (no connection, busy, 5xx, 429). The robot send APIs
    /// retry on this; a refusal that would only repeat itself is not retried.
    pub fn worth_resending(&self) -> bool {
        self.surely_not_delivered() && self.is_transient()
    }

    /// A failed sessionWebhook POST after which the same message may go out another way
    /// (the robot send APIs): the session is gone (300001), or DingTalk surely did not take
    /// the message and retrying gave up (connection refused, 5xx, busy). Never after a
    /// failure that may hide a delivered message (a timeout, an unreadable 2xx answer), and
    /// never after "send too fast" (130101), which the group's silence answers.
    pub fn allows_fallback(&self) -> bool {
        match self.kind() {
            ErrorKind::SessionGone => true,
            ErrorKind::SendTooFast => false,
            _ => self.surely_not_delivered(),
        }
    }

    /// The access token was refused: drop it, fetch a new one, retry once.
    pub fn is_invalid_token(&self) -> bool {
        match self {
            ApiError::DingTalk { errcode, .. } => matches!(errcode, 40014 | 40001 | 42001),
            ApiError::Http { code, status, .. } => {
                code == "InvalidAuthentication" || (*status == 401 && code.is_empty())
            }
            _ => false,
        }
    }

    /// The app lacks a permission for this call.
    pub fn is_permission_denied(&self) -> bool {
        match self {
            ApiError::DingTalk {
                errcode, sub_code, ..
            } => *errcode == 43007 || (*errcode == 88 && sub_code.as_deref() == Some("60011")),
            ApiError::Http { status, code, .. } => *status == 403 || code.starts_with("Forbidden"),
            _ => false,
        }
    }

    /// What the failure means (the one place errcodes are read; see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Transport { timeout: true, .. } => ErrorKind::Slow,
            ApiError::Transport { .. } | ApiError::BadBody { .. } => ErrorKind::Unavailable,
            ApiError::InvalidInput { .. } => ErrorKind::InvalidInput,
            ApiError::NotSent { list, .. } if *list == FLOW_CONTROLLED => ErrorKind::SendTooFast,
            ApiError::NotSent { .. } => ErrorKind::Other,
            ApiError::DingTalk {
                endpoint, errcode, ..
            } => match (*endpoint, *errcode) {
                (Endpoint::GetToken, c) if c != -1 => ErrorKind::TokenFailed,
                (_, 43007 | 88) => ErrorKind::NoPermission,
                (_, 40016) => ErrorKind::BadChatid,
                (_, 49000) => ErrorKind::MissingChatid,
                (_, 40001 | 40014 | 42001) => ErrorKind::BadToken,
                (_, 70001) => ErrorKind::CorpMissing,
                (Endpoint::SceneGroupGet, 400020 | 40035) => ErrorKind::NotSceneGroup,
                (Endpoint::UserGet, 60121 | 60003) => ErrorKind::UnknownUser,
                (_, 130101) => ErrorKind::SendTooFast,
                (Endpoint::SendBySession, 300001) => ErrorKind::SessionGone,
                (_, c) if TRANSIENT_ERRCODES.contains(&c) => ErrorKind::Busy,
                _ => ErrorKind::Other,
            },
            ApiError::Http {
                endpoint,
                status,
                code,
                ..
            } => {
                if self.is_permission_denied() {
                    ErrorKind::NoPermission
                } else if self.is_invalid_token() {
                    ErrorKind::BadToken
                } else if *endpoint == Endpoint::GetToken {
                    ErrorKind::TokenFailed
                } else if endpoint.sends_message() && code == "130101" {
                    ErrorKind::SendTooFast
                } else if *status >= 500 || *status == 429 || code.contains("Throttling") {
                    ErrorKind::Busy
                } else if *endpoint == Endpoint::ConvertToOpenConversationId
                    && matches!(status, 400 | 404)
                {
                    ErrorKind::BadChatid
                } else {
                    ErrorKind::Other
                }
            }
        }
    }

    /// The permission scope a [`ErrorKind::NoPermission`] failure asks for: the one
    /// DingTalk named, else the one the endpoint is documented to need.
    pub fn missing_scope(&self) -> Option<String> {
        if self.kind() != ErrorKind::NoPermission {
            return None;
        }
        if let ApiError::Http {
            required_scopes, ..
        } = self
        {
            return required_scopes.first().cloned();
        }
        Some(self.documented_scope().to_string())
    }

    /// The permission this endpoint is documented to need.
    pub fn documented_scope(&self) -> &'static str {
        match self.endpoint() {
            Endpoint::UserGet => "qyapi_get_member",
            Endpoint::RobotGroupSend | Endpoint::RobotOtoSend => ROBOT_SEND_SCOPE,
            _ => "qyapi_chat_read",
        }
    }

    /// DingTalk's own code as text (errcode, HTTP `code` string or `HTTP <status>`) and its
    /// message, for a "why missing" note; the failure kind when DingTalk gave no code.
    pub fn code_and_message(&self) -> (String, String) {
        match self {
            ApiError::DingTalk {
                errcode, errmsg, ..
            } => (errcode.to_string(), errmsg.clone()),
            ApiError::Http { code, message, .. } if !code.is_empty() => {
                (code.clone(), message.clone())
            }
            ApiError::Http { status, .. } => (format!("HTTP {status}"), String::new()),
            other => (other.metric_code(), String::new()),
        }
    }

    /// DingTalk's errcode, when the failure carries one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::DingTalk { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// `user/get` answered without a name: treated as DingTalk's "no such user" (60121).
    pub fn unknown_user() -> ApiError {
        ApiError::DingTalk {
            endpoint: Endpoint::UserGet,
            errcode: 60121,
            errmsg: String::new(),
            sub_code: None,
        }
    }

    /// Whether the failed call was the access-token fetch itself.
    pub fn is_token_call(&self) -> bool {
        self.endpoint() == Endpoint::GetToken
    }

    /// A short stable label for metrics: the errcode, the HTTP code, or the failure kind.
    pub fn metric_code(&self) -> String {
        match self {
            ApiError::Transport { timeout: true, .. } => "timeout".into(),
            ApiError::Transport { .. } => "transport".into(),
            ApiError::BadBody { .. } => "bad_body".into(),
            ApiError::InvalidInput { .. } => "invalid_input".into(),
            ApiError::NotSent { .. } => "not_sent".into(),
            ApiError::DingTalk { errcode, .. } => errcode.to_string(),
            ApiError::Http { status, .. } => format!("http_{status}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(errcode: i64, sub: Option<&str>) -> ApiError {
        ApiError::DingTalk {
            endpoint: Endpoint::ChatGet,
            errcode,
            errmsg: String::new(),
            sub_code: sub.map(str::to_string),
        }
    }

    #[test]
    fn classification_follows_dingtalk_codes() {
        assert!(dt(-1, None).is_transient());
        assert!(dt(90018, None).is_transient());
        assert!(!dt(43007, None).is_transient());
        assert!(dt(40014, None).is_invalid_token());
        assert!(dt(40001, None).is_invalid_token());
        assert!(!dt(88, Some("60011")).is_invalid_token());
        assert!(dt(88, Some("60011")).is_permission_denied());
        assert!(dt(43007, None).is_permission_denied());
        assert!(!dt(40016, None).is_permission_denied());
    }

    #[test]
    fn only_failures_that_surely_did_not_deliver_allow_the_fallback() {
        let send = |errcode| ApiError::DingTalk {
            endpoint: Endpoint::SendBySession,
            errcode,
            errmsg: String::new(),
            sub_code: None,
        };
        assert_eq!(send(300001).kind(), ErrorKind::SessionGone);
        assert!(send(300001).allows_fallback());
        assert!(!send(300001).surely_not_delivered(), "not retried as is");
        assert!(send(-1).allows_fallback());
        assert!(!send(130101).allows_fallback());
        let five = ApiError::Http {
            endpoint: Endpoint::SendBySession,
            status: 502,
            code: String::new(),
            message: String::new(),
            required_scopes: Vec::new(),
        };
        assert!(five.allows_fallback());
        let timeout = ApiError::Transport {
            endpoint: Endpoint::SendBySession,
            detail: String::new(),
            timeout: true,
            connect: false,
        };
        assert!(!timeout.allows_fallback());
        let cut = ApiError::BadBody {
            endpoint: Endpoint::SendBySession,
            status: 200,
        };
        assert!(!cut.allows_fallback());
        // 300001 from another API means nothing special.
        let other = ApiError::DingTalk {
            endpoint: Endpoint::ChatGet,
            errcode: 300001,
            errmsg: String::new(),
            sub_code: None,
        };
        assert_eq!(other.kind(), ErrorKind::Other);
    }

    #[test]
    fn robot_send_refusals_are_classified() {
        let flow = ApiError::NotSent {
            endpoint: Endpoint::RobotOtoSend,
            list: FLOW_CONTROLLED,
        };
        assert_eq!(flow.kind(), ErrorKind::SendTooFast);
        assert!(!flow.worth_resending());
        let forbidden = ApiError::Http {
            endpoint: Endpoint::RobotGroupSend,
            status: 403,
            code: "Forbidden.AccessDenied.AccessTokenPermissionDenied".into(),
            message: String::new(),
            required_scopes: Vec::new(),
        };
        assert_eq!(forbidden.kind(), ErrorKind::NoPermission);
        assert_eq!(forbidden.documented_scope(), ROBOT_SEND_SCOPE);
        let too_fast = ApiError::Http {
            endpoint: Endpoint::RobotGroupSend,
            status: 400,
            code: "130101".into(),
            message: String::new(),
            required_scopes: Vec::new(),
        };
        assert_eq!(too_fast.kind(), ErrorKind::SendTooFast);
    }
}
