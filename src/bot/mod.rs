//! The robot's behaviour: which reply a verified callback gets.
//!
//! [`Bot::respond`] turns a [`Callback`] into a reply (a [`Rendered`] template, serialized
//! as far as a [`MarkdownHead`]; a cached group's `/info` answer is shared); it calls DingTalk
//! through [`DingTalkClient`] but knows nothing about HTTP servers, signatures or limits.
//! Every failure becomes a specific reply, never a raw error code alone.
//!
//! `/info` asks the [`resolver`] chain and shows what is known, saying plainly what is not
//! and why; `/bind <chatid>` lets a group admin attach a verified chatid to the group (kept
//! in the [`crate::store`]) so that `chat/get` can answer from then on.

pub mod command;
pub mod groups;
pub mod resolver;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{InfoSource, Settings};
use crate::dingtalk::outbound::{MarkdownHead, Reply};
use crate::dingtalk::{ApiError, Body, Callback, ConversationKind, DingTalkClient, ErrorKind};
use crate::render::{Rendered, Renderer, Template, escape_markdown};
use crate::state::cache::{SharedGroups, Summary};
use crate::store::{Binding, BindingStore};
use crate::telemetry;
pub use command::Command;
pub use groups::GroupDirectory;
pub use resolver::Resolver;
pub use summary::{Field, GroupSummary, Missing};

/// How the bot behaves, from the settings.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// Longest time `/info` (and `/bind`'s check) may spend on DingTalk.
    pub lookup_deadline: Duration,
    /// How long a group's summary is reused; zero disables the cache.
    pub info_ttl: Duration,
    /// Most summaries cached at once.
    pub info_max_groups: u64,
    /// `group_info.sources`.
    pub sources: Vec<InfoSource>,
    /// `group_info.denied_backoff_secs`.
    pub denied_backoff: Duration,
    /// `bot.admin_user_ids`.
    pub admin_user_ids: Vec<String>,
    /// `bot.inline_mention`: also write `@userid` into the text.
    pub inline_mention: bool,
    /// Group lookups (cache misses) running at once: `dingtalk.max_parallel_requests`,
    /// as many as API calls may be on the wire.
    pub max_lookups: usize,
}

impl BotOptions {
    /// The options `settings` ask for; `/info` gives up after twice the request timeout.
    pub fn from_settings(settings: &Settings) -> BotOptions {
        BotOptions {
            lookup_deadline: Duration::from_millis(settings.dingtalk.request_timeout_ms)
                .mul_f64(2.0),
            info_ttl: Duration::from_secs(settings.bot.info_cache_ttl_secs),
            info_max_groups: settings.bot.info_cache_max_groups.get(),
            sources: settings.group_info.sources.clone(),
            denied_backoff: Duration::from_secs(settings.group_info.denied_backoff_secs),
            admin_user_ids: settings.bot.admin_user_ids.clone(),
            inline_mention: settings.bot.inline_mention,
            max_lookups: settings.dingtalk.max_parallel_requests.get(),
        }
    }
}

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
    /// The chain of group-info sources.
    resolver: Resolver,
    /// `/bind` bindings on disk.
    store: Arc<BindingStore>,
    /// Userids allowed to `/bind` besides DingTalk's group admins.
    admin_user_ids: Vec<String>,
    /// Also write `@userid` into the text.
    inline_mention: bool,
    /// openConversationId → merged summary, shared by concurrent lookups (single flight);
    /// None = disabled.
    info_cache: Option<moka::future::Cache<String, Arc<Looked>>>,
    /// The group-info cache and bindings shared by replicas (Redis backend); None = this
    /// process alone.
    shared: Option<Shared>,
    /// Turns for group lookups. A lookup's future is several KB (the resolver chain and
    /// its HTTP calls); callbacks beyond the turns wait in a future of a few dozen bytes,
    /// so a cold start with a thousand groups does not hold a thousand resolver futures
    /// (7 MB measured, `bench/README.md` › Memory).
    lookups: tokio::sync::Semaphore,
}

