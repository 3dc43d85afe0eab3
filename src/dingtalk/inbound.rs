//! The robot callback body DingTalk POSTs to us, parsed tolerantly.
//!
//! Every field is optional or defaulted and unknown fields are ignored, so new DingTalk
//! fields or message types never fail a request. Required-ness is decided by
//! [`RobotMessage::validate`], which returns a [`Callback`] holding only what dingbot uses.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::lenient;
use crate::telemetry;

/// A callback field as it arrived: absent (or `null`), a usable value, or a value of a
/// shape dingbot cannot use. An odd value never fails the body; [`RobotMessage::validate`]
/// decides whether the field is needed (then the callback is invalid) or not (then it is
/// ignored, logged at debug level and counted in `dingbot_callback_odd_fields_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Loose<T> {
    /// Not sent, or `null`.
    #[default]
    Absent,
    /// A usable value.
    Value(T),
    /// Sent, but in a shape dingbot cannot use (a number where text belongs, an object …).
    Odd,
}

impl<T> Loose<T> {
    /// The value, if usable.
    pub fn value(self) -> Option<T> {
        match self {
            Loose::Value(v) => Some(v),
            Loose::Absent | Loose::Odd => None,
        }
    }
}

/// A type a [`Loose`] field can hold: how it is read from whatever JSON value arrived.
pub trait FromLoose: Sized {
    /// `Absent` for "no value" (e.g. `""` for a number), `Odd` for an unusable shape.
    fn from_loose(v: Value) -> Loose<Self>;
}

impl FromLoose for String {
    fn from_loose(v: Value) -> Loose<String> {
        match v {
            Value::String(s) => Loose::Value(s),
            // Ids are strings; a sender writing them as numbers means the same id.
            Value::Number(n) => Loose::Value(n.to_string()),
            _ => Loose::Odd,
        }
    }
}

impl FromLoose for bool {
    fn from_loose(v: Value) -> Loose<bool> {
        match v {
            Value::Bool(b) => Loose::Value(b),
            Value::String(s) if s == "true" => Loose::Value(true),
            Value::String(s) if s == "false" => Loose::Value(false),
            _ => Loose::Odd,
        }
    }
}

impl FromLoose for i64 {
    fn from_loose(v: Value) -> Loose<i64> {
        match lenient::number::<_, i64>(v) {
            Ok(Some(n)) => Loose::Value(n),
            Ok(None) => Loose::Absent,
            Err(_) => Loose::Odd,
        }
    }
}

impl<'de, T: FromLoose> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Any well-formed JSON value is accepted here; only broken JSON fails the body.
        Ok(match Value::deserialize(d)? {
            Value::Null => Loose::Absent,
            v => T::from_loose(v),
        })
    }
}

/// The callback body as DingTalk sends it (protocol doc §1.1).
///
/// Every field is [`Loose`]: a field of an unexpected type never fails the request
/// (DingTalk does not redeliver robot messages, so a refused callback is a lost command).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(remote = "Self", default, rename_all = "camelCase")]
pub struct RobotMessage {
    /// `text`, `richText`, `picture`, … (an open set).
    pub msgtype: Loose<String>,
    /// Present for `text`. Kept as raw JSON so an odd shape never fails the request.
    pub text: Option<Value>,
    /// Present for non-text types; only `richText` is looked into. Raw JSON for the same
    /// reason: a future message type may put anything here.
    pub content: Option<Value>,
    /// Encrypted message id, the dedupe key.
    pub msg_id: Loose<String>,
    /// `"1"` one-to-one, `"2"` group (a number is read the same way).
    pub conversation_type: Loose<String>,
    /// The group's openConversationId (`cid…`).
    pub conversation_id: Loose<String>,
    /// The group's name (groups only).
    pub conversation_title: Loose<String>,
    /// Display name of the sender.
    pub sender_nick: Loose<String>,
    /// The sender's userid (absent for external users).
    pub sender_staff_id: Loose<String>,
    /// "是否为管理员" – meaning unconfirmed; only used as a hint.
    pub is_admin: Loose<bool>,
    /// Where to POST the reply.
    pub session_webhook: Loose<String>,
    /// When `session_webhook` stops working: ms since the epoch in every sample; a number
    /// or a decimal string; a value below [`SECONDS_BELOW`] is read as seconds.
    pub session_webhook_expired_time: Loose<i64>,
    /// When the message was written, ms since the epoch; a String in DingTalk's field
    /// table, a number in every example. Not used by dingbot.
    pub create_at: Loose<i64>,
    /// The robot's code (newer payloads): the robot send APIs' `robotCode` when the reply
    /// falls back to them.
    pub robot_code: Loose<String>,
}

