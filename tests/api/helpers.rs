//! Test harness: a sandbox (fake DingTalk) plus a dingbot wired to it, and the client side
//! of the callback protocol (signing, fixtures, waiting for what a group receives).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::web::Data;
use dingbot::clock::now_ms;
use dingbot::config::{GroupBinding, Language, Settings};
use dingbot::demo::{SignedCallback, sandbox_settings, unique_timestamp};
use dingbot::dingtalk::signature::sign;
use dingbot::http::AppState;
use dingbot::sandbox::{Endpoint, Fault, Org, Sandbox, SentMessage};
use dingbot::startup::Application;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The demo org's app secret; it must never show up in anything a user or caller sees.
pub const SECRET: &str = "demo-app-secret-0123456789abcdef";
/// `senderStaffId` of [`SignedCallback::group_text`].
pub const SENDER: &str = "16650000698";
/// The group with a configured chatid (研发部全员群, 37 members).
pub const BOUND: &str = "cidBound0001==";
/// The fixture group (全员群, 2 members), learned through convertToOpenConversationId.
pub const FIXTURE_GROUP: &str = "cidAsXSBLnA==";
/// A group without chatid (午餐拼单群).
pub const PLAIN: &str = "cidPlain0001==";
/// A scene group without chatid (项目群·发布).
pub const SCENE: &str = "cidScene0001==";

/// How long a test waits for replies it expects.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident that nothing (more) arrives.
pub const ABSENCE_WAIT: Duration = Duration::from_millis(300);

/// Unique msgIds and sessions within this test process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh suffix for ids.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{n:06}")
}

/// Drops the demo binding of chate39f540dxxxx without openConversationId, which dingbot
/// resolves at startup (one gettoken, one convertToOpenConversationId), so that nothing
/// talks to DingTalk before the first callback.
pub fn without_fixture_group(settings: &mut Settings) {
    settings.groups.retain(|g| g.open_conversation_id.is_some());
}

/// `rate_limit.per_group_per_minute = n`.
pub fn per_minute(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("a budget of at least 1")
}

/// A binding `chatid` ↔ `cid`.
pub fn binding(chatid: &str, cid: &str) -> GroupBinding {
    GroupBinding {
        chatid: chatid.to_string(),
        open_conversation_id: Some(cid.to_string()),
    }
}

/// A running dingbot in front of a running sandbox.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// dingbot's port.
    pub port: u16,
    /// The fake DingTalk.
    pub sandbox: Sandbox,
    /// The app secret callbacks are signed with.
    pub secret: String,
    /// Client for calls to dingbot.
    pub http: reqwest::Client,
    /// Cancelling it shuts dingbot down as SIGTERM does (graceful, replies drained).
    pub shutdown: CancellationToken,
    /// dingbot's shared state (dedupe cache, limiter, …).
    pub state: Data<AppState>,
    /// The task running `run_until_stopped`.
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// `storage.data_dir` (a fresh temp dir unless the test chose one), removed on drop.
    pub data_dir: std::path::PathBuf,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Starts the graceful stop; the server task finishes it (or the test's runtime
        // ends it).
        self.shutdown.cancel();
        if self.data_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A fresh, not yet existing directory under the system temp dir.
pub fn temp_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "dingbot-api-{}-{}",
        std::process::id(),
        unique("data")
    ))
}

/// A callback ready to be signed and sent, with the session its replies go to.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The JSON body.
    pub body: Value,
    /// The sandbox session of `sessionWebhook`.
    pub session: String,
    /// The body's `msgId`.
    pub msg_id: String,
}

/// dingbot's answer to an HTTP request.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The body as JSON (panics if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// Asserts an accepted callback: HTTP 200 `{}`.
    pub fn assert_accepted(&self) {
        assert_eq!(self.status, 200, "expected 200 {{}}, got {self:?}");
        assert_eq!(self.json(), json!({}), "{self:?}");
    }

    /// Asserts a refusal with this status and `error` code, a human message and no secret.
    pub fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["error"], code, "{self:?}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "refusal without a message: {self:?}"
        );
        assert_no_secret(&self.text);
    }
}

/// Panics if `text` contains the app secret.
pub fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(SECRET),
        "the app secret leaked into: {text:?}"
    );
}

/// Starts the sandbox and dingbot with the demo settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the sandbox and dingbot with the test settings changed by `configure`. The test
/// settings are the demo's with a budget of 100 per group and minute, high enough that the
/// limiter never interferes unless a test lowers it.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_faulted(Vec::new(), configure).await
}