/// What `/info` has before its lookup and rendering are built (`Bot::prepare_info`).
enum Prepared<'a> {
    /// The group's summary, cached.
    Cached(Arc<Looked>),
    /// Not cached: a lookup turn and the lookup's deadline (the wait counted against it).
    Turn(tokio::sync::SemaphorePermit<'a>, tokio::time::Instant),
    /// Not cached, and no turn came before the deadline.
    TooSlow,
}

/// How long a replica keeps its own copy of a summary when replicas share the cache: a
/// `/bind` elsewhere reaches this replica's answers within this time.
const LOCAL_TTL_WHEN_SHARED: Duration = Duration::from_secs(5);

/// The bot's view of the shared state.
struct Shared {
    groups: Arc<SharedGroups>,
    /// `bot.info_cache_ttl_secs`: how long a summary stays in the shared cache.
    ttl: Duration,
    /// openConversationIds placed by `[[groups]]`: a stored binding never overrides them.
    configured: Vec<String>,
}

/// A resolved group summary and, once rendered, its `/info` reply: the reply depends on
/// the summary alone, so every cache hit reuses it instead of rendering again.
#[derive(Debug)]
struct Looked {
    summary: GroupSummary,
    /// The `/info` answer for `summary`, rendered and serialized on first use.
    reply: std::sync::OnceLock<Arc<MarkdownHead>>,
}

impl Looked {
    fn new(summary: GroupSummary) -> Arc<Looked> {
        Arc::new(Looked {
            summary,
            reply: std::sync::OnceLock::new(),
        })
    }
}

/// What an admitted callback gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The answer to its command.
    Answer,
    /// The group is over its budget: the one slow-down notice of this window.
    SlowDown {
        /// Seconds until the group may send again.
        retry_after_secs: u64,
    },
}

/// A reply made for this callback, or one shared with every caller that gets the same answer.
enum Answer {
    Fresh(Rendered),
    Shared(Arc<MarkdownHead>),
}

impl From<Rendered> for Answer {
    fn from(rendered: Rendered) -> Answer {
        Answer::Fresh(rendered)
    }
}

/// The message body for `rendered`, up to the per-reply part.
fn head(rendered: &Rendered) -> MarkdownHead {
    MarkdownHead::new(&rendered.title, &rendered.text)
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot").finish_non_exhaustive()
    }
}

/// Context of `info.md.j2`: each field is either known or comes with the reasons it is not.
#[derive(Debug, Serialize)]
struct InfoView<'a> {
    /// Group name (nearly always known: the callback carries it in groups).
    name: Option<&'a str>,
    name_why: Vec<Missing>,
    /// Owner's display name, else userid; None when unknown.
    owner: Option<&'a str>,
    /// Owner's userid.
    owner_userid: Option<&'a str>,
    /// Why only the userid is shown.
    owner_name_why: Option<&'a Missing>,
    owner_why: Vec<Missing>,
    member_count: Option<usize>,
    member_count_why: Vec<Missing>,
    /// Whether the settings are known (then the six below are Some unless DingTalk omitted one).
    flags_known: bool,
    flags_why: Vec<Missing>,
    dissolved: bool,
    muted: Option<bool>,
    searchable: Option<bool>,
    join_needs_approval: Option<bool>,
    mention_all_admins_only: Option<bool>,
    management_admins_only: Option<bool>,
    new_members_see_history: Option<bool>,
    /// Suggest `/bind`: a chatid would give the full summary.
    bind_hint: bool,
    /// Permissions whose absence cost a field, to name in the admin's to-do line.
    denied_scopes: Vec<String>,
}

/// The distinct permission scopes among `reasons`.
fn denied_scopes<'a>(reasons: impl IntoIterator<Item = &'a Missing>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for m in reasons {
        if let Missing::Denied { scope, .. } = m
            && !scopes.contains(scope)
        {
            scopes.push(scope.clone());
        }
    }
    scopes
}

