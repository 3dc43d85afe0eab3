//! The group-info cache: concurrent `/info` in a cold group share one upstream lookup.

use dingbot::sandbox::Endpoint;
use futures_util::future::join_all;

use crate::helpers::*;

/// One burst of 1,000 callbacks at a time: parallel bursts on a small machine can starve
/// actix's header reads (HTTP 408) and measure the machine, not the coalescing.
static BURST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends `out`; on a machine too busy to read 1,000 connections' headers in time actix
/// answers 408 without processing anything, and such a request is sent again (at most 3
/// times), so the figures measure coalescing, not the machine.
async fn send_until_taken(app: &TestApp, out: &Outgoing) -> u16 {
    let mut status = 0;
    for _ in 0..3 {
        status = app.send(out).await.status;
        if status != 408 {
            break;
        }
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_info_in_a_cold_group_cost_one_token_and_one_lookup() {
    // chat/get completes the summary; the owner's name costs one user/get.
    let app = thousand_concurrent_info(BOUND, "**群主**：王建国").await;
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
    assert_eq!(app.sandbox.calls(Endpoint::UserGet), 1);
    assert_eq!(app.sandbox.calls(Endpoint::SceneGroupGet), 0);
    assert_eq!(app.sandbox.calls(Endpoint::GroupBaseInfos), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_is_not_cached() {
    let app = spawn_app_from_toml(|base| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1
[dingtalk]
app_key = "dingdemoappkey"
app_secret = "{SECRET}"
oapi_base = "{base}"
api_base = "{base}"
[bot]
info_cache_ttl_secs = 60
[[groups]]
chatid = "chatbound0001"
open_conversation_id = "{BOUND}"
"#
        )
    })
    .await;
    // A failure that fails the whole lookup (a permission refusal does not: it is a
    // remembered answer of one source, see tests/api/groups.rs).
    app.sandbox.inject(
        Endpoint::ChatGet,
        dingbot::sandbox::Fault::ErrCode {
            errcode: 70001,
            errmsg: "企业不存在".into(),
            sub_code: None,
        },
        1,
    );
    let first = app.group_text(BOUND, "/info");
    app.send(&first).await.assert_accepted();
    let text = app.replies(&first.session, 1).await[0].text();
    assert!(text.contains("企业不存在"), "{text}");
    let second = app.group_text(BOUND, "/info");
    app.send(&second).await.assert_accepted();
    let text = app.replies(&second.session, 1).await[0].text();
    assert!(text.contains("**成员数**：37 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 2);
}

/// 1,000 concurrent `/info` in the cold group `cid` (group-info cache on; only
/// cidBound0001== has a `[[groups]]` entry); returns the app once every reply arrived,
/// each containing `name`.
async fn thousand_concurrent_info(cid: &str, name: &str) -> TestApp {
    let _burst = BURST.lock().await;
    let app = spawn_app_from_toml(|base| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1
max_in_flight = 2000
[dingtalk]
app_key = "dingdemoappkey"
app_secret = "{SECRET}"
oapi_base = "{base}"
api_base = "{base}"
[rate_limit]
per_group_per_minute = 2000
[bot]
info_cache_ttl_secs = 60
[[groups]]
chatid = "chatbound0001"
open_conversation_id = "{BOUND}"
"#
        )
    })
    .await;
    let (_, session) = app.new_session();
    let sends = (0..1000).map(|_| {
        let mut out = app.group_text(cid, "/info");
        out.body["sessionWebhook"] = app.sandbox.webhook_url(&session).into();
        let app = &app;
        async move { send_until_taken(app, &out).await }
    });
    let statuses = join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let got = app
        .sandbox
        .wait_for_session_messages(&session, 1000, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().all(|m| m.text().contains(name)));
    app
}

/// (gettoken, chat/get, scenegroup/get, baseInfos, user/get) calls so far.
fn upstream_calls(app: &TestApp) -> [u64; 5] {
    [
        Endpoint::GetToken,
        Endpoint::ChatGet,
        Endpoint::SceneGroupGet,
        Endpoint::GroupBaseInfos,
        Endpoint::UserGet,
    ]
    .map(|ep| app.sandbox.calls(ep))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_info_in_a_scene_group_cost_one_call_per_source() {
    let app = thousand_concurrent_info(SCENE, "**群主**：陈思远").await;
    // scenegroup/get's member_amount gives the count: no baseInfos call.
    assert_eq!(upstream_calls(&app), [1, 0, 1, 0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_info_in_a_plain_group_cost_one_call_per_source() {
    let app = thousand_concurrent_info(PLAIN, "**成员数**：7 人").await;
    assert_eq!(upstream_calls(&app), [1, 0, 1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_lookups_beyond_the_parallel_cap_wait_their_turn_and_all_get_their_own_answer() {
    // One API call and one group lookup at a time: the other groups' lookups wait for a
    // turn (in a small future) and none is starved or answered with another group's info.
    let app = spawn_app_with(|s| {
        s.dingtalk.max_parallel_requests = std::num::NonZeroUsize::MIN;
        s.bot.info_cache_ttl_secs = 60;
    })
    .await;
    let outs: Vec<_> = (0..6)
        .map(|i| app.group_text(if i % 2 == 0 { BOUND } else { PLAIN }, "/info"))
        .collect();
    let statuses = join_all(outs.iter().map(|out| app.send(out))).await;
    for status in statuses {
        status.assert_accepted();
    }
    for (i, out) in outs.iter().enumerate() {
        let text = app.reply_text(&out.session).await;
        let group = if i % 2 == 0 {
            "**成员数**：37 人"
        } else {
            "午餐拼单群"
        };
        assert!(text.contains(group), "reply {i}: {text}");
    }
    // Coalesced per group even while waiting for turns: one chat/get for the bound group.
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
}
