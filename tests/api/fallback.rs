//! The reply fallback: when the sessionWebhook refuses for good (300001, a 5xx storm) or
//! has expired, the same message goes through the robot send APIs (`groupMessages/send`
//! in groups, `oToMessages/batchSend` in 1:1 chats), and the group gets exactly one reply.
//! Never after a failure that may hide a delivered message.

use std::time::{Duration, Instant};

use dingbot::clock::now_ms;
use dingbot::config::ReplyFallback;
use dingbot::dingtalk::RetryPolicy;
use dingbot::sandbox::{Endpoint, Fault, SentMessage};
use serde_json::json;

use crate::helpers::{
    ABSENCE_WAIT, BOUND, Outgoing, REPLY_WAIT, SENDER, TestApp, assert_no_secret, spawn_app,
    spawn_app_with, without_fixture_group,
};

/// The demo app's AppKey: an internal app's robotCode.
const APP_KEY: &str = "dingdemoappkey";
/// A 1:1 sender the demo org knows (张小明).
const USER: &str = "user123";

/// Waits for the `n`-th message the sandbox receives (any path), then makes sure no
/// further one arrives within [`ABSENCE_WAIT`] (or `settle`, if longer), and returns all.
async fn exactly(app: &TestApp, n: usize, settle: Duration) -> Vec<SentMessage> {
    let got = app.sandbox.wait_for_messages(n, REPLY_WAIT).await;
    assert_eq!(got.len(), n, "expected {n} messages, got {got:#?}");
    let more = app
        .sandbox
        .wait_for_messages(n + 1, settle.max(ABSENCE_WAIT))
        .await;
    assert_eq!(more.len(), n, "a reply was doubled: {more:#?}");
    for m in &more {
        assert_no_secret(&m.body.to_string());
    }
    more
}

