//! Operator commands: `dingbot check` (is this deployment able to work?) and
//! `dingbot simulate` (send one correctly signed callback to a running dingbot).
//!
//! Both print for people and return whether everything passed; `main` turns that into the
//! exit code. Neither prints a secret or a token.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;

use crate::bot::GroupDirectory;
use crate::config::{ReplyFallback, Settings};
use crate::demo::SignedCallback;
use crate::dingtalk::error::ROBOT_SEND_SCOPE;
use crate::dingtalk::reply_http::proxy_variable;
use crate::dingtalk::transport::http_client;
use crate::dingtalk::{ApiError, DingTalkClient, Endpoint, ErrorKind, ReplyHttp, RetryPolicy};
use crate::render::Renderer;
use crate::sandbox::{Org, Sandbox};

/// The fix an admin should apply for an API failure.
fn fix_for(e: &ApiError) -> String {
    let fix = match e.kind() {
        ErrorKind::NoPermission => {
            let scope = e
                .missing_scope()
                .unwrap_or_else(|| e.documented_scope().to_string());
            return format!(
                "grant the app the {scope} permission in the developer console and publish it"
            );
        }
        ErrorKind::BadChatid => {
            "the chatid is wrong or the group was not created by this app through the server API"
        }
        ErrorKind::MissingChatid => "fill in the chatid of this [[groups]] entry",
        ErrorKind::BadToken | ErrorKind::TokenFailed => {
            "check dingtalk.app_key / DINGBOT_DINGTALK__APP_SECRET and the app's IP allow-list"
        }
        ErrorKind::CorpMissing => "the app_key does not belong to an existing organisation",
        ErrorKind::Busy => "DingTalk is busy or throttling; try again in a minute",
        ErrorKind::Slow | ErrorKind::Unavailable => {
            "DingTalk cannot be reached: check DNS, the egress firewall/proxy, and dingtalk.oapi_base"
        }
        ErrorKind::NotSceneGroup
        | ErrorKind::UnknownUser
        | ErrorKind::SendTooFast
        | ErrorKind::SessionGone
        | ErrorKind::InvalidInput
        | ErrorKind::Other => "see the error code in DingTalk's error-code list",
    };
    fix.to_string()
}

/// `dingbot check`'s Redis item: reachable, its version and a PING's round trip (the URL's
/// password is never shown).
async fn check_redis(settings: &Settings, out: &mut impl Write) -> anyhow::Result<bool> {
    let redis = match crate::state::Redis::connect(&settings.state) {
        Ok(redis) => redis,
        Err(e) => {
            writeln!(
                out,
                "  FAIL  Redis: {e}\n        fix: set state.redis_url to redis://host:port/db or rediss://…"
            )?;
            return Ok(false);
        }
    };
    match redis.ping().await {
        Ok(ping) => {
            writeln!(
                out,
                "  ok    Redis {} at {}: PING {:.1} ms, keys under {:?}",
                ping.version,
                redis.server(),
                ping.latency.as_secs_f64() * 1000.0,
                settings.state.key_prefix
            )?;
            Ok(true)
        }
        Err(reason) => {
            writeln!(
                out,
                "  FAIL  Redis at {}: {reason}\n        fix: start Redis or correct state.redis_url (dingbot would run degraded: budgets and dedupe per replica)",
                redis.server()
            )?;
            Ok(false)
        }
    }
}

