//! Which legacy `chatid` belongs to a callback's `conversationId`.
//!
//! Filled from `[[groups]]`, then from the bindings stored by `/bind`. Entries without `open_conversation_id` are resolved with
//! DingTalk's conversion API: at startup, and again (at most once a minute) when a
//! callback arrives from a group we cannot place, so a transient failure at startup heals.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::GroupBinding;
use crate::dingtalk::{ApiError, DingTalkClient};

/// Minimum pause between two attempts to resolve pending chatids.
const RETRY_PENDING_AFTER: Duration = Duration::from_secs(60);

/// conversationId → chatid.
#[derive(Debug, Default)]
pub struct GroupDirectory {
    /// Known pairs, keyed by openConversationId.
    by_conversation: DashMap<String, String>,
    /// chatids whose openConversationId is not known yet, and when we last tried.
    pending: tokio::sync::Mutex<(Vec<String>, Option<Instant>)>,
}

impl GroupDirectory {
    /// A directory of the configured bindings.
    pub fn new(bindings: &[GroupBinding]) -> GroupDirectory {
        let dir = GroupDirectory::default();
        let mut pending = Vec::new();
        for b in bindings {
            match &b.open_conversation_id {
                Some(cid) => {
                    dir.by_conversation.insert(cid.clone(), b.chatid.clone());
                }
                None => pending.push(b.chatid.clone()),
            }
        }
        dir.pending.try_lock().map(|mut p| p.0 = pending).ok();
        dir
    }

    /// Records a verified pair (from `/bind`), replacing what was known for the group.
    pub fn bind(&self, conversation_id: &str, chatid: &str) {
        self.by_conversation
            .insert(conversation_id.to_string(), chatid.to_string());
    }

    /// Records a stored pair unless the configuration already places the group
    /// (`[[groups]]` wins over stored bindings).
    pub fn add_stored(&self, conversation_id: &str, chatid: &str) {
        self.by_conversation
            .entry(conversation_id.to_string())
            .or_insert_with(|| chatid.to_string());
    }

    /// The chatid of `conversation_id` if it is known, without asking DingTalk.
    pub fn known_chatid(&self, conversation_id: &str) -> Option<String> {
        self.by_conversation.get(conversation_id).map(|c| c.clone())
    }

    /// Number of known pairs.
    pub fn known(&self) -> usize {
        self.by_conversation.len()
    }

    /// Resolves every pending chatid now; returns each outcome (for logs and `check`).
    pub async fn resolve_pending(
        &self,
        client: &DingTalkClient,
    ) -> Vec<(String, Result<String, ApiError>)> {
        let mut guard = self.pending.lock().await;
        guard.1 = Some(Instant::now());
        let mut outcomes = Vec::new();
        let mut still_pending = Vec::new();
        for chatid in std::mem::take(&mut guard.0) {
            let result = client.convert_to_open_conversation_id(&chatid).await;
            match &result {
                Ok(cid) => {
                    tracing::info!(%chatid, conversation_id = %cid, "group chatid resolved");
                    self.by_conversation.insert(cid.clone(), chatid.clone());
                }
                Err(e) => {
                    tracing::warn!(%chatid, error = %e, "cannot resolve chatid to openConversationId");
                    still_pending.push(chatid.clone());
                }
            }
            outcomes.push((chatid, result));
        }
        guard.0 = still_pending;
        outcomes
    }

    /// The chatid of `conversation_id`, resolving pending bindings if it is unknown.
    pub async fn chatid_for(
        &self,
        conversation_id: &str,
        client: &DingTalkClient,
    ) -> Option<String> {
        if let Some(chatid) = self.by_conversation.get(conversation_id) {
            return Some(chatid.clone());
        }
        let due = {
            let guard = self.pending.lock().await;
            !guard.0.is_empty() && guard.1.is_none_or(|t| t.elapsed() >= RETRY_PENDING_AFTER)
        };
        if due {
            self.resolve_pending(client).await;
        }
        self.by_conversation.get(conversation_id).map(|c| c.clone())
    }
}
