//! Typed configuration: built-in defaults, then a TOML file, then `DINGBOT_<SECTION>__<KEY>`
//! environment variables, checked once at startup.
//!
//! Owns the public key names (documented in the README; they are API). figment layers the
//! sources and serde types the values (`SocketAddr`, [`BaseUrl`], `NonZero*`); ranges are
//! one table ([`RANGES`]) and the rest is [`Settings::check`]. Every problem is one
//! [`ConfigError`] naming the key and where its value came from. The app secret is a
//! [`SecretString`] and never shown; a TOML syntax error is reported by line and column,
//! never by quoting the line. A leaf module: it uses nothing else from the crate.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Source};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

/// The prefix of every environment variable dingbot reads for its settings.
pub const ENV_PREFIX: &str = "DINGBOT_";

/// Keys whose environment values stay strings even when they look like numbers.
const STRING_KEYS: [&str; 7] = [
    "dingtalk.app_key",
    "reply.robot_code",
    "dingtalk.app_secret",
    "state.redis_url",
    "state.key_prefix",
    "storage.data_dir",
    "bot.templates_dir",
];

/// `(key, lowest, highest, note)` of every number with a range.
const RANGES: [(&str, u64, u64, &str); 25] = [
    ("server.body_limit_bytes", 1024, 16 * 1024 * 1024, ""),
    ("server.max_in_flight", 1, 1_000_000, ""),
    ("server.queue_wait_ms", 0, 10_000, " (0 = refuse at once)"),
    ("server.workers", 0, 256, " (0 = one per CPU)"),
    ("server.read_timeout_ms", 500, 60_000, ""),
    ("dingtalk.dedupe_ttl_secs", 60, 86_400, ""),
    ("dingtalk.dedupe_capacity", 1024, 16_777_216, ""),
    (
        "dingtalk.max_clock_skew_secs",
        60,
        86_400,
        " seconds (DingTalk documents 3600)",
    ),
    ("dingtalk.request_timeout_ms", 100, 120_000, ""),
    ("dingtalk.max_messages_per_signature", 1, 1000, ""),
    ("dingtalk.max_parallel_requests", 1, 4096, ""),
    (
        "rate_limit.per_group_per_minute",
        1,
        10_000,
        " (DingTalk throttles a robot above 20 messages a minute)",
    ),
    (
        "bot.info_cache_ttl_secs",
        0,
        86_400,
        " (0 disables the cache)",
    ),
    ("bot.info_cache_max_groups", 1, 10_000_000, ""),
    (
        "group_info.denied_backoff_secs",
        0,
        604_800,
        " (0 asks again every time)",
    ),
    ("state.command_timeout_ms", 10, 10_000, ""),
    ("state.connect_timeout_ms", 10, 60_000, ""),
    ("state.lookup_lock_ms", 100, 120_000, ""),
    ("stream.ping_interval_ms", 10, 600_000, ""),
    ("stream.idle_timeout_ms", 50, 3_600_000, ""),
    ("stream.backoff_base_ms", 1, 600_000, ""),
    ("stream.backoff_max_ms", 1, 3_600_000, ""),
    ("stream.healthy_after_ms", 0, 3_600_000, ""),
    ("stream.refused_retry_ms", 1, 3_600_000, ""),
    ("stream.max_frame_bytes", 1024, 16 * 1024 * 1024, ""),
];

/// Everything dingbot needs to run, after validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where and how the HTTP server listens.
    pub server: ServerSettings,
    /// The DingTalk app whose robot we are.
    pub dingtalk: DingTalkSettings,
    /// Per-group reply budget.
    pub rate_limit: RateLimitSettings,
    /// Reply language and templates.
    pub bot: BotSettings,
    /// Log output format.
    pub log: LogSettings,
    /// Where `/info` looks a group up, and how long a refusal is remembered.
    pub group_info: GroupInfoSettings,
    /// Where dingbot keeps what must survive a restart (`/bind` bindings).
    pub storage: StorageSettings,
    /// How replies reach the chat when the sessionWebhook cannot take them.
    pub reply: ReplySettings,
    /// Where admission state, bindings and the group-info cache live (`memory` or `redis`).
    pub state: StateSettings,
    /// Groups whose legacy `chatid` the admin knows (created through the server API).
    pub groups: Vec<GroupBinding>,
    /// Timings and limits of the Stream connection (`dingtalk.mode` `stream` or `both`).
    pub stream: StreamSettings,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Socket address to bind, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Path DingTalk POSTs callbacks to (the "消息接收地址" path).
    pub callback_path: String,
    /// Largest callback body accepted; larger bodies get 413 unread.
    pub body_limit_bytes: usize,
    /// Callbacks processed at once (body read to reply sent); a callback beyond it waits
    /// up to `queue_wait_ms` for a slot, then gets 503.
    pub max_in_flight: NonZeroUsize,
    /// How long a verified callback may wait for a free slot before it is refused with
    /// 503; 0 refuses at once. DingTalk does not redeliver robot messages, so a short wait
    /// rides out a burst instead of losing commands.
    pub queue_wait_ms: u64,
    /// Seconds to finish in-flight callbacks and replies after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Milliseconds a client has to send a request's head, and a verified callback's whole
    /// body (counted from the end of its head); then 408 and the connection is closed.
    pub read_timeout_ms: u64,
    /// HTTP worker threads; 0 means one per CPU.
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            callback_path: "/dingtalk/callback".into(),
            body_limit_bytes: 65_536,
            max_in_flight: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            queue_wait_ms: 1000,
            shutdown_grace_secs: 10,
            read_timeout_ms: 5000,
            workers: 0,
        }
    }
}

