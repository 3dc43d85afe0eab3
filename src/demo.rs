//! `dingbot demo`: dingbot and the sandbox on 127.0.0.1, driven through a scripted
//! conversation of real signed HTTP callbacks; prints what each group would see.
//!
//! Also home of [`SignedCallback`], the client side of the callback protocol, used by the
//! demo, `dingbot simulate`, the tests and the benchmarks.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::clock::now_ms;
use crate::config::{Language, Settings};
use crate::dingtalk::signature::sign;
use crate::sandbox::{
    Endpoint, Fault, Group, NO_PERMISSION_ERRCODE, Org, Sandbox, SentMessage, robot_payload,
};
use crate::startup::Application;

/// A callback as DingTalk would send it, ready to sign and POST.
#[derive(Debug, Clone)]
pub struct SignedCallback {
    /// The JSON body.
    pub body: serde_json::Value,
}

impl SignedCallback {
    /// A group text message `text` from user `16650000698` in `conversation_id`.
    pub fn group_text(
        conversation_id: &str,
        title: &str,
        text: &str,
        msg_id: &str,
        webhook: &str,
    ) -> SignedCallback {
        SignedCallback {
            body: robot_payload(conversation_id, title, text, msg_id, webhook),
        }
    }

    /// A group rich-text message in `conversation_id`: one text segment per line of
    /// `lines` and a picture after the first, with no `"\n"` segments between them, as in
    /// DingTalk's official example.
    pub fn group_rich_text(
        conversation_id: &str,
        title: &str,
        lines: &[&str],
        msg_id: &str,
        webhook: &str,
    ) -> SignedCallback {
        let mut segments = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            segments.push(serde_json::json!({ "text": line }));
            if i == 0 {
                segments.push(serde_json::json!({
                    "pictureDownloadCode": "pdcSandbox0001",
                    "downloadCode": "dcSandbox0001",
                    "type": "picture",
                }));
            }
        }
        let mut cb = SignedCallback::group_text(conversation_id, title, "", msg_id, webhook);
        if let Some(body) = cb.body.as_object_mut() {
            body.remove("text");
            body.insert("msgtype".into(), "richText".into());
            body.insert(
                "content".into(),
                serde_json::json!({ "richText": segments }),
            );
        }
        cb
    }

    /// POSTs the callback signed with `secret` at the current time. Like DingTalk, every
    /// callback gets its own timestamp (strictly increasing within this process), so
    /// concurrent sends do not share a (timestamp, sign) pair.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        url: &str,
        secret: &str,
    ) -> reqwest::Result<reqwest::Response> {
        let ts = unique_timestamp().to_string();
        let sign = sign(secret, &ts);
        http.post(url)
            .header("timestamp", ts)
            .header("sign", sign)
            .json(&self.body)
            .send()
            .await
    }
}

/// The current time in ms, bumped past the last value this function returned.
pub fn unique_timestamp() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

/// Waits (bounded) until `session` has received `n` messages; returns what it got.
pub async fn wait_for_session(
    sandbox: &Sandbox,
    session: &str,
    n: usize,
    timeout: Duration,
) -> Vec<SentMessage> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = sandbox.messages_for(session);
        if got.len() >= n || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settings that point dingbot at `sandbox` and listen on an ephemeral loopback port; the
/// data dir is a fresh directory under the system temp dir (the caller may remove it).
pub fn sandbox_settings(
    sandbox: &Sandbox,
    org: &Org,
    lang: Language,
    per_minute: u32,
) -> Result<Settings, crate::config::ConfigError> {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
shutdown_grace_secs = 5
[dingtalk]
app_key = "{key}"
app_secret = "{secret}"
oapi_base = "{base}"
api_base = "{base}"
request_timeout_ms = 2000
[rate_limit]
per_group_per_minute = {per_minute}
[bot]
language = "{lang}"
# No group-info cache: every /info reaches the sandbox, so injected faults show at once.
info_cache_ttl_secs = 0
[storage]
data_dir = '{data_dir}'
[[groups]]
chatid = "chatbound0001"
open_conversation_id = "cidBound0001=="
[[groups]]
chatid = "chate39f540dxxxx"
"#,
        key = org.app_key,
        secret = org.app_secret,
        base = sandbox.base_url(),
        lang = lang.code(),
        data_dir = std::env::temp_dir()
            .join(format!(
                "dingbot-sandbox-{}-{}",
                std::process::id(),
                unique_timestamp()
            ))
            .display(),
    );
    Settings::from_toml_str(&toml)
}

