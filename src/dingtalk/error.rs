//! Errors of DingTalk's server API, classified the way DingTalk reports them.
//!
//! DingTalk answers most failures with HTTP 200 and an `errcode` (legacy oapi host) or with
//! an HTTP 4xx and a `code` string (new API host). [`ApiError`] keeps the codes so that the
//! bot can explain each one, and answers the two questions callers have: should this be
//! retried ([`ApiError::is_transient`]) and is the access token bad
//! ([`ApiError::is_invalid_token`]). No variant ever holds a URL (tokens travel in query
//! strings) or a secret.

/// `errcode`s that mean "busy or throttled, try again later" (protocol doc §4.3, §8).
pub const TRANSIENT_ERRCODES: &[i64] = &[-1, 90002, 90005, 90006, 90018, 90019];

/// A failed DingTalk API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No HTTP answer: connection refused, reset, or the call timed out.
    #[error("{endpoint}: {detail}")]
    Transport {
        /// Which API.
        endpoint: &'static str,
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
        endpoint: &'static str,
        /// HTTP status of the answer.
        status: u16,
    },
    /// Refused before sending: an argument cannot be put into the request as it is (e.g. a
    /// chatid that would change the URL path). Nothing reached DingTalk.
    #[error("{endpoint}: refused to send an invalid {what}")]
    InvalidInput {
        /// Which API.
        endpoint: &'static str,
        /// Which argument.
        what: &'static str,
    },
    /// Legacy host: HTTP 200 with a non-zero `errcode`.
    #[error("{endpoint}: errcode {errcode} ({errmsg})")]
    DingTalk {
        /// Which API.
        endpoint: &'static str,
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
        endpoint: &'static str,
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
    pub fn endpoint(&self) -> &'static str {
        match self {
            ApiError::Transport { endpoint, .. }
            | ApiError::BadBody { endpoint, .. }
            | ApiError::InvalidInput { endpoint, .. }
            | ApiError::DingTalk { endpoint, .. }
            | ApiError::Http { endpoint, .. } => endpoint,
        }
    }

    /// Worth retrying after a pause: busy/throttled codes, 5xx, unreadable bodies, timeouts.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::BadBody { .. } => true,
            ApiError::InvalidInput { .. } => false,
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
            ApiError::InvalidInput { .. } => true,
            ApiError::BadBody { status, .. } => *status >= 500 || *status == 429,
            ApiError::DingTalk { errcode, .. } => TRANSIENT_ERRCODES.contains(errcode),
            ApiError::Http { status, .. } => *status >= 500 || *status == 429,
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

    /// A short stable label for metrics: the errcode, the HTTP code, or the failure kind.
    pub fn metric_code(&self) -> String {
        match self {
            ApiError::Transport { timeout: true, .. } => "timeout".into(),
            ApiError::Transport { .. } => "transport".into(),
            ApiError::BadBody { .. } => "bad_body".into(),
            ApiError::InvalidInput { .. } => "invalid_input".into(),
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
            endpoint: "chat/get",
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
}