/// Like [`spawn_app_with`], with `faults` queued on the sandbox before dingbot starts.
pub async fn spawn_app_faulted(
    faults: Vec<(Endpoint, Fault, u32)>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let org = Org::demo();
    let sandbox = Sandbox::start(org.clone()).await.expect("sandbox starts");
    for (ep, fault, times) in faults {
        sandbox.inject(ep, fault, times);
    }
    let mut settings =
        sandbox_settings(&sandbox, &org, Language::Zh, 100).expect("demo settings are valid");
    configure(&mut settings);
    launch(sandbox, org, &settings).await
}

/// Starts the sandbox and dingbot configured by a whole TOML document; `toml` gets the
/// sandbox's base URL.
pub async fn spawn_app_from_toml(toml: impl FnOnce(&str) -> String) -> TestApp {
    let org = Org::demo();
    let sandbox = Sandbox::start(org.clone()).await.expect("sandbox starts");
    let settings = Settings::from_toml_str(&toml(&sandbox.base_url())).expect("valid TOML");
    launch(sandbox, org, &settings).await
}

/// Starts dingbot with `settings` in front of an already running `sandbox` (e.g. a second
/// dingbot on the data dir of a first one, to test what survives a restart).
pub async fn spawn_app_on(sandbox: Sandbox, settings: &Settings) -> TestApp {
    launch(sandbox, Org::demo(), settings).await
}

async fn launch(sandbox: Sandbox, org: Org, settings: &Settings) -> TestApp {
    assert_eq!(settings.server.listen.to_string(), "127.0.0.1:0");
    let mut settings = settings.clone();
    // The default data dir is relative to the working directory: keep tests out of the repo.
    if settings.storage.data_dir == std::path::Path::new("./data") {
        settings.storage.data_dir = temp_data_dir();
    }
    let app = Application::build(&settings).await.expect("dingbot starts");
    let port = app.port();
    let shutdown = app.shutdown_trigger();
    let state = app.state();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        sandbox,
        secret: org.app_secret,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("reqwest client"),
        shutdown,
        state,
        server: Some(server),
        data_dir: settings.storage.data_dir.clone(),
    }
}

impl TestApp {
    /// Shuts dingbot down as SIGTERM does and waits (≤ 30 s) until `run_until_stopped`
    /// has returned.
    pub async fn stop_gracefully(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("run_until_stopped returns")
                .expect("server task did not panic")
                .expect("server ran without error");
        }
    }

    /// The callback URL.
    pub fn callback_url(&self) -> String {
        format!("{}/dingtalk/callback", self.address)
    }

    /// A fresh session on the sandbox's sessionWebhook.
    pub fn new_session(&self) -> (String, String) {
        let session = unique("session-");
        let url = self.sandbox.webhook_url(&session);
        (session, url)
    }

    /// A group text message "@robot {text}" in `cid` with a unique msgId and session.
    pub fn group_text(&self, cid: &str, text: &str) -> Outgoing {
        let title = self
            .sandbox
            .group(cid)
            .map(|g| g.name)
            .unwrap_or_else(|| "测试群".to_string());
        self.group_text_titled(cid, &title, text)
    }

    /// Like [`TestApp::group_text`] with an explicit `conversationTitle`.
    pub fn group_text_titled(&self, cid: &str, title: &str, text: &str) -> Outgoing {
        let (session, webhook) = self.new_session();
        let msg_id = unique("msgTest");
        let cb = SignedCallback::group_text(cid, title, text, &msg_id, &webhook);
        Outgoing {
            body: cb.body,
            session,
            msg_id,
        }
    }

    /// A copy of `tests/fixtures/callbacks/{name}.json` made sendable: `sessionWebhook` on a
    /// fresh sandbox session and `sessionWebhookExpiredTime` an hour ahead. Ids are kept.
    pub fn fixture(&self, name: &str) -> Outgoing {
        let mut body: Value = serde_json::from_str(fixture_text(name)).expect("fixture is JSON");
        let (session, webhook) = self.new_session();
        body["sessionWebhook"] = json!(webhook);
        body["sessionWebhookExpiredTime"] = json!(now_ms() + 3_600_000);
        let msg_id = body["msgId"].as_str().expect("fixture msgId").to_string();
        Outgoing {
            body,
            session,
            msg_id,
        }
    }

    /// Signs `out` with a fresh timestamp and POSTs it.
    pub async fn send(&self, out: &Outgoing) -> Answer {
        self.post_signed(&out.body).await
    }

    /// POSTs `body` as JSON, signed with the app secret and a timestamp of its own.
    pub async fn post_signed(&self, body: &Value) -> Answer {
        let ts = unique_timestamp().to_string();
        let sign = sign(&self.secret, &ts);
        self.post_with_signature(&ts, &sign, body).await
    }

    /// POSTs `body` as JSON with exactly these `timestamp` and `sign` headers.
    pub async fn post_with_signature(&self, timestamp: &str, sign: &str, body: &Value) -> Answer {
        self.post_raw(
            &[
                ("timestamp", timestamp.to_string()),
                ("sign", sign.to_string()),
                ("content-type", "application/json".to_string()),
            ],
            serde_json::to_vec(body).expect("serialisable"),
        )
        .await
    }

    /// POSTs `body` with exactly `headers` (repeated names are sent repeatedly).
    pub async fn post_raw(&self, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
        let mut req = self.http.post(self.callback_url()).body(body);
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let resp = req.send().await.expect("dingbot answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body readable");
        Answer { status, text }
    }

    /// GETs `path` on dingbot.
    pub async fn get(&self, path: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("dingbot answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body readable");
        Answer { status, text }
    }

    /// Waits (up to [`REPLY_WAIT`]) until `session` received `n` messages, asserts it got
    /// exactly `n` and that none contains the secret, and returns them.
    pub async fn replies(&self, session: &str, n: usize) -> Vec<SentMessage> {
        let got = self
            .sandbox
            .wait_for_session_messages(session, n, REPLY_WAIT)
            .await;
        assert_eq!(
            got.len(),
            n,
            "session {session}: expected {n} messages, got {:#?}",
            got.iter().map(SentMessage::text).collect::<Vec<_>>()
        );
        for m in &got {
            assert_no_secret(&m.body.to_string());
        }
        got
    }

    /// The text of the single reply `session` receives.
    pub async fn reply_text(&self, session: &str) -> String {
        self.replies(session, 1).await.remove(0).text()
    }

    /// Asserts that `session` does not receive more than the `n` messages it has, waiting
    /// [`ABSENCE_WAIT`] for a further one.
    pub async fn assert_no_more(&self, session: &str, n: usize) {
        let got = self
            .sandbox
            .wait_for_session_messages(session, n + 1, ABSENCE_WAIT)
            .await;
        assert_eq!(
            got.len(),
            n,
            "session {session}: expected exactly {n} messages, got {:#?}",
            got.iter().map(SentMessage::text).collect::<Vec<_>>()
        );
    }

    /// Asserts that `session` receives nothing.
    pub async fn assert_no_reply(&self, session: &str) {
        self.assert_no_more(session, 0).await;
    }

    /// Sends a raw HTTP/1.1 request over a new TCP connection (written as given; stops
    /// writing quietly if dingbot closes the connection) and reads one response. Bounded
    /// to a few seconds: a server that waits for a body it was promised fails the test.
    pub async fn raw_http(&self, head: String, body: Vec<u8>) -> Answer {
        let port = self.port;
        tokio::task::spawn_blocking(move || raw_exchange(port, head.as_bytes(), &body))
            .await
            .expect("raw exchange task")
    }
}

