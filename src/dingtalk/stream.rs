//! Stream mode's wire formats (protocol doc §7): the `connections/open` call that trades the
//! app's credentials for a one-time ticket, the frames DingTalk pushes over the WebSocket,
//! and the answers dingbot writes back. No I/O besides the one HTTP call; the connection
//! itself is `crate::stream`'s.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use super::inbound::RobotMessage;
use super::transport::USER_AGENT;

/// The topic robot messages arrive on.
pub const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// The path of the open call under `dingtalk.api_base`.
pub const OPEN_PATH: &str = "/v1.0/gateway/connections/open";

/// The `connections/open` request body.
#[derive(Debug, Serialize)]
struct OpenRequest<'a> {
    #[serde(rename = "clientId")]
    client_id: &'a str,
    #[serde(rename = "clientSecret")]
    client_secret: &'a str,
    subscriptions: [Subscription<'a>; 1],
    ua: &'a str,
}

#[derive(Debug, Serialize)]
struct Subscription<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    topic: &'a str,
}

/// The `connections/open` answer.
#[derive(Debug, Deserialize)]
struct OpenAnswer {
    endpoint: Option<String>,
    ticket: Option<String>,
}

/// A refusal's body: `{"code":"authFailed","message":"鉴权失败"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OpenRefusal {
    code: Option<String>,
    message: Option<String>,
}

/// Where to connect: the endpoint with the ticket in its query. Holds a single-use secret
/// (the ticket), so it is never logged; [`Ticket::endpoint`] is the loggable part.
#[derive(Clone)]
pub struct Ticket {
    url: Url,
    endpoint: String,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// `<endpoint>?ticket=<url-encoded ticket>`, checked: `wss`, or `ws` to a loopback host.
    pub fn new(endpoint: &str, ticket: &str) -> Result<Ticket, OpenError> {
        let bad = |why: &str| OpenError::Unusable(format!("endpoint {endpoint:?} {why}"));
        let mut url = Url::parse(endpoint).map_err(|_| bad("is not a URL"))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => return Err(bad("has no host")),
        };
        match url.scheme() {
            "wss" => {}
            "ws" if loopback => {}
            _ => return Err(bad("must be wss:// (ws:// only to a loopback host)")),
        }
        if ticket.is_empty() {
            return Err(OpenError::Unusable("the answer holds no ticket".into()));
        }
        url.set_fragment(None);
        url.query_pairs_mut().append_pair("ticket", ticket);
        Ok(Ticket {
            url,
            endpoint: endpoint.to_string(),
        })
    }

    /// The URL to connect to (it holds the ticket: do not log it).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The endpoint without the ticket.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Why `connections/open` gave no ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// DingTalk refused the credentials (HTTP 401/403 or an auth error code): asking again
    /// soon will not help.
    #[error("DingTalk refused the app credentials: {0}")]
    Refused(String),
    /// Network trouble, a timeout or a 5xx: worth retrying.
    #[error("connections/open failed: {0}")]
    Unavailable(String),
    /// An answer dingbot cannot use (no ticket, a bad endpoint).
    #[error("connections/open answered something unusable: {0}")]
    Unusable(String),
}

impl OpenError {
    /// A short label for metrics and `check`.
    pub fn kind(&self) -> &'static str {
        match self {
            OpenError::Refused(_) => "refused",
            OpenError::Unavailable(_) => "unavailable",
            OpenError::Unusable(_) => "unusable",
        }
    }
}

/// Longest piece of a refusal's text quoted in an error.
const MAX_QUOTED: usize = 200;

/// `POST {api_base}/v1.0/gateway/connections/open`: the app's credentials for a ticket.
/// The secret goes only into the request body; errors never carry it or the URL.
pub async fn open(
    http: &reqwest::Client,
    api_base: &str,
    app_key: &str,
    app_secret: &SecretString,
) -> Result<Ticket, OpenError> {
    let secret = app_secret.expose_secret();
    let body = OpenRequest {
        client_id: app_key,
        client_secret: secret,
        subscriptions: [Subscription {
            kind: "CALLBACK",
            topic: BOT_TOPIC,
        }],
        ua: USER_AGENT,
    };
    let response = http
        .post(format!("{api_base}{OPEN_PATH}"))
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|e| OpenError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| OpenError::Unavailable(e.without_url().to_string()))?;
    let scrub = |text: &str| {
        let text: String = text.chars().take(MAX_QUOTED).collect();
        if secret.is_empty() {
            text
        } else {
            text.replace(secret, "***")
        }
    };
    if !status.is_success() {
        let refusal: OpenRefusal = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = match (refusal.code, refusal.message) {
            (Some(code), Some(message)) => format!("HTTP {} {code}: {message}", status.as_u16()),
            (Some(code), None) => format!("HTTP {} {code}", status.as_u16()),
            (None, Some(message)) => format!("HTTP {}: {message}", status.as_u16()),
            (None, None) => format!("HTTP {}", status.as_u16()),
        };
        let text = scrub(&text);
        return Err(match status.as_u16() {
            400 | 401 | 403 => OpenError::Refused(text),
            _ => OpenError::Unavailable(text),
        });
    }
    let answer: OpenAnswer = serde_json::from_slice(&bytes)
        .map_err(|_| OpenError::Unusable("the answer is not the expected JSON".into()))?;
    match (answer.endpoint, answer.ticket) {
        (Some(endpoint), Some(ticket)) => Ticket::new(&endpoint, &ticket),
        _ => Err(OpenError::Unusable(
            "the answer lacks endpoint or ticket".into(),
        )),
    }
}

