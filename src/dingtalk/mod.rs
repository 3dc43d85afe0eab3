//! Everything that knows DingTalk's wire formats: callback signature, callback body,
//! reply messages, the server-API client, the reply sender and their errors. Nothing
//! outside this module (and the sandbox, which plays DingTalk) parses DingTalk JSON or
//! reads a DingTalk error code.
//!
//! Dependencies inside run one way: `client` and `sender` both build on `transport`
//! (pooled client settings, sending, the `errcode` envelope, retries) and `error`;
//! `sender` drives `reply_http`; neither `client` nor `sender` imports the other.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod inbound;
pub mod lenient;
pub mod outbound;
pub mod reply_http;
pub mod sender;
pub mod signature;
pub mod stream;
pub mod transport;

pub use crate::config::ReplyClientChoice;
pub use client::{ChatInfo, DingTalkClient};
pub use endpoint::Endpoint;
pub use error::{ApiError, ErrorKind};
pub use inbound::{Body, Callback, ConversationKind, RobotMessage};
pub use outbound::{WebhookPolicy, WebhookRefusal};
pub use reply_http::ReplyHttp;
pub use sender::{Delivery, ReplySender};
pub use signature::{SignatureError, Verified, Verifier};
pub use transport::RetryPolicy;