/// The text of a copied fixture.
pub fn fixture_text(name: &str) -> &'static str {
    match name {
        "group_text_info" => include_str!("../fixtures/callbacks/group_text_info.json"),
        "group_text_doc_example" => {
            include_str!("../fixtures/callbacks/group_text_doc_example.json")
        }
        "single_chat_text" => include_str!("../fixtures/callbacks/single_chat_text.json"),
        "group_richtext" => include_str!("../fixtures/callbacks/group_richtext.json"),
        "group_picture" => include_str!("../fixtures/callbacks/group_picture.json"),
        "group_unknown_type" => include_str!("../fixtures/callbacks/group_unknown_type.json"),
        other => panic!("no fixture {other}"),
    }
}

/// Fresh `timestamp` and matching `sign` headers.
pub fn fresh_signature(secret: &str) -> (String, String) {
    let ts = unique_timestamp().to_string();
    let sign = sign(secret, &ts);
    (ts, sign)
}

fn raw_exchange(port: u16, head: &[u8], body: &[u8]) -> Answer {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream.write_all(head).expect("write head");
    // dingbot may answer and close before taking the whole body; that is fine.
    for piece in body.chunks(16 * 1024) {
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(answer) = parse_response(&buf) {
            return answer;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "no complete HTTP response (read failed: {e}); got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    parse_response(&buf).unwrap_or_else(|| {
        panic!(
            "connection closed without a complete response: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// Parses a complete `Content-Length` HTTP/1.1 response, or `None` if more bytes are needed.
fn parse_response(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let body = buf.get(end + 4..end + 4 + len)?;
    Some(Answer {
        status,
        text: String::from_utf8_lossy(body).to_string(),
    })
}

/// Sends distinct messages under one (timestamp, sign) pair until dingbot refuses one;
/// returns how many it accepted.
pub async fn spend(app: &TestApp, ts: &str, sign: &str) -> usize {
    for accepted in 0..1000 {
        let out = app.group_text(&unique("cidSpend"), "/help");
        let answer = app.post_with_signature(ts, sign, &out.body).await;
        if answer.status != 200 {
            answer.assert_refused(401, "replayed");
            return accepted;
        }
        answer.assert_accepted();
    }
    panic!("a signature pair carried 1000 messages");
}