impl<'a> InfoView<'a> {
    fn from_summary(s: &'a GroupSummary) -> InfoView<'a> {
        let why = |f: Field| if s.has(f) { Vec::new() } else { s.why(f) };
        let flags = s.flags.clone().unwrap_or_default();
        let name_why = why(Field::Name);
        let owner_why = why(Field::Owner);
        let member_count_why = why(Field::MemberCount);
        let flags_why = why(Field::Flags);
        let owner_name_why = s
            .owner_name_missing
            .as_ref()
            .filter(|_| s.owner_name.is_none());
        let denied_scopes = denied_scopes(
            name_why
                .iter()
                .chain(&owner_why)
                .chain(&member_count_why)
                .chain(&flags_why)
                .chain(owner_name_why),
        );
        InfoView {
            name: s.name.as_deref(),
            name_why,
            owner: s.owner_name.as_deref().or(s.owner.as_deref()),
            owner_userid: s.owner.as_deref(),
            owner_name_why,
            owner_why,
            member_count: s.member_count,
            member_count_why,
            flags_known: s.flags.is_some(),
            flags_why,
            dissolved: s.dissolved,
            muted: flags.muted,
            searchable: flags.searchable,
            join_needs_approval: flags.join_needs_approval,
            mention_all_admins_only: flags.mention_all_admins_only,
            management_admins_only: flags.management_admins_only,
            new_members_see_history: flags.new_members_see_history,
            bind_hint: s.needs_chatid() && !s.is_complete(),
            denied_scopes,
        }
    }
}

/// Context of `help.md.j2`: the command list comes from [`command::COMMANDS`].
#[derive(Debug, Serialize)]
struct HelpView<'a> {
    /// The word that was not understood, if any.
    unknown: Option<&'a str>,
    /// Every command.
    commands: &'static [command::Spec],
}

impl<'a> HelpView<'a> {
    fn new(unknown: Option<&'a str>) -> HelpView<'a> {
        HelpView {
            unknown,
            commands: &command::COMMANDS,
        }
    }
}

/// Context of `unbound.md.j2`: nothing at all is known about the group.
#[derive(Debug, Serialize)]
struct UnboundView<'a> {
    title: Option<&'a str>,
    conversation_id: &'a str,
    reasons: Vec<Missing>,
    denied_scopes: Vec<String>,
}

/// Context of `bind.md.j2`.
#[derive(Debug, Serialize)]
struct BindView<'a> {
    /// `ok`, `usage`, `invalid`, `group_only`, `not_allowed`, `unknown_chatid`,
    /// `other_group`, `conversion_failed`, `store_failed`.
    outcome: &'static str,
    chatid: &'a str,
    /// Why the conversion failed (`conversion_failed`).
    error: Option<ErrorView>,
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
    /// DingTalk did not answer within the lookup deadline.
    pub fn slow() -> ErrorView {
        ErrorView {
            kind: "slow",
            errcode: None,
            errmsg: None,
            scope: None,
        }
    }

    /// Classifies an API failure for the user.
    pub fn from_api(e: &ApiError) -> ErrorView {
        let kind = match e.kind() {
            // Kinds the reply template has no words of its own for are shown with
            // DingTalk's code and message.
            ErrorKind::NotSceneGroup
            | ErrorKind::UnknownUser
            | ErrorKind::SendTooFast
            | ErrorKind::InvalidInput
            | ErrorKind::Other => ErrorKind::Other,
            kind => kind,
        };
        let errmsg = match e {
            ApiError::DingTalk { errmsg, .. } if kind == ErrorKind::Other => {
                Some(errmsg.chars().take(100).collect())
            }
            _ => None,
        };
        ErrorView {
            kind: kind.name(),
            errcode: e.errcode(),
            errmsg,
            scope: e.missing_scope(),
        }
    }
}