/// `[dingtalk]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DingTalkSettings {
    /// The app's AppKey (a.k.a. clientId); required.
    pub app_key: String,
    /// The app's AppSecret: fetches tokens and is the callback signing key; required.
    pub app_secret: SecretString,
    /// Legacy API host (`gettoken`, `chat/get`, and the host of every sessionWebhook).
    pub oapi_base: BaseUrl,
    /// New API host (`/v1.0/...`).
    pub api_base: BaseUrl,
    /// Callbacks whose `timestamp` is further than this from our clock are refused.
    pub max_clock_skew_secs: u64,
    /// Further origins (`scheme://host[:port]`) a sessionWebhook may point at.
    pub extra_webhook_hosts: Vec<BaseUrl>,
    /// Paths a sessionWebhook may have (exact match); `/robot/sendBySession` also needs a
    /// non-empty `session` parameter.
    pub webhook_paths: Vec<String>,
    /// Timeout of every outbound HTTP call, in milliseconds.
    pub request_timeout_ms: u64,
    /// How many messages with distinct msgIds one (timestamp, sign) pair, i.e. one signed
    /// millisecond, may carry (k); once it has, the pair is refused from the headers.
    pub max_messages_per_signature: NonZeroUsize,
    /// Seconds a msgId is remembered, so that a redelivery is not answered twice.
    pub dedupe_ttl_secs: u64,
    /// Entries of the msgId dedupe table (8 bytes each, allocated at start).
    pub dedupe_capacity: usize,
    /// API calls to DingTalk on the wire at once, and as many reply POSTs; each uses
    /// one pooled keep-alive connection, so this also caps connections and TLS handshakes.
    pub max_parallel_requests: NonZeroUsize,
    /// Which HTTP client POSTs replies.
    pub reply_client: ReplyClientChoice,
    /// How robot messages arrive: HTTP callbacks, a Stream connection, or both.
    pub mode: DingTalkMode,
}

impl Default for DingTalkSettings {
    fn default() -> Self {
        DingTalkSettings {
            app_key: String::new(),
            app_secret: String::new().into(),
            oapi_base: BaseUrl::builtin("https://oapi.dingtalk.com"),
            api_base: BaseUrl::builtin("https://api.dingtalk.com"),
            max_clock_skew_secs: 3600,
            extra_webhook_hosts: Vec::new(),
            webhook_paths: vec!["/robot/sendBySession".into()],
            request_timeout_ms: 5000,
            max_messages_per_signature: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
            dedupe_ttl_secs: 600,
            dedupe_capacity: 262_144,
            max_parallel_requests: NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            reply_client: ReplyClientChoice::Auto,
            mode: DingTalkMode::Http,
        }
    }
}

/// `dingtalk.reply_client`: which HTTP client POSTs replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyClientChoice {
    /// The direct client, unless a proxy variable is set (then reqwest).
    #[default]
    Auto,
    /// Always the direct client (never a proxy).
    Direct,
    /// Always reqwest (the shared API client, proxy variables honoured).
    Reqwest,
}

/// `dingtalk.mode`: the doors robot messages come in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DingTalkMode {
    /// DingTalk POSTs callbacks to `server.callback_path` (needs a public HTTPS URL).
    #[default]
    Http,
    /// dingbot holds an outbound WebSocket to DingTalk; the callback route is not served.
    Stream,
    /// Both doors (for moving from one to the other).
    Both,
}

impl DingTalkMode {
    /// Whether the HTTP callback route is served.
    pub fn serves_http(self) -> bool {
        matches!(self, DingTalkMode::Http | DingTalkMode::Both)
    }

    /// Whether a Stream connection is held.
    pub fn holds_stream(self) -> bool {
        matches!(self, DingTalkMode::Stream | DingTalkMode::Both)
    }
}