/// A frame as DingTalk sends it (§7.2). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHeaders {
    topic: Option<String>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
}

/// What a frame asks of dingbot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A robot message: `data` is the robot payload of §1 as a JSON string.
    BotMessage {
        /// The frame's id, echoed in the ACK.
        message_id: String,
        /// The robot payload (JSON text).
        data: String,
    },
    /// `SYSTEM ping`: answer with the same id and `data`.
    Ping {
        /// The frame's id.
        message_id: String,
        /// The opaque payload to echo.
        data: String,
    },
    /// `SYSTEM disconnect`: this connection is going away; open a new one.
    Disconnect {
        /// The frame's id.
        message_id: String,
        /// DingTalk's stated reason, if any.
        reason: Option<String>,
    },
    /// A type or topic dingbot does not handle: answered 404.
    Unsupported {
        /// The frame's id.
        message_id: String,
        /// `type` (`EVENT`, `CALLBACK`, `SYSTEM`, …).
        kind: String,
        /// `headers.topic`.
        topic: String,
    },
}

impl Frame {
    /// The frame's `messageId`.
    pub fn message_id(&self) -> &str {
        match self {
            Frame::BotMessage { message_id, .. }
            | Frame::Ping { message_id, .. }
            | Frame::Disconnect { message_id, .. }
            | Frame::Unsupported { message_id, .. } => message_id,
        }
    }

    /// A short label for metrics: `callback`, `ping`, `disconnect`, `unsupported`.
    pub fn label(&self) -> &'static str {
        match self {
            Frame::BotMessage { .. } => "callback",
            Frame::Ping { .. } => "ping",
            Frame::Disconnect { .. } => "disconnect",
            Frame::Unsupported { .. } => "unsupported",
        }
    }
}

/// Why a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON, or not an object with a string `type`.
    #[error("not a Stream frame ({0})")]
    NotAFrame(String),
    /// No `headers.messageId` (nothing to answer to).
    #[error("frame without messageId")]
    NoMessageId,
}

/// Longest `messageId` accepted (DingTalk's are about 40 characters).
const MAX_MESSAGE_ID: usize = 256;

/// Reads one text frame. Never panics, whatever the input.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
        FrameError::NotAFrame(match e.classify() {
            serde_json::error::Category::Data => "missing or mistyped field".into(),
            _ => format!("invalid JSON at column {}", e.column()),
        })
    })?;
    let message_id = raw
        .headers
        .message_id
        .filter(|id| !id.is_empty() && id.len() <= MAX_MESSAGE_ID)
        .ok_or(FrameError::NoMessageId)?;
    let topic = raw.headers.topic.unwrap_or_default();
    let data = raw.data.unwrap_or_default();
    Ok(match (raw.kind.as_str(), topic.as_str()) {
        ("CALLBACK", BOT_TOPIC) => Frame::BotMessage { message_id, data },
        ("SYSTEM", "ping") => Frame::Ping { message_id, data },
        ("SYSTEM", "disconnect") => {
            #[derive(Deserialize)]
            struct Reason {
                reason: Option<String>,
            }
            let reason = serde_json::from_str::<Reason>(&data)
                .ok()
                .and_then(|r| r.reason);
            Frame::Disconnect { message_id, reason }
        }
        _ => Frame::Unsupported {
            message_id,
            kind: raw.kind,
            topic,
        },
    })
}

/// The robot payload inside a [`Frame::BotMessage`]'s `data`.
pub fn robot_message(data: &str) -> Result<RobotMessage, String> {
    serde_json::from_str(data).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            format!(
                "a field is missing or has the wrong type (column {})",
                e.column()
            )
        }
        _ => format!("data is not JSON (column {})", e.column()),
    })
}

/// The ACK dingbot writes back (§7.3).
#[derive(Debug, Serialize)]
struct Answer<'a> {
    code: u16,
    headers: AnswerHeaders<'a>,
    message: &'a str,
    data: &'a str,
}

#[derive(Debug, Serialize)]
struct AnswerHeaders<'a> {
    #[serde(rename = "contentType")]
    content_type: &'a str,
    #[serde(rename = "messageId")]
    message_id: &'a str,
}

fn answer(code: u16, message_id: &str, message: &str, data: &str) -> String {
    let answer = Answer {
        code,
        headers: AnswerHeaders {
            content_type: "application/json",
            message_id,
        },
        message,
        data,
    };
    // Serializing string fields into a String cannot fail.
    serde_json::to_string(&answer).unwrap_or_default()
}

