//! What `/info` can learn about a group: a chain of sources, asked in the configured order
//! until the summary is complete (name, owner, member count, settings).
//!
//! | source | needs | gives |
//! |---|---|---|
//! | `chat_get` | a chatid (`[[groups]]` or `/bind`) | everything |
//! | `scene_group` | the group is a scene group of this app | name, owner, settings, member count (when DingTalk includes `member_amount`) |
//! | `base_info` | — | name, member count |
//! | `callback` | — (no API call) | name |
//!
//! Each field of the merged [`GroupSummary`] remembers which source gave it, and each
//! source that gave nothing leaves a [`Missing`] note saying why, so the reply can say
//! plainly what is unknown and why (a permission, not a scene group, no chatid).
//!
//! A source that refuses a group (no permission, not a scene group, unknown user) is not
//! asked again for that group for `group_info.denied_backoff_secs` (bounded cache). Failures
//! that say DingTalk itself is unusable right now (token refused, busy, slow, unreadable)
//! fail the whole lookup instead: a partial answer would hide them. So does a `chat/get`
//! failure other than a missing permission: the chatid the admin configured or bound is
//! wrong, and the admin must see that.
//!
//! Owner names come from `user/get`, cached for an hour; without it the userid is shown.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::groups::GroupDirectory;
use crate::config::InfoSource;
use crate::dingtalk::client::{ChatInfo, GroupBaseInfo, ManagementOptions, SceneGroupInfo};
use crate::dingtalk::{ApiError, DingTalkClient, Endpoint, ErrorKind};

/// How long an owner's display name is reused.
const NAME_TTL: Duration = Duration::from_secs(3600);
/// Most owner names kept.
const NAME_CAPACITY: u64 = 10_000;
/// Most (source, group) refusals remembered.
const REFUSAL_CAPACITY: u64 = 20_000;
/// Longest DingTalk message quoted in a reply.
const MAX_QUOTED: usize = 100;

/// Why a source told us nothing (serialised for the templates, `kind` first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Missing {
    /// `chat/get` needs the group's chatid and none is known (not in `[[groups]]`, no `/bind`).
    NoChatid,
    /// The group is not a scene group of this app (`scenegroup/get` 400020 / 40035).
    NotSceneGroup,
    /// Both of the above: the app did not create this group, so DingTalk will not tell.
    NotCreatedByApp,
    /// The app lacks a permission for this API.
    Denied {
        /// Which API refused.
        api: &'static str,
        /// The permission to grant, e.g. `qyapi_chat_read`.
        scope: String,
    },
    /// `user/get` does not know the owner.
    UnknownUser,
    /// The source is not in `group_info.sources`.
    Disabled {
        /// The source's configuration name.
        source: &'static str,
    },
    /// The source failed in a way that concerns only itself.
    Failed {
        /// Which API.
        api: &'static str,
        /// DingTalk's code (errcode, HTTP code string or status).
        code: String,
        /// DingTalk's message, shortened.
        message: String,
    },
    /// Every source that could have said was asked and none did.
    NotReported,
}

impl Missing {
    /// From a non-fatal failure.
    fn failed(api: Endpoint, e: &ApiError) -> Missing {
        let (code, message) = e.code_and_message();
        Missing::Failed {
            api: api.label(),
            code,
            message: message.chars().take(MAX_QUOTED).collect(),
        }
    }
}

/// What to make of a failed source call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The whole lookup fails (token, busy, slow, unreadable; a bad chatid).
    Fatal,
    /// The source refuses this group; remembered for the back-off period.
    Refused(Missing),
    /// The source failed for this call only.
    Failed(Missing),
}

