//! Load shedding, and tolerance of message types dingbot does not know.

use std::time::Duration;

use dingbot::sandbox::{Endpoint, Fault};
use serde_json::json;

use crate::helpers::{BOUND, Outgoing, TestApp, spawn_app, spawn_app_with, without_fixture_group};

/// dingbot with a single in-flight slot, held by an `/info` whose chat/get DingTalk
/// answers only after `delay`.
async fn one_slot_held(queue_wait_ms: u64, delay: Duration) -> (TestApp, Outgoing) {
    let app = spawn_app_with(|s| {
        s.server.max_in_flight = std::num::NonZeroUsize::new(1).expect("at least 1");
        s.server.queue_wait_ms = queue_wait_ms;
        without_fixture_group(s);
    })
    .await;
    app.sandbox
        .inject(Endpoint::ChatGet, Fault::Delay(delay), 1);
    let busy = app.group_text(BOUND, "/info");
    app.send(&busy).await.assert_accepted();
    (app, busy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_beyond_capacity_are_shed_without_trace() {
    let (app, busy) = one_slot_held(0, Duration::from_millis(1500)).await;

    let shed = app.group_text(BOUND, "/help");
    let resp = app
        .http
        .post(app.callback_url())
        .header("timestamp", "0")
        .send()
        .await
        .unwrap();
    // An unsigned request is refused for what it is: it never competes for a slot.
    assert_eq!(resp.status().as_u16(), 401);
    let answer = app.send(&shed).await;
    answer.assert_refused(503, "overloaded");
    app.assert_no_reply(&shed.session).await;
    assert!(!app.state.handled_msg_id(shed.msg_id.as_str()));

    // Once the slow reply is out, DingTalk's retry of the shed callback is answered.
    let text = app.reply_text(&busy.session).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    let mut accepted = None;
    // The slot is freed just after the sandbox records the reply, so allow a few tries.
    for _ in 0..10 {
        let answer = app.send(&shed).await;
        if answer.status != 503 {
            accepted = Some(answer);
            break;
        }
        app.assert_no_reply(&shed.session).await;
    }
    accepted.expect("capacity came back").assert_accepted();
    app.replies(&shed.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_answer_says_when_to_retry() {
    let (app, busy) = one_slot_held(0, Duration::from_millis(1000)).await;
    let shed = app.group_text(BOUND, "/help");
    let (ts, sign) = crate::helpers::fresh_signature(&app.secret);
    let resp = app
        .http
        .post(app.callback_url())
        .header("timestamp", ts)
        .header("sign", sign)
        .json(&shed.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    app.replies(&busy.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_waits_for_a_slot_instead_of_being_lost() {
    // DingTalk does not redeliver robot messages: a burst should queue, not drop.
    let (app, busy) = one_slot_held(5000, Duration::from_millis(800)).await;
    let queued = app.group_text(BOUND, "/help");
    let started = std::time::Instant::now();
    app.send(&queued).await.assert_accepted();
    // It was answered only once the slow reply had freed the slot.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "answered after {:?}: it did not wait",
        started.elapsed()
    );
    assert!(!app.sandbox.messages_for(&busy.session).is_empty());
    let text = app.reply_text(&queued.session).await;
    assert!(text.contains("/info"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_waited_too_long_is_refused_and_leaves_no_trace() {
    let (app, busy) = one_slot_held(200, Duration::from_millis(2000)).await;
    let shed = app.group_text(BOUND, "/help");
    let started = std::time::Instant::now();
    app.send(&shed).await.assert_refused(503, "overloaded");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(1500),
        "refused after {waited:?}; queue_wait_ms is 200"
    );
    assert!(!app.state.handled_msg_id(shed.msg_id.as_str()));
    app.replies(&busy.session, 1).await;
    app.assert_no_reply(&shed.session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfamiliar_message_type_with_unusual_content_gets_the_text_only_reply() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/help");
    let mut body = out.body.clone();
    let obj = body.as_object_mut().unwrap();
    obj.remove("text");
    obj.insert("msgtype".into(), json!("hologram"));
    // A message type dingbot has never seen, whose `content` is not an object.
    obj.insert("content".into(), json!("一条全息消息"));
    let answer = app.post_signed(&body).await;
    answer.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.contains("只看得懂文字命令"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_held_by_pending_replies_are_reported_until_the_reply_is_out() {
    let (app, busy) = one_slot_held(0, Duration::from_millis(800)).await;
    assert_eq!(app.state.callbacks_in_flight(), 1);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dingbot_callbacks_in_flight ")),
        "{metrics}"
    );
    app.replies(&busy.session, 1).await;
    // The slot is released just after the reply POST returns: poll (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.state.callbacks_in_flight() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.callbacks_in_flight(), 0);
}