/// What the sandbox does before a scene.
#[derive(Debug, Clone, Copy)]
enum Before {
    Nothing,
    /// A group this app created appears (with a chatid an admin can /bind).
    CreateOwnGroup,
    /// `chat/get` refuses the next call for a missing permission.
    DenyChatGetOnce,
}

/// One step of the demo: a group member's message and what it shows.
#[derive(Debug)]
struct Scene {
    /// The heading (`{errcode}` is filled in from the sandbox's fault).
    title: &'static str,
    /// openConversationId.
    cid: &'static str,
    /// The group's name.
    group: &'static str,
    /// What the member writes after @-mentioning the robot.
    text: &'static str,
    /// Signed with the wrong secret.
    forged: bool,
    /// Set-up first.
    before: Before,
}

const fn scene(
    title: &'static str,
    cid: &'static str,
    group: &'static str,
    text: &'static str,
) -> Scene {
    Scene {
        title,
        cid,
        group,
        text,
        forged: false,
        before: Before::Nothing,
    }
}

/// The conversation, in order (the burst in another group follows).
const SCENES: [Scene; 10] = [
    scene(
        "/help in a group",
        "cidBound0001==",
        "研发部全员群",
        "/help",
    ),
    scene(
        "/info in a group with a configured chatid",
        "cidBound0001==",
        "研发部全员群",
        "/info",
    ),
    scene(
        "/info in a group whose openConversationId dingbot learned at startup",
        "cidAsXSBLnA==",
        "全员群",
        "群信息",
    ),
    scene(
        "/info in a scene group of this app (no chatid): owner and settings from scenegroup/get",
        "cidScene0001==",
        "项目群·发布",
        "/info",
    ),
    scene(
        "/info in a group the robot was only added to: title and member count",
        "cidPlain0001==",
        "午餐拼单群",
        "/info",
    ),
    scene(
        "/info in a group where DingTalk denies every lookup: the title from the callback",
        "cidDenied001==",
        "外部协作群",
        "/info",
    ),
    Scene {
        before: Before::CreateOwnGroup,
        ..scene(
            "a group admin binds a group this app created: /bind <chatid>",
            "cidOwn0001==",
            "自建项目群",
            "/bind chatown0001",
        )
    },
    scene(
        "/info in the group just bound: the full summary through chat/get",
        "cidOwn0001==",
        "自建项目群",
        "/info",
    ),
    Scene {
        before: Before::DenyChatGetOnce,
        ..scene(
            "/info while DingTalk denies chat/get (errcode {errcode}): the other sources, the permission named",
            "cidBound0001==",
            "研发部全员群",
            "/info",
        )
    },
    Scene {
        forged: true,
        ..scene(
            "a forged signature (wrong secret)",
            "cidBound0001==",
            "研发部全员群",
            "/info",
        )
    },
];

/// Runs the scripted demo, printing to `out`.
pub async fn run(lang: Language, out: &mut (impl Write + Send)) -> anyhow::Result<()> {
    run_with(lang, false, out).await
}

