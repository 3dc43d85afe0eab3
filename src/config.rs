//! Typed configuration: a TOML file layered under `DINGBOT_<SECTION>__<KEY>` environment
//! variables, validated once at startup.
//!
//! Owns the public key names (they are documented in the README and are API). Every problem
//! is reported as one [`ConfigError`] naming the key and where its value came from. The app
//! secret lives in a [`SecretString`] so it cannot reach `Debug` output, logs or error text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

/// The prefix of every environment variable dingbot reads for its settings.
pub const ENV_PREFIX: &str = "DINGBOT_";

/// Everything dingbot needs to run, after validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Groups whose legacy `chatid` the admin knows (created through the server API).
    #[serde(default)]
    pub groups: Vec<GroupBinding>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Socket address to bind, e.g. `0.0.0.0:8080`.
    pub listen: String,
    /// Path DingTalk POSTs callbacks to (the "消息接收地址" path).
    pub callback_path: String,
    /// Largest callback body accepted; larger bodies get 413 unread.
    pub body_limit_bytes: usize,
    /// Callbacks processed at once (body read to reply sent); a callback beyond it waits
    /// up to `queue_wait_ms` for a slot, then gets 503.
    pub max_in_flight: usize,
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

/// `[dingtalk]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkSettings {
    /// The app's AppKey (a.k.a. clientId).
    pub app_key: String,
    /// The app's AppSecret: fetches tokens and is the callback signing key.
    pub app_secret: SecretString,
    /// Legacy API host (`gettoken`, `chat/get`, and the host of every sessionWebhook).
    pub oapi_base: String,
    /// New API host (`/v1.0/...`).
    pub api_base: String,
    /// Callbacks whose `timestamp` is further than this from our clock are refused.
    pub max_clock_skew_secs: u64,
    /// Further origins (`scheme://host[:port]`) a sessionWebhook may point at.
    #[serde(default)]
    pub extra_webhook_hosts: Vec<String>,
    /// Timeout of every outbound HTTP call, in milliseconds.
    pub request_timeout_ms: u64,
    /// How many messages with distinct msgIds one (timestamp, sign) pair, i.e. one signed
    /// millisecond, may carry (k); once it has, the pair is refused from the headers.
    pub max_messages_per_signature: usize,
    /// Seconds a msgId is remembered, so that a redelivery is not answered twice.
    pub dedupe_ttl_secs: u64,
    /// Entries of the msgId dedupe table (8 bytes each, allocated at start).
    pub dedupe_capacity: usize,
    /// API calls to DingTalk on the wire at once, and as many reply POSTs; each uses
    /// one pooled keep-alive connection, so this also caps connections and TLS handshakes.
    pub max_parallel_requests: usize,
    /// Which HTTP client POSTs replies: `auto` (the direct one unless a proxy variable
    /// is set), `direct`, or `reqwest` (honours `HTTPS_PROXY` and friends).
    pub reply_client: crate::dingtalk::ReplyClientChoice,
}

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Commands answered per group per minute (burst of this size, then one every 60/N s).
    pub per_group_per_minute: u32,
}

/// `[bot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSettings {
    /// Reply language: `zh` (default) or `en`.
    pub language: Language,
    /// Directory whose `<language>/<name>.md.j2` files override the embedded templates.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Also write `@<userid>` into the reply text (besides `at.atUserIds`).
    pub inline_mention: bool,
    /// Seconds a group's info is reused before asking DingTalk again; 0 disables caching.
    pub info_cache_ttl_secs: u64,
    /// Most group summaries cached at once; the least recently used go first.
    pub info_cache_max_groups: u64,
    /// Userids (`senderStaffId`) allowed to `/bind` in any group, besides DingTalk's group
    /// admins (`isAdmin`).
    #[serde(default)]
    pub admin_user_ids: Vec<String>,
}

/// `[group_info]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInfoSettings {
    /// Sources `/info` asks, in this order, until the summary is complete.
    pub sources: Vec<InfoSource>,
    /// Seconds a source that refused a group (no permission, not a scene group) is not
    /// asked again for that group; 0 asks every time.
    pub denied_backoff_secs: u64,
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

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of `bindings.json`; created at startup if missing, must be writable.
    pub data_dir: PathBuf,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

