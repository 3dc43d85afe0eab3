//! Graceful shutdown: a reply being prepared when dingbot is stopped is still delivered.

use std::time::Duration;

use dingbot::sandbox::{Endpoint, Fault};

use crate::helpers::{BOUND, spawn_app_with, without_fixture_group};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reply_is_delivered_during_graceful_shutdown() {
    let mut app = spawn_app_with(without_fixture_group).await;
    // DingTalk takes a while to answer chat/get.
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::Delay(Duration::from_millis(800)),
        1,
    );
    let out = app.group_text(BOUND, "/info");
    app.send(&out).await.assert_accepted();
    assert!(app.sandbox.messages_for(&out.session).is_empty());

    // SIGTERM equivalent: stop accepting, finish replies within the grace period.
    app.shutdown.cancel();
    // While the reply is finishing, a callback on the open keep-alive connection is
    // refused with a reason and nothing of it is kept (the proxy is told to reconnect).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = app.group_text(BOUND, "/help");
    let answer = app.send(&late).await;
    answer.assert_refused(503, "shutting_down");
    assert!(!app.state.handled_msg_id(late.msg_id.as_str()));
    let server = app.server.take().expect("server task");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("run_until_stopped returns within the grace period")
        .expect("server task did not panic")
        .expect("server ran without error");

    // run_until_stopped waited for the reply: it is there already.
    let got = app.sandbox.messages_for(&out.session);
    assert_eq!(got.len(), 1, "reply lost at shutdown");
    assert!(
        got[0].text().contains("群信息：研发部全员群"),
        "{}",
        got[0].text()
    );

    // And dingbot no longer accepts connections (a fresh client: no pooled connection).
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "still answering after stop: {refused:?}");
}