impl<'de> Deserialize<'de> for RobotMessage {
    /// Only a JSON object is a callback body (the derived code alone would also take an
    /// array, field by field, now that every field takes any value).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = RobotMessage;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RobotMessage, A::Error> {
                RobotMessage::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object)
    }
}

/// An epoch time below this is in seconds, not milliseconds: 10^11 ms is March 1973,
/// 10^11 s is the year 5138.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// An epoch time in ms, whether it was given in ms or in seconds.
pub fn epoch_ms(t: i64) -> i64 {
    if (0..SECONDS_BELOW).contains(&t) {
        t.saturating_mul(1000)
    } else {
        t
    }
}

/// Kind of conversation a callback came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationKind {
    /// `"1"`
    OneToOne,
    /// `"2"`
    Group,
}

/// What the user wrote, as far as a command robot cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Text (from `text` or the text segments of `richText`).
    Text(String),
    /// Any other message type (picture, audio, unknown, …).
    Other(String),
}

/// A callback with every field dingbot needs present and well-formed.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Dedupe key.
    pub msg_id: String,
    /// Group or 1:1.
    pub kind: ConversationKind,
    /// openConversationId.
    pub conversation_id: String,
    /// Group name from the callback, if any.
    pub conversation_title: Option<String>,
    /// Sender's display name.
    pub sender_nick: String,
    /// Sender's userid, used to @-mention them in the reply.
    pub sender_staff_id: Option<String>,
    /// Whether DingTalk flagged the sender as admin.
    pub is_admin: bool,
    /// Reply URL (already checked against the allow-list by the caller).
    pub session_webhook: String,
    /// Expiry of `session_webhook`, ms since the epoch.
    pub session_webhook_expired_time: Option<i64>,
    /// The robot's code, when the callback carries one (`robotCode`).
    pub robot_code: Option<String>,
    /// The message.
    pub body: Body,
}

/// Why a verified callback body cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCallback {
    /// A field dingbot cannot work without is absent or empty.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has a value outside its documented set.
    #[error("invalid field `{0}`")]
    Invalid(&'static str),
}

/// Longest id we accept (DingTalk's are well under 100 characters).
const MAX_ID_LEN: usize = 256;

impl RobotMessage {
    /// Checks required fields and extracts the message text.
    ///
    /// Only what dingbot cannot work without fails: `msgId`, `conversationId`,
    /// `sessionWebhook`. Any other field of an odd shape is ignored, logged at debug level
    /// (by name, never by value) and counted; a `conversationType` other than `"1"`/`"2"`
    /// is read from what else the body says (only groups carry a `conversationTitle`).
    pub fn validate(self) -> Result<Callback, InvalidCallback> {
        let msg_id = required(self.msg_id, "msgId")?;
        let conversation_id = required(self.conversation_id, "conversationId")?;
        let session_webhook = match self.session_webhook {
            Loose::Value(s) if !s.is_empty() => s,
            Loose::Odd => return Err(InvalidCallback::Invalid("sessionWebhook")),
            _ => return Err(InvalidCallback::Missing("sessionWebhook")),
        };
        let conversation_title =
            optional(self.conversation_title, "conversationTitle").filter(|t| !t.is_empty());
        let kind = match self.conversation_type {
            Loose::Value(t) if t == "1" => ConversationKind::OneToOne,
            Loose::Value(t) if t == "2" => ConversationKind::Group,
            other => {
                if !matches!(other, Loose::Absent) {
                    odd_field("conversationType");
                }
                if conversation_title.is_some() {
                    ConversationKind::Group
                } else {
                    ConversationKind::OneToOne
                }
            }
        };
        let session_webhook_expired_time = optional(
            self.session_webhook_expired_time,
            "sessionWebhookExpiredTime",
        )
        .map(epoch_ms);
        // Not used, but a shape dingbot would not expect is worth knowing about.
        let _ = optional(self.create_at, "createAt");
        let robot_code = optional(self.robot_code, "robotCode").filter(|s| !s.is_empty());
        let msgtype = optional(self.msgtype, "msgtype").unwrap_or_default();
        let body = match msgtype.as_str() {
            "text" => Body::Text(
                self.text
                    .as_ref()
                    .and_then(|t| t.get("content"))
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
            ),
            "richText" => Body::Text(
                self.content
                    .as_ref()
                    .and_then(|c| c.get("richText"))
                    .and_then(|r| r.as_array())
                    .map(|items| rich_text_lines(items))
                    .unwrap_or_default(),
            ),
            _ => Body::Other(msgtype),
        };
        Ok(Callback {
            msg_id,
            kind,
            conversation_id,
            conversation_title,
            sender_nick: optional(self.sender_nick, "senderNick").unwrap_or_default(),
            sender_staff_id: optional(self.sender_staff_id, "senderStaffId")
                .filter(|s| !s.is_empty()),
            is_admin: optional(self.is_admin, "isAdmin").unwrap_or(false),
            session_webhook,
            session_webhook_expired_time,
            robot_code,
            body,
        })
    }
}