/// `dingbot check`: validates `settings` against the real (or configured) DingTalk.
/// Returns `true` when every item passed.
pub async fn check(settings: &Settings, out: &mut impl Write) -> anyhow::Result<bool> {
    let dt = &settings.dingtalk;
    let mut ok = true;
    writeln!(out, "dingbot check")?;
    writeln!(
        out,
        "  ok    configuration: app_key {}, callback path {}, listen {}",
        dt.app_key, settings.server.callback_path, settings.server.listen
    )?;
    match Renderer::new(settings.bot.language, settings.bot.templates_dir.as_deref()) {
        Ok(_) => writeln!(out, "  ok    templates ({})", settings.bot.language.code())?,
        Err(e) => {
            ok = false;
            writeln!(
                out,
                "  FAIL  templates: {e}\n        fix: correct the template file"
            )?;
        }
    }
    let mut origins = vec![dt.oapi_base.to_string()];
    origins.extend(dt.extra_webhook_hosts.iter().map(ToString::to_string));
    writeln!(out, "  ok    replies may go to: {}", origins.join(", "))?;
    let timeout = Duration::from_millis(dt.request_timeout_ms);
    let http = http_client(timeout).context("building the HTTP client")?;
    let retry = RetryPolicy {
        attempts: 2,
        deadline: timeout * 2,
        ..RetryPolicy::default()
    };
    match ReplyHttp::new(dt.reply_client, timeout, &http) {
        Ok(reply) => {
            let via = match (reply.name(), proxy_variable()) {
                ("reqwest", Some(var)) => format!("reqwest, through the proxy in {var}"),
                (name, _) => name.to_string(),
            };
            writeln!(out, "  ok    reply client: {via}")?;
        }
        Err(e) => {
            ok = false;
            writeln!(
                out,
                "  FAIL  reply client: {e}\n        fix: set dingtalk.reply_client = \"reqwest\""
            )?;
        }
    }
    let client = DingTalkClient::from_settings(dt, http, retry);
    match client.access_token().await {
        Ok(_) => writeln!(out, "  ok    access token from {}/gettoken", dt.oapi_base)?,
        Err(e) => {
            writeln!(
                out,
                "  FAIL  access token: {e}\n        fix: {}",
                fix_for(&e)
            )?;
            writeln!(out, "verdict: FAIL (no token, group checks skipped)")?;
            return Ok(false);
        }
    }
    if dt.mode.holds_stream() {
        ok &= check_stream(settings, client.http(), out).await?;
    }
    match settings.reply.fallback {
        ReplyFallback::None => writeln!(
            out,
            "  note  reply.fallback = \"none\": a reply the sessionWebhook refuses is lost"
        )?,
        ReplyFallback::RobotApi => {
            let code = settings
                .reply
                .robot_code
                .as_deref()
                .unwrap_or(dt.app_key.as_str());
            match client.probe_robot_send(code).await {
                Ok(()) => writeln!(
                    out,
                    "  ok    reply fallback: robot send APIs ({ROBOT_SEND_SCOPE} granted)"
                )?,
                Err(e) => {
                    ok = false;
                    writeln!(
                        out,
                        "  FAIL  reply fallback: {} needs the {ROBOT_SEND_SCOPE} permission: {e}\n        fix: {} (or set reply.fallback = \"none\")",
                        Endpoint::RobotGroupSend,
                        fix_for(&e)
                    )?;
                }
            }
        }
    }
    let groups = GroupDirectory::new(&settings.groups);
    for (chatid, result) in groups.resolve_pending(&client).await {
        match result {
            Ok(cid) => writeln!(out, "  ok    group {chatid}: openConversationId {cid}")?,
            Err(e) => {
                ok = false;
                writeln!(
                    out,
                    "  FAIL  group {chatid}: cannot learn its openConversationId: {e}\n        fix: {}",
                    fix_for(&e)
                )?;
            }
        }
    }
    match crate::store::BindingStore::open(&settings.storage.data_dir) {
        Ok(store) => writeln!(
            out,
            "  ok    data dir {}: {} group(s) bound with /bind",
            settings.storage.data_dir.display(),
            store.all().len()
        )?,
        Err(e) => {
            ok = false;
            writeln!(
                out,
                "  FAIL  data dir: {e}\n        fix: make storage.data_dir writable, or restore/remove the corrupt file"
            )?;
        }
    }
    if settings.state.backend == crate::config::StateBackend::Redis {
        ok &= check_redis(settings, out).await?;
    }
    if settings.groups.is_empty() {
        writeln!(
            out,
            "  note  no [[groups]] configured: /info uses the other group-info sources; group admins can /bind a chatid"
        )?;
    }
    for g in &settings.groups {
        match client.chat_get(&g.chatid).await {
            Ok(chat) => writeln!(
                out,
                "  ok    group {}: chat/get → {:?}, {} members",
                g.chatid,
                chat.name,
                chat.useridlist.len()
            )?,
            Err(e) => {
                ok = false;
                writeln!(
                    out,
                    "  FAIL  group {}: chat/get: {e}\n        fix: {}",
                    g.chatid,
                    fix_for(&e)
                )?;
            }
        }
    }
    writeln!(out, "verdict: {}", if ok { "OK" } else { "FAIL" })?;
    Ok(ok)
}

/// Opens one Stream connection (`connections/open`, then the WebSocket) and closes it.
async fn check_stream(
    settings: &Settings,
    http: &reqwest::Client,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let dialer = match crate::stream::Dialer::new(settings, http.clone()) {
        Ok(d) => d,
        Err(e) => {
            writeln!(out, "  FAIL  Stream connection: {e}")?;
            return Ok(false);
        }
    };
    match dialer.dial().await {
        Ok(mut ws) => {
            let _ = ws.close(None).await;
            writeln!(
                out,
                "  ok    Stream connection opened to {} (mode {:?}) and closed",
                dialer.last_endpoint().unwrap_or_default(),
                settings.dingtalk.mode
            )?;
            Ok(true)
        }
        Err(e) => {
            let fix = match &e {
                crate::stream::ConnectError::Open(crate::dingtalk::stream::OpenError::Refused(
                    _,
                )) => {
                    "check app_key/app_secret, and that the robot's message mode is Stream in the developer console"
                }
                _ => {
                    "check outbound HTTPS/WSS access to dingtalk.api_base and the gateway it names"
                }
            };
            writeln!(out, "  FAIL  Stream connection: {e}\n        fix: {fix}")?;
            Ok(false)
        }
    }
}

