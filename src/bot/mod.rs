//! The robot's behaviour: which reply a verified callback gets.
//!
//! [`Bot::respond`] turns a [`Callback`] into a [`Rendered`] reply; it calls DingTalk
//! through [`DingTalkClient`] but knows nothing about HTTP servers, signatures or limits.
//! Every failure becomes a specific reply, never a raw error code alone.

pub mod command;
pub mod groups;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::dingtalk::{ApiError, Body, Callback, ChatInfo, ConversationKind, DingTalkClient};
use crate::render::{Rendered, Renderer, Template};
use crate::telemetry;
pub use command::Command;
pub use groups::GroupDirectory;

/// The robot.
pub struct Bot {
    /// DingTalk API client (token cache inside).
    client: Arc<DingTalkClient>,
    /// Reply templates.
    renderer: Renderer,
    /// conversationId → chatid.
    groups: Arc<GroupDirectory>,
    /// Longest time `/info` may spend on DingTalk before answering "slow".
    lookup_deadline: Duration,
    /// chatid → group info, shared by concurrent lookups (single flight); None = disabled.
    info_cache: Option<moka::future::Cache<String, Arc<ChatInfo>>>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").finish_non_exhaustive()
    }
}

/// Context of `info.md.j2`.
#[derive(Debug, Serialize)]
struct InfoView<'a> {
    name: &'a str,
    owner: &'a str,
    member_count: usize,
    dissolved: bool,
    muted: Option<bool>,
    searchable: Option<bool>,
    join_needs_approval: Option<bool>,
    mention_all_admins_only: Option<bool>,
    management_admins_only: Option<bool>,
    new_members_see_history: Option<bool>,
}

impl<'a> InfoView<'a> {
    fn from_chat(c: &'a ChatInfo) -> InfoView<'a> {
        let flag = |v: Option<i64>| v.map(|v| v == 1);
        InfoView {
            name: &c.name,
            owner: &c.owner,
            member_count: c.useridlist.len(),
            dissolved: c.status == Some(2),
            muted: flag(c.chat_banned_type),
            searchable: flag(c.searchable),
            join_needs_approval: flag(c.validation_type),
            mention_all_admins_only: flag(c.mention_all_authority),
            management_admins_only: flag(c.management_type),
            new_members_see_history: flag(c.show_history_type),
        }
    }
}

/// Context of `info_error.md.j2`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorView {
    /// `no_permission`, `bad_chatid`, `missing_chatid`, `bad_token`, `token_failed`,
    /// `corp_missing`, `busy`, `slow`, `unavailable`, `other`.
    pub kind: &'static str,
    /// DingTalk's errcode, when there is one.
    pub errcode: Option<i64>,
    /// DingTalk's message for `other`.
    pub errmsg: Option<String>,
    /// The permission scope DingTalk named, if any.
    pub scope: Option<String>,
}

impl ErrorView {
    /// Classifies an API failure for the user.
    pub fn from_api(e: &ApiError) -> ErrorView {
        let mut view = ErrorView {
            kind: "other",
            errcode: None,
            errmsg: None,
            scope: None,
        };
        match e {
            ApiError::DingTalk {
                endpoint,
                errcode,
                errmsg,
                ..
            } => {
                view.errcode = Some(*errcode);
                view.kind = match errcode {
                    _ if *endpoint == "gettoken" && *errcode != -1 => "token_failed",
                    43007 | 88 => "no_permission",
                    40016 => "bad_chatid",
                    49000 => "missing_chatid",
                    40001 | 40014 | 42001 => "bad_token",
                    70001 => "corp_missing",
                    c if crate::dingtalk::error::TRANSIENT_ERRCODES.contains(c) => "busy",
                    _ => {
                        view.errmsg = Some(errmsg.chars().take(100).collect());
                        "other"
                    }
                };
                if view.kind == "no_permission" {
                    view.scope = Some("qyapi_chat_read".into());
                }
            }
            ApiError::Http {
                endpoint,
                status,
                required_scopes,
                ..
            } => {
                view.kind = if e.is_permission_denied() {
                    view.scope = required_scopes.first().cloned();
                    "no_permission"
                } else if e.is_invalid_token() {
                    "bad_token"
                } else if *endpoint == "gettoken" {
                    "token_failed"
                } else if *status >= 500 || *status == 429 {
                    "busy"
                } else {
                    "other"
                };
            }
            ApiError::Transport { timeout: true, .. } => view.kind = "slow",
            ApiError::Transport { .. } | ApiError::BadBody { .. } => view.kind = "unavailable",
        }
        view
    }
}

