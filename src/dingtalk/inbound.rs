//! The robot callback body DingTalk POSTs to us, parsed tolerantly.
//!
//! Every field is optional or defaulted and unknown fields are ignored, so new DingTalk
//! fields or message types never fail a request. Required-ness is decided by
//! [`RobotMessage::validate`], which returns a [`Callback`] holding only what dingbot uses.

use serde::Deserialize;

/// The callback body as DingTalk sends it (protocol doc §1.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RobotMessage {
    /// `text`, `richText`, `picture`, … (an open set).
    pub msgtype: Option<String>,
    /// Present for `text`. Kept as raw JSON so an odd shape never fails the request.
    pub text: Option<serde_json::Value>,
    /// Present for non-text types; only `richText` is looked into. Raw JSON for the same
    /// reason: a future message type may put anything here.
    pub content: Option<serde_json::Value>,
    /// Encrypted message id, the dedupe key.
    pub msg_id: Option<String>,
    /// `"1"` one-to-one, `"2"` group.
    pub conversation_type: Option<String>,
    /// The group's openConversationId (`cid…`).
    pub conversation_id: Option<String>,
    /// The group's name (groups only).
    pub conversation_title: Option<String>,
    /// Display name of the sender.
    pub sender_nick: Option<String>,
    /// The sender's userid (absent for external users).
    pub sender_staff_id: Option<String>,
    /// "是否为管理员" – meaning unconfirmed; only used as a hint.
    pub is_admin: Option<bool>,
    /// Where to POST the reply.
    pub session_webhook: Option<String>,
    /// When `session_webhook` stops working, ms since the epoch.
    pub session_webhook_expired_time: Option<i64>,
    /// When the message was written, ms since the epoch.
    pub create_at: Option<i64>,
    /// The robot's code (newer payloads).
    pub robot_code: Option<String>,
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
    pub fn validate(self) -> Result<Callback, InvalidCallback> {
        let msg_id = required(self.msg_id, "msgId")?;
        let conversation_id = required(self.conversation_id, "conversationId")?;
        let kind = match self.conversation_type.as_deref() {
            Some("1") => ConversationKind::OneToOne,
            Some("2") => ConversationKind::Group,
            None => return Err(InvalidCallback::Missing("conversationType")),
            Some(_) => return Err(InvalidCallback::Invalid("conversationType")),
        };
        let session_webhook = self
            .session_webhook
            .filter(|s| !s.is_empty())
            .ok_or(InvalidCallback::Missing("sessionWebhook"))?;
        let msgtype = self.msgtype.unwrap_or_default();
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
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item.get("text").and_then(|t| t.as_str()))
                            .collect::<String>()
                    })
                    .unwrap_or_default(),
            ),
            _ => Body::Other(msgtype),
        };
        Ok(Callback {
            msg_id,
            kind,
            conversation_id,
            conversation_title: self.conversation_title.filter(|t| !t.is_empty()),
            sender_nick: self.sender_nick.unwrap_or_default(),
            sender_staff_id: self.sender_staff_id.filter(|s| !s.is_empty()),
            is_admin: self.is_admin.unwrap_or(false),
            session_webhook,
            session_webhook_expired_time: self.session_webhook_expired_time,
            body,
        })
    }
}

fn required(v: Option<String>, name: &'static str) -> Result<String, InvalidCallback> {
    match v {
        None => Err(InvalidCallback::Missing(name)),
        Some(s) if s.is_empty() => Err(InvalidCallback::Missing(name)),
        Some(s) if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) => {
            Err(InvalidCallback::Invalid(name))
        }
        Some(s) => Ok(s),
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

    #[test]
    fn rich_text_uses_text_segments_only() {
        let cb = parse(
            r#"{"msgId":"m","conversationId":"cid","conversationType":"2","sessionWebhook":"https://x/y",
            "msgtype":"richText","content":{"richText":[{"text":"/in"},{"text":"fo"},{"downloadCode":"d","type":"picture"}]}}"#,
        )
        .unwrap();
        assert_eq!(cb.body, Body::Text("/info".into()));
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
            parse(
                r#"{"msgId":"m","conversationId":"c","conversationType":"3","sessionWebhook":"u"}"#
            )
            .unwrap_err(),
            InvalidCallback::Invalid("conversationType")
        );
    }
}
