//! Replies: the sessionWebhook allow-list and the markdown message body.
//!
//! A callback body is not signed (only the timestamp is), so its `sessionWebhook` is
//! untrusted input: [`WebhookPolicy`] only lets through URLs whose scheme, host and port
//! equal `oapi_base` or a configured extra origin, whose path is one of
//! `dingtalk.webhook_paths` (`/robot/sendBySession` with a non-empty `session` parameter by
//! default), and only before they expire. A port must be 1 to 5 ASCII digits and at most
//! 65535; any other spelling is refused, never read as the default port.
//!
//! The webhook is parsed as an `http::Uri` (`hyper::Uri`), the type the reply client sends to, so the
//! host that is checked is byte for byte the host that is connected to. `Uri` does not
//! normalise (no IDNA, no percent-decoding, no `0x7f.1`-style IPv4 forms): a host is
//! allowed only when it equals an allowed one up to ASCII case, and anything unusual is
//! refused rather than interpreted. (It is also cheaper per reply than `url::Url`; the
//! measurement is in `bench/README.md`.)

use hyper::Uri;
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
    /// Path not in `dingtalk.webhook_paths`, or the session webhook path without a session.
    #[error("sessionWebhook path is not allowed")]
    PathNotAllowed,
    /// `sessionWebhookExpiredTime` has passed.
    #[error("sessionWebhook has expired")]
    Expired,
}

/// The origins replies may be POSTed to.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    /// `(scheme, host, port)` triples; port is the explicit or default one.
    allowed: Vec<(String, String, u16)>,
    /// Paths a webhook may have, compared byte for byte.
    paths: Vec<String>,
}

/// The path of DingTalk's sessionWebhooks; it must carry a `session` parameter.
pub const SESSION_WEBHOOK_PATH: &str = "/robot/sendBySession";

fn origin(url: &Url) -> Option<(String, String, u16)> {
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// The port a scheme implies when the URL names none.
fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// The port written in `authority` (credentials already refused): `None` when there is
/// none; 1 to 5 ASCII digits with a value from 1 to 65535, or the webhook is refused.
fn explicit_port(authority: &str) -> Result<Option<u16>, WebhookRefusal> {
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Ok(None);
    };
    if host.starts_with('[') && !host.ends_with(']') {
        return Ok(None); // the colon is inside an IPv6 literal without a port
    }
    if !(1..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookRefusal::NotAUrl);
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(Some(p)),
        _ => Err(WebhookRefusal::NotAUrl),
    }
}

/// Whether `query` has a non-empty `session` parameter.
fn has_session(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.strip_prefix("session=").is_some_and(|v| !v.is_empty()))
    })
}

impl WebhookPolicy {
    /// Allows `oapi_base` plus `extra` origins (all already validated as URLs), on `paths`.
    pub fn new<'a>(
        oapi_base: &'a Url,
        extra: impl IntoIterator<Item = &'a Url>,
        paths: &[String],
    ) -> WebhookPolicy {
        let allowed = std::iter::once(oapi_base)
            .chain(extra)
            .filter_map(origin)
            .collect();
        WebhookPolicy {
            allowed,
            paths: paths.to_vec(),
        }
    }

    /// Checks a callback's `sessionWebhook` and its expiry against `now_ms`.
    pub fn check(
        &self,
        webhook: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Uri, WebhookRefusal> {
        let uri: Uri = webhook.parse().map_err(|_| WebhookRefusal::NotAUrl)?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(WebhookRefusal::NotAUrl);
        };
        // Credentials in a webhook are never DingTalk's: refuse rather than strip them.
        if authority.as_str().contains('@') {
            return Err(WebhookRefusal::HostNotAllowed);
        }
        // `Uri` keeps the port as written and `port_u16` reads `+80` as 80 and `99999` as
        // no port (then the connector uses the default one): check the spelling here.
        let port = match explicit_port(authority.as_str())? {
            Some(p) => p,
            None => default_port(scheme).ok_or(WebhookRefusal::HostNotAllowed)?,
        };
        let host = authority.host();
        let allowed = self.allowed.iter().any(|(s, h, p)| {
            *p == port && s.eq_ignore_ascii_case(scheme) && h.eq_ignore_ascii_case(host)
        });
        if !allowed {
            return Err(WebhookRefusal::HostNotAllowed);
        }
        let path = uri.path();
        if !self.paths.iter().any(|p| p == path)
            || (path == SESSION_WEBHOOK_PATH && !has_session(uri.query()))
        {
            return Err(WebhookRefusal::PathNotAllowed);
        }
        if let Some(exp) = expires_at_ms
            && exp <= now_ms
        {
            return Err(WebhookRefusal::Expired);
        }
        Ok(uri)
    }
}