/// Asserts `m` came through `groupMessages/send` into `cid` as `sampleMarkdown` with the
/// app's robotCode, the @-mention in the text, and returns the text.
fn assert_group_fallback(m: &SentMessage, cid: &str) -> String {
    assert_eq!(m.via, Endpoint::RobotGroupSend, "{m:#?}");
    assert_eq!(m.to, cid);
    assert_eq!(m.session, "");
    assert_eq!(m.body["msgKey"], "sampleMarkdown");
    assert_eq!(m.robot_code(), Some(APP_KEY));
    let param = m.msg_param().expect("msgParam is a JSON string");
    assert!(
        param["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{param}"
    );
    let text = m.text();
    assert!(
        text.contains(&format!("@{SENDER}")),
        "the mention is kept in the text: {text:?}"
    );
    text
}

/// `/help` in [`BOUND`] whose sessionWebhook expired a second ago.
fn expired_help(app: &TestApp) -> Outgoing {
    let mut out = app.group_text(BOUND, "/help");
    out.body["sessionWebhookExpiredTime"] = json!(now_ms() - 1_000);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_answered_once_through_group_messages_send() {
    let app = spawn_app_with(without_fixture_group).await;
    let out = expired_help(&app);
    app.send(&out).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    let text = assert_group_fallback(&got[0], BOUND);
    assert!(text.contains("帮助"), "{text:?}");
    // The expired webhook itself is never tried.
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 0);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_gone_300001_is_answered_once_through_group_messages_send() {
    let app = spawn_app_with(without_fixture_group).await;
    let out = app.group_text(BOUND, "/info");
    // DingTalk forgot the session: its webhook answers 300001 "session 不存在".
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    let text = assert_group_fallback(&got[0], BOUND);
    assert!(text.contains("研发部全员群"), "the /info answer: {text:?}");
    // 300001 is final: not retried on the webhook.
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 1);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 1);
    // The same through an injected fault, once more.
    app.sandbox.inject(
        Endpoint::SendBySession,
        Fault::errcode(300001, "session 不存在"),
        1,
    );
    let next = app.group_text(BOUND, "/help");
    app.send(&next).await.assert_accepted();
    let got = exactly(&app, 2, Duration::ZERO).await;
    assert_group_fallback(&got[1], BOUND);
    assert!(app.sandbox.messages_for(&next.session).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_storm_on_send_by_session_ends_in_one_reply_either_way() {
    let app = spawn_app_with(without_fixture_group).await;
    let attempts = u64::from(RetryPolicy::default().attempts);

    // A short storm: the retry gets through, and the robot API is not used.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(502), 1);
    let first = app.group_text(BOUND, "/help");
    app.send(&first).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    assert_eq!(got[0].via, Endpoint::SendBySession);
    assert_eq!(got[0].session, first.session);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 0);

    // A storm that outlasts the retries: the reply goes through the robot API, once.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(503), u32::MAX);
    let before = app.sandbox.calls(Endpoint::SendBySession);
    let second = app.group_text(BOUND, "/help");
    app.send(&second).await.assert_accepted();
    let got = exactly(&app, 2, Duration::ZERO).await;
    assert_group_fallback(&got[1], BOUND);
    let posts = app.sandbox.calls(Endpoint::SendBySession) - before;
    assert!(
        posts > 1 && posts <= attempts,
        "{posts} webhook POSTs: retried, at most {attempts} attempts"
    );
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 1);
    assert!(app.sandbox.messages_for(&second.session).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_on_send_by_session_does_not_fall_back() {
    // Timeout 500 ms; DingTalk takes the message but answers only after 1.2 s.
    let app = spawn_app_with(|s| {
        s.dingtalk.request_timeout_ms = 500;
        without_fixture_group(s);
    })
    .await;
    let delay = Duration::from_millis(1200);
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::Delay(delay), 1);
    let out = app.group_text(BOUND, "/help");
    let sent = Instant::now();
    app.send(&out).await.assert_accepted();
    // The late POST lands; nothing else ever does.
    let settle = (delay + Duration::from_millis(500)).saturating_sub(sent.elapsed());
    let got = exactly(&app, 1, settle).await;
    assert_eq!(got[0].via, Endpoint::SendBySession);
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 1);
    assert_eq!(
        app.sandbox.calls(Endpoint::RobotGroupSend),
        0,
        "a reply that may have been delivered went out a second way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fallback_none_replies_have_one_path_as_before() {
    let app = spawn_app_with(|s| {
        without_fixture_group(s);
        s.reply.fallback = ReplyFallback::None;
    })
    .await;
    // 300001: no reply at all.
    let out = app.group_text(BOUND, "/help");
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    // A 5xx storm: retried, then given up.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(503), u32::MAX);
    let storm = app.group_text(BOUND, "/help");
    app.send(&storm).await.assert_accepted();
    // Expired: refused at admission, as before the fallback existed.
    app.send(&expired_help(&app))
        .await
        .assert_refused(400, "webhook_refused");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.sandbox.message_count(), 0);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 0);
    assert_eq!(app.sandbox.calls(Endpoint::RobotOtoSend), 0);
}

