//! Load shedding, and tolerance of message types dingbot does not know.

use std::time::Duration;

use dingbot::sandbox::{Endpoint, Fault};
use serde_json::json;

use crate::helpers::{BOUND, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_beyond_capacity_are_shed_without_trace() {
    let app = spawn_app_with(|c| {
        c.max_in_flight = Some(1);
        c.learn_fixture_group = false;
    })
    .await;
    // The first /info holds the only slot while DingTalk is slow.
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let busy = app.group_text(BOUND, "/info");
    app.send(&busy).await.assert_accepted();

    let shed = app.group_text(BOUND, "/help");
    let resp = app
        .http
        .post(app.callback_url())
        .header("timestamp", "0")
        .send()
        .await
        .unwrap();
    // Even an unsigned request is shed first: the slot is taken before anything else.
    assert_eq!(resp.status().as_u16(), 503);
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
    let app = spawn_app_with(|c| {
        c.max_in_flight = Some(1);
        c.learn_fixture_group = false;
    })
    .await;
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(1000)),
        1,
    );
    let busy = app.group_text(BOUND, "/info");
    app.send(&busy).await.assert_accepted();
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
