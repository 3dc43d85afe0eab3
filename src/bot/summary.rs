//! The pure half of `/info`: what is known about a group and why the rest is not.
//!
//! [`GroupSummary`] merges what each source answered (`merge_chat`, `merge_scene`,
//! `merge_base`, `merge_callback`), remembering which source gave each field
//! ([`Provenance`]) and, per source that gave nothing, a [`Missing`] note. [`classify`]
//! decides what a failed call means for the lookup from its [`ErrorKind`]: fatal, a refusal
//! to remember, or a one-off failure. No I/O here: [`super::resolver`] asks DingTalk and
//! feeds the answers in.

use serde::Serialize;

use crate::config::InfoSource;
use crate::dingtalk::client::{ChatInfo, GroupBaseInfo, ManagementOptions, SceneGroupInfo};
use crate::dingtalk::{ApiError, Endpoint, ErrorKind};

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
    pub(super) fn failed(api: Endpoint, e: &ApiError) -> Missing {
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

    pub(super) fn note(&mut self, source: InfoSource, missing: Missing) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