/// Classifies a failure of `api` (pure; the rules are in the module docs).
pub fn classify(api: Endpoint, e: &ApiError) -> Verdict {
    if e.is_token_call() {
        return Verdict::Fatal;
    }
    match e.kind() {
        ErrorKind::TokenFailed
        | ErrorKind::BadToken
        | ErrorKind::Busy
        | ErrorKind::Slow
        | ErrorKind::Unavailable
        | ErrorKind::CorpMissing => Verdict::Fatal,
        ErrorKind::NoPermission => Verdict::Refused(Missing::Denied {
            api: api.label(),
            scope: e
                .missing_scope()
                .unwrap_or_else(|| e.documented_scope().to_string()),
        }),
        ErrorKind::NotSceneGroup if api == Endpoint::SceneGroupGet => {
            Verdict::Refused(Missing::NotSceneGroup)
        }
        ErrorKind::UnknownUser if api == Endpoint::UserGet => {
            Verdict::Refused(Missing::UnknownUser)
        }
        _ if api == Endpoint::ChatGet => Verdict::Fatal,
        _ => Verdict::Failed(Missing::failed(api, e)),
    }
}

/// The six settings of a group; `None` where DingTalk did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Flags {
    /// 全员禁言
    pub muted: Option<bool>,
    /// 可被搜索
    pub searchable: Option<bool>,
    /// 入群验证
    pub join_needs_approval: Option<bool>,
    /// @所有人 only by owner/admins
    pub mention_all_admins_only: Option<bool>,
    /// 群管理 only by owner/admins
    pub management_admins_only: Option<bool>,
    /// 新成员查看历史
    pub new_members_see_history: Option<bool>,
}

impl Flags {
    fn from_codes(codes: [Option<i64>; 6]) -> Option<Flags> {
        if codes.iter().all(Option::is_none) {
            return None;
        }
        let f = |v: Option<i64>| v.map(|v| v == 1);
        let [
            muted,
            searchable,
            approval,
            mention_all,
            management,
            history,
        ] = codes;
        Some(Flags {
            muted: f(muted),
            searchable: f(searchable),
            join_needs_approval: f(approval),
            mention_all_admins_only: f(mention_all),
            management_admins_only: f(management),
            new_members_see_history: f(history),
        })
    }

    fn from_chat(c: &ChatInfo) -> Option<Flags> {
        Flags::from_codes([
            c.chat_banned_type,
            c.searchable,
            c.validation_type,
            c.mention_all_authority,
            c.management_type,
            c.show_history_type,
        ])
    }

    fn from_options(o: &ManagementOptions) -> Option<Flags> {
        Flags::from_codes([
            o.chat_banned_type,
            o.searchable,
            o.validation_type,
            o.mention_all_authority,
            o.management_type,
            o.show_history_type,
        ])
    }
}

/// Which source gave each field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Of [`GroupSummary::name`].
    pub name: Option<InfoSource>,
    /// Of [`GroupSummary::owner`].
    pub owner: Option<InfoSource>,
    /// Of [`GroupSummary::member_count`].
    pub member_count: Option<InfoSource>,
    /// Of [`GroupSummary::flags`].
    pub flags: Option<InfoSource>,
}

/// A field of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The group's name.
    Name,
    /// The owner.
    Owner,
    /// The member count.
    MemberCount,
    /// The settings.
    Flags,
}

impl Field {
    /// The sources that can give this field.
    pub fn providers(self) -> &'static [InfoSource] {
        match self {
            Field::Name => &InfoSource::ALL,
            Field::Owner | Field::Flags => &[InfoSource::ChatGet, InfoSource::SceneGroup],
            Field::MemberCount => &[
                InfoSource::ChatGet,
                InfoSource::SceneGroup,
                InfoSource::BaseInfo,
            ],
        }
    }
}

/// Everything learned about one group, merged from the sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSummary {
    /// Group name.
    pub name: Option<String>,
    /// Owner's userid.
    pub owner: Option<String>,
    /// Owner's display name (`user/get`).
    pub owner_name: Option<String>,
    /// Why the owner's name is unknown although the userid is.
    pub owner_name_missing: Option<Missing>,
    /// Number of members.
    pub member_count: Option<usize>,
    /// The settings.
    pub flags: Option<Flags>,
    /// `chat/get` says the group was dissolved.
    pub dissolved: bool,
    /// Which source gave each field.
    pub from: Provenance,
    /// Why sources gave nothing, in the order asked (disabled sources first).
    pub notes: Vec<(InfoSource, Missing)>,
}

impl GroupSummary {
    /// Every field is known.
    pub fn is_complete(&self) -> bool {
        self.name.is_some()
            && self.owner.is_some()
            && self.member_count.is_some()
            && self.flags.is_some()
    }