/// `[stream]`: the Stream connection's timings (used when `dingtalk.mode` is `stream` or
/// `both`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// How often dingbot sends a WebSocket ping on an idle-or-not connection.
    pub ping_interval_ms: u64,
    /// The watchdog: a connection that brings no frame and no pong for this long is
    /// treated as dead and replaced; `/readyz` also needs a sign of life within it.
    pub idle_timeout_ms: u64,
    /// First reconnect delay (full jitter: a random wait up to the current step).
    pub backoff_base_ms: u64,
    /// Largest reconnect step.
    pub backoff_max_ms: u64,
    /// A connection open at least this long resets the backoff to its base.
    pub healthy_after_ms: u64,
    /// Wait before asking again after DingTalk refused the credentials.
    pub refused_retry_ms: u64,
    /// Largest frame accepted; a bigger one ends (and replaces) the connection.
    pub max_frame_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            ping_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            healthy_after_ms: 60_000,
            refused_retry_ms: 300_000,
            max_frame_bytes: 1024 * 1024,
        }
    }
}

/// An `http(s)://host[:port]` URL without query or fragment, checked when it is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BaseUrl(Url);

impl BaseUrl {
    /// One of the defaults above; every test that loads a configuration parses them.
    fn builtin(url: &'static str) -> BaseUrl {
        match BaseUrl::try_from(url.to_string()) {
            Ok(url) => url,
            Err(problem) => panic!("built-in default: {problem}"),
        }
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The URL without a trailing slash, e.g. `https://oapi.dingtalk.com`.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl TryFrom<String> for BaseUrl {
    type Error = String;

    fn try_from(value: String) -> Result<BaseUrl, String> {
        let url = Url::parse(&value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{value:?} must be an http(s) URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{value:?} must not have a query or fragment"));
        }
        Ok(BaseUrl(url))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Commands answered per group per minute (burst of this size, then one every 60/N s).
    pub per_group_per_minute: NonZeroU32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        let per_group_per_minute = NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN);
        RateLimitSettings {
            per_group_per_minute,
        }
    }
}

/// `[bot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotSettings {
    /// Reply language: `zh` (default) or `en`.
    pub language: Language,
    /// Directory whose `<language>/<name>.md.j2` files override the embedded templates.
    pub templates_dir: Option<PathBuf>,
    /// Also write `@<userid>` into the reply text (besides `at.atUserIds`).
    pub inline_mention: bool,
    /// Seconds a group's info is reused before asking DingTalk again; 0 disables caching.
    pub info_cache_ttl_secs: u64,
    /// Most group summaries cached at once; the least recently used go first.
    pub info_cache_max_groups: NonZeroU64,
    /// Userids (`senderStaffId`) allowed to `/bind` in any group, besides DingTalk's group
    /// admins (`isAdmin`).
    pub admin_user_ids: Vec<String>,
}

impl Default for BotSettings {
    fn default() -> Self {
        BotSettings {
            language: Language::Zh,
            templates_dir: None,
            inline_mention: false,
            info_cache_ttl_secs: 60,
            info_cache_max_groups: NonZeroU64::new(10_000).unwrap_or(NonZeroU64::MIN),
            admin_user_ids: Vec::new(),
        }
    }
}

/// `[group_info]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupInfoSettings {
    /// Sources `/info` asks, in this order, until the summary is complete.
    pub sources: Vec<InfoSource>,
    /// Seconds a source that refused a group (no permission, not a scene group) is not
    /// asked again for that group; 0 asks every time.
    pub denied_backoff_secs: u64,
}

impl Default for GroupInfoSettings {
    fn default() -> Self {
        let sources = InfoSource::ALL.to_vec();
        GroupInfoSettings {
            sources,
            denied_backoff_secs: 600,
        }
    }
}

/// One place `/info` can learn about a group from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfoSource {
    /// `chat/get`: everything, but only with a chatid (`[[groups]]` or `/bind`).
    ChatGet,
    /// `topapi/im/chat/scenegroup/get`: title, owner and settings of the app's scene groups.
    SceneGroup,
    /// `/v1.0/im/groups/baseInfos/query`: title and member count.
    BaseInfo,
    /// The callback's `conversationTitle`: the title, always at hand, no API call.
    Callback,
}

impl InfoSource {
    /// Every source, in the default order.
    pub const ALL: [InfoSource; 4] = [
        InfoSource::ChatGet,
        InfoSource::SceneGroup,
        InfoSource::BaseInfo,
        InfoSource::Callback,
    ];

    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            InfoSource::ChatGet => "chat_get",
            InfoSource::SceneGroup => "scene_group",
            InfoSource::BaseInfo => "base_info",
            InfoSource::Callback => "callback",
        }
    }
}

