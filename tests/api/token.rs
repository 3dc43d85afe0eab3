//! The access token is fetched once and shared: sequentially and under concurrency.

use dingbot::sandbox::Endpoint;

use crate::helpers::{
    BOUND, FIXTURE_GROUP, per_minute, spawn_app, spawn_app_with, without_fixture_group,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_lookups_reuse_one_token() {
    let app = spawn_app_with(|s| s.rate_limit.per_group_per_minute = per_minute(100)).await;
    for i in 0..30 {
        let (cid, name) = if i % 2 == 0 {
            (BOUND, "研发部全员群")
        } else {
            (FIXTURE_GROUP, "全员群")
        };
        let out = app.group_text(cid, "/info");
        app.send(&out).await.assert_accepted();
        let text = app.reply_text(&out.session).await;
        assert!(text.contains(&format!("群信息：{name}")), "#{i}: {text}");
    }
    // The startup conversion fetched the token; every lookup reused it.
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 30);
    assert_eq!(app.sandbox.calls(Endpoint::ConvertToOpenConversationId), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_fetch_one_token() {
    // Nothing fetched a token before the burst: all 30 lookups race for the first one.
    let app = spawn_app_with(|s| {
        s.rate_limit.per_group_per_minute = per_minute(100);
        without_fixture_group(s);
    })
    .await;
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 0);
    let outs: Vec<_> = (0..30).map(|_| app.group_text(BOUND, "/info")).collect();
    let answers = futures_util::future::join_all(outs.iter().map(|o| app.send(o))).await;
    for a in &answers {
        a.assert_accepted();
    }
    for out in &outs {
        let text = app.reply_text(&out.session).await;
        assert!(text.contains("**成员数**：37 人"), "{text}");
    }
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_needs_no_token() {
    let app = spawn_app_with(without_fixture_group).await;
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 0);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_learns_the_fixture_group_once() {
    let app = spawn_app().await;
    let out = app.fixture("group_text_info");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::ConvertToOpenConversationId), 1);
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
}