    /// No name, owner or member count is known.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.owner.is_none() && self.member_count.is_none()
    }

    /// Whether `source` could fill a field that is still missing.
    pub fn could_use(&self, source: InfoSource) -> bool {
        [Field::Name, Field::Owner, Field::MemberCount, Field::Flags]
            .into_iter()
            .any(|f| !self.has(f) && f.providers().contains(&source))
    }

    /// Whether `field` is known.
    pub fn has(&self, field: Field) -> bool {
        match field {
            Field::Name => self.name.is_some(),
            Field::Owner => self.owner.is_some(),
            Field::MemberCount => self.member_count.is_some(),
            Field::Flags => self.flags.is_some(),
        }
    }

    /// Why `field` is unknown: the notes of the sources that could have given it, with
    /// "no chatid" + "not a scene group" said as "not created by this app".
    pub fn why(&self, field: Field) -> Vec<Missing> {
        let mut out: Vec<Missing> = Vec::new();
        for (source, m) in &self.notes {
            if field.providers().contains(source) && !out.contains(m) {
                out.push(m.clone());
            }
        }
        if out.contains(&Missing::NoChatid) && out.contains(&Missing::NotSceneGroup) {
            out.retain(|m| !matches!(m, Missing::NoChatid | Missing::NotSceneGroup));
            out.insert(0, Missing::NotCreatedByApp);
        }
        if out.is_empty() {
            out.push(Missing::NotReported);
        }
        out
    }

    /// A chatid would help: `chat/get` is enabled and knows no chatid for this group.
    pub fn needs_chatid(&self) -> bool {
        self.notes
            .iter()
            .any(|(s, m)| *s == InfoSource::ChatGet && *m == Missing::NoChatid)
    }

    fn note(&mut self, source: InfoSource, missing: Missing) {
        self.notes.push((source, missing));
    }

    fn set_name(&mut self, name: &str, source: InfoSource) {
        if self.name.is_none() && !name.trim().is_empty() {
            self.name = Some(name.to_string());
            self.from.name = Some(source);
        }
    }

    fn set_owner(&mut self, owner: &str, source: InfoSource) {
        if self.owner.is_none() && !owner.trim().is_empty() {
            self.owner = Some(owner.to_string());
            self.from.owner = Some(source);
        }
    }

    fn set_member_count(&mut self, n: Option<usize>, source: InfoSource) {
        if self.member_count.is_none()
            && let Some(n) = n
        {
            self.member_count = Some(n);
            self.from.member_count = Some(source);
        }
    }

    fn set_flags(&mut self, flags: Option<Flags>, source: InfoSource) {
        if self.flags.is_none() && flags.is_some() {
            self.flags = flags;
            self.from.flags = Some(source);
        }
    }

    /// Adds what `chat/get` said.
    pub fn merge_chat(&mut self, c: &ChatInfo) {
        let s = InfoSource::ChatGet;
        self.set_name(&c.name, s);
        self.set_owner(&c.owner, s);
        // Staff and external members (`extidlist`) alike.
        self.set_member_count(Some(c.member_count()), s);
        self.set_flags(Flags::from_chat(c), s);
        self.dissolved |= c.status == Some(2);
    }

    /// Adds what `scenegroup/get` said.
    pub fn merge_scene(&mut self, g: &SceneGroupInfo) {
        let s = InfoSource::SceneGroup;
        self.set_name(&g.title, s);
        self.set_owner(&g.owner_staff_id, s);
        let count = g.member_amount.and_then(|n| usize::try_from(n).ok());
        self.set_member_count(count, s);
        self.set_flags(Flags::from_options(&g.management_options), s);
    }

    /// Adds what `groups/baseInfos/query` said.
    pub fn merge_base(&mut self, b: &GroupBaseInfo) {
        let s = InfoSource::BaseInfo;
        self.set_name(&b.title, s);
        let count = b.member_count.and_then(|n| usize::try_from(n).ok());
        self.set_member_count(count, s);
    }

    /// Adds the callback's `conversationTitle`.
    pub fn merge_callback(&mut self, title: Option<&str>) {
        match title.filter(|t| !t.trim().is_empty()) {
            Some(t) => self.set_name(t, InfoSource::Callback),
            None => self.note(InfoSource::Callback, Missing::NotReported),
        }
    }
}

