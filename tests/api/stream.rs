//! Stream mode: dingbot holds a real WebSocket on 127.0.0.1 to the sandbox's gateway and
//! handles robot messages through the same pipeline as HTTP callbacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dingbot::config::{DingTalkMode, Language, Settings};
use dingbot::demo::{SignedCallback, sandbox_settings};
use dingbot::sandbox::{Endpoint, Fault, Gateway, Org, Sandbox, bot_frame};
use dingbot::startup::Application;
use dingbot::stream::StreamStatus;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{BOUND, PLAIN, REPLY_WAIT, SECRET, assert_no_secret, temp_data_dir, unique};

/// How long a test waits for a connection event.
const WAIT: Duration = Duration::from_secs(5);

/// dingbot in Stream mode in front of a sandbox.
struct StreamApp {
    sandbox: Sandbox,
    gateway: Gateway,
    address: String,
    status: Arc<StreamStatus>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
    data_dir: std::path::PathBuf,
}

impl Drop for StreamApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Test timings: everything in milliseconds, so a test takes about a second.
fn fast(settings: &mut Settings) {
    let s = &mut settings.stream;
    s.ping_interval_ms = 100;
    s.idle_timeout_ms = 600;
    s.backoff_base_ms = 100;
    s.backoff_max_ms = 400;
    s.healthy_after_ms = 1_000;
    s.refused_retry_ms = 300;
}