/// `dingbot simulate --stream`: pushes one robot message through a running sandbox's
/// Stream gateway (to the dingbot connected to it) and prints the reply the sandbox's
/// sessionWebhook received. `sandbox_url` is the sandbox's base URL.
pub async fn simulate_stream(
    sandbox_url: &str,
    group: &str,
    text: &str,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let base = sandbox_url.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let session = format!("simulate-{}", uuid::Uuid::new_v4().simple());
    writeln!(
        out,
        "push over the Stream gateway of {base} ({text:?} from group {group})"
    )?;
    let resp = http
        .post(format!("{base}/_sandbox/stream/push"))
        .json(&serde_json::json!({"group": group, "text": text, "session": session}))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the sandbox did not answer: {}", e.without_url()))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        writeln!(
            out,
            "the sandbox refused: HTTP {status} {body} (is dingbot connected in stream mode?)"
        )?;
        return Ok(false);
    }
    let message_id = body["messageId"].as_str().unwrap_or_default().to_string();
    writeln!(out, "pushed frame {message_id}")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut acked = false;
    while tokio::time::Instant::now() < deadline {
        if !acked {
            let acks: serde_json::Value = http
                .get(format!("{base}/_sandbox/stream/acks"))
                .query(&[("message_id", message_id.as_str())])
                .send()
                .await?
                .json()
                .await
                .unwrap_or_default();
            if let Some(ack) = acks.as_array().and_then(|a| a.first()) {
                writeln!(
                    out,
                    "dingbot ACKed: code {} {}",
                    ack["code"], ack["message"]
                )?;
                acked = true;
            }
        }
        let got: serde_json::Value = http
            .get(format!("{base}/_sandbox/messages"))
            .query(&[("session", session.as_str())])
            .send()
            .await?
            .json()
            .await
            .unwrap_or_default();
        if let Some(reply) = got.as_array().and_then(|a| a.first()) {
            let text = ["/markdown/text", "/text/content"]
                .iter()
                .find_map(|p| reply["body"].pointer(p).and_then(|t| t.as_str()))
                .unwrap_or_default();
            writeln!(out, "reply received:")?;
            for line in text.lines() {
                writeln!(out, "  │ {line}")?;
            }
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writeln!(
        out,
        "no reply within {} s: see dingbot's log",
        wait.as_secs()
    )?;
    Ok(false)
}

/// Options of `dingbot simulate`.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// The running dingbot's callback URL.
    pub url: String,
    /// The app secret it verifies with.
    pub secret: String,
    /// conversationId to send from.
    pub group: String,
    /// Message text.
    pub text: String,
    /// Use this sessionWebhook instead of starting a local sink.
    pub webhook: Option<String>,
    /// Where the local sink listens (its origin must be in dingbot's allowed webhook hosts).
    pub sink_listen: String,
    /// How long to wait for the reply.
    pub wait: Duration,
}

/// `dingbot simulate`: sends one signed callback and prints the reply the sink received.
/// Returns `true` when dingbot answered 200 and (with a local sink) a reply arrived.
pub async fn simulate(opts: &SimulateOptions, out: &mut impl Write) -> anyhow::Result<bool> {
    let sink = match &opts.webhook {
        Some(_) => None,
        None => {
            let listener = TcpListener::bind(&opts.sink_listen)
                .with_context(|| format!("binding the reply sink on {}", opts.sink_listen))?;
            let sink = Sandbox::start_on(Org::new("simulate", "simulate"), listener)
                .await
                .context("starting the reply sink")?;
            writeln!(
                out,
                "reply sink listening on {} (dingbot must allow it: dingtalk.extra_webhook_hosts = [\"{}\"])",
                sink.base_url(),
                sink.base_url()
            )?;
            Some(sink)
        }
    };
    let session = format!("simulate-{}", uuid::Uuid::new_v4().simple());
    let webhook = match (&opts.webhook, &sink) {
        (Some(w), _) => w.clone(),
        (None, Some(s)) => s.webhook_url(&session),
        (None, None) => unreachable!("a sink exists when no webhook is given"),
    };
    let cb = SignedCallback::group_text(
        &opts.group,
        "dingbot simulate",
        &opts.text,
        &format!("msgSimulate{}", uuid::Uuid::new_v4().simple()),
        &webhook,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    writeln!(
        out,
        "POST {} ({:?} from group {})",
        opts.url, opts.text, opts.group
    )?;
    let resp = cb
        .send(&http, &opts.url, &opts.secret)
        .await
        .map_err(|e| anyhow::anyhow!("dingbot did not answer: {}", e.without_url()))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    writeln!(out, "dingbot answered HTTP {status} {body}")?;
    if !status.is_success() {
        return Ok(false);
    }
    let Some(sink) = sink else {
        writeln!(out, "the reply went to {webhook}")?;
        return Ok(true);
    };
    let got = sink.wait_for_session_messages(&session, 1, opts.wait).await;
    match got.first() {
        Some(m) => {
            writeln!(out, "reply received:")?;
            for line in m.text().lines() {
                writeln!(out, "  │ {line}")?;
            }
            Ok(true)
        }
        None => {
            writeln!(
                out,
                "no reply within {} s: is the sink's origin in dingtalk.extra_webhook_hosts? see dingbot's log",
                opts.wait.as_secs()
            )?;
            Ok(false)
        }
    }
}