/// `[reply]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplySettings {
    /// What to do when the sessionWebhook refuses a reply for good or has expired.
    pub fallback: ReplyFallback,
    /// `robotCode` for the robot send APIs; unset: the callback's `robotCode`, else
    /// `dingtalk.app_key` (an internal app's robot code is its AppKey).
    pub robot_code: Option<String>,
}

/// `reply.fallback`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFallback {
    /// Send through the robot send APIs (`groupMessages/send`, `oToMessages/batchSend`;
    /// needs the `qyapi_robot_sendmsg` permission).
    #[default]
    RobotApi,
    /// No second path: the reply is lost (and an expired sessionWebhook refused).
    None,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of `bindings.json`; created at startup if missing, must be writable.
    pub data_dir: PathBuf,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            data_dir: "./data".into(),
        }
    }
}

/// `state.backend`: where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// This process's memory: one instance (the default).
    #[default]
    Memory,
    /// A Redis (or Valkey/KeyDB) server shared by every replica.
    Redis,
}

/// `[state]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// `memory` (default) or `redis`.
    pub backend: StateBackend,
    /// `redis://[user:password@]host:port/db` or `rediss://…` for TLS; required with
    /// `backend = "redis"`. Secret (it may hold the password): never shown.
    pub redis_url: SecretString,
    /// Prefix of every key dingbot writes, so one Redis can serve several bots.
    pub key_prefix: String,
    /// Longest wait for one Redis command; past it the callback is decided locally.
    pub command_timeout_ms: u64,
    /// Longest wait for a (re)connection to Redis.
    pub connect_timeout_ms: u64,
    /// How long one replica's group lookup holds the cross-replica lock (and how long the
    /// others wait for its result before looking the group up themselves).
    pub lookup_lock_ms: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            backend: StateBackend::Memory,
            redis_url: String::new().into(),
            key_prefix: "dingbot:".into(),
            command_timeout_ms: 250,
            connect_timeout_ms: 1000,
            lookup_lock_ms: 3000,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

/// A reply language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// 简体中文
    #[default]
    Zh,
    /// English
    En,
}