/// A 1:1 `/help` from [`USER`] (the documented 1:1 callback, made sendable).
fn one_to_one(app: &TestApp, robot_code: &str) -> Outgoing {
    let mut out = app.fixture("single_chat_text");
    out.body["senderStaffId"] = json!(USER);
    out.body["robotCode"] = json!(robot_code);
    out.body["text"] = json!({ "content": "/help" });
    out.body["msgId"] = json!(crate::helpers::unique("msgOto"));
    out.msg_id = out.body["msgId"].as_str().unwrap_or_default().to_string();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_to_one_chat_falls_back_to_oto_batch_send() {
    let app = spawn_app_with(without_fixture_group).await;
    let out = one_to_one(&app, APP_KEY);
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    let m = &got[0];
    assert_eq!(m.via, Endpoint::RobotOtoSend, "{m:#?}");
    assert_eq!(m.to, USER);
    assert_eq!(m.body["userIds"], json!([USER]));
    assert_eq!(m.body["msgKey"], "sampleMarkdown");
    assert!(m.text().contains("帮助"), "{:?}", m.text());
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_code_comes_from_config_then_the_callback() {
    // The callback's robotCode is used when the config names none: the sandbox knows only
    // the AppKey as a robot, so another code is refused (and nothing is sent twice).
    let app = spawn_app_with(without_fixture_group).await;
    let out = one_to_one(&app, "dingotherrobot");
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    let deadline = Instant::now() + REPLY_WAIT;
    while app.sandbox.calls(Endpoint::RobotOtoSend) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(ABSENCE_WAIT).await;
    assert_eq!(app.sandbox.calls(Endpoint::RobotOtoSend), 1, "not retried");
    assert_eq!(app.sandbox.message_count(), 0);

    // `reply.robot_code` wins over the callback's.
    let app = spawn_app_with(|s| {
        without_fixture_group(s);
        s.reply.robot_code = Some(APP_KEY.into());
    })
    .await;
    let out = one_to_one(&app, "dingotherrobot");
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    assert_eq!(got[0].robot_code(), Some(APP_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_too_fast_on_the_robot_api_silences_the_group() {
    let app = spawn_app_with(without_fixture_group).await;
    app.sandbox.inject(
        Endpoint::RobotGroupSend,
        Fault::errcode(130101, "send too fast, exceed 20 times per minute"),
        1,
    );
    let out = expired_help(&app);
    app.send(&out).await.assert_accepted();
    let deadline = Instant::now() + REPLY_WAIT;
    while app.sandbox.calls(Endpoint::RobotGroupSend) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not retried, and the group is kept silent: its next command gets nothing.
    tokio::time::sleep(ABSENCE_WAIT).await;
    let next = app.group_text(BOUND, "/help");
    let answer = app.send(&next).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "status": "rate_limited" }),
        "silenced"
    );
    tokio::time::sleep(ABSENCE_WAIT).await;
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 1);
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 0);
    assert_eq!(app.sandbox.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_on_oto_batch_send_silences_the_chat() {
    let app = spawn_app_with(without_fixture_group).await;
    app.sandbox.flow_control(USER);
    let out = one_to_one(&app, APP_KEY);
    app.sandbox.end_session(&out.session);
    app.send(&out).await.assert_accepted();
    let deadline = Instant::now() + REPLY_WAIT;
    while app.sandbox.calls(Endpoint::RobotOtoSend) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(ABSENCE_WAIT).await;
    // Not retried; the chat is kept silent like a group after 130101.
    let mut next = one_to_one(&app, APP_KEY);
    next.body["conversationId"] = out.body["conversationId"].clone();
    let answer = app.send(&next).await;
    assert_eq!(
        answer.json(),
        json!({ "status": "rate_limited" }),
        "{answer:?}"
    );
    tokio::time::sleep(ABSENCE_WAIT).await;
    assert_eq!(app.sandbox.calls(Endpoint::RobotOtoSend), 1);
    assert_eq!(app.sandbox.message_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_once_for_the_robot_api() {
    let app = spawn_app().await;
    // The cached token (from startup) stops working before the fallback uses it.
    let deadline = Instant::now() + REPLY_WAIT;
    while app.sandbox.current_token().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.sandbox.revoke_tokens();
    let out = expired_help(&app);
    app.send(&out).await.assert_accepted();
    let got = exactly(&app, 1, Duration::ZERO).await;
    assert_group_fallback(&got[0], BOUND);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_are_counted() {
    let app = spawn_app_with(without_fixture_group).await;
    // The first scrape installs the process's recorder; counting starts there.
    assert_eq!(app.get("/metrics").await.status, 200);
    let out = expired_help(&app);
    app.send(&out).await.assert_accepted();
    exactly(&app, 1, Duration::ZERO).await;
    let gone = app.group_text(BOUND, "/help");
    app.sandbox.set_robot_send_permission(false);
    app.sandbox.end_session(&gone.session);
    app.send(&gone).await.assert_accepted();
    let deadline = Instant::now() + REPLY_WAIT;
    while app.sandbox.calls(Endpoint::RobotGroupSend) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(ABSENCE_WAIT).await;
    let metrics = app.get("/metrics").await.text;
    for series in [
        r#"dingbot_reply_fallbacks_total{reason="expired",result="sent"}"#,
        r#"dingbot_reply_fallbacks_total{reason="session_gone",result="failed"}"#,
        r#"dingbot_api_calls_total{endpoint="groupMessages/send",code="0"}"#,
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "{series} missing:\n{metrics}"
        );
    }
}