/// A markdown message for a sessionWebhook, serialized up to the end of its text: the part
/// every reply with the same rendered text shares (a cached `/info` answer is escaped once,
/// not once per reply). [`MarkdownHead::finish`] appends what differs per reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownHead {
    /// `{"msgtype":"markdown","markdown":{"title":"…","text":"…` (no closing quote).
    bytes: Vec<u8>,
}

/// A reply as it waits for its turn to be sent: the shared [`MarkdownHead`] and what this
/// reply adds. The JSON body is made by [`Reply::body`] only when a connection is there, so
/// a reply queued behind `dingtalk.max_parallel_requests` others holds a pointer and a few
/// bytes, not its whole serialized message (about 800 bytes for an `/info` answer; with
/// 1,024 replies waiting, 0.8 MiB).
#[derive(Debug, Clone)]
pub struct Reply {
    head: std::sync::Arc<MarkdownHead>,
    text_suffix: Option<Box<str>>,
    at_user: Option<Box<str>>,
}

impl Reply {
    /// `head`'s text followed by `text_suffix`, @-mentioning `at_user` when known.
    pub fn new(
        head: std::sync::Arc<MarkdownHead>,
        text_suffix: Option<String>,
        at_user: Option<&str>,
    ) -> Reply {
        Reply {
            head,
            text_suffix: text_suffix.map(String::into_boxed_str),
            at_user: at_user.map(Box::from),
        }
    }

    /// The whole JSON body ([`MarkdownHead::finish`]); the same bytes every time.
    pub fn body(&self) -> bytes::Bytes {
        self.head
            .finish(self.text_suffix.as_deref(), self.at_user.as_deref())
    }
}