impl Language {
    /// The folder name of this language's templates.
    pub fn code(self) -> &'static str {
        match self {
            Language::Zh => "zh",
            Language::En => "en",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[groups]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupBinding {
    /// Legacy `chat…` id, the only id `chat/get` accepts.
    pub chatid: String,
    /// The group's `cid…` id as callbacks carry it; learned at startup when absent.
    #[serde(default)]
    pub open_conversation_id: Option<String>,
}

/// A configuration problem, phrased for the admin who has to fix it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {problem} (from {source_name})")]
pub struct ConfigError {
    /// Dotted key, e.g. `dingtalk.app_secret`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// Where the value (or its absence) came from: file path, env var or default.
    pub source_name: String,
}

impl Settings {
    /// Loads defaults, then `path` (if given), then `DINGBOT_*` variables from the process
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let vars = std::env::vars_os();
        Self::load_with_env(
            path,
            vars.map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into())),
        )
    }

    /// Like [`Settings::load`] with an explicit environment (tests use this). figment's
    /// `Env` provider reads only the process environment and parses every value, which
    /// would turn a numeric-looking secret into a number; each variable here becomes one
    /// figment layer instead, its value parsed by figment's own `Value` parser.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            let fail = |problem| ConfigError {
                key: "--config".into(),
                problem,
                source_name: "command line".into(),
            };
            if !path.is_file() {
                let shown = path.display();
                return Err(fail(format!(
                    "file {shown} does not exist or is not a file"
                )));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("file {} cannot be read ({e})", path.display())))?;
            check_syntax(&text, || format!("file {}", path.display()))?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(name, raw)| {
                let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                let key = key.replace("__", ".");
                (!key.split('.').any(str::is_empty)).then_some((key, raw))
            })
            .collect();
        for (key, raw) in &env {
            let value = match raw.parse::<Value>() {
                Ok(v) if !STRING_KEYS.contains(&key.as_str()) => v,
                _ => Value::from(raw.clone()),
            };
            figment = figment.merge(Serialized::default(key, value));
        }
        extract(&figment, &env)
    }

    /// Parses a TOML document (tests and `check`); same layering, no environment.
    pub fn from_toml_str(toml: &str) -> Result<Settings, ConfigError> {
        check_syntax(toml, || "TOML text".into())?;
        extract(&Figment::from(Toml::string(toml)), &[])
    }

    /// Checks what serde and [`RANGES`] cannot: paths, required strings, lists.
    fn check(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: String| Err((key.to_string(), problem));
        let path = &self.server.callback_path;
        if !is_path(path) || path.len() < 2 {
            let problem = format!("{path:?} must be a path such as /dingtalk/callback");
            return fail("server.callback_path", problem);
        }
        if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
            let problem = format!("{path:?} is reserved for dingbot's own endpoint");
            return fail("server.callback_path", problem);
        }
        let dt = &self.dingtalk;
        if dt.app_key.trim().is_empty() {
            let problem = "is required: the AppKey of your DingTalk app";
            return fail("dingtalk.app_key", problem.into());
        }
        if dt.app_secret.expose_secret().trim().is_empty() {
            let problem = "is required: the AppSecret of your DingTalk app (set DINGBOT_DINGTALK__APP_SECRET)";
            return fail("dingtalk.app_secret", problem.into());
        }
        if dt.webhook_paths.is_empty() || !dt.webhook_paths.iter().all(|p| is_path(p)) {
            let problem = "must list paths such as /robot/sendBySession (no query)";
            return fail("dingtalk.webhook_paths", problem.into());
        }
        if self
            .bot
            .admin_user_ids
            .iter()
            .any(|id| id.trim().is_empty())
        {
            return fail(
                "bot.admin_user_ids",
                "must not contain empty userids".into(),
            );
        }
        let sources = &self.group_info.sources;
        if sources.is_empty() {
            let all = InfoSource::ALL.map(InfoSource::name).join(", ");
            return fail(
                "group_info.sources",
                format!("must name at least one of {all}"),
            );
        }
        if let Some((_, s)) = (sources.iter().enumerate()).find(|(i, s)| sources[..*i].contains(s))
        {
            return fail(
                "group_info.sources",
                format!("{:?} is listed twice", s.name()),
            );
        }
        let st = &self.stream;
        if st.backoff_base_ms > st.backoff_max_ms {
            let problem = format!(
                "must not be below stream.backoff_base_ms ({})",
                st.backoff_base_ms
            );
            return fail("stream.backoff_max_ms", problem);
        }
        if st.ping_interval_ms >= st.idle_timeout_ms {
            let problem = format!(
                "must be above stream.ping_interval_ms ({}): a ping has to be answered within it",
                st.ping_interval_ms
            );
            return fail("stream.idle_timeout_ms", problem);
        }
        if self
            .reply
            .robot_code
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            let problem = "must not be empty when given (leave it out to use the callback's robotCode or the app_key)";
            return fail("reply.robot_code", problem.into());
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return fail(
                "storage.data_dir",
                "must not be empty (default ./data)".into(),
            );
        }
        if let Some(dir) = &self.bot.templates_dir
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            let problem = format!("{} is not a directory", dir.display());
            return fail("bot.templates_dir", problem);
        }
        let state = &self.state;
        if state.backend == StateBackend::Redis {
            let url = state.redis_url.expose_secret();
            if url.trim().is_empty() {
                let problem = "is required with state.backend = \"redis\", e.g. redis://127.0.0.1:6379/0 (set DINGBOT_STATE__REDIS_URL)";
                return fail("state.redis_url", problem.into());
            }
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {}
                // Never echo the value: it may hold the password.
                _ => {
                    let problem =
                        "must be a redis:// or rediss:// URL with a host (value not shown)";
                    return fail("state.redis_url", problem.into());
                }
            }
        }
        if state.key_prefix.is_empty() || state.key_prefix.len() > 64 {
            let problem = "must be 1 to 64 characters, e.g. dingbot:";
            return fail("state.key_prefix", problem.into());
        }
        for (i, g) in self.groups.iter().enumerate() {
            let key = |field: &str| format!("groups[{i}].{field}");
            if g.chatid.trim().is_empty() {
                return fail(&key("chatid"), "must not be empty".into());
            }
            if self.groups[..i]
                .iter()
                .any(|other| other.chatid == g.chatid)
            {
                return fail(&key("chatid"), format!("{:?} is listed twice", g.chatid));
            }
            if g.open_conversation_id
                .as_deref()
                .is_some_and(|c| c.trim().is_empty())
            {
                let problem = "must not be empty when given (leave it out to learn it at startup)";
                return fail(&key("open_conversation_id"), problem.into());
            }
        }
        Ok(())
    }
}

/// `/a/b`: starts with a slash; no query, fragment or space.
fn is_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains(['?', '#', ' '])
}