/// A reply language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// 简体中文
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
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

/// Defaults for every key that has one; `app_key`/`app_secret` have none.
fn defaults() -> serde_json::Value {
    serde_json::json!({
        "server": {
            "listen": "0.0.0.0:8080",
            "callback_path": "/dingtalk/callback",
            "body_limit_bytes": 65536,
            "max_in_flight": 1024,
            "queue_wait_ms": 1000,
            "shutdown_grace_secs": 10,
            "read_timeout_ms": 5000,
            "workers": 0,
        },
        "dingtalk": {
            "oapi_base": "https://oapi.dingtalk.com",
            "api_base": "https://api.dingtalk.com",
            "max_clock_skew_secs": 3600,
            "extra_webhook_hosts": [],
            "request_timeout_ms": 5000,
            "max_messages_per_signature": 3,
            "dedupe_ttl_secs": 600,
            "dedupe_capacity": 262_144,
            "max_parallel_requests": 32,
            "reply_client": "auto",
        },
        "rate_limit": { "per_group_per_minute": 20 },
        "bot": {
            "language": "zh",
            "inline_mention": false,
            "info_cache_ttl_secs": 60,
            "info_cache_max_groups": 10_000,
            "admin_user_ids": [],
        },
        "log": { "format": "text" },
        "group_info": {
            "sources": ["chat_get", "scene_group", "base_info", "callback"],
            "denied_backoff_secs": 600,
        },
        "storage": { "data_dir": "./data" },
    })
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
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests use this).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(defaults()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError {
                    key: "--config".into(),
                    problem: format!("file {} does not exist or is not a file", path.display()),
                    source_name: "command line".into(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        figment = figment.merge(env_provider(env));
        let settings: Settings = figment.extract().map_err(|e| from_figment(&figment, e))?;
        settings.validate().map_err(|(key, problem)| ConfigError {
            source_name: source_of(&figment, &key),
            key,
            problem,
        })?;
        Ok(settings)
    }

    /// Parses a TOML document (tests and `check`); same layering, no environment.
    pub fn from_toml_str(toml: &str) -> Result<Settings, ConfigError> {
        let figment = Figment::from(Serialized::defaults(defaults())).merge(Toml::string(toml));
        let settings: Settings = figment.extract().map_err(|e| from_figment(&figment, e))?;
        settings.validate().map_err(|(key, problem)| ConfigError {
            source_name: source_of(&figment, &key),
            key,
            problem,
        })?;
        Ok(settings)
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| ConfigError {
            key: "server.listen".into(),
            problem: format!(
                "{:?} is not an address like 0.0.0.0:8080",
                self.server.listen
            ),
            source_name: "configuration".into(),
        })
    }

    /// Checks what serde cannot: ranges, URL shapes, non-empty secrets.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, p: String| Err((k.to_string(), p));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return err(
                "server.listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:8080",
                    self.server.listen
                ),
            );
        }
        let path = &self.server.callback_path;
        if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', ' ']) {
            return err(
                "server.callback_path",
                format!("{path:?} must be a path such as /dingtalk/callback"),
            );
        }
        for reserved in ["/healthz", "/readyz", "/metrics"] {
            if path == reserved {
                return err(
                    "server.callback_path",
                    format!("{path:?} is reserved for dingbot's own endpoint"),
                );
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            return err(
                "server.body_limit_bytes",
                "must be between 1024 and 16777216".into(),
            );
        }
        if !(1..=1_000_000).contains(&self.server.max_in_flight) {
            return err(
                "server.max_in_flight",
                "must be between 1 and 1000000".into(),
            );
        }
        if self.server.queue_wait_ms > 10_000 {
            return err(
                "server.queue_wait_ms",
                "must be at most 10000 (0 = refuse at once)".into(),
            );
        }
        if !(500..=60_000).contains(&self.server.read_timeout_ms) {
            return err(
                "server.read_timeout_ms",
                "must be between 500 and 60000".into(),
            );
        }
        if self.server.workers > 256 {
            return err(
                "server.workers",
                "must be at most 256 (0 = one per CPU)".into(),
            );
        }
        if self.dingtalk.app_key.trim().is_empty() {
            return err(
                "dingtalk.app_key",
                "is required: the AppKey of your DingTalk app".into(),
            );
        }
        if self.dingtalk.app_secret.expose_secret().trim().is_empty() {
            return err(
                "dingtalk.app_secret",
                "is required: the AppSecret of your DingTalk app (set DINGBOT_DINGTALK__APP_SECRET)"
                    .into(),
            );
        }
        for (key, value) in [
            ("dingtalk.oapi_base", &self.dingtalk.oapi_base),
            ("dingtalk.api_base", &self.dingtalk.api_base),
        ] {
            if let Err(problem) = parse_base_url(value) {
                return err(key, problem);
            }
        }
        for host in &self.dingtalk.extra_webhook_hosts {
            if let Err(problem) = parse_base_url(host) {
                return err("dingtalk.extra_webhook_hosts", problem);
            }
        }
        if !(60..=24 * 3600).contains(&self.dingtalk.max_clock_skew_secs) {
            return err(
                "dingtalk.max_clock_skew_secs",
                "must be between 60 and 86400 seconds (DingTalk documents 3600)".into(),
            );
        }
        if !(100..=120_000).contains(&self.dingtalk.request_timeout_ms) {
            return err(
                "dingtalk.request_timeout_ms",
                "must be between 100 and 120000".into(),
            );
        }
        if !(1..=4096).contains(&self.dingtalk.max_parallel_requests) {
            return err(
                "dingtalk.max_parallel_requests",
                "must be between 1 and 4096".into(),
            );
        }
        if !(1..=1000).contains(&self.dingtalk.max_messages_per_signature) {
            return err(
                "dingtalk.max_messages_per_signature",
                "must be between 1 and 1000".into(),
            );
        }
        if !(60..=24 * 3600).contains(&self.dingtalk.dedupe_ttl_secs) {
            return err(
                "dingtalk.dedupe_ttl_secs",
                "must be between 60 and 86400".into(),
            );
        }
        if !(1024..=16_777_216).contains(&self.dingtalk.dedupe_capacity) {
            return err(
                "dingtalk.dedupe_capacity",
                "must be between 1024 and 16777216".into(),
            );
        }
        if !(1..=10_000).contains(&self.rate_limit.per_group_per_minute) {
            return err(
                "rate_limit.per_group_per_minute",
                "must be between 1 and 10000 (DingTalk throttles a robot above 20 messages a minute)"
                    .into(),
            );
        }
        if !(1..=10_000_000).contains(&self.bot.info_cache_max_groups) {
            return err(
                "bot.info_cache_max_groups",
                "must be between 1 and 10000000".into(),
            );
        }
        if self.bot.info_cache_ttl_secs > 24 * 3600 {
            return err(
                "bot.info_cache_ttl_secs",
                "must be at most 86400 (0 disables the cache)".into(),
            );
        }
        if self
            .bot
            .admin_user_ids
            .iter()
            .any(|id| id.trim().is_empty())
        {
            return err(
                "bot.admin_user_ids",
                "must not contain empty userids".into(),
            );
        }
        if self.group_info.sources.is_empty() {
            return err(
                "group_info.sources",
                format!(
                    "must name at least one of {}",
                    InfoSource::ALL.map(InfoSource::name).join(", ")
                ),
            );
        }
        for (i, source) in self.group_info.sources.iter().enumerate() {
            if self.group_info.sources[..i].contains(source) {
                return err(
                    "group_info.sources",
                    format!("{:?} is listed twice", source.name()),
                );
            }
        }
        if self.group_info.denied_backoff_secs > 7 * 24 * 3600 {
            return err(
                "group_info.denied_backoff_secs",
                "must be at most 604800 (0 asks again every time)".into(),
            );
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return err(
                "storage.data_dir",
                "must not be empty (default ./data)".into(),
            );
        }
        if let Some(dir) = &self.bot.templates_dir
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return err(
                "bot.templates_dir",
                format!("{} is not a directory", dir.display()),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if g.chatid.trim().is_empty() {
                return err(&format!("groups[{i}].chatid"), "must not be empty".into());
            }
            if !seen.insert(g.chatid.as_str()) {
                return err(
                    &format!("groups[{i}].chatid"),
                    format!("{:?} is listed twice", g.chatid),
                );
            }
            if let Some(cid) = &g.open_conversation_id
                && cid.trim().is_empty()
            {
                return err(
                    &format!("groups[{i}].open_conversation_id"),
                    "must not be empty when given (leave it out to learn it at startup)".into(),
                );
            }
        }
        Ok(())
    }
}