/// `s` as a JSON string literal, quotes included.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Serializing a string into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl MarkdownHead {
    /// The shared part of a message with this title and text.
    pub fn new(title: &str, text: &str) -> MarkdownHead {
        let mut bytes = Vec::with_capacity(64 + title.len() + text.len() + text.len() / 8);
        bytes.extend_from_slice(br#"{"msgtype":"markdown","markdown":{"title":"#);
        json_string(&mut bytes, title);
        bytes.extend_from_slice(br#","text":"#);
        json_string(&mut bytes, text);
        bytes.pop(); // the closing quote: `finish` may extend the text
        MarkdownHead { bytes }
    }

    /// The whole JSON body: the text followed by `text_suffix`, @-mentioning `at_user` when
    /// known. Deterministic: a retry resends the same bytes.
    pub fn finish(&self, text_suffix: Option<&str>, at_user: Option<&str>) -> bytes::Bytes {
        let extra = text_suffix.map_or(0, str::len) + at_user.map_or(0, str::len);
        let mut out = Vec::with_capacity(self.bytes.len() + 64 + 2 * extra);
        out.extend_from_slice(&self.bytes);
        if let Some(suffix) = text_suffix {
            // JSON escaping works character by character, so escaping the suffix on its own
            // and dropping its quotes continues the open string correctly.
            let start = out.len();
            json_string(&mut out, suffix);
            out.pop();
            out.remove(start);
        }
        out.extend_from_slice(br#""},"at":{"atUserIds":["#);
        if let Some(id) = at_user {
            json_string(&mut out, id);
        }
        out.extend_from_slice(br#"],"isAtAll":false}}"#);
        bytes::Bytes::from(out)
    }
}

/// The JSON body of a markdown message for a sessionWebhook, @-mentioning `at_user` when
/// known.
pub fn markdown_message(title: &str, text: &str, at_user: Option<&str>) -> bytes::Bytes {
    MarkdownHead::new(title, text).finish(None, at_user)
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

    #[test]
    fn a_shared_head_finishes_into_the_same_json_as_one_message() {
        let text = "**名称** \"引号\" \\ 反斜杠\n\t制表\u{1}";
        let head = MarkdownHead::new("群信息 \"x\"", text);
        for (suffix, at) in [
            (None, None),
            (Some("\n\n@user\"1\\"), Some("user\"1\\")),
            (Some(""), Some("")),
        ] {
            let body = head.finish(suffix, at);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let whole = format!("{text}{}", suffix.unwrap_or(""));
            let at_ids: Vec<&str> = at.into_iter().collect();
            assert_eq!(
                v,
                serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": { "title": "群信息 \"x\"", "text": whole },
                    "at": { "atUserIds": at_ids, "isAtAll": false },
                })
            );
        }
    }

    fn policy() -> WebhookPolicy {
        let oapi = Url::parse("https://oapi.dingtalk.com").unwrap();
        let extra = Url::parse("http://127.0.0.1:9000").unwrap();
        WebhookPolicy::new(&oapi, [&extra], &default_paths())
    }

    fn default_paths() -> Vec<String> {
        vec![SESSION_WEBHOOK_PATH.to_string()]
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
        assert!(
            p.check(
                "http://127.0.0.1:9000/robot/sendBySession?session=a",
                None,
                now
            )
            .is_ok()
        );
        for bad in [
            "http://oapi.dingtalk.com/robot/sendBySession",
            "https://oapi.dingtalk.com:8443/robot/sendBySession",
            "https://oapi.dingtalk.com.evil.example/robot/sendBySession",
            "https://evil.example/?https://oapi.dingtalk.com",
            "https://user@oapi.dingtalk.com/robot/sendBySession",
            "http://127.0.0.1:9001/robot/sendBySession?session=a",
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
    fn unusual_spellings_are_refused_not_interpreted() {
        let p = policy();
        let now = 1_000;
        for ok in [
            "HTTPS://oapi.dingtalk.com/robot/sendBySession?session=a",
            "https://oapi.dingtalk.com/robot/sendBySession?session=a#frag",
        ] {
            assert!(p.check(ok, None, now).is_ok(), "{ok}");
        }
        for bad in [
            "https://oapi.dingtalk.com./robot/sendBySession",
            "https://oapi.dingtalk.com:443@evil.example/robot/sendBySession",
            "https://evil.example\\@oapi.dingtalk.com/robot/sendBySession",
            "https://evil.example#@oapi.dingtalk.com/robot/sendBySession",
            "https://evil.example?@oapi.dingtalk.com/",
            "https://%6fapi.dingtalk.com/robot/sendBySession",
            "https://oapi.dingtalk.com:/robot/sendBySession",
            "ftp://oapi.dingtalk.com/robot/sendBySession",
            "//oapi.dingtalk.com/robot/sendBySession",
            "/robot/sendBySession?session=a",
            "http://0x7f.1:9000/x",
            "http://2130706433:9000/x",
            "http://127.1:9000/x",
            "https://oapi.dingtalk.com /robot",
            "",
        ] {
            assert!(p.check(bad, None, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_origins_compare_with_brackets() {
        let oapi = Url::parse("https://oapi.dingtalk.com").unwrap();
        let extra = Url::parse("http://[::1]:9000").unwrap();
        let p = WebhookPolicy::new(&oapi, [&extra], &default_paths());
        let hook = "/robot/sendBySession?session=a";
        assert!(
            p.check(&format!("http://[::1]:9000{hook}"), None, 0)
                .is_ok()
        );
        assert!(
            p.check(&format!("http://[0:0::1]:9000{hook}"), None, 0)
                .is_err()
        );
        assert!(
            p.check(&format!("http://[::1]:9001{hook}"), None, 0)
                .is_err()
        );
    }

    /// Allows `http://127.0.0.1` (port 80) and `http://127.0.0.1:9000`.
    fn local_policy() -> WebhookPolicy {
        let oapi = Url::parse("http://127.0.0.1").unwrap();
        let extra = Url::parse("http://127.0.0.1:9000").unwrap();
        WebhookPolicy::new(&oapi, [&extra], &default_paths())
    }

    #[test]
    fn a_port_is_one_to_five_ascii_digits_up_to_65535() {
        let p = local_policy();
        let hook = |port: &str| format!("http://127.0.0.1{port}/robot/sendBySession?session=a");
        for ok in ["", ":80", ":00080", ":9000", ":09000"] {
            assert!(p.check(&hook(ok), None, 0).is_ok(), "{ok}");
        }
        for bad in [
            ":99999", ":65616", ":65536", ":abc", ":+80", ":-1", ":", ":0", ":00000", ":000080",
            ":+9000", ":009000", ":80a", ":0x50", ":1e3", ":8_0", ":٨٠",
        ] {
            assert!(p.check(&hook(bad), None, 0).is_err(), "{bad} was accepted");
        }
        let v6 = |port: &str| format!("http://[::1]{port}/robot/sendBySession?session=a");
        let p = WebhookPolicy::new(&Url::parse("http://[::1]").unwrap(), [], &default_paths());
        assert!(p.check(&v6(""), None, 0).is_ok());
        assert!(p.check(&v6(":80"), None, 0).is_ok());
        for bad in [":+80", ":99999", ":", ":abc"] {
            assert!(
                p.check(&v6(bad), None, 0).is_err(),
                "[::1]{bad} was accepted"
            );
        }
    }

    #[test]
    fn only_session_webhook_paths_pass() {
        let p = policy();
        for ok in [
            "https://oapi.dingtalk.com/robot/sendBySession?session=a",
            "https://oapi.dingtalk.com/robot/sendBySession?x=1&session=76da36b4&y",
        ] {
            assert!(p.check(ok, None, 0).is_ok(), "{ok}");
        }
        for bad in [
            "https://oapi.dingtalk.com/anything?x",
            "https://oapi.dingtalk.com/robot/send?access_token=attacker",
            "https://oapi.dingtalk.com/robot/send?access_token=a&session=b",
            "https://oapi.dingtalk.com/robot/sendBySession",
            "https://oapi.dingtalk.com/robot/sendBySession?",
            "https://oapi.dingtalk.com/robot/sendBySession?session=",
            "https://oapi.dingtalk.com/robot/sendBySession?session",
            "https://oapi.dingtalk.com/robot/sendBySession?sessions=a",
            "https://oapi.dingtalk.com/robot/sendBySession?x=session=a",
            "https://oapi.dingtalk.com/robot/sendBySession/?session=a",
            "https://oapi.dingtalk.com/robot/SendBySession?session=a",
            "https://oapi.dingtalk.com/robot/%73endBySession?session=a",
            "https://oapi.dingtalk.com/robot/sendBySession;x?session=a",
            "https://oapi.dingtalk.com//robot/sendBySession?session=a",
            "https://oapi.dingtalk.com/",
            "https://oapi.dingtalk.com",
            "http://127.0.0.1:9000/x",
        ] {
            assert_eq!(
                p.check(bad, None, 0),
                Err(WebhookRefusal::PathNotAllowed),
                "{bad}"
            );
        }
    }

    #[test]
    fn configured_paths_replace_the_default() {
        let oapi = Url::parse("https://oapi.dingtalk.com").unwrap();
        let paths = vec!["/robot/sendBySession".to_string(), "/v2/reply".to_string()];
        let p = WebhookPolicy::new(&oapi, [], &paths);
        assert!(
            p.check("https://oapi.dingtalk.com/v2/reply", None, 0)
                .is_ok()
        );
        assert!(
            p.check("https://oapi.dingtalk.com/v2/reply?t=1", None, 0)
                .is_ok()
        );
        assert!(
            p.check(
                "https://oapi.dingtalk.com/robot/sendBySession?session=a",
                None,
                0
            )
            .is_ok()
        );
        for bad in [
            "https://oapi.dingtalk.com/robot/sendBySession",
            "https://oapi.dingtalk.com/v2/reply/",
            "https://oapi.dingtalk.com/v2",
        ] {
            assert!(p.check(bad, None, 0).is_err(), "{bad} was accepted");
        }
        let only_custom = WebhookPolicy::new(&oapi, [], &paths[1..]);
        let hook = "https://oapi.dingtalk.com/robot/sendBySession?session=a";
        assert_eq!(
            only_custom.check(hook, None, 0),
            Err(WebhookRefusal::PathNotAllowed)
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