impl Bot {
    /// A bot answering with `renderer`, looking groups up through `client`; the bindings
    /// in `store` join the configured ones (`[[groups]]` wins for a group in both).
    pub fn new(
        client: Arc<DingTalkClient>,
        renderer: Renderer,
        groups: Arc<GroupDirectory>,
        store: Arc<BindingStore>,
        options: BotOptions,
    ) -> Bot {
        for (cid, binding) in store.all() {
            groups.add_stored(&cid, &binding.chatid);
        }
        let info_cache = (!options.info_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(options.info_max_groups)
                .time_to_live(options.info_ttl)
                .build()
        });
        let resolver = Resolver::new(
            client.clone(),
            groups.clone(),
            options.sources,
            options.denied_backoff,
        );
        Bot {
            client,
            renderer,
            groups,
            lookup_deadline: options.lookup_deadline,
            resolver,
            store,
            admin_user_ids: options.admin_user_ids,
            inline_mention: options.inline_mention,
            info_cache,
            shared: None,
            lookups: tokio::sync::Semaphore::new(options.max_lookups.max(1)),
        }
    }

    /// Shares the group-info cache and the bindings with other replicas through `groups`
    /// (Redis). This replica's own cache then keeps a summary at most 5 s (the shared one
    /// keeps it for `info_ttl`), so a `/bind` on another replica is seen within that time.
    /// `configured` are the groups `[[groups]]` places (they win over stored bindings).
    pub fn with_shared(
        mut self,
        groups: Arc<SharedGroups>,
        info_ttl: Duration,
        info_max_groups: u64,
        configured: Vec<String>,
    ) -> Bot {
        if !info_ttl.is_zero() {
            self.info_cache = Some(
                moka::future::Cache::builder()
                    .max_capacity(info_max_groups)
                    .time_to_live(info_ttl.min(LOCAL_TTL_WHEN_SHARED))
                    .build(),
            );
        }
        self.shared = Some(Shared {
            groups,
            ttl: info_ttl,
            configured,
        });
        self
    }

    /// Records a binding read from the shared store unless `[[groups]]` places the group.
    fn learn_binding(&self, shared: &Shared, cid: &str, binding: &Binding) {
        if shared.configured.iter().any(|c| c == cid) {
            return;
        }
        if self.groups.known_chatid(cid).as_deref() != Some(binding.chatid.as_str()) {
            self.groups.bind(cid, &binding.chatid);
        }
    }

    /// One lookup of a group: from the shared cache when another replica has it, else one
    /// resolver run for all replicas (the shared lock), else a local run.
    async fn lookup(
        &self,
        conversation_id: &str,
        title: Option<&str>,
    ) -> Result<Arc<Looked>, ApiError> {
        let resolve = || async {
            self.resolver
                .resolve(conversation_id, title)
                .await
                .map(Looked::new)
        };
        let Some(shared) = &self.shared else {
            return resolve().await;
        };
        let decode = |bytes: Vec<u8>| serde_json::from_slice::<GroupSummary>(&bytes).ok();
        let Some(claim) = shared
            .groups
            .claim(conversation_id, !shared.ttl.is_zero())
            .await
        else {
            return resolve().await;
        };
        if let Some(binding) = &claim.binding {
            self.learn_binding(shared, conversation_id, binding);
        }
        let token = match claim.summary {
            Summary::Uncached => return resolve().await,
            Summary::Cached(bytes) => match decode(bytes) {
                Some(summary) => return Ok(Looked::new(summary)),
                None => None,
            },
            Summary::Acquired(token) => Some(token),
            Summary::Held => {
                if let Some(summary) = shared.groups.wait(conversation_id).await.and_then(decode) {
                    return Ok(Looked::new(summary));
                }
                None
            }
        };
        let looked = resolve().await;
        if let Ok(looked) = &looked
            && let Ok(bytes) = serde_json::to_vec(&looked.summary)
        {
            shared
                .groups
                .store(conversation_id, &bytes, shared.ttl)
                .await;
        }
        if let Some(token) = token {
            shared.groups.unlock(conversation_id, &token).await;
        }
        looked
    }

    /// The summary of a group: from the cache, or one resolver run shared by every
    /// concurrent caller. Failures are not cached.
    async fn summary(
        &self,
        conversation_id: &str,
        title: Option<&str>,
    ) -> Result<Arc<Looked>, ApiError> {
        let Some(cache) = &self.info_cache else {
            return self.lookup(conversation_id, title).await;
        };
        // A hit was looked for by the caller; another caller may have filled it since,
        // in which case `try_get_with` returns it without resolving.
        telemetry::cache("group_info", false);
        cache
            .try_get_with_by_ref(conversation_id, self.lookup(conversation_id, title))
            .await
            .map_err(|e| (*e).clone())
    }

    /// Applies pending cache expiries and returns how many group summaries are cached.
    pub async fn cached_groups(&self) -> u64 {
        match &self.info_cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        }
    }

    /// Stage 2 of the pipeline: the finished message for an admitted callback — the
    /// command's answer or the slow-down notice, with the sender @-mentioned. Serialized
    /// when it is sent ([`Reply::body`]), the same bytes on every retry.
    pub async fn respond(&self, cb: &Callback, task: Task) -> Reply {
        let head = match task {
            // Not boxed: what is large in an answer (a lookup, `/bind`) is boxed inside.
            Task::Answer => match self.answer(cb).await {
                Answer::Fresh(rendered) => Arc::new(head(&rendered)),
                Answer::Shared(head) => head,
            },
            Task::SlowDown { retry_after_secs } => {
                #[derive(Serialize)]
                struct SlowView {
                    retry_after_secs: u64,
                }
                let rendered = self
                    .renderer
                    .render(Template::SlowDown, &SlowView { retry_after_secs });
                Arc::new(head(&rendered))
            }
        };
        let mention = cb.sender_staff_id.as_deref();
        let inline = match (self.inline_mention, mention) {
            (true, Some(id)) => Some(format!("\n\n@{}", escape_markdown(id))),
            _ => None,
        };
        Reply::new(head, inline, mention)
    }

    async fn answer(&self, cb: &Callback) -> Answer {
        let text = match &cb.body {
            Body::Text(t) => t,
            Body::Other(kind) => {
                // `msgtype` is the sender's to choose: logged escaped (Debug), never as raw text.
                tracing::debug!(msgtype = ?kind, "non-text message");
                telemetry::command("not_text");
                return self.renderer.render(Template::NotText, &()).into();
            }
        };
        let command = command::parse(text);
        telemetry::command(command.name());
        // Counted in metrics; a log line per command would cost more than the reply.
        tracing::debug!(command = command.name(), "command");
        match command {
            Command::Help => self.help(None).into(),
            Command::Unknown(word) => self.help(Some(&word)).into(),
            Command::Info => match cb.kind {
                ConversationKind::OneToOne => {
                    self.renderer.render(Template::PrivateOnly, &()).into()
                }
                ConversationKind::Group => self.info(cb).await,
            },
            Command::Bind(chatid) => Box::pin(self.bind(cb, &chatid)).await.into(),
        }
    }

    fn help(&self, unknown: Option<&str>) -> Rendered {
        self.renderer
            .render(Template::Help, &HelpView::new(unknown))
    }

    /// `/info` in a group. A cold one waits for its lookup turn in a small future, before
    /// the lookup and the rendering (several hundred bytes) are boxed: on a cold start
    /// every admitted callback waits at once.
    async fn info(&self, cb: &Callback) -> Answer {
        let prepared = self.prepare_info(cb).await;
        Box::pin(self.info_answer(cb, prepared)).await
    }

    /// The group's cached summary, or else one of the lookup turns, waited for within the
    /// lookup deadline.
    async fn prepare_info(&self, cb: &Callback) -> Prepared<'_> {
        if let Some(cache) = &self.info_cache
            && let Some(looked) = cache.get(&cb.conversation_id).await
        {
            return Prepared::Cached(looked);
        }
        let deadline = tokio::time::Instant::now() + self.lookup_deadline;
        // The semaphore is never closed: only the deadline ends the wait without a turn.
        match tokio::time::timeout_at(deadline, self.lookups.acquire()).await {
            Ok(Ok(turn)) => Prepared::Turn(turn, deadline),
            _ => Prepared::TooSlow,
        }
    }

    async fn info_answer(&self, cb: &Callback, prepared: Prepared<'_>) -> Answer {
        // None: the deadline passed.
        let lookup = match prepared {
            Prepared::Cached(looked) => {
                telemetry::cache("group_info", true);
                Some(Ok(looked))
            }
            Prepared::Turn(turn, deadline) => {
                let resolve = async {
                    let _turn = turn;
                    let title = cb.conversation_title.as_deref();
                    Box::pin(self.summary(&cb.conversation_id, title)).await
                };
                tokio::time::timeout_at(deadline, resolve).await.ok()
            }
            Prepared::TooSlow => None,
        };
        match lookup {
            Some(Ok(looked)) if looked.summary.is_empty() => {
                let summary = &looked.summary;
                let reasons = summary.why(Field::Name);
                let denied_scopes = denied_scopes(&reasons);
                self.renderer
                    .render(
                        Template::Unbound,
                        &UnboundView {
                            title: cb.conversation_title.as_deref(),
                            conversation_id: &cb.conversation_id,
                            reasons,
                            denied_scopes,
                        },
                    )
                    .into()
            }
            Some(Ok(looked)) => Answer::Shared(
                looked
                    .reply
                    .get_or_init(|| {
                        let rendered = self
                            .renderer
                            .render(Template::Info, &InfoView::from_summary(&looked.summary));
                        Arc::new(head(&rendered))
                    })
                    .clone(),
            ),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "group lookup failed");
                self.renderer
                    .render(Template::InfoError, &ErrorView::from_api(&e))
                    .into()
            }
            None => {
                tracing::warn!("group lookup hit its deadline");
                self.renderer
                    .render(Template::InfoError, &ErrorView::slow())
                    .into()
            }
        }
    }

    /// `/bind <chatid>`: an admin attaches the group's chatid, verified with DingTalk's
    /// conversion API to belong to *this* group, then stored so `chat/get` can answer.
    async fn bind(&self, cb: &Callback, chatid: &str) -> Rendered {
        let reply = |outcome: &'static str, error: Option<ErrorView>| {
            self.renderer.render(
                Template::Bind,
                &BindView {
                    outcome,
                    chatid,
                    error,
                },
            )
        };
        if cb.kind == ConversationKind::OneToOne {
            return reply("group_only", None);
        }
        if chatid.is_empty() {
            return reply("usage", None);
        }
        // The chatid becomes a URL path segment of the conversion call: `.`, `..`, `/` or
        // `%` would change the path the token is sent to.
        if !crate::dingtalk::client::valid_chatid(chatid) {
            return reply("invalid", None);
        }
        let listed = cb
            .sender_staff_id
            .as_ref()
            .is_some_and(|id| self.admin_user_ids.contains(id));
        if !(cb.is_admin || listed) {
            tracing::info!("bind refused: sender is not an admin");
            return reply("not_allowed", None);
        }
        let check = tokio::time::timeout(
            self.lookup_deadline,
            self.client.convert_to_open_conversation_id(chatid),
        );
        let cid = match check.await {
            Ok(Ok(cid)) => cid,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "bind: chatid conversion failed");
                if e.kind() == ErrorKind::InvalidInput {
                    return reply("invalid", None);
                }
                let unknown = e.kind() == ErrorKind::BadChatid;
                if unknown {
                    return reply("unknown_chatid", None);
                }
                return reply("conversion_failed", Some(ErrorView::from_api(&e)));
            }
            Err(_) => return reply("conversion_failed", Some(ErrorView::slow())),
        };
        if cid != cb.conversation_id {
            tracing::info!("bind refused: the chatid belongs to another group");
            return reply("other_group", None);
        }
        let binding = Binding {
            chatid: chatid.to_string(),
            bound_by: cb.sender_staff_id.clone(),
            bound_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        };
        if let Some(shared) = &self.shared {
            if !shared.groups.bindings().put(&cid, &binding).await {
                tracing::error!("bind: cannot store the binding in Redis");
                return reply("store_failed", None);
            }
            shared.groups.forget(&cid).await;
        } else if let Err(e) = self.store.put(&cid, binding).await {
            tracing::error!(error = %e, "bind: cannot store the binding");
            return reply("store_failed", None);
        }
        self.groups.bind(&cid, chatid);
        self.resolver.forget_refusals(&cid);
        if let Some(cache) = &self.info_cache {
            cache.invalidate(&cid).await;
        }
        tracing::info!(conversation_id = ?cid, "group bound");
        reply("ok", None)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_lists_every_command_from_the_table_in_both_languages() {
        let zh = Renderer::new(Language::Zh, None)
            .unwrap()
            .render(Template::Help, &HelpView::new(None));
        assert!(
            zh.text.contains(
                "- **/info**（或「群信息」）：查看本群的名称、群主、人数和群设置\n\
             - **/bind chatid**（群管理员）：把本群的 chatid 告诉我，之后 /info 能显示完整信息\n\
             - **/help**（或「帮助」）：显示这段说明"
            ),
            "{}",
            zh.text
        );
        let en = Renderer::new(Language::En, None)
            .unwrap()
            .render(Template::Help, &HelpView::new(Some("/foo")));
        assert!(
            en.text.contains("I did not understand \"/foo\""),
            "{}",
            en.text
        );
        assert!(en.text.contains(
            "- **/info**: this group's name, owner, member count and settings\n\
             - **/bind chatid** (group admins): tell me this group's chatid so /info can show everything\n\
             - **/help**: show this help"
        ), "{}", en.text);
        for spec in command::COMMANDS {
            assert!(zh.text.contains(spec.about_zh) && en.text.contains(spec.about_en));
        }
    }

    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::config::Language;
    use crate::dingtalk::RetryPolicy;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_forged_msgtype_cannot_forge_log_lines() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let forged = "x\n2026-01-01T00:00:00Z ERROR forged…\x1b[2J";
        let body = serde_json::json!({
            "msgId": "m", "conversationId": "cid", "conversationType": forged,
            "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s",
            "msgtype": forged, "createAt": forged, "conversationTitle": "群",
        });
        let cb = serde_json::from_value::<crate::dingtalk::RobotMessage>(body)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cb.body, Body::Other(forged.to_string()));

        let dir = std::env::temp_dir().join(format!("dingbot-bot-log-{}", std::process::id()));
        let http = crate::dingtalk::transport::http_client(Duration::from_secs(1)).unwrap();
        let client = Arc::new(DingTalkClient::new(
            http,
            "http://127.0.0.1:9",
            "http://127.0.0.1:9",
            "k",
            "s".to_string().into(),
            RetryPolicy::default(),
        ));
        let bot = Bot::new(
            client,
            Renderer::new(Language::Zh, None).unwrap(),
            Arc::new(GroupDirectory::new(&[])),
            Arc::new(BindingStore::open(&dir).unwrap()),
            BotOptions {
                lookup_deadline: Duration::from_secs(1),
                info_ttl: Duration::ZERO,
                info_max_groups: 10,
                sources: Vec::new(),
                denied_backoff: Duration::ZERO,
                admin_user_ids: Vec::new(),
                inline_mention: false,
                max_lookups: 1,
            },
        );
        let reply = bot.respond(&cb, Task::Answer).await;
        drop(reply);
        let _ = std::fs::remove_dir_all(&dir);

        let logged = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("non-text message"), "{logged}");
        assert!(
            logged.contains("callback field has an unexpected shape"),
            "{logged}"
        );
        assert!(
            !logged.contains('\x1b'),
            "raw escape byte logged: {logged:?}"
        );
        // Four events, four lines; the forged text stays inside its own line, escaped.
        assert_eq!(logged.lines().count(), 4, "{logged:?}");
        for line in logged.lines() {
            assert!(!line.starts_with("2026-01-01T00:00:00Z"), "{logged:?}");
        }
        assert!(logged.contains(r#"msgtype="x\n2026-01-01"#), "{logged:?}");
    }
}
