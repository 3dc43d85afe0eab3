//! Everything that knows DingTalk's wire formats: callback signature, callback body,
//! reply messages, server-API client and its errors. Nothing outside this module parses
//! DingTalk JSON.

pub mod client;
pub mod error;
pub mod inbound;
pub mod lenient;
pub mod outbound;
pub mod reply_http;
pub mod signature;

pub use client::{ChatInfo, DingTalkClient, RetryPolicy};
pub use error::ApiError;
pub use inbound::{Body, Callback, ConversationKind, RobotMessage};
pub use outbound::{WebhookPolicy, WebhookRefusal};
pub use reply_http::{ReplyClientChoice, ReplyHttp};
pub use signature::{SignatureError, Verified, Verifier};
