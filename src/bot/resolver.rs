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

use super::groups::GroupDirectory;
use super::summary::{GroupSummary, Missing, Verdict, classify};
use crate::config::InfoSource;
use crate::dingtalk::{ApiError, DingTalkClient, Endpoint};

/// How long an owner's display name is reused.
const NAME_TTL: Duration = Duration::from_secs(3600);
/// Most owner names kept.
const NAME_CAPACITY: u64 = 10_000;
/// Most (source, group) refusals remembered.
const REFUSAL_CAPACITY: u64 = 20_000;

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
    use crate::bot::Field;
    use crate::dingtalk::RetryPolicy;
    use crate::sandbox::{Fault, Org, Sandbox};

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