/// The text segments of a `richText` message, one line each. DingTalk's own example puts
/// every line in a segment of its own with no `"\n"` segment between them, so segments
/// are never glued together (`/info`, a picture, `谢谢` is not `/info谢谢`); segments that
/// are themselves `"\n"` (seen in captures) only add empty lines.
fn rich_text_lines(items: &[Value]) -> String {
    let mut text = String::new();
    for segment in items
        .iter()
        .filter_map(|item| item.get("text").and_then(Value::as_str))
    {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(segment);
    }
    text
}

/// A field dingbot can do without: its value, or None (counted) when its shape is odd.
fn optional<T>(v: Loose<T>, name: &'static str) -> Option<T> {
    match v {
        Loose::Value(v) => Some(v),
        Loose::Absent => None,
        Loose::Odd => {
            odd_field(name);
            None
        }
    }
}

/// Notes a field that arrived in a shape dingbot does not use. The value is not logged:
/// it is the sender's to choose.
fn odd_field(name: &'static str) {
    tracing::debug!(
        field = name,
        "callback field has an unexpected shape; ignored"
    );
    telemetry::odd_callback_field(name);
}

fn required(v: Loose<String>, name: &'static str) -> Result<String, InvalidCallback> {
    match v {
        Loose::Absent => Err(InvalidCallback::Missing(name)),
        Loose::Odd => Err(InvalidCallback::Invalid(name)),
        Loose::Value(s) if s.is_empty() => Err(InvalidCallback::Missing(name)),
        Loose::Value(s) if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) => {
            Err(InvalidCallback::Invalid(name))
        }
        Loose::Value(s) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Callback, InvalidCallback> {
        serde_json::from_str::<RobotMessage>(json)
            .unwrap()
            .validate()
    }

    const HEAD: &str = r#""msgId":"m","conversationId":"cid","conversationType":"2","sessionWebhook":"https://x/y""#;

    fn with_head(rest: &str) -> Result<Callback, InvalidCallback> {
        parse(&format!("{{{HEAD},{rest}}}"))
    }

    #[test]
    fn rich_text_segments_are_lines() {
        // DingTalk's official example: one segment per line, no "\n" segments.
        let cb = with_head(
            r#""msgtype":"richText","content":{"richText":[{"text":"/info"},
            {"downloadCode":"d","type":"picture"},{"text":"谢谢"}]}"#,
        )
        .unwrap();
        assert_eq!(cb.body, Body::Text("/info\n谢谢".into()));
        // The captured variant with "\n" segments only gains empty lines.
        let cb = with_head(
            r#""msgtype":"richText","content":{"richText":[{"text":"/bind"},{"text":"\n"},
            {"text":"chat0001"}]}"#,
        )
        .unwrap();
        assert_eq!(cb.body, Body::Text("/bind\n\n\nchat0001".into()));
    }

    #[test]
    fn times_as_strings_or_seconds_are_read() {
        let cb =
            with_head(r#""createAt":"1690362101894","sessionWebhookExpiredTime":"1690367502152""#)
                .unwrap();
        assert_eq!(cb.session_webhook_expired_time, Some(1_690_367_502_152));
        // Seconds: below 10^11, multiplied to ms (not "expired in 1970").
        let cb = with_head(r#""sessionWebhookExpiredTime":"1690367502""#).unwrap();
        assert_eq!(cb.session_webhook_expired_time, Some(1_690_367_502_000));
        let cb = with_head(r#""sessionWebhookExpiredTime":1690367502"#).unwrap();
        assert_eq!(cb.session_webhook_expired_time, Some(1_690_367_502_000));
        assert_eq!(epoch_ms(99_999_999_999), 99_999_999_999_000);
        assert_eq!(epoch_ms(100_000_000_000), 100_000_000_000);
    }

    #[test]
    fn fields_dingbot_does_without_never_fail_the_body() {
        let cb = with_head(
            r#""msgtype":"text","text":{"content":"/info"},"createAt":{"odd":true},
            "sessionWebhookExpiredTime":"soon","isAdmin":"maybe","senderNick":["x"],
            "senderStaffId":42,"conversationTitle":7,"robotCode":false"#,
        )
        .unwrap();
        assert_eq!(cb.body, Body::Text("/info".into()));
        assert_eq!(cb.session_webhook_expired_time, None);
        assert!(!cb.is_admin);
        assert_eq!(cb.sender_nick, "");
        assert_eq!(cb.sender_staff_id.as_deref(), Some("42"));
        assert_eq!(cb.conversation_title.as_deref(), Some("7"));
    }

    #[test]
    fn an_unknown_conversation_type_is_inferred() {
        let body = |t: &str, title: &str| {
            format!(
                r#"{{"msgId":"m","conversationId":"cid","sessionWebhook":"u",{t}{title}"msgtype":"text"}}"#
            )
        };
        for t in [r#""conversationType":"3","#, r#""conversationType":2,"#, ""] {
            let cb = parse(&body(t, r#""conversationTitle":"群","#)).unwrap();
            assert_eq!(cb.kind, ConversationKind::Group, "{t}");
        }
        for t in [
            r#""conversationType":"3","#,
            r#""conversationType":{},"#,
            "",
        ] {
            let cb = parse(&body(t, "")).unwrap();
            assert_eq!(cb.kind, ConversationKind::OneToOne, "{t}");
        }
        let cb = parse(&body(
            r#""conversationType":1,"#,
            r#""conversationTitle":"群","#,
        ))
        .unwrap();
        assert_eq!(cb.kind, ConversationKind::OneToOne);
    }

    #[test]
    fn only_an_object_is_a_callback() {
        for json in [r#"[{"msgId":"m"}]"#, r#""text""#, "1", "null"] {
            assert!(
                serde_json::from_str::<RobotMessage>(json).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_types_are_tolerated() {
        let cb = parse(
            r#"{"msgId":"m","conversationId":"cid","conversationType":"2","sessionWebhook":"https://x/y",
            "msgtype":"hologram","content":{"whatever":[1,2]},"brandNewField":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(cb.body, Body::Other("hologram".into()));
    }

    #[test]
    fn missing_required_fields_are_named() {
        assert_eq!(
            parse(r#"{"conversationId":"c","conversationType":"2","sessionWebhook":"u"}"#)
                .unwrap_err(),
            InvalidCallback::Missing("msgId")
        );
        assert_eq!(
            parse(r#"{"msgId":{"a":1},"conversationId":"c","sessionWebhook":"u"}"#).unwrap_err(),
            InvalidCallback::Invalid("msgId")
        );
        assert_eq!(
            parse(r#"{"msgId":"m","conversationId":"c","sessionWebhook":[]}"#).unwrap_err(),
            InvalidCallback::Invalid("sessionWebhook")
        );
        assert_eq!(
            parse(r#"{"msgId":"m","conversationId":"c","sessionWebhook":""}"#).unwrap_err(),
            InvalidCallback::Missing("sessionWebhook")
        );
    }
}