/// Range checks on the layered values (before serde, so that 0 for a `NonZero` key gets
/// the range message too), then serde, then [`Settings::check`].
fn extract(figment: &Figment, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    let error = |key: &str, problem| ConfigError {
        key: key.to_string(),
        problem,
        source_name: source_of(figment, env, key),
    };
    for (key, lo, hi, note) in RANGES {
        if let Ok(value) = figment.extract_inner::<u64>(key)
            && !(lo..=hi).contains(&value)
        {
            return Err(error(
                key,
                match lo {
                    0 => format!("must be at most {hi}{note}"),
                    _ => format!("must be between {lo} and {hi}{note}"),
                },
            ));
        }
    }
    let settings: Settings = figment.extract().map_err(|e| {
        let mut key = e.path.join(".");
        let problem = match &e.kind {
            Kind::MissingField(field) => {
                key = [key.as_str(), field]
                    .join(".")
                    .trim_start_matches('.')
                    .into();
                "is required but missing".to_string()
            }
            // Never echo a value that might be the secret.
            _ if key.contains("app_secret") || key.contains("redis_url") => {
                "invalid value (not shown): expected a string".into()
            }
            kind => kind.to_string(),
        };
        error(if key.is_empty() { "(top level)" } else { &key }, problem)
    })?;
    settings
        .check()
        .map_err(|(key, problem)| error(&key, problem))?;
    Ok(settings)
}