async fn spawn_stream(
    mode: DingTalkMode,
    before: impl FnOnce(&Gateway),
    configure: impl FnOnce(&mut Settings),
) -> StreamApp {
    if std::env::var_os("STREAM_TEST_LOG").is_some() {
        dingbot::telemetry::init_logging(dingbot::config::LogFormat::Text);
    }
    let org = Org::demo();
    let sandbox = Sandbox::start(org.clone()).await.expect("sandbox starts");
    let gateway = sandbox.gateway();
    before(&gateway);
    let mut settings = sandbox_settings(&sandbox, &org, Language::Zh, 100).expect("settings");
    settings.dingtalk.mode = mode;
    settings.groups.retain(|g| g.open_conversation_id.is_some());
    settings.storage.data_dir = temp_data_dir();
    fast(&mut settings);
    configure(&mut settings);
    let app = Application::build(&settings).await.expect("dingbot starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let status = app.stream_status().expect("a Stream door");
    let shutdown = app.shutdown_trigger();
    let server = Some(tokio::spawn(app.run_until_stopped()));
    StreamApp {
        sandbox,
        gateway,
        address,
        status,
        shutdown,
        server,
        http: reqwest::Client::new(),
        data_dir: settings.storage.data_dir.clone(),
    }
}

async fn spawn_default() -> StreamApp {
    let app = spawn_stream(DingTalkMode::Stream, |_| {}, |_| {}).await;
    app.connected(1).await;
    app
}

impl StreamApp {
    /// Waits until `n` connections were opened and one is open.
    async fn connected(&self, n: usize) {
        let ok = self
            .gateway
            .wait_until(WAIT, |g| {
                g.connections().len() >= n && g.open_connections() >= 1
            })
            .await;
        assert!(
            ok,
            "connection {n} not open: {:?}",
            self.gateway.connections()
        );
    }

    /// A "@robot `text`" payload for `cid`, replies to a fresh session.
    fn message(&self, cid: &str, text: &str) -> (Value, String) {
        let session = unique("stream-session-");
        let webhook = self.sandbox.webhook_url(&session);
        let title = self.sandbox.group(cid).map(|g| g.name).unwrap_or_default();
        let cb = SignedCallback::group_text(cid, &title, text, &unique("msgStream"), &webhook);
        (cb.body, session)
    }

    /// Pushes `text` in `cid`; returns (frame messageId, session).
    fn push(&self, cid: &str, text: &str) -> (String, String) {
        let (payload, session) = self.message(cid, text);
        let id = self
            .gateway
            .push_payload(&payload)
            .expect("a connection is open");
        (id, session)
    }

    async fn ack(&self, message_id: &str) -> dingbot::sandbox::Ack {
        let id = message_id.to_string();
        assert!(
            self.gateway
                .wait_until(WAIT, |g| !g.acks_for(&id).is_empty())
                .await,
            "no answer to {message_id}"
        );
        self.gateway.acks_for(message_id).remove(0)
    }

    async fn replies(&self, session: &str, n: usize) -> Vec<String> {
        let got = self
            .sandbox
            .wait_for_session_messages(session, n, REPLY_WAIT)
            .await;
        assert_eq!(got.len(), n, "session {session}");
        got.iter()
            .map(|m| {
                assert_no_secret(&m.body.to_string());
                m.text()
            })
            .collect()
    }

    async fn no_more(&self, session: &str, n: usize) {
        let got = self
            .sandbox
            .wait_for_session_messages(session, n + 1, Duration::from_millis(300))
            .await;
        assert_eq!(got.len(), n, "session {session} got more than {n}");
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("dingbot answers");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn ready_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.get("/readyz").await.0 == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Each pushed `(message id, session)` got exactly one reply by now.
    fn each_answered_once(&self, pushed: &[(String, String)], what: &str) {
        for (id, session) in pushed {
            assert_eq!(
                self.sandbox.messages_for(session).len(),
                1,
                "{what}: message {id}"
            );
        }
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("run_until_stopped returns")
                .expect("no panic")
                .expect("no error");
        }
    }
}

#[tokio::test]
async fn stream_robot_message_gets_one_ack_with_its_id_and_one_reply() {
    let app = spawn_default().await;
    let open = app
        .gateway
        .last_open_request()
        .expect("connections/open was called");
    assert_eq!(open["clientId"], "dingdemoappkey");
    assert_eq!(
        open["subscriptions"],
        json!([{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}])
    );
    assert!(
        open["ua"].as_str().unwrap().starts_with("dingbot/"),
        "{open}"
    );

    let (id, session) = app.push(BOUND, "/info");
    let ack = app.ack(&id).await;
    assert_eq!(
        ack.body,
        json!({"code": 200, "headers": {"contentType": "application/json", "messageId": id},
               "message": "OK", "data": "{\"response\":null}"})
    );
    let text = app.replies(&session, 1).await.remove(0);
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    app.no_more(&session, 1).await;
    assert_eq!(app.gateway.acks_for(&id).len(), 1);
    // No HTTP callback route in stream mode; the probes are still served.
    assert_eq!(app.get("/dingtalk/callback").await.0, 404);
    let post = app
        .http
        .post(format!("{}/dingtalk/callback", app.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 404);
    assert_eq!(app.get("/healthz").await.0, 200);
    assert!(app.ready_within(WAIT).await);
}

#[tokio::test]
async fn stream_ping_is_echoed_with_its_id_and_data() {
    let app = spawn_default().await;
    let id = app.gateway.ping("opaque-42").expect("open");
    let ack = app.ack(&id).await;
    assert_eq!(ack.code, 200);
    assert_eq!(ack.body["headers"]["messageId"], id.as_str());
    assert_eq!(ack.data, json!({"opaque": "opaque-42"}).to_string());
}

#[tokio::test]
async fn stream_disconnect_opens_the_new_connection_before_closing_the_old_and_loses_nothing() {
    let app = spawn_default().await;
    let (before, s1) = app.push(BOUND, "/info");
    app.ack(&before).await;
    assert!(app.gateway.disconnect());
    // Pushed right after the disconnect frame, on the old connection.
    let (_, s2) = app.push(PLAIN, "/info");
    app.connected(2).await;
    assert!(
        app.gateway
            .wait_until(WAIT, |g| g.connections()[0].closed_seq.is_some())
            .await,
        "old connection not closed"
    );
    let conns = app.gateway.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(
        conns[1].opened_seq < conns[0].closed_seq.unwrap(),
        "the new connection must be open before the old one closes: {conns:?}"
    );
    assert!(conns[1].closed_seq.is_none());
    let (_, s3) = app.push(BOUND, "/help");
    for s in [&s1, &s2, &s3] {
        app.replies(s, 1).await;
    }
    assert!(app.ready_within(WAIT).await);
}

#[tokio::test]
async fn stream_dropped_socket_is_reconnected_within_the_backoff() {
    let app = spawn_default().await;
    let dropped = Instant::now();
    assert!(app.gateway.drop_connection());
    app.connected(2).await;
    // First step of the backoff is 100 ms (full jitter), plus open + handshake.
    assert!(
        dropped.elapsed() < Duration::from_secs(2),
        "{:?}",
        dropped.elapsed()
    );
    let (_, s) = app.push(BOUND, "/info");
    app.replies(&s, 1).await;
    assert!(app.ready_within(WAIT).await);
}

#[tokio::test]
async fn stream_silent_socket_is_replaced_after_the_watchdog_period() {
    let app = spawn_default().await;
    assert!(app.ready_within(WAIT).await);
    let silent_since = Instant::now();
    app.gateway.set_silent(true);
    assert!(
        app.gateway
            .wait_until(WAIT, |g| g.connections().len() >= 2)
            .await
    );
    let replaced_after = silent_since.elapsed();
    app.gateway.set_silent(false);
    // idle_timeout_ms = 600: not before (give or take a ping interval), not much after.
    assert!(
        replaced_after >= Duration::from_millis(450),
        "{replaced_after:?}"
    );
    assert!(
        replaced_after < Duration::from_secs(3),
        "{replaced_after:?}"
    );
    app.connected(2).await;
    let (_, s) = app.push(BOUND, "/info");
    app.replies(&s, 1).await;
}

#[tokio::test]
async fn stream_refused_open_makes_readyz_503_with_the_reason_and_is_retried_slowly() {
    let app = spawn_stream(DingTalkMode::Stream, |g| g.refuse_open(true), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let calls = app.gateway.open_calls();
    // refused_retry_ms = 300 (+ up to 10 % jitter): about 3-4 attempts in a second, not a storm.
    assert!((2..=6).contains(&calls), "{calls} connections/open calls");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused the app credentials"), "{body}");
    assert!(body.contains("authFailed"), "{body}");
    assert_no_secret(&body);
    assert!(app.status.counts.open_failures.get() >= 2);

    app.gateway.refuse_open(false);
    app.connected(1).await;
    assert!(app.ready_within(WAIT).await);
}

#[tokio::test]
async fn stream_refused_ticket_is_retried_with_backoff() {
    let app = spawn_stream(DingTalkMode::Stream, |g| g.refuse_tickets(true), |_| {}).await;
    assert!(app.gateway.wait_until(WAIT, |g| g.open_calls() >= 3).await);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("handshake"), "{body}");
    assert!(
        !body.contains("ticket="),
        "the ticket must not be shown: {body}"
    );
    app.gateway.refuse_tickets(false);
    app.connected(1).await;
}

#[tokio::test]
async fn stream_same_message_twice_gets_one_reply() {
    let app = spawn_default().await;
    let (payload, session) = app.message(BOUND, "/info");
    // The same msgId in two frames: admission dedupes.
    let a = app.gateway.push_payload(&payload).unwrap();
    let b = app.gateway.push_payload(&payload).unwrap();
    // The same frame twice: the door dedupes by messageId.
    let (payload2, session2) = app.message(PLAIN, "/info");
    let data = payload2.to_string();
    assert!(app.gateway.push_bot("frame-dup-1", &data));
    assert!(app.gateway.push_bot("frame-dup-1", &data));
    for id in [&a, &b] {
        assert_eq!(app.ack(id).await.code, 200);
    }
    assert!(
        app.gateway
            .wait_until(WAIT, |g| g.acks_for("frame-dup-1").len() == 2)
            .await,
        "every frame is ACKed, duplicates too"
    );
    app.replies(&session, 1).await;
    app.replies(&session2, 1).await;
    app.no_more(&session, 1).await;
    app.no_more(&session2, 1).await;
    assert_eq!(app.status.counts.duplicates.get(), 1);
}

#[tokio::test]
async fn stream_malformed_frames_are_counted_and_the_connection_is_kept() {
    let app = spawn_default().await;
    assert!(app.gateway.push_raw("this is not JSON".into()));
    assert!(
        app.gateway
            .push_raw(r#"{"type":"CALLBACK","headers":{}}"#.into())
    );
    assert!(app.gateway.push_raw("[1,2,3]".into()));
    assert!(app.gateway.push_bot("bad-data-1", "not JSON at all"));
    assert!(app.gateway.push_bot("bad-data-2", r#"{"msgId":"m"}"#));
    let event = app.gateway.push_frame("EVENT", "*", "{}").unwrap();
    let card = app
        .gateway
        .push_frame("CALLBACK", "/v1.0/card/instances/callback", "{}")
        .unwrap();
    for id in ["bad-data-1", "bad-data-2"] {
        assert_eq!(app.ack(id).await.code, 200, "ACKed before the data is read");
    }
    for id in [&event, &card] {
        assert_eq!(app.ack(id).await.code, 404);
    }
    let (_, s) = app.push(BOUND, "/info");
    app.replies(&s, 1).await;
    assert_eq!(app.gateway.connections().len(), 1, "connection kept");
    let c = &app.status.counts;
    assert_eq!(c.malformed.get(), 3);
    assert_eq!(c.bad_data.get(), 2);
    assert_eq!(c.unsupported.get(), 2);
}

#[tokio::test]
async fn stream_oversize_frame_replaces_the_connection_without_a_crash() {
    let app = spawn_stream(
        DingTalkMode::Stream,
        |_| {},
        |s| s.stream.max_frame_bytes = 4096,
    )
    .await;
    app.connected(1).await;
    let big = "x".repeat(20_000);
    assert!(app.gateway.push_bot("big-1", &big));
    app.connected(2).await;
    let (_, s) = app.push(BOUND, "/info");
    app.replies(&s, 1).await;
    assert!(app.ready_within(WAIT).await);
}

#[tokio::test]
async fn stream_group_budget_and_info_variants_behave_as_over_http() {
    // Both doors, so every variant can be sent both ways against the same dingbot.
    let app = spawn_stream(
        DingTalkMode::Both,
        |_| {},
        |s| {
            s.rate_limit.per_group_per_minute = std::num::NonZeroU32::new(100).unwrap();
        },
    )
    .await;
    app.connected(1).await;
    let http = reqwest::Client::new();
    let url = format!("{}/dingtalk/callback", app.address);
    for text in [
        "/info",
        "群信息",
        "/群信息",
        "/help",
        "帮助",
        "/nonsense",
        "/bind",
    ] {
        for cid in [BOUND, PLAIN] {
            let (stream_payload, stream_session) = app.message(cid, text);
            app.gateway.push_payload(&stream_payload).unwrap();
            let (http_payload, http_session) = app.message(cid, text);
            let answer = SignedCallback { body: http_payload }
                .send(&http, &url, SECRET)
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 200);
            let over_stream = app.replies(&stream_session, 1).await;
            let over_http = app.replies(&http_session, 1).await;
            assert_eq!(over_stream, over_http, "{text} in {cid}");
        }
    }
}

#[tokio::test]
async fn stream_group_budget_applies_to_stream_messages() {
    let app = spawn_stream(
        DingTalkMode::Stream,
        |_| {},
        |s| {
            s.rate_limit.per_group_per_minute = std::num::NonZeroU32::new(2).unwrap();
        },
    )
    .await;
    app.connected(1).await;
    let sessions: Vec<String> = (0..4).map(|_| app.push(BOUND, "/info").1).collect();
    let mut answers = 0;
    let mut notices = 0;
    for s in &sessions {
        let got = app
            .sandbox
            .wait_for_session_messages(s, 1, Duration::from_millis(1_500))
            .await;
        for m in got {
            if m.text().contains("群信息") {
                answers += 1;
            } else {
                notices += 1;
            }
        }
    }
    assert_eq!(
        (answers, notices),
        (2, 1),
        "two answers, one slow-down notice, then silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_graceful_shutdown_sends_every_reply_in_flight() {
    let mut app = spawn_default().await;
    // DingTalk answers chat/get slowly: the replies are still being prepared at shutdown.
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(700)),
        5,
    );
    let pushed: Vec<(String, String)> = (0..5).map(|_| app.push(BOUND, "/info")).collect();
    for (id, _) in &pushed {
        app.ack(id).await;
    }
    assert!(
        app.sandbox.message_count() < 5,
        "replies should still be in flight"
    );
    app.stop().await;
    app.each_answered_once(&pushed, "reply lost at shutdown");
    let conns = app.gateway.connections();
    assert!(conns[0].closed_seq.is_some(), "socket closed: {conns:?}");
}

/// A Stream app with one in-flight slot (waiting up to 5 s for it) whose next `n` chat/get
/// lookups take `delay_ms`: a second message waits for the slot inside the door.
async fn one_slow_slot(delay_ms: u64, n: u32) -> StreamApp {
    let app = spawn_stream(
        DingTalkMode::Stream,
        |_| {},
        |s| {
            s.server.max_in_flight = std::num::NonZeroUsize::new(1).unwrap();
            s.server.queue_wait_ms = 5_000;
        },
    )
    .await;
    app.connected(1).await;
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(delay_ms)),
        n,
    );
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_shutdown_keeps_a_message_acked_while_it_waits_for_a_slot() {
    // One slot, taken by a slow reply: the second message is acked (the door acks before
    // any work) and then waits for the slot when shutdown begins. DingTalk will not
    // redeliver an acked message, so it must still be answered.
    let mut app = one_slow_slot(1_200, 2).await;
    let pushed: Vec<(String, String)> = (0..2).map(|_| app.push(BOUND, "/info")).collect();
    for (id, _) in &pushed {
        app.ack(id).await;
    }
    assert_eq!(
        app.sandbox.message_count(),
        0,
        "replies should be in flight"
    );
    app.stop().await;
    app.each_answered_once(&pushed, "an acked message lost at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_shutdown_handles_a_frame_already_on_the_socket() {
    // The door is busy (one slot, a slow reply ahead of the second message) while the third
    // message already sits on the socket unread. DingTalk sent it and will not send it
    // again, so closing the socket at shutdown must still handle it.
    let mut app = one_slow_slot(1_200, 3).await;
    let pushed: Vec<(String, String)> = (0..3).map(|_| app.push(BOUND, "/info")).collect();
    app.ack(&pushed[0].0).await;
    app.ack(&pushed[1].0).await;
    assert!(
        app.gateway.acks_for(&pushed[2].0).is_empty(),
        "the third frame should still be unread"
    );
    app.stop().await;
    app.each_answered_once(
        &pushed,
        "a message already sent to dingbot lost at shutdown",
    );
}

#[tokio::test]
async fn stream_sandbox_gateway_without_a_connection_refuses_pushes() {
    // A frame pushed before any connection has nowhere to go.
    let org = Org::demo();
    let sandbox = Sandbox::start(org).await.unwrap();
    assert!(sandbox.gateway().push_payload(&json!({})).is_none());
    assert!(!sandbox.gateway().push_raw(bot_frame("x", "{}")));
}

#[test]
fn stream_deploy_example_loads_in_stream_mode() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stream/dingbot.toml");
    let env = [("DINGBOT_DINGTALK__APP_SECRET".to_string(), "x".to_string())];
    let s = Settings::load_with_env(Some(&path), env).expect("deploy/stream/dingbot.toml loads");
    assert_eq!(s.dingtalk.mode, DingTalkMode::Stream);
    assert_eq!(s.stream.idle_timeout_ms, 90_000);
}

#[tokio::test]
async fn stream_load_mode_pushes_as_fast_as_acked_and_every_message_is_answered() {
    let app = spawn_default().await;
    let before = app.sandbox.message_count();
    assert!(app.gateway.start_load(300, 30, 16, "/help"));
    assert!(
        app.gateway
            .wait_until(Duration::from_secs(20), |g| g.load_progress().1 >= 300)
            .await,
        "load progress {:?}",
        app.gateway.load_progress()
    );
    let (pushed, acked, _) = app.gateway.load_progress();
    assert_eq!((pushed, acked), (300, 300));
    app.sandbox
        .wait_for_messages(before as usize + 300, Duration::from_secs(20))
        .await;
    assert_eq!(app.sandbox.message_count() - before, 300);
    assert_eq!(app.status.counts.callbacks.get(), 300);
    assert_eq!(app.status.counts.bad_data.get(), 0);
}