/// Runs the scripted demo over HTTP callbacks, or (`stream`) over a Stream connection to
/// the sandbox's gateway: the same conversation through the other door.
pub async fn run_with(
    lang: Language,
    stream: bool,
    out: &mut (impl Write + Send),
) -> anyhow::Result<()> {
    let org = Org::demo();
    let secret = org.app_secret.clone();
    let sandbox = Sandbox::start(org.clone())
        .await
        .context("starting the sandbox")?;
    let per_minute = 5;
    let mut settings = sandbox_settings(&sandbox, &org, lang, per_minute)?;
    if stream {
        settings.dingtalk.mode = crate::config::DingTalkMode::Stream;
    }
    let app = Application::build(&settings)
        .await
        .context("starting dingbot")?;
    let url = format!("http://127.0.0.1:{}/dingtalk/callback", app.port());
    let stop = app.shutdown_trigger();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let gateway = sandbox.gateway();

    if stream {
        let connected = gateway
            .wait_until(Duration::from_secs(10), |g| g.open_connections() > 0)
            .await;
        anyhow::ensure!(connected, "dingbot did not open a Stream connection");
        writeln!(
            out,
            "dingbot demo --stream: dingbot holds a WebSocket to the fake DingTalk's Stream gateway on {} (no callback URL)",
            sandbox.base_url()
        )?;
        writeln!(
            out,
            "Every step below is a robot message pushed over that WebSocket; dingbot ACKs it and replies through the sessionWebhook.\n"
        )?;
    } else {
        writeln!(
            out,
            "dingbot demo: dingbot on {url}, fake DingTalk on {}",
            sandbox.base_url()
        )?;
        writeln!(
            out,
            "Every step below is a real signed HTTP callback; the replies are what the sandbox's sessionWebhook received.\n"
        )?;
    }

    let mut step = 0;
    for scene in &SCENES {
        if stream && scene.forged {
            // No signature in Stream mode: show what a bad frame does instead.
            step += 1;
            writeln!(
                out,
                "── {step}. a malformed frame and a frame of a topic dingbot does not handle"
            )?;
            gateway.push_raw("{not a frame".into());
            let id = gateway
                .push_frame("EVENT", "*", "{}")
                .context("no Stream connection")?;
            gateway
                .wait_until(Duration::from_secs(5), |g| !g.acks_for(&id).is_empty())
                .await;
            let code = gateway.acks_for(&id).first().map_or(0, |a| a.code);
            writeln!(
                out,
                "   the malformed frame is counted and ignored; the EVENT frame is answered {code}; still {} connection(s), {} opened in all\n",
                gateway.open_connections(),
                gateway.connections().len()
            )?;
            continue;
        }
        step += 1;
        match scene.before {
            Before::Nothing => {}
            Before::CreateOwnGroup => sandbox.put_group(
                Group::new(
                    "cidOwn0001==",
                    "自建项目群",
                    "manager4220",
                    vec!["manager4220".into(), "user123".into(), "pm0815".into()],
                )
                .with_chatid("chatown0001")
                .with_flags([0, 1, 0, 1, 1, 1]),
            ),
            Before::DenyChatGetOnce => sandbox.inject(Endpoint::ChatGet, Fault::no_permission(), 1),
        }
        let session = format!("demo-{step}");
        let mut cb = SignedCallback::group_text(
            scene.cid,
            scene.group,
            scene.text,
            &format!("msgDemo{step:04}"),
            &sandbox.webhook_url(&session),
        );
        // /bind is sent by one of the group's admins.
        cb.body["isAdmin"] = serde_json::json!(scene.text.starts_with("/bind"));
        let title = scene
            .title
            .replace("{errcode}", &NO_PERMISSION_ERRCODE.to_string());
        writeln!(out, "── {step}. {title}")?;
        writeln!(out, "   [{}] 小钉: @dingbot {}", scene.group, scene.text)?;
        let key = if scene.forged {
            "not-the-secret"
        } else {
            secret.as_str()
        };
        if stream {
            let id = gateway
                .push_payload(&cb.body)
                .context("no Stream connection")?;
            gateway
                .wait_until(Duration::from_secs(5), |g| !g.acks_for(&id).is_empty())
                .await;
            match gateway.acks_for(&id).first() {
                Some(ack) => writeln!(
                    out,
                    "   Stream frame {id}: ACK {} {}",
                    ack.code, ack.body["message"]
                )?,
                None => writeln!(out, "   Stream frame {id}: no ACK")?,
            }
        } else {
            let resp = cb.send(&http, &url, key).await?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            writeln!(out, "   HTTP {status} {body}")?;
        }
        // A forged callback must get no reply: wait a second to show that none comes.
        let (expect, wait) = if scene.forged { (0, 1) } else { (1, 10) };
        let got =
            wait_for_session(&sandbox, &session, expect.max(1), Duration::from_secs(wait)).await;
        print_replies(out, &got)?;
    }

    // A burst from one group: the budget holds, one notice, then silence.
    step += 1;
    let burst = per_minute as usize + 3;
    let session = format!("demo-{step}");
    writeln!(
        out,
        "── {step}. a burst of {burst} concurrent /help in another group (limit: {per_minute} per minute)"
    )?;
    let sends = (0..burst).map(|i| {
        let cb = SignedCallback::group_text(
            "cidScene0001==",
            "项目群·发布",
            "/help",
            &format!("msgBurst{i:04}"),
            &sandbox.webhook_url(&session),
        );
        let (http, url, secret) = (http.clone(), url.clone(), secret.clone());
        let gateway = gateway.clone();
        async move {
            if stream {
                let pushed = gateway.push_payload(&cb.body).is_some();
                return Ok(if pushed { 200 } else { 0 });
            }
            cb.send(&http, &url, &secret)
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    if stream {
        writeln!(
            out,
            "   {ok}/{burst} robot messages pushed over the Stream connection"
        )?;
    } else {
        writeln!(out, "   {ok}/{burst} callbacks answered HTTP 200")?;
    }
    let got = wait_for_session(
        &sandbox,
        &session,
        per_minute as usize + 1,
        Duration::from_secs(10),
    )
    .await;
    let notices = got
        .iter()
        .filter(|m| m.text().contains("秒后再试") || m.text().contains("try again in"))
        .count();
    writeln!(
        out,
        "   the group received {} replies: {} answers and {} slow-down notice; the other {} stayed silent",
        got.len(),
        got.len() - notices,
        notices,
        burst.saturating_sub(got.len())
    )?;
    if let Some(notice) = got
        .iter()
        .find(|m| m.text().contains("秒后再试") || m.text().contains("try again in"))
    {
        print_replies(out, std::slice::from_ref(notice))?;
    }

    writeln!(
        out,
        "\nDingTalk API calls: gettoken {}, chat/get {}, convertToOpenConversationId {}, scenegroup/get {}, baseInfos {}, user/get {}",
        sandbox.calls(Endpoint::GetToken),
        sandbox.calls(Endpoint::ChatGet),
        sandbox.calls(Endpoint::ConvertToOpenConversationId),
        sandbox.calls(Endpoint::SceneGroupGet),
        sandbox.calls(Endpoint::GroupBaseInfos),
        sandbox.calls(Endpoint::UserGet)
    )?;
    stop.cancel();
    server.await.context("joining the server")??;
    let _ = std::fs::remove_dir_all(&settings.storage.data_dir);
    Ok(())
}

fn print_replies(out: &mut impl Write, got: &[SentMessage]) -> std::io::Result<()> {
    if got.is_empty() {
        return writeln!(out, "   (nothing was posted to the group)\n");
    }
    for m in got {
        let mention = m.at_user_ids().join(", ");
        writeln!(out, "   dingbot replied (@{mention}):")?;
        for line in m.text().lines() {
            writeln!(out, "   │ {line}")?;
        }
    }
    writeln!(out)
}

/// `dingbot sandbox`: serves the fake DingTalk until Ctrl-C or SIGTERM.
pub async fn run_sandbox(listen: &str, groups: usize, workers: usize) -> anyhow::Result<bool> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let org = Org::with_generated_groups(groups);
    println!(
        "sandbox on http://{} (app_key {}, {} groups); Ctrl-C stops it",
        listener.local_addr()?,
        org.app_key,
        org.groups.len()
    );
    let sandbox = crate::sandbox::Sandbox::start_with_workers(org, listener, workers.max(1))
        .await
        .context("starting the sandbox")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = sandbox.stopped() => {}
    }
    sandbox.shutdown().await;
    Ok(true)
}