/// Where `key`'s value came from: the environment variable that set it, the file, or
/// (when nothing set it) where it could be set.
fn source_of(figment: &Figment, env: &[(String, String)], key: &str) -> String {
    let from_env = env.iter().rev().find(|(k, _)| {
        key.strip_prefix(k.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    });
    if let Some((k, _)) = from_env {
        return format!("environment variable {ENV_PREFIX}{}", env_name(k));
    }
    match figment.find_metadata(key) {
        Some(md) => match &md.source {
            Some(Source::File(p)) => format!("file {}", p.display()),
            _ => md.name.to_string(),
        },
        None => format!("config file or {ENV_PREFIX}{}", env_name(key)),
    }
}

/// Refuses `text` unless it is TOML, giving the line, the column and the parser's short
/// description: never the line itself, which may hold the secret.
fn check_syntax(text: &str, source_name: impl FnOnce() -> String) -> Result<(), ConfigError> {
    let Err(e) = Toml::from_str::<Dict>(text) else {
        return Ok(());
    };
    let before = text.get(..e.span().map_or(0, |s| s.start)).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let what = e.message().lines().collect::<Vec<_>>().join("; ");
    Err(ConfigError {
        key: "TOML syntax".into(),
        problem: format!("line {line}, column {column}: {what}"),
        source_name: source_name(),
    })
}

/// `dingtalk.app_secret` → `DINGTALK__APP_SECRET`.
pub fn env_name(key: &str) -> String {
    key.split('.')
        .map(|s| s.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("__")
}
#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[dingtalk]
app_key = "dingkey"
app_secret = "s3cret-value"
"#;

    #[test]
    fn stream_mode_and_timings() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.dingtalk.mode, DingTalkMode::Http);
        assert!(s.dingtalk.mode.serves_http() && !s.dingtalk.mode.holds_stream());
        assert_eq!(s.stream.idle_timeout_ms, 90_000);
        assert_eq!(
            (s.stream.backoff_base_ms, s.stream.backoff_max_ms),
            (1_000, 60_000)
        );

        let env = [
            ("DINGBOT_DINGTALK__APP_KEY", "k"),
            ("DINGBOT_DINGTALK__APP_SECRET", "s"),
            ("DINGBOT_DINGTALK__MODE", "stream"),
            ("DINGBOT_STREAM__IDLE_TIMEOUT_MS", "500"),
            ("DINGBOT_STREAM__PING_INTERVAL_MS", "100"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.dingtalk.mode, DingTalkMode::Stream);
        assert!(!s.dingtalk.mode.serves_http() && s.dingtalk.mode.holds_stream());
        assert_eq!(s.stream.idle_timeout_ms, 500);

        let bad = |extra: &str| {
            Settings::from_toml_str(&format!("{MINIMAL}{extra}"))
                .unwrap_err()
                .to_string()
        };
        assert!(bad("mode = \"carrier-pigeon\"").contains("dingtalk.mode"));
        let e = bad("[stream]\nbackoff_base_ms = 5000\nbackoff_max_ms = 1000");
        assert!(e.contains("stream.backoff_max_ms"), "{e}");
        let e = bad("[stream]\nping_interval_ms = 1000\nidle_timeout_ms = 1000");
        assert!(e.contains("stream.idle_timeout_ms"), "{e}");
        let e = bad("[stream]\nmax_frame_bytes = 10");
        assert!(e.contains("stream.max_frame_bytes"), "{e}");
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(s.server.callback_path, "/dingtalk/callback");
        assert_eq!(s.server.max_in_flight.get(), 1024);
        assert_eq!(s.dingtalk.oapi_base.as_str(), "https://oapi.dingtalk.com");
        assert_eq!(s.dingtalk.api_base.as_str(), "https://api.dingtalk.com");
        assert_eq!(s.dingtalk.max_clock_skew_secs, 3600);
        assert_eq!(s.dingtalk.webhook_paths, vec!["/robot/sendBySession"]);
        assert_eq!(s.dingtalk.max_parallel_requests.get(), 32);
        assert_eq!(s.dingtalk.reply_client, ReplyClientChoice::Auto);
        assert_eq!(s.rate_limit.per_group_per_minute.get(), 20);
        assert_eq!(s.bot.info_cache_max_groups.get(), 10_000);
        assert_eq!(s.bot.language, Language::Zh);
        assert!(s.groups.is_empty());
        assert!(s.bot.admin_user_ids.is_empty());
        assert_eq!(s.group_info.sources, InfoSource::ALL.to_vec());
        assert_eq!(s.group_info.denied_backoff_secs, 600);
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn group_info_sources_are_checked() {
        let s = Settings::from_toml_str(&format!(
            "{MINIMAL}[group_info]\nsources = [\"base_info\", \"callback\"]\ndenied_backoff_secs = 0\n"
        ))
        .unwrap();
        assert_eq!(
            s.group_info.sources,
            vec![InfoSource::BaseInfo, InfoSource::Callback]
        );
        assert_eq!(s.group_info.denied_backoff_secs, 0);

        let e = Settings::from_toml_str(&format!(
            "{MINIMAL}[group_info]\nsources = [\"chat_get\", \"scenegroup\"]\n"
        ))
        .unwrap_err();
        assert!(e.key.starts_with("group_info.sources"), "{e}");
        assert!(e.to_string().contains("scene_group"), "{e}");

        let e = Settings::from_toml_str(&format!(
            "{MINIMAL}[group_info]\nsources = [\"callback\", \"callback\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "group_info.sources");
        assert!(e.problem.contains("twice"), "{e}");

        let e =
            Settings::from_toml_str(&format!("{MINIMAL}[group_info]\nsources = []\n")).unwrap_err();
        assert_eq!(e.key, "group_info.sources");

        let e = Settings::from_toml_str(&format!(
            "{MINIMAL}[group_info]\ndenied_backoff_secs = 99999999\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "group_info.denied_backoff_secs");
    }

    #[test]
    fn storage_and_admins_are_checked() {
        let s = Settings::from_toml_str(&format!(
            "{MINIMAL}[storage]\ndata_dir = \"/var/lib/dingbot\"\n[bot]\nadmin_user_ids = [\"manager4220\"]\n"
        ))
        .unwrap();
        assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/dingbot"));
        assert_eq!(s.bot.admin_user_ids, vec!["manager4220".to_string()]);

        let e =
            Settings::from_toml_str(&format!("{MINIMAL}[storage]\ndata_dir = \"\"\n")).unwrap_err();
        assert_eq!(e.key, "storage.data_dir");
        let e = Settings::from_toml_str(&format!("{MINIMAL}[bot]\nadmin_user_ids = [\" \"]\n"))
            .unwrap_err();
        assert_eq!(e.key, "bot.admin_user_ids");

        let s = Settings::load_with_env(
            None,
            vec![
                ("DINGBOT_DINGTALK__APP_KEY".into(), "k".into()),
                ("DINGBOT_DINGTALK__APP_SECRET".into(), "s".into()),
                (
                    "DINGBOT_BOT__ADMIN_USER_IDS".into(),
                    r#"["0420000297", "manager4220"]"#.into(),
                ),
                (
                    "DINGBOT_GROUP_INFO__SOURCES".into(),
                    r#"["scene_group", "callback"]"#.into(),
                ),
                ("DINGBOT_STORAGE__DATA_DIR".into(), "/tmp/dingbot-x".into()),
            ],
        )
        .unwrap();
        assert_eq!(s.bot.admin_user_ids.len(), 2);
        assert_eq!(
            s.group_info.sources,
            vec![InfoSource::SceneGroup, InfoSource::Callback]
        );
        assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/dingbot-x"));
    }

    #[test]
    fn state_defaults_to_memory_and_redis_needs_a_url() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.state.backend, StateBackend::Memory);
        assert_eq!(s.state.key_prefix, "dingbot:");
        assert_eq!(s.state.command_timeout_ms, 250);
        assert_eq!(s.state.connect_timeout_ms, 1000);
        assert_eq!(s.state.lookup_lock_ms, 3000);

        let e = Settings::from_toml_str(&format!("{MINIMAL}[state]\nbackend = \"redis\"\n"))
            .unwrap_err();
        assert_eq!(e.key, "state.redis_url");

        let e = Settings::from_toml_str(&format!(
            "{MINIMAL}[state]\nbackend = \"redis\"\nredis_url = \"http://:hunter2@x\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "state.redis_url");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");

        let s = Settings::load_with_env(
            None,
            vec![
                ("DINGBOT_DINGTALK__APP_KEY".into(), "k".into()),
                ("DINGBOT_DINGTALK__APP_SECRET".into(), "s".into()),
                ("DINGBOT_STATE__BACKEND".into(), "redis".into()),
                (
                    "DINGBOT_STATE__REDIS_URL".into(),
                    "rediss://:hunter2@redis.internal:6380/1".into(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(s.state.backend, StateBackend::Redis);
        assert!(!format!("{s:?}").contains("hunter2"));

        let e = Settings::from_toml_str(&format!("{MINIMAL}[state]\ncommand_timeout_ms = 0\n"))
            .unwrap_err();
        assert_eq!(e.key, "state.command_timeout_ms");
    }

    #[test]
    fn secret_never_in_debug() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert!(!format!("{s:?}").contains("s3cret-value"));
    }

    #[test]
    fn missing_app_key_names_the_key() {
        let e = Settings::from_toml_str("[dingtalk]\napp_secret = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "dingtalk.app_key");
        assert!(e.to_string().contains("DINGBOT_DINGTALK__APP_KEY"), "{e}");
    }

    #[test]
    fn env_overrides_file_and_is_named_as_source() {
        let dir = std::env::temp_dir().join(format!("dingbot-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, MINIMAL).unwrap();
        let s = Settings::load_with_env(
            Some(&file),
            vec![
                (
                    "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE".into(),
                    "7".into(),
                ),
                ("DINGBOT_DINGTALK__APP_SECRET".into(), "12345".into()),
                ("OTHER".into(), "ignored".into()),
            ],
        )
        .unwrap();
        assert_eq!(s.rate_limit.per_group_per_minute.get(), 7);
        assert_eq!(s.dingtalk.app_secret.expose_secret(), "12345");

        let e = Settings::load_with_env(
            Some(&file),
            vec![(
                "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE".into(),
                "0".into(),
            )],
        )
        .unwrap_err();
        assert_eq!(e.key, "rate_limit.per_group_per_minute");
        assert!(e.problem.contains("between 1 and 10000"), "{e}");
        let var = "DINGBOT_RATE_LIMIT__PER_GROUP_PER_MINUTE";
        assert_eq!(e.source_name, format!("environment variable {var}"));

        std::fs::write(&file, format!("{MINIMAL}[server]\nlisten = \"nowhere\"\n")).unwrap();
        let e = Settings::load_with_env(Some(&file), Vec::new()).unwrap_err();
        assert_eq!(e.key, "server.listen");
        assert_eq!(e.source_name, format!("file {}", file.display()));
    }

    #[test]
    fn webhook_paths_are_paths() {
        let toml = format!("{MINIMAL}webhook_paths = [\"/robot/sendBySession\", \"/r2\"]\n");
        let s = Settings::from_toml_str(&toml).unwrap();
        assert_eq!(
            s.dingtalk.webhook_paths,
            vec!["/robot/sendBySession", "/r2"]
        );
        for bad in ["[]", "[\"robot\"]", "[\"/robot?session=x\"]"] {
            let toml = format!("{MINIMAL}webhook_paths = {bad}\n");
            let e = Settings::from_toml_str(&toml).unwrap_err();
            assert_eq!(e.key, "dingtalk.webhook_paths", "{bad}");
        }
    }

    #[test]
    fn a_syntax_error_gives_line_and_column_not_the_line() {
        let e = Settings::from_toml_str("[dingtalk]\napp_key = \"k\"\napp_secret = \"s3cret-v\n")
            .unwrap_err();
        assert_eq!(e.key, "TOML syntax");
        assert!(e.problem.starts_with("line 3, column "), "{e}");
        assert!(!format!("{e} {e:?}").contains("s3cret"), "{e:?}");
    }

    #[test]
    fn unknown_key_is_an_error_not_ignored() {
        let e = Settings::from_toml_str(&format!(
            "{MINIMAL}\n[rate_limit]\nper_group_per_minut = 5\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("per_group_per_minut"), "{e}");
    }

    #[test]
    fn bad_base_url_is_rejected() {
        let e =
            Settings::from_toml_str(&format!("{MINIMAL}oapi_base = \"ftp://x\"\n")).unwrap_err();
        assert_eq!(e.key, "dingtalk.oapi_base");
    }

    #[test]
    fn wrong_type_for_secret_does_not_echo_value() {
        let e = Settings::from_toml_str("[dingtalk]\napp_key = \"k\"\napp_secret = 987654321\n")
            .unwrap_err();
        assert!(!e.to_string().contains("987654321"), "{e}");
        assert!(e.to_string().contains("app_secret"), "{e}");
    }
}
