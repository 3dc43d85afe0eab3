//! Posting the reply to the sessionWebhook: retried when it surely failed, never doubled.

use std::time::{Duration, Instant};

use dingbot::config::ReplyFallback;
use dingbot::dingtalk::ReplyClientChoice;
use dingbot::dingtalk::reply_http::proxy_variable;
use dingbot::sandbox::{Endpoint, Fault};

use crate::helpers::{ABSENCE_WAIT, BOUND, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_is_retried_after_a_server_error() {
    let app = spawn_app().await;
    // `reply_client = "auto"`: the direct client unless a proxy variable is set.
    let expected = match proxy_variable() {
        None => "direct",
        Some(_) => "reqwest",
    };
    assert_eq!(app.state.pipeline.sender().client_name(), expected);
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(502), 1);
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    app.assert_no_more(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_is_retried_after_a_busy_answer() {
    let app = spawn_app().await;
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::errcode(-1, "系统繁忙"), 1);
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    app.assert_no_more(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_refused_by_dingtalk_is_not_retried() {
    // `reply.fallback = "none"`: the refusal ends the reply (with the default fallback it
    // goes through the robot send API; tests/api/fallback.rs).
    let app = spawn_app_with(|s| s.reply.fallback = ReplyFallback::None).await;
    app.sandbox.inject(
        Endpoint::SendBySession,
        Fault::errcode(300001, "session 不存在"),
        1,
    );
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.assert_no_reply(&out.session).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 1);
    assert_eq!(app.sandbox.calls(Endpoint::RobotGroupSend), 0);
    assert_eq!(app.sandbox.message_count(), 0);
    // The next message is answered normally.
    let next = app.group_text(BOUND, "/help");
    app.send(&next).await.assert_accepted();
    app.replies(&next.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_delivered_with_an_unreadable_answer_is_not_sent_twice() {
    let app = spawn_app().await;
    // DingTalk posts the message to the group, but its answer arrives cut short.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::Truncated, 1);
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    // The reply task holds its slot until it has given up or succeeded, retries included:
    // once the slot is free, every POST it will ever make has been made.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.callbacks_in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.state.callbacks_in_flight(),
        0,
        "the reply task never finished"
    );
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        1,
        "an answer that may hide a delivered message must not be POSTed again"
    );
    app.assert_no_more(&out.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_that_was_slow_to_be_acknowledged_is_not_sent_twice() {
    // Timeout 1 s: the first POST times out, and the retry policy has time for another.
    let app = spawn_app_with(|s| s.dingtalk.request_timeout_ms = 1000).await;
    // DingTalk takes 1.2 s to acknowledge the first POST, but does deliver it.
    let delivery = Duration::from_millis(1200);
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::Delay(delivery), 1);
    let out = app.group_text(BOUND, "/help");
    let sent = Instant::now();
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    // Give the slow first POST its 1.2 s plus the usual margin to show up a second time.
    let margin = (delivery + ABSENCE_WAIT).saturating_sub(sent.elapsed());
    let got = app
        .sandbox
        .wait_for_session_messages(&out.session, 2, margin)
        .await;
    assert_eq!(
        got.len(),
        1,
        "the group got the reply {} times ({} POSTs)",
        got.len(),
        app.sandbox.calls(Endpoint::SendBySession)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_through_reqwest_are_retried_and_never_doubled_too() {
    // The client `reply_client = "auto"` picks when HTTPS_PROXY or the like is set.
    let app = spawn_app_with(|s| s.dingtalk.reply_client = ReplyClientChoice::Reqwest).await;
    assert_eq!(app.state.pipeline.sender().client_name(), "reqwest");
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(502), 1);
    let out = app.group_text(BOUND, "/info");
    app.send(&out).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await;
    assert!(
        reply[0].text().contains("研发部全员群"),
        "the /info reply names the group: {:?}",
        reply[0].text()
    );
    app.assert_no_more(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 2);

    // Delivered, but the answer is cut short: not sent a second time.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::Truncated, 1);
    let next = app.group_text(BOUND, "/help");
    app.send(&next).await.assert_accepted();
    app.replies(&next.session, 1).await;
    app.assert_no_more(&next.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_beyond_the_delivering_tasks_wait_and_each_goes_out_once() {
    // One reply POST at a time, so two tasks deliver and the rest of the replies wait in
    // the outbox; the sessionWebhook is slow and fails once (a retry while others wait).
    let app = spawn_app_with(|s| {
        s.dingtalk.max_parallel_requests = std::num::NonZeroUsize::MIN;
    })
    .await;
    app.sandbox.inject(
        Endpoint::SendBySession,
        Fault::Delay(Duration::from_millis(400)),
        4,
    );
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(502), 1);
    let outs: Vec<_> = (0..10).map(|_| app.group_text(BOUND, "/help")).collect();
    for status in futures_util::future::join_all(outs.iter().map(|out| app.send(out))).await {
        status.assert_accepted();
    }
    // The slow POSTs take 1.6 s one after the other; meanwhile the rest wait as values
    // (once their tasks have run: the HTTP answers may come first).
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut counts = app.state.pipeline.outbox_counts();
    while counts.0 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        counts = app.state.pipeline.outbox_counts();
    }
    let (waiting, couriers) = counts;
    assert!(waiting > 0, "replies should wait in the outbox");
    assert!(couriers <= 2, "at most 2 x 1 tasks deliver: {couriers}");
    for out in &outs {
        app.replies(&out.session, 1).await;
    }
    for out in &outs {
        app.assert_no_more(&out.session, 1).await;
    }
    assert_eq!(app.state.callbacks_in_flight(), 0, "every slot given back");
    assert_eq!(app.state.pipeline.pending_replies(), 0);
    assert_eq!(app.state.pipeline.outbox_counts(), (0, 0));
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        11,
        "10 + one retry"
    );
}