/// `200 OK` for a robot message, sent before the work: robot messages need no result.
pub fn ack(message_id: &str) -> String {
    answer(200, message_id, "OK", r#"{"response":null}"#)
}

/// The answer to a `ping`: same id, same `data`.
pub fn pong(message_id: &str, data: &str) -> String {
    answer(200, message_id, "OK", data)
}

/// `404` for a type or topic dingbot does not subscribe to.
pub fn not_supported(message_id: &str) -> String {
    answer(
        404,
        message_id,
        "topic not supported",
        r#"{"response":null}"#,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames DingTalk sends, for these tests (the sandbox builds its own).
    mod frames {
        use serde_json::json;

        use super::BOT_TOPIC;

        /// Milliseconds since the epoch, as the string DingTalk puts in `headers.time`.
        fn now_ms() -> String {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
                .to_string()
        }

        /// A `CALLBACK` frame carrying `payload` (the robot message) as a JSON string.
        pub fn bot_message(message_id: &str, payload: &str) -> String {
            json!({
                "specVersion": "1.0",
                "type": "CALLBACK",
                "headers": {
                    "appId": "sandbox",
                    "connectionId": "sandbox",
                    "contentType": "application/json",
                    "messageId": message_id,
                    "time": now_ms(),
                    "topic": BOT_TOPIC,
                },
                "data": payload,
            })
            .to_string()
        }

        /// A `SYSTEM` frame with `topic` and `data`.
        pub fn system(message_id: &str, topic: &str, data: &str) -> String {
            json!({
                "specVersion": "1.0",
                "type": "SYSTEM",
                "headers": {
                    "contentType": "application/json",
                    "messageId": message_id,
                    "time": now_ms(),
                    "topic": topic,
                },
                "data": data,
            })
            .to_string()
        }
    }

    #[test]
    fn a_bot_frame_is_read_and_acked_with_its_id() {
        let text = frames::bot_message("m-1", r#"{"msgId":"x"}"#);
        let frame = parse_frame(&text).unwrap();
        assert_eq!(
            frame,
            Frame::BotMessage {
                message_id: "m-1".into(),
                data: r#"{"msgId":"x"}"#.into()
            }
        );
        let ack: serde_json::Value = serde_json::from_str(&ack("m-1")).unwrap();
        assert_eq!(
            ack,
            serde_json::json!({"code":200,"headers":{"contentType":"application/json","messageId":"m-1"},
                "message":"OK","data":"{\"response\":null}"})
        );
    }

    #[test]
    fn ping_disconnect_and_unknown_topics() {
        let ping = frames::system("p", "ping", r#"{"opaque":"abc"}"#);
        assert_eq!(
            parse_frame(&ping).unwrap(),
            Frame::Ping {
                message_id: "p".into(),
                data: r#"{"opaque":"abc"}"#.into()
            }
        );
        let pong: serde_json::Value =
            serde_json::from_str(&pong("p", r#"{"opaque":"abc"}"#)).unwrap();
        assert_eq!(pong["data"], r#"{"opaque":"abc"}"#);
        assert_eq!(pong["headers"]["messageId"], "p");
        let bye = frames::system("d", "disconnect", r#"{"reason":"connection is expired"}"#);
        assert_eq!(
            parse_frame(&bye).unwrap(),
            Frame::Disconnect {
                message_id: "d".into(),
                reason: Some("connection is expired".into())
            }
        );
        let event = r#"{"type":"EVENT","headers":{"messageId":"e","topic":"*"},"data":"{}"}"#;
        assert_eq!(parse_frame(event).unwrap().label(), "unsupported");
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(matches!(parse_frame("nope"), Err(FrameError::NotAFrame(_))));
        assert!(matches!(parse_frame("[1]"), Err(FrameError::NotAFrame(_))));
        assert_eq!(
            parse_frame(r#"{"type":"CALLBACK","headers":{}}"#),
            Err(FrameError::NoMessageId)
        );
        assert!(robot_message("not json").is_err());
    }

    #[test]
    fn endpoints_are_wss_or_loopback_ws() {
        let t = Ticket::new("wss://gw.example.com/connect", "a b&c").unwrap();
        assert_eq!(
            t.url().as_str(),
            "wss://gw.example.com/connect?ticket=a+b%26c"
        );
        assert!(Ticket::new("ws://127.0.0.1:9/connect", "t").is_ok());
        assert!(Ticket::new("ws://gw.example.com/connect", "t").is_err());
        assert!(Ticket::new("https://gw.example.com/connect", "t").is_err());
        assert!(format!("{t:?}").contains("gw.example.com"));
        assert!(!format!("{t:?}").contains("ticket="));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,300}") {
            let _ = parse_frame(&text);
            let _ = robot_message(&text);
        }

        #[test]
        fn any_bot_frame_round_trips(id in "[A-Za-z0-9_]{1,64}", data in ".{0,200}") {
            let frame = parse_frame(&frames::bot_message(&id, &data)).unwrap();
            proptest::prop_assert_eq!(frame, Frame::BotMessage { message_id: id, data });
        }
    }
}