/// Looks groups up through the configured sources.
pub struct Resolver {
    client: Arc<DingTalkClient>,
    groups: Arc<GroupDirectory>,
    sources: Vec<InfoSource>,
    /// (API, group or user) → why it refused; None when the back-off is 0.
    refusals: Option<moka::sync::Cache<(Endpoint, String), Missing>>,
    /// userid → display name; concurrent lookups of one user share one `user/get`.
    names: moka::future::Cache<String, Arc<str>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `sources` in order; refusals are remembered for `denied_backoff`
    /// (zero: not remembered).
    pub fn new(
        client: Arc<DingTalkClient>,
        groups: Arc<GroupDirectory>,
        sources: Vec<InfoSource>,
        denied_backoff: Duration,
    ) -> Resolver {
        let refusals = (!denied_backoff.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(REFUSAL_CAPACITY)
                .time_to_live(denied_backoff)
                .build()
        });
        Resolver {
            client,
            groups,
            sources,
            refusals,
            names: moka::future::Cache::builder()
                .max_capacity(NAME_CAPACITY)
                .time_to_live(NAME_TTL)
                .build(),
        }
    }

    /// Forgets every refusal about one group (after `/bind` changed what can be asked).
    pub fn forget_refusals(&self, open_conversation_id: &str) {
        if let Some(cache) = &self.refusals {
            for api in [
                Endpoint::ChatGet,
                Endpoint::SceneGroupGet,
                Endpoint::GroupBaseInfos,
            ] {
                cache.invalidate(&(api, open_conversation_id.to_string()));
            }
        }
    }

    /// The summary of `open_conversation_id`; `title` is the callback's `conversationTitle`.
    /// Fails only for what makes the whole lookup pointless (see the module docs).
    pub async fn resolve(
        &self,
        open_conversation_id: &str,
        title: Option<&str>,
    ) -> Result<GroupSummary, ApiError> {
        let cid = open_conversation_id;
        let mut s = GroupSummary::default();
        for source in InfoSource::ALL {
            if !self.sources.contains(&source) {
                s.note(
                    source,
                    Missing::Disabled {
                        source: source.name(),
                    },
                );
            }
        }
        for &source in &self.sources {
            if s.is_complete() {
                break;
            }
            if !s.could_use(source) {
                continue;
            }
            match source {
                InfoSource::ChatGet => {
                    let Some(chatid) = self.groups.chatid_for(cid, &self.client).await else {
                        s.note(source, Missing::NoChatid);
                        continue;
                    };
                    match self
                        .ask(Endpoint::ChatGet, cid, self.client.chat_get(&chatid))
                        .await?
                    {
                        Ok(info) => s.merge_chat(&info),
                        Err(m) => s.note(source, m),
                    }
                }
                InfoSource::SceneGroup => {
                    match self
                        .ask(
                            Endpoint::SceneGroupGet,
                            cid,
                            self.client.scene_group_get(cid),
                        )
                        .await?
                    {
                        Ok(info) => s.merge_scene(&info),
                        Err(m) => s.note(source, m),
                    }
                }
                InfoSource::BaseInfo => {
                    match self
                        .ask(
                            Endpoint::GroupBaseInfos,
                            cid,
                            self.client.group_base_info(cid),
                        )
                        .await?
                    {
                        Ok(info) => s.merge_base(&info),
                        Err(m) => s.note(source, m),
                    }
                }
                InfoSource::Callback => s.merge_callback(title),
            }
        }
        if let Some(owner) = s.owner.clone() {
            match self.owner_name(&owner).await {
                Ok(name) => s.owner_name = Some(name.to_string()),
                Err(m) => s.owner_name_missing = Some(m),
            }
        }
        tracing::debug!(
            conversation_id = cid,
            from = ?s.from,
            notes = s.notes.len(),
            "group summary"
        );
        Ok(s)
    }

    /// Runs `call` unless `api` refused `key` within the back-off; classifies failures.
    async fn ask<T>(
        &self,
        api: Endpoint,
        key: &str,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Result<T, Missing>, ApiError> {
        let cache_key = (api, key.to_string());
        if let Some(cache) = &self.refusals
            && let Some(m) = cache.get(&cache_key)
        {
            tracing::debug!(api = api.label(), "source skipped: refused recently");
            return Ok(Err(m));
        }
        let err = match call.await {
            Ok(v) => return Ok(Ok(v)),
            Err(e) => e,
        };
        match classify(api, &err) {
            Verdict::Fatal => Err(err),
            Verdict::Refused(m) => {
                tracing::info!(api = api.label(), error = %err, "source refused; not asking again for a while");
                if let Some(cache) = &self.refusals {
                    cache.insert(cache_key, m.clone());
                }
                Ok(Err(m))
            }
            Verdict::Failed(m) => {
                tracing::warn!(api = api.label(), error = %err, "source failed");
                Ok(Err(m))
            }
        }
    }

    /// The display name of `userid`: cached, or one `user/get` shared by concurrent callers.
    /// Never fails the lookup: every failure becomes the reason the userid is shown.
    async fn owner_name(&self, userid: &str) -> Result<Arc<str>, Missing> {
        if let Some(name) = self.names.get(userid).await {
            return Ok(name);
        }
        self.names
            .try_get_with_by_ref(userid, async {
                let call = async {
                    match self.client.user_name(userid).await {
                        Ok(name) if !name.trim().is_empty() => Ok(name),
                        Ok(_) => Err(ApiError::unknown_user()),
                        Err(e) => Err(e),
                    }
                };
                match self.ask(Endpoint::UserGet, userid, call).await {
                    Ok(Ok(name)) => Ok(Arc::<str>::from(name)),
                    Ok(Err(m)) => Err(m),
                    Err(fatal) => {
                        tracing::warn!(error = %fatal, "owner name unavailable");
                        Err(Missing::failed(Endpoint::UserGet, &fatal))
                    }
                }
            })
            .await
            .map_err(|e| (*e).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::RetryPolicy;
    use crate::sandbox::{Endpoint, Fault, Org, Sandbox};

    fn dt(endpoint: Endpoint, errcode: i64, sub: Option<&str>) -> ApiError {
        ApiError::DingTalk {
            endpoint,
            errcode,
            errmsg: "msg".into(),
            sub_code: sub.map(str::to_string),
        }
    }

    fn http(endpoint: Endpoint, status: u16, code: &str, scopes: &[&str]) -> ApiError {
        ApiError::Http {
            endpoint,
            status,
            code: code.into(),
            message: "m".into(),
            required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn denied(api: Endpoint, scope: &str) -> Verdict {
        Verdict::Refused(Missing::Denied {
            api: api.label(),
            scope: scope.into(),
        })
    }

    #[test]
    fn refusals_fatal_errors_and_failures_are_told_apart() {
        use Endpoint::*;
        // Permissions: named, remembered.
        assert_eq!(
            classify(ChatGet, &dt(ChatGet, 43007, None)),
            denied(ChatGet, "qyapi_chat_read")
        );
        assert_eq!(
            classify(SceneGroupGet, &dt(SceneGroupGet, 88, Some("60011"))),
            denied(SceneGroupGet, "qyapi_chat_read")
        );
        assert_eq!(
            classify(
                GroupBaseInfos,
                &http(
                    GroupBaseInfos,
                    403,
                    "Forbidden.AccessDenied",
                    &["qyapi_im_read"]
                )
            ),
            denied(GroupBaseInfos, "qyapi_im_read")
        );
        assert_eq!(
            classify(UserGet, &dt(UserGet, 88, Some("60011"))),
            denied(UserGet, "qyapi_get_member")
        );
        // Not a scene group, unknown user.
        for code in [400020, 40035] {
            assert_eq!(
                classify(SceneGroupGet, &dt(SceneGroupGet, code, None)),
                Verdict::Refused(Missing::NotSceneGroup)
            );
        }
        assert_eq!(
            classify(UserGet, &dt(UserGet, 60121, None)),
            Verdict::Refused(Missing::UnknownUser)
        );
        // DingTalk unusable, or the admin's chatid wrong: the whole lookup fails.
        for api in [ChatGet, SceneGroupGet, GroupBaseInfos, UserGet] {
            assert_eq!(
                classify(api, &dt(SceneGroupQueryDetail, -1, None)),
                Verdict::Fatal
            );
            assert_eq!(
                classify(api, &dt(SceneGroupQueryDetail, 90018, None)),
                Verdict::Fatal
            );
            assert_eq!(
                classify(api, &dt(SceneGroupQueryDetail, 40014, None)),
                Verdict::Fatal
            );
            assert_eq!(classify(api, &dt(GetToken, 40089, None)), Verdict::Fatal);
            assert_eq!(
                classify(api, &dt(SceneGroupQueryDetail, 70001, None)),
                Verdict::Fatal
            );
            assert_eq!(
                classify(
                    api,
                    &ApiError::Transport {
                        endpoint: Endpoint::SceneGroupQueryDetail,
                        detail: String::new(),
                        timeout: true,
                        connect: false
                    }
                ),
                Verdict::Fatal
            );
            assert_eq!(
                classify(api, &http(SceneGroupQueryDetail, 503, "", &[])),
                Verdict::Fatal
            );
        }
        assert_eq!(classify(ChatGet, &dt(ChatGet, 40016, None)), Verdict::Fatal);
        // Anything else from a secondary source concerns only that source.
        assert_eq!(
            classify(
                GroupBaseInfos,
                &http(GroupBaseInfos, 400, "invalidParameter", &[])
            ),
            Verdict::Failed(Missing::Failed {
                api: "groups/baseInfos/query",
                code: "invalidParameter".into(),
                message: "m".into()
            })
        );
        assert!(matches!(
            classify(SceneGroupGet, &dt(SceneGroupGet, 400001, None)),
            Verdict::Failed(_)
        ));
    }

    fn chat(name: &str, members: usize) -> ChatInfo {
        ChatInfo {
            name: name.into(),
            owner: "o1".into(),
            useridlist: vec!["u".into(); members],
            chat_banned_type: Some(1),
            searchable: Some(0),
            status: Some(1),
            ..ChatInfo::default()
        }
    }

    #[test]
    fn scene_group_flags_as_strings_are_read_as_settings() {
        // The official example's shape: every flag a string, member_amount a number.
        let g: SceneGroupInfo = serde_json::from_str(
            r#"{"title":"t","owner_staff_id":"o","member_amount":12,"management_options":
            {"chat_banned_type":"0","searchable":"1","validation_type":"1",
             "mention_all_authority":"0","management_type":"1","show_history_type":"0"}}"#,
        )
        .unwrap();
        let mut s = GroupSummary::default();
        s.merge_scene(&g);
        assert_eq!(
            s.flags,
            Some(Flags {
                muted: Some(false),
                searchable: Some(true),
                join_needs_approval: Some(true),
                mention_all_admins_only: Some(false),
                management_admins_only: Some(true),
                new_members_see_history: Some(false),
            })
        );
        assert_eq!(s.member_count, Some(12));
        assert_eq!(s.from.member_count, Some(InfoSource::SceneGroup));
    }

    #[test]
    fn chat_get_counts_external_members() {
        let c: ChatInfo = serde_json::from_str(
            r#"{"name":"n","owner":"o","useridlist":["a","b","c"],"extidlist":["x","y"],
            "chatBannedType":"1","status":"1"}"#,
        )
        .unwrap();
        let mut s = GroupSummary::default();
        s.merge_chat(&c);
        assert_eq!(s.member_count, Some(5));
        assert_eq!(s.flags.and_then(|f| f.muted), Some(true));
    }

    #[test]
    fn earlier_sources_win_and_provenance_is_kept() {
        let mut s = GroupSummary::default();
        s.merge_base(&GroupBaseInfo {
            title: "from base".into(),
            member_count: Some(9),
        });
        s.merge_chat(&chat("from chat", 3));
        s.merge_callback(Some("from callback"));
        assert_eq!(s.name.as_deref(), Some("from base"));
        assert_eq!(s.member_count, Some(9));
        assert_eq!(s.owner.as_deref(), Some("o1"));
        let flags = s.flags.clone().unwrap();
        assert_eq!(flags.muted, Some(true));
        assert_eq!(flags.searchable, Some(false));
        assert_eq!(flags.join_needs_approval, None);
        assert_eq!(s.from.name, Some(InfoSource::BaseInfo));
        assert_eq!(s.from.member_count, Some(InfoSource::BaseInfo));
        assert_eq!(s.from.owner, Some(InfoSource::ChatGet));
        assert_eq!(s.from.flags, Some(InfoSource::ChatGet));
        assert!(s.is_complete());
        assert!(!s.dissolved);
    }

    #[test]
    fn empty_values_do_not_count_as_known() {
        let mut s = GroupSummary::default();
        s.merge_scene(&SceneGroupInfo::default());
        s.merge_base(&GroupBaseInfo::default());
        assert!(s.is_empty());
        assert!(s.flags.is_none());
        s.merge_callback(Some("  "));
        assert!(s.name.is_none());
        assert_eq!(s.why(Field::Name), vec![Missing::NotReported]);
    }

    #[test]
    fn reasons_name_what_each_missing_field_lacked() {
        let mut s = GroupSummary::default();
        s.note(InfoSource::ChatGet, Missing::NoChatid);
        s.note(InfoSource::SceneGroup, Missing::NotSceneGroup);
        s.merge_base(&GroupBaseInfo {
            title: "t".into(),
            member_count: Some(3),
        });
        assert_eq!(s.why(Field::Owner), vec![Missing::NotCreatedByApp]);
        assert_eq!(s.why(Field::Flags), vec![Missing::NotCreatedByApp]);
        assert!(s.needs_chatid());
        assert!(s.could_use(InfoSource::ChatGet));
        assert!(!s.could_use(InfoSource::BaseInfo));
        assert!(!s.could_use(InfoSource::Callback));

        let mut s = GroupSummary::default();
        s.note(InfoSource::ChatGet, Missing::NoChatid);
        let no_read = Missing::Denied {
            api: "scenegroup/get",
            scope: "qyapi_chat_read".into(),
        };
        s.note(InfoSource::SceneGroup, no_read.clone());
        s.note(
            InfoSource::BaseInfo,
            Missing::Disabled {
                source: "base_info",
            },
        );
        assert_eq!(
            s.why(Field::Owner),
            vec![Missing::NoChatid, no_read.clone()]
        );
        // scenegroup/get's member_amount could have given the count too.
        assert_eq!(
            s.why(Field::MemberCount),
            vec![
                Missing::NoChatid,
                no_read,
                Missing::Disabled {
                    source: "base_info"
                }
            ]
        );
    }

    async fn setup(
        sources: Vec<InfoSource>,
        bindings: &[(&str, &str)],
    ) -> (Sandbox, Resolver, Arc<GroupDirectory>) {
        let sandbox = Sandbox::start(Org::demo()).await.unwrap();
        let base = sandbox.base_url();
        let http = crate::dingtalk::transport::http_client(Duration::from_secs(2)).unwrap();
        let client = Arc::new(DingTalkClient::new(
            http,
            &base,
            &base,
            "dingdemoappkey",
            "demo-app-secret-0123456789abcdef".to_string().into(),
            RetryPolicy {
                base_delay: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
        ));
        let groups = Arc::new(GroupDirectory::new(&[]));
        for (cid, chatid) in bindings {
            groups.bind(cid, chatid);
        }
        let resolver = Resolver::new(client, groups.clone(), sources, Duration::from_secs(600));
        (sandbox, resolver, groups)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_get_alone_gives_everything_for_a_bound_group() {
        let (sbx, r, _) = setup(
            vec![InfoSource::ChatGet],
            &[("cidBound0001==", "chatbound0001")],
        )
        .await;
        let s = r.resolve("cidBound0001==", None).await.unwrap();
        assert!(s.is_complete(), "{s:?}");
        assert_eq!(s.name.as_deref(), Some("研发部全员群"));
        assert_eq!(s.member_count, Some(37));
        assert_eq!(s.owner.as_deref(), Some("manager4220"));
        assert_eq!(s.owner_name.as_deref(), Some("王建国"));
        assert_eq!(sbx.calls(Endpoint::ChatGet), 1);
        assert_eq!(sbx.calls(Endpoint::UserGet), 1);
        // The owner's name is cached.
        r.resolve("cidBound0001==", None).await.unwrap();
        assert_eq!(sbx.calls(Endpoint::UserGet), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scene_group_gives_owner_and_flags_without_a_chatid() {
        let (sbx, r, _) = setup(vec![InfoSource::SceneGroup], &[]).await;
        let s = r.resolve("cidScene0001==", None).await.unwrap();
        assert_eq!(s.name.as_deref(), Some("项目群·发布"));
        assert_eq!(s.owner_name.as_deref(), Some("陈思远"));
        assert_eq!(s.flags.as_ref().and_then(|f| f.searchable), Some(true));
        // The count from `member_amount`: no baseInfos call needed.
        assert_eq!(s.member_count, Some(8));
        assert_eq!(s.from.member_count, Some(InfoSource::SceneGroup));
        // A scene group whose answer has no member_amount (and integer flags).
        let s = r.resolve("cidScene0002==", None).await.unwrap();
        assert_eq!(s.flags.as_ref().and_then(|f| f.muted), Some(true));
        assert_eq!(s.member_count, None);
        assert_eq!(
            s.why(Field::MemberCount),
            vec![
                Missing::Disabled { source: "chat_get" },
                Missing::Disabled {
                    source: "base_info"
                }
            ]
        );
        // A plain group is refused once, then not asked again.
        for _ in 0..3 {
            let s = r.resolve("cidPlain0001==", None).await.unwrap();
            assert!(s.is_empty());
            assert_eq!(
                s.notes.last(),
                Some(&(InfoSource::SceneGroup, Missing::NotSceneGroup))
            );
        }
        assert_eq!(sbx.calls(Endpoint::SceneGroupGet), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn base_info_and_callback_fill_in_for_a_plain_group() {
        let (sbx, r, _) = setup(InfoSource::ALL.to_vec(), &[]).await;
        let s = r.resolve("cidPlain0001==", Some("标题")).await.unwrap();
        assert_eq!(s.name.as_deref(), Some("午餐拼单群"));
        assert_eq!(s.from.name, Some(InfoSource::BaseInfo));
        assert_eq!(s.member_count, Some(7));
        assert_eq!(s.why(Field::Flags), vec![Missing::NotCreatedByApp]);
        assert_eq!(sbx.calls(Endpoint::ChatGet), 0);
        assert_eq!(sbx.calls(Endpoint::UserGet), 0);

        // Every API denied: the callback's title, and the permission named.
        let s = r
            .resolve("cidDenied001==", Some("外部协作群"))
            .await
            .unwrap();
        assert_eq!(s.name.as_deref(), Some("外部协作群"));
        assert_eq!(s.from.name, Some(InfoSource::Callback));
        assert!(s.why(Field::MemberCount).contains(&Missing::Denied {
            api: "groups/baseInfos/query",
            scope: "qyapi_chat_read".into()
        }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_dingtalk_fails_the_lookup_and_is_not_remembered() {
        let (sbx, r, _) = setup(InfoSource::ALL.to_vec(), &[]).await;
        sbx.inject(Endpoint::GroupBaseInfos, Fault::HttpStatus(503), 10);
        let e = r.resolve("cidPlain0001==", None).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        sbx.clear_faults();
        let s = r.resolve("cidPlain0001==", None).await.unwrap();
        assert_eq!(s.member_count, Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_name_falls_back_to_the_reason() {
        let (sbx, r, _) = setup(vec![InfoSource::SceneGroup], &[]).await;
        sbx.inject(
            Endpoint::UserGet,
            Fault::ErrCode {
                errcode: 88,
                errmsg: "鉴权异常".into(),
                sub_code: Some("60011".into()),
            },
            1,
        );
        let s = r.resolve("cidScene0001==", None).await.unwrap();
        assert_eq!(s.owner.as_deref(), Some("pm0815"));
        assert_eq!(s.owner_name, None);
        assert_eq!(
            s.owner_name_missing,
            Some(Missing::Denied {
                api: "user/get",
                scope: "qyapi_get_member".into()
            })
        );
        // Remembered: user/get is not asked again within the back-off.
        r.resolve("cidScene0001==", None).await.unwrap();
        assert_eq!(sbx.calls(Endpoint::UserGet), 1);
    }
}
