//! Replies: the sessionWebhook allow-list and the markdown message body.
//!
//! A callback body is not signed (only the timestamp is), so its `sessionWebhook` is
//! untrusted input: [`WebhookPolicy`] only lets through URLs whose scheme, host and port
//! equal `oapi_base` or a configured extra origin, and only before they expire.

use url::Url;

/// Why a callback's sessionWebhook is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    /// Not a URL at all.
    #[error("sessionWebhook is not a URL")]
    NotAUrl,
    /// Scheme/host/port not on the allow-list.
    #[error("sessionWebhook host is not allowed")]
    HostNotAllowed,
    /// `sessionWebhookExpiredTime` has passed.
    #[error("sessionWebhook has expired")]
    Expired,
}

/// The origins replies may be POSTed to.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    /// `(scheme, host, port)` triples; port is the explicit or default one.
    allowed: Vec<(String, String, u16)>,
}

fn origin(url: &Url) -> Option<(String, String, u16)> {
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

impl WebhookPolicy {
    /// Allows `oapi_base` plus `extra` origins (all already validated as URLs).
    pub fn new<'a>(oapi_base: &'a Url, extra: impl IntoIterator<Item = &'a Url>) -> WebhookPolicy {
        let allowed = std::iter::once(oapi_base)
            .chain(extra)
            .filter_map(origin)
            .collect();
        WebhookPolicy { allowed }
    }

    /// Checks a callback's `sessionWebhook` and its expiry against `now_ms`.
    pub fn check(
        &self,
        webhook: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Url, WebhookRefusal> {
        let url = Url::parse(webhook).map_err(|_| WebhookRefusal::NotAUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookRefusal::HostNotAllowed);
        }
        let o = origin(&url).ok_or(WebhookRefusal::HostNotAllowed)?;
        if !self.allowed.contains(&o) {
            return Err(WebhookRefusal::HostNotAllowed);
        }
        if let Some(exp) = expires_at_ms
            && exp <= now_ms
        {
            return Err(WebhookRefusal::Expired);
        }
        Ok(url)
    }
}

/// The JSON body of a markdown message for a sessionWebhook, @-mentioning `at_user` when
/// known. Serialized once, so retries resend the same bytes.
pub fn markdown_message(title: &str, text: &str, at_user: Option<&str>) -> bytes::Bytes {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        msgtype: &'static str,
        markdown: Markdown<'a>,
        at: At<'a>,
    }
    #[derive(serde::Serialize)]
    struct Markdown<'a> {
        title: &'a str,
        text: &'a str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct At<'a> {
        at_user_ids: &'a [&'a str],
        is_at_all: bool,
    }
    let at_user_ids = match &at_user {
        Some(id) => std::slice::from_ref(id),
        None => &[],
    };
    let message = Message {
        msgtype: "markdown",
        markdown: Markdown { title, text },
        at: At {
            at_user_ids,
            is_at_all: false,
        },
    };
    let mut out = Vec::with_capacity(96 + title.len() + text.len());
    // Serializing plain strings and bools into memory cannot fail.
    let _ = serde_json::to_writer(&mut out, &message);
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_message_has_dingtalks_shape() {
        let body = markdown_message("群信息", "**a** \"b\"", Some("manager4220"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "msgtype": "markdown",
                "markdown": { "title": "群信息", "text": "**a** \"b\"" },
                "at": { "atUserIds": ["manager4220"], "isAtAll": false },
            })
        );
        let v: serde_json::Value =
            serde_json::from_slice(&markdown_message("t", "x", None)).unwrap();
        assert_eq!(v["at"]["atUserIds"], serde_json::json!([]));
    }

    fn policy() -> WebhookPolicy {
        let oapi = Url::parse("https://oapi.dingtalk.com").unwrap();
        let extra = Url::parse("http://127.0.0.1:9000").unwrap();
        WebhookPolicy::new(&oapi, [&extra])
    }

    #[test]
    fn only_configured_origins_pass() {
        let p = policy();
        let now = 1_000;
        assert!(
            p.check(
                "https://oapi.dingtalk.com/robot/sendBySession?session=a",
                None,
                now
            )
            .is_ok()
        );
        assert!(
            p.check(
                "https://OAPI.dingtalk.com:443/robot/sendBySession?session=a",
                None,
                now
            )
            .is_ok()
        );
        assert!(p.check("http://127.0.0.1:9000/x", None, now).is_ok());
        for bad in [
            "http://oapi.dingtalk.com/robot/sendBySession",
            "https://oapi.dingtalk.com:8443/robot/sendBySession",
            "https://oapi.dingtalk.com.evil.example/robot/sendBySession",
            "https://evil.example/?https://oapi.dingtalk.com",
            "https://user@oapi.dingtalk.com/robot/sendBySession",
            "http://127.0.0.1:9001/x",
        ] {
            assert_eq!(
                p.check(bad, None, now),
                Err(WebhookRefusal::HostNotAllowed),
                "{bad}"
            );
        }
        assert_eq!(
            p.check("not a url", None, now),
            Err(WebhookRefusal::NotAUrl)
        );
    }

    #[test]
    fn expired_webhook_is_refused() {
        let p = policy();
        let url = "https://oapi.dingtalk.com/robot/sendBySession?session=a";
        assert!(p.check(url, Some(2_000), 1_999).is_ok());
        assert_eq!(
            p.check(url, Some(2_000), 2_000),
            Err(WebhookRefusal::Expired)
        );
    }
}