/// Parses a `scheme://host[:port]` base URL (no query, no fragment).
pub fn parse_base_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{value:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{value:?} must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{value:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// `DINGBOT_DINGTALK__APP_SECRET` → `dingtalk.app_secret`, from an explicit list of variables.
fn env_provider(vars: Vec<(String, String)>) -> Serialized<serde_json::Value> {
    // figment's Env provider reads the process environment; an explicit map keeps tests
    // hermetic. Values are parsed like figment does: TOML scalars/arrays when they parse,
    // strings otherwise.
    let mut root = serde_json::Map::new();
    for (key, value) in vars {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let parsed = parse_env_value(&path, &value);
        insert_path(&mut root, &path, parsed);
    }
    Serialized::defaults(serde_json::Value::Object(root))
}

fn parse_env_value(path: &[String], value: &str) -> serde_json::Value {
    // Secrets and ids stay strings even if they look like numbers.
    let last = path.last().map(String::as_str).unwrap_or("");
    if matches!(
        last,
        "app_key" | "app_secret" | "chatid" | "open_conversation_id" | "data_dir"
    ) {
        return serde_json::Value::String(value.to_string());
    }
    // Numbers, booleans and JSON arrays (`["https://a", "https://b"]`) parse as such;
    // anything else is a string.
    serde_json::from_str::<serde_json::Value>(value.trim())
        .ok()
        .filter(|v| !v.is_object() && !v.is_null())
        .unwrap_or_else(|| serde_json::Value::String(value.to_string()))
}

fn insert_path(
    root: &mut serde_json::Map<String, serde_json::Value>,
    path: &[String],
    value: serde_json::Value,
) {
    match path {
        [] => {}
        [leaf] => {
            root.insert(leaf.clone(), value);
        }
        [head, rest @ ..] => {
            let child = root
                .entry(head.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !child.is_object() {
                *child = serde_json::Value::Object(Default::default());
            }
            if let serde_json::Value::Object(map) = child {
                insert_path(map, rest, value);
            }
        }
    }
}

fn from_figment(figment: &Figment, e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "(top level)".to_string()
    } else {
        e.path.join(".")
    };
    // Never echo a value that might be the secret.
    let problem = if key.contains("app_secret") {
        "invalid value (not shown): expected a string".to_string()
    } else {
        match &e.kind {
            figment::error::Kind::MissingField(f) => {
                return ConfigError {
                    key: if e.path.is_empty() {
                        f.to_string()
                    } else {
                        format!("{key}.{f}")
                    },
                    problem: "is required but missing".into(),
                    source_name: format!(
                        "config file or {ENV_PREFIX}{}",
                        env_name(&format!("{key}.{f}"))
                    ),
                };
            }
            other => other.to_string(),
        }
    };
    let source_name = match &e.metadata {
        Some(md) => describe_metadata(md),
        None => source_of(figment, &key),
    };
    ConfigError {
        key,
        problem,
        source_name,
    }
}

fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(md) => describe_metadata(md),
        None => format!("config file or {ENV_PREFIX}{}", env_name(key)),
    }
}

fn describe_metadata(md: &figment::Metadata) -> String {
    match &md.source {
        Some(figment::Source::File(p)) => format!("file {}", p.display()),
        _ if md.name.contains("Serialized") || md.name.contains("default") => {
            "defaults or environment".into()
        }
        _ => md.name.to_string(),
    }
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
    fn minimal_file_gets_documented_defaults() {
        let s = Settings::from_toml_str(MINIMAL).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:8080");
        assert_eq!(s.server.callback_path, "/dingtalk/callback");
        assert_eq!(s.dingtalk.oapi_base, "https://oapi.dingtalk.com");
        assert_eq!(s.dingtalk.api_base, "https://api.dingtalk.com");
        assert_eq!(s.dingtalk.max_clock_skew_secs, 3600);
        assert_eq!(s.rate_limit.per_group_per_minute, 20);
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
        assert_eq!(s.rate_limit.per_group_per_minute, 7);
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