impl Bot {
    /// A bot answering with `renderer`, looking groups up through `client`.
    /// `info_ttl` of zero disables the group-info cache.
    pub fn new(
        client: Arc<DingTalkClient>,
        renderer: Renderer,
        groups: Arc<GroupDirectory>,
        lookup_deadline: Duration,
        info_ttl: Duration,
    ) -> Bot {
        let info_cache = (!info_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(info_ttl)
                .build()
        });
        Bot {
            client,
            renderer,
            groups,
            lookup_deadline,
            info_cache,
        }
    }

    /// Group info for `chatid`: from the cache, or one `chat/get` shared by every
    /// concurrent caller. Failures are not cached.
    async fn chat_info(&self, chatid: &str) -> Result<Arc<ChatInfo>, ApiError> {
        let Some(cache) = &self.info_cache else {
            return self.client.chat_get(chatid).await.map(Arc::new);
        };
        if let Some(hit) = cache.get(chatid).await {
            telemetry::cache("group_info", true);
            return Ok(hit);
        }
        telemetry::cache("group_info", false);
        cache
            .try_get_with_by_ref(chatid, async {
                self.client.chat_get(chatid).await.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// The renderer (the HTTP layer renders the slow-down notice with it).
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The reply for a verified, accepted callback.
    pub async fn respond(&self, cb: &Callback) -> Rendered {
        let text = match &cb.body {
            Body::Text(t) => t,
            Body::Other(kind) => {
                tracing::debug!(msgtype = %kind, "non-text message");
                telemetry::command("not_text");
                return self.renderer.render(Template::NotText, &());
            }
        };
        let command = command::parse(text);
        telemetry::command(command.name());
        tracing::info!(command = command.name(), "command");
        match command {
            Command::Help => self.help(None),
            Command::Unknown(word) => self.help(Some(&word)),
            Command::Info => match cb.kind {
                ConversationKind::OneToOne => self.renderer.render(Template::PrivateOnly, &()),
                ConversationKind::Group => self.info(cb).await,
            },
        }
    }

    fn help(&self, unknown: Option<&str>) -> Rendered {
        #[derive(Serialize)]
        struct HelpView<'a> {
            unknown: Option<&'a str>,
        }
        self.renderer.render(Template::Help, &HelpView { unknown })
    }

    async fn info(&self, cb: &Callback) -> Rendered {
        let Some(chatid) = self
            .groups
            .chatid_for(&cb.conversation_id, &self.client)
            .await
        else {
            #[derive(Serialize)]
            struct UnboundView<'a> {
                title: Option<&'a str>,
                conversation_id: &'a str,
            }
            return self.renderer.render(
                Template::Unbound,
                &UnboundView {
                    title: cb.conversation_title.as_deref(),
                    conversation_id: &cb.conversation_id,
                },
            );
        };
        let lookup = tokio::time::timeout(self.lookup_deadline, self.chat_info(&chatid));
        match lookup.await {
            Ok(Ok(chat)) => self
                .renderer
                .render(Template::Info, &InfoView::from_chat(&chat)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "group lookup failed");
                self.renderer
                    .render(Template::InfoError, &ErrorView::from_api(&e))
            }
            Err(_) => {
                tracing::warn!("group lookup hit its deadline");
                let view = ErrorView {
                    kind: "slow",
                    errcode: None,
                    errmsg: None,
                    scope: None,
                };
                self.renderer.render(Template::InfoError, &view)
            }
        }
    }
}
