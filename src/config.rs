//! Typed configuration: built-in defaults, then a TOML file, then `DINGBOT_<SECTION>__<KEY>`
//! environment variables, checked once at startup. The key names are API (README).
//!
//! figment layers the sources, serde types the values; ranges sit beside their keys (and
//! make [`RANGES`]), the rest is [`Settings::check`]. Every problem is one [`ConfigError`] naming the key and where
//! its value came from. The app secret is never shown, nor a line with a TOML syntax error
//! (only its line and column). A leaf module: it uses nothing else from the crate.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZero, NonZeroU32, NonZeroU64, NonZeroUsize};
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
#[rustfmt::skip]
const STRING_KEYS: [&str; 7] = [
    "dingtalk.app_key", "reply.robot_code", "dingtalk.app_secret", "state.redis_url",
    "state.key_prefix", "storage.data_dir", "bot.templates_dir",
];

/// Declares the settings sections: each struct (every key optional, unknown keys refused)
/// and its `Default`, from the `key: Type = default` written beside each key, and
/// [`RANGES`] from the `=> lowest..=highest; "note"` after a bounded number's default.
macro_rules! section {
    (@note) => { "" };
    (@note $note:literal) => { $note };
    ($($(#[$doc:meta])* $name:ident($section:literal) {
        $($(#[$fdoc:meta])* $key:ident: $ty:ty = $default:expr
            $(=> $lo:literal..=$hi:expr $(; $note:literal)?)?,)*
    })*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub struct $name { $($(#[$fdoc])* pub $key: $ty,)* }

            impl Default for $name {
                fn default() -> Self {
                    $name { $($key: $default,)* }
                }
            }
        )*

        /// `(key, lowest, highest, note)` of every number with a range.
        const RANGES: &[(&str, u64, u64, &str)] = &[$($($(
            (concat!($section, ".", stringify!($key)), $lo, $hi, section!(@note $($note)?)),
        )?)*)*];
    };
}

/// A `NonZero*` default, checked at compile time.
macro_rules! nz {
    ($n:expr) => {
        const {
            match NonZero::new($n) {
                Some(n) => n,
                None => panic!("a NonZero default is 0"),
            }
        }
    };
}

/// Declares keyword enums: each variant's word in the configuration beside it, the first
/// variant the default, `ALL` the variants in order, and `$get()` (`name`, `code`) the word.
macro_rules! keywords {
    ($($(#[$doc:meta])* $name:ident($get:ident) {
        $(#[$doc0:meta])* $v0:ident = $w0:literal, $($(#[$vdoc:meta])* $v:ident = $w:literal,)*
    })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
        pub enum $name {
            $(#[$doc0])* #[default] #[serde(rename = $w0)] $v0,
            $($(#[$vdoc])* #[serde(rename = $w)] $v,)*
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: [$name; [$w0 $(, $w)*].len()] = [$name::$v0 $(, $name::$v)*];

            /// The word for this value in the configuration.
            pub fn $get(self) -> &'static str {
                match self { $name::$v0 => $w0, $($name::$v => $w,)* }
            }
        }
    )*};
}

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

section! {
    /// `[server]`
    ServerSettings("server") {
        /// Socket address to bind, e.g. `0.0.0.0:8080`.
        listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080)),
        /// Path DingTalk POSTs callbacks to (the "消息接收地址" path).
        callback_path: String = "/dingtalk/callback".into(),
        /// Largest callback body accepted; larger bodies get 413 unread.
        body_limit_bytes: usize = 65_536 => 1024..=16 * 1024 * 1024,
        /// Callbacks processed at once (body read to reply sent); more wait `queue_wait_ms`.
        max_in_flight: NonZeroUsize = nz!(1024) => 1..=1_000_000,
        /// How long a verified callback may wait for a slot before a 503; 0 refuses at once
        /// (DingTalk does not redeliver robot messages, so a short wait rides out a burst).
        queue_wait_ms: u64 = 1000 => 0..=10_000; " (0 = refuse at once)",
        /// Seconds to finish in-flight callbacks and replies after SIGTERM/SIGINT.
        shutdown_grace_secs: u64 = 10,
        /// Milliseconds for a request's head, then for a verified callback's body; then 408.
        read_timeout_ms: u64 = 5000 => 500..=60_000,
        /// HTTP worker threads; 0 means one per CPU.
        workers: usize = 0 => 0..=256; " (0 = one per CPU)",
    }

    /// `[dingtalk]`
    DingTalkSettings("dingtalk") {
        /// The app's AppKey (a.k.a. clientId); required.
        app_key: String = String::new(),
        /// The app's AppSecret: fetches tokens and is the callback signing key; required.
        app_secret: SecretString = String::new().into(),
        /// Legacy API host (`gettoken`, `chat/get`, and the host of every sessionWebhook).
        oapi_base: BaseUrl = BaseUrl::builtin("https://oapi.dingtalk.com"),
        /// New API host (`/v1.0/...`).
        api_base: BaseUrl = BaseUrl::builtin("https://api.dingtalk.com"),
        /// Callbacks whose `timestamp` is further than this from our clock are refused.
        max_clock_skew_secs: u64 = 3600
            => 60..=86_400; " seconds (DingTalk documents 3600)",
        /// Further origins (`scheme://host[:port]`) a sessionWebhook may point at.
        extra_webhook_hosts: Vec<BaseUrl> = Vec::new(),
        /// Paths a sessionWebhook may have (exact; `/robot/sendBySession` needs a `session`).
        webhook_paths: Vec<String> = vec!["/robot/sendBySession".into()],
        /// Timeout of every outbound HTTP call, in milliseconds.
        request_timeout_ms: u64 = 5000 => 100..=120_000,
        /// Distinct msgIds one signed millisecond (timestamp, sign) may carry (k), then refused.
        max_messages_per_signature: NonZeroUsize = nz!(3) => 1..=1000,
        /// Seconds a msgId is remembered, so that a redelivery is not answered twice.
        dedupe_ttl_secs: u64 = 600 => 60..=86_400,
        /// Entries of the msgId dedupe table (8 bytes each, allocated at start).
        dedupe_capacity: usize = 262_144 => 1024..=16_777_216,
        /// API calls, reply POSTs and group lookups at once (a cap each); caps connections.
        max_parallel_requests: NonZeroUsize = nz!(32) => 1..=4096,
        /// Which HTTP client POSTs replies.
        reply_client: ReplyClientChoice = ReplyClientChoice::Auto,
        /// How robot messages arrive: HTTP callbacks, a Stream connection, or both.
        mode: DingTalkMode = DingTalkMode::Http,
    }

    /// `[stream]`: the Stream connection's timings (`dingtalk.mode` `stream` or `both`).
    StreamSettings("stream") {
        /// How often dingbot sends a WebSocket ping on an idle-or-not connection.
        ping_interval_ms: u64 = 30_000 => 10..=600_000,
        /// Watchdog: no frame or pong for this long replaces the connection (and fails `/readyz`).
        idle_timeout_ms: u64 = 90_000 => 50..=3_600_000,
        /// First reconnect delay (full jitter: a random wait up to the current step).
        backoff_base_ms: u64 = 1_000 => 1..=600_000,
        /// Largest reconnect step.
        backoff_max_ms: u64 = 60_000 => 1..=3_600_000,
        /// A connection open at least this long resets the backoff to its base.
        healthy_after_ms: u64 = 60_000 => 0..=3_600_000,
        /// Wait before asking again after DingTalk refused the credentials.
        refused_retry_ms: u64 = 300_000 => 1..=3_600_000,
        /// Largest frame accepted; a bigger one ends (and replaces) the connection.
        max_frame_bytes: usize = 1024 * 1024 => 1024..=16 * 1024 * 1024,
    }

    /// `[rate_limit]`
    RateLimitSettings("rate_limit") {
        /// Commands answered per group per minute (burst of this size, then one every 60/N s).
        per_group_per_minute: NonZeroU32 = nz!(20)
            => 1..=10_000; " (DingTalk throttles a robot above 20 messages a minute)",
    }

    /// `[bot]`
    BotSettings("bot") {
        /// Reply language: `zh` (default) or `en`.
        language: Language = Language::Zh,
        /// Directory whose `<language>/<name>.md.j2` files override the embedded templates.
        templates_dir: Option<PathBuf> = None,
        /// Also write `@<userid>` into the reply text (besides `at.atUserIds`).
        inline_mention: bool = false,
        /// Seconds a group's info is reused before asking DingTalk again; 0 disables caching.
        info_cache_ttl_secs: u64 = 60 => 0..=86_400; " (0 disables the cache)",
        /// Most group summaries cached at once; the least recently used go first.
        info_cache_max_groups: NonZeroU64 = nz!(10_000) => 1..=10_000_000,
        /// Userids (`senderStaffId`) allowed to `/bind` in any group, besides group admins.
        admin_user_ids: Vec<String> = Vec::new(),
    }

    /// `[group_info]`
    GroupInfoSettings("group_info") {
        /// Sources `/info` asks, in this order, until the summary is complete.
        sources: Vec<InfoSource> = InfoSource::ALL.to_vec(),
        /// Seconds a source that refused a group is not asked again for it; 0 asks every time.
        denied_backoff_secs: u64 = 600 => 0..=604_800; " (0 asks again every time)",
    }

    /// `[reply]`
    ReplySettings("reply") {
        /// What to do when the sessionWebhook refuses a reply for good or has expired.
        fallback: ReplyFallback = ReplyFallback::RobotApi,
        /// `robotCode` for the robot send APIs; unset: the callback's `robotCode`, else
        /// `dingtalk.app_key` (an internal app's robot code is its AppKey).
        robot_code: Option<String> = None,
    }

    /// `[storage]`
    StorageSettings("storage") {
        /// Directory of `bindings.json`; created at startup if missing, must be writable.
        data_dir: PathBuf = "./data".into(),
    }

    /// `[state]`
    StateSettings("state") {
        /// `memory` (default) or `redis`.
        backend: StateBackend = StateBackend::Memory,
        /// `redis://[user:password@]host:port/db` (`rediss://` for TLS); required with
        /// `backend = "redis"`. Secret (it may hold the password): never shown.
        redis_url: SecretString = String::new().into(),
        /// Prefix of every key dingbot writes, so one Redis can serve several bots.
        key_prefix: String = "dingbot:".into(),
        /// Longest wait for one Redis command; past it the callback is decided locally.
        command_timeout_ms: u64 = 250 => 10..=10_000,
        /// Longest wait for a (re)connection to Redis.
        connect_timeout_ms: u64 = 1000 => 10..=60_000,
        /// How long a replica's group lookup holds the cross-replica lock (others wait for it).
        lookup_lock_ms: u64 = 3000 => 100..=120_000,
    }

    /// `[log]`
    LogSettings("log") {
        /// `text` for people, `json` for log collectors.
        format: LogFormat = LogFormat::Text,
    }
}

keywords! {
    /// `dingtalk.reply_client`: which HTTP client POSTs replies.
    ReplyClientChoice(name) {
        /// The direct client, unless a proxy variable is set (then reqwest).
        Auto = "auto",
        /// Always the direct client (never a proxy).
        Direct = "direct",
        /// Always reqwest (the shared API client, proxy variables honoured).
        Reqwest = "reqwest",
    }

    /// `dingtalk.mode`: the doors robot messages come in through.
    DingTalkMode(name) {
        /// DingTalk POSTs callbacks to `server.callback_path` (needs a public HTTPS URL).
        Http = "http",
        /// dingbot holds an outbound WebSocket to DingTalk; the callback route is not served.
        Stream = "stream",
        /// Both doors (for moving from one to the other).
        Both = "both",
    }

    /// One place `/info` can learn about a group from (`ALL`: the default order).
    InfoSource(name) {
        /// `chat/get`: everything, but only with a chatid (`[[groups]]` or `/bind`).
        ChatGet = "chat_get",
        /// `topapi/im/chat/scenegroup/get`: title, owner and settings of the app's scene groups.
        SceneGroup = "scene_group",
        /// `/v1.0/im/groups/baseInfos/query`: title and member count.
        BaseInfo = "base_info",
        /// The callback's `conversationTitle`: the title, always at hand, no API call.
        Callback = "callback",
    }

    /// `reply.fallback`
    ReplyFallback(name) {
        /// The robot send APIs (`groupMessages/send`, `oToMessages/batchSend`; needs the
        /// `qyapi_robot_sendmsg` permission).
        RobotApi = "robot_api",
        /// No second path: the reply is lost (and an expired sessionWebhook refused).
        None = "none",
    }

    /// `state.backend`: where shared state lives.
    StateBackend(name) {
        /// This process's memory: one instance (the default).
        Memory = "memory",
        /// A Redis (or Valkey/KeyDB) server shared by every replica.
        Redis = "redis",
    }

    /// A reply language; its `code()` is also the folder name of its templates.
    Language(code) {
        /// 简体中文
        Zh = "zh",
        /// English
        En = "en",
    }

    /// Log line format.
    LogFormat(name) {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
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

/// `ensure!(ok, key, "problem", args…)`: unless `ok`, [`Settings::check`] fails on `key`.
macro_rules! ensure {
    ($ok:expr, $key:expr, $($problem:tt)+) => {
        if !$ok { return Err(($key.into(), format!($($problem)+))); }
    };
}

impl Settings {
    /// Loads defaults, `path` (if given), then the process's `DINGBOT_*` variables; validates.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let lossy = |s: std::ffi::OsString| s.to_string_lossy().into_owned();
        Self::load_with_env(path, std::env::vars_os().map(|(k, v)| (lossy(k), lossy(v))))
    }

    /// Like [`Settings::load`] with an explicit environment (tests use this). Not figment's
    /// `Env`: it would parse a numeric-looking secret ("0123") into a number; each variable
    /// is one layer instead, parsed by figment's `Value` unless it is in `STRING_KEYS`.
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
            let shown = path.display();
            if !path.is_file() {
                return Err(fail(format!(
                    "file {shown} does not exist or is not a file"
                )));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("file {shown} cannot be read ({e})")))?;
            check_syntax(&text, || format!("file {shown}"))?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> = (env.into_iter())
            .filter_map(|(name, raw)| {
                let key = name
                    .strip_prefix(ENV_PREFIX)?
                    .to_ascii_lowercase()
                    .replace("__", ".");
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
    #[rustfmt::skip]
    fn check(&self) -> Result<(), (String, String)> {
        let (dt, st, state) = (&self.dingtalk, &self.stream, &self.state);
        let path = &self.server.callback_path;
        let blank = |s: &str| s.trim().is_empty();
        ensure!(is_path(path) && path.len() >= 2, "server.callback_path",
            "{path:?} must be a path such as /dingtalk/callback");
        let reserved = ["/healthz", "/readyz", "/metrics"].contains(&path.as_str());
        ensure!(!reserved, "server.callback_path",
            "{path:?} is reserved for dingbot's own endpoint");
        ensure!(!blank(&dt.app_key), "dingtalk.app_key",
            "is required: the AppKey of your DingTalk app");
        ensure!(!blank(dt.app_secret.expose_secret()), "dingtalk.app_secret",
            "is required: the AppSecret of your DingTalk app (set DINGBOT_DINGTALK__APP_SECRET)");
        let paths = &dt.webhook_paths;
        ensure!(!paths.is_empty() && paths.iter().all(|p| is_path(p)), "dingtalk.webhook_paths",
            "must list paths such as /robot/sendBySession (no query)");
        ensure!(!self.bot.admin_user_ids.iter().any(|id| blank(id)), "bot.admin_user_ids",
            "must not contain empty userids");
        let sources = &self.group_info.sources;
        ensure!(!sources.is_empty(), "group_info.sources",
            "must name at least one of {}", InfoSource::ALL.map(InfoSource::name).join(", "));
        let twice = (sources.iter().enumerate()).find(|(i, s)| sources[..*i].contains(s));
        ensure!(twice.is_none(), "group_info.sources",
            "{:?} is listed twice", twice.map_or("", |(_, s)| s.name()));
        ensure!(st.backoff_base_ms <= st.backoff_max_ms, "stream.backoff_max_ms",
            "must not be below stream.backoff_base_ms ({})", st.backoff_base_ms);
        ensure!(st.ping_interval_ms < st.idle_timeout_ms, "stream.idle_timeout_ms",
            "must be above stream.ping_interval_ms ({}): a ping has to be answered within it",
            st.ping_interval_ms);
        ensure!(!self.reply.robot_code.as_deref().is_some_and(blank), "reply.robot_code",
            "must not be empty when given (leave it out to use the callback's robotCode or the app_key)");
        ensure!(!self.storage.data_dir.as_os_str().is_empty(), "storage.data_dir",
            "must not be empty (default ./data)");
        if let Some(dir) = self.bot.templates_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
            ensure!(dir.is_dir(), "bot.templates_dir", "{} is not a directory", dir.display());
        }
        if state.backend == StateBackend::Redis {
            let url = state.redis_url.expose_secret();
            ensure!(!blank(url), "state.redis_url", "is required with state.backend = \"redis\", \
                e.g. redis://127.0.0.1:6379/0 (set DINGBOT_STATE__REDIS_URL)");
            // Never echo the value: it may hold the password.
            let u = Url::parse(url);
            let redis = u.is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss") && u.has_host());
            ensure!(redis, "state.redis_url",
                "must be a redis:// or rediss:// URL with a host (value not shown)");
        }
        ensure!((1..=64).contains(&state.key_prefix.len()), "state.key_prefix",
            "must be 1 to 64 characters, e.g. dingbot:");
        for (i, g) in self.groups.iter().enumerate() {
            let key = |field: &str| format!("groups[{i}].{field}");
            ensure!(!blank(&g.chatid), key("chatid"), "must not be empty");
            ensure!(!self.groups[..i].iter().any(|o| o.chatid == g.chatid), key("chatid"),
                "{:?} is listed twice", g.chatid);
            let cid = g.open_conversation_id.as_deref();
            ensure!(!cid.is_some_and(blank), key("open_conversation_id"),
                "must not be empty when given (leave it out to learn it at startup)");
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
    for &(key, lo, hi, note) in RANGES {
        let Ok(value) = figment.extract_inner::<u64>(key) else {
            continue;
        };
        if !(lo..=hi).contains(&value) {
            let range = if lo == 0 {
                format!("at most {hi}")
            } else {
                format!("between {lo} and {hi}")
            };
            return Err(error(key, format!("must be {range}{note}")));
        }
    }
    let settings: Settings = figment.extract().map_err(|e| {
        let mut key = e.path.join(".");
        let problem = match &e.kind {
            Kind::MissingField(field) => {
                key = if key.is_empty() {
                    field.to_string()
                } else {
                    format!("{key}.{field}")
                };
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
    let checked = settings
        .check()
        .map_err(|(key, problem)| error(&key, problem));
    checked.map(|()| settings)
}

/// Where `key`'s value came from (variable or file), or else where it could be set.
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
    let upper: Vec<String> = key.split('.').map(str::to_ascii_uppercase).collect();
    upper.join("__")
}

#[cfg(test)]
mod tests;
