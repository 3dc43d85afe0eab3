//! `/info`: the summary, and a specific reply for each way DingTalk's chat/get can fail.

use std::time::{Duration, Instant};

use dingbot::sandbox::{Endpoint, Fault};

use crate::helpers::{
    BOUND, PLAIN, TestApp, binding, spawn_app, spawn_app_with, without_fixture_group,
};

/// Sends "/info" in `cid` and returns the single reply's text.
async fn info_reply(app: &TestApp, cid: &str) -> String {
    ask(app, cid, "/info").await
}

/// Sends `text` in `cid` and returns the single reply's text.
async fn ask(app: &TestApp, cid: &str, text: &str) -> String {
    let out = app.group_text(cid, text);
    app.send(&out).await.assert_accepted();
    app.reply_text(&out.session).await
}

fn errcode(code: i64, msg: &str) -> Fault {
    Fault::errcode(code, msg)
}

/// An app that talks to DingTalk only when a callback asks it to.
async fn quiet_app() -> TestApp {
    spawn_app_with(without_fixture_group).await
}

/// A summary from the other sources, with chat/get's missing permission named.
fn assert_chat_read_denied_reply(text: &str) {
    assert!(!text.contains("暂时无法获取群信息"), "{text}");
    assert!(
        text.contains("应用没有 qyapi_chat_read 权限（chat/get）"),
        "{text}"
    );
    assert!(
        text.contains("**管理员请处理**：在钉钉开发者后台为本应用开通 qyapi_chat_read 权限"),
        "{text}"
    );
}

fn assert_error_reply(text: &str) {
    assert!(text.contains("暂时无法获取群信息"), "{text}");
    assert!(!text.contains("**成员数**"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_group_summary_shows_every_setting() {
    let app = spawn_app().await;
    let text = info_reply(&app, BOUND).await;
    for expected in [
        "#### 群信息：研发部全员群",
        "**群名称**：研发部全员群",
        "**群主**：王建国",
        "**成员数**：37 人",
        "全员禁言：已开启",
        "可被搜索：否",
        "入群验证：需要群主或管理员审批",
        "@所有人 权限：仅群主和管理员",
        "群管理：所有成员",
        "新成员查看历史消息：可以",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in {text}");
    }
    assert!(!text.contains("已解散"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_aliases_are_understood() {
    let app = spawn_app().await;
    for command in ["群信息", "/INFO", "／info", "@张三 /info please"] {
        let text = ask(&app, BOUND, command).await;
        assert!(text.contains("群信息：研发部全员群"), "{command}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dissolved_group_says_so() {
    let app = spawn_app_with(|s| s.groups.push(binding("chatgone0001", "cidGone0001=="))).await;
    let text = info_reply(&app, "cidGone0001==").await;
    assert!(text.contains("群信息：旧版本发布群"), "{text}");
    assert!(text.contains("该群已解散"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_the_app_may_not_read_gets_the_permission_reply() {
    // Not injected: the sandbox itself answers 43007 for this group.
    let app = spawn_app_with(|s| s.groups.push(binding("chatnoread0001", "cidNoRead001=="))).await;
    let text = info_reply(&app, "cidNoRead001==").await;
    // chat/get is denied; baseInfos still gives the name and the member count.
    assert_chat_read_denied_reply(&text);
    assert!(text.contains("#### 群信息：财务审批群"), "{text}");
    assert!(text.contains("**成员数**：6 人"), "{text}");
    assert!(
        text.contains(
            "**群主**：暂无法获取 — 应用没有 qyapi_chat_read 权限（chat/get）；本群不是本应用的场景群"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_43007_gets_the_permission_reply() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(43007, "没有调用权限"), 1);
    let text = info_reply(&app, BOUND).await;
    assert_chat_read_denied_reply(&text);
    assert!(text.contains("**成员数**：37 人"), "{text}");
    // A permission problem is not retried, and not asked again within the back-off.
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
    info_reply(&app, BOUND).await;
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_88_with_sub_code_60011_gets_the_permission_reply() {
    let app = quiet_app().await;
    app.sandbox.inject(
        Endpoint::ChatGet,
        Fault::ErrCode {
            errcode: 88,
            errmsg: "鉴权异常".into(),
            sub_code: Some("60011".into()),
        },
        1,
    );
    let text = info_reply(&app, BOUND).await;
    assert_chat_read_denied_reply(&text);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_49000_gets_the_missing_chatid_reply() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(49000, "需要参数chatid"), 1);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("缺少 chatid"), "{text}");
    assert!(text.contains("49000"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_40016_gets_the_invalid_chatid_reply() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(40016, "无效的chatid"), 1);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("chatid 无效"), "{text}");
    assert!(text.contains("40016"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_chatid_unknown_to_dingtalk_gets_the_invalid_chatid_reply() {
    // Not injected: the sandbox answers 40016 for a chatid it does not know.
    let app = spawn_app_with(|s| s.groups.push(binding("chatnosuchgroup", "cidTypo0001=="))).await;
    let text = info_reply(&app, "cidTypo0001==").await;
    assert_error_reply(&text);
    assert!(text.contains("chatid 无效"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_70001_gets_the_missing_organisation_reply() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(70001, "企业不存在"), 1);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("企业不存在"), "{text}");
    assert!(text.contains("70001"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_errcode_is_quoted() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(33012, "无效的 **参数**"), 1);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("钉钉返回了错误 33012"), "{text}");
    // DingTalk's message is quoted, escaped like any other value.
    assert!(text.contains(r"无效的 \*\*参数\*\*"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_busy_is_retried_then_explained() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(-1, "系统繁忙"), 10);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("系统繁忙"), "{text}");
    assert!(text.contains("已重试"), "{text}");
    let calls = app.sandbox.calls(Endpoint::ChatGet);
    assert!((2..=4).contains(&calls), "chat/get calls: {calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_busy_is_retried_until_it_works() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(-1, "系统繁忙"), 2);
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    assert!(text.contains("**成员数**：37 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 3);
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_answers_are_retried_until_it_works() {
    let app = quiet_app().await;
    // Two bad answers, then the normal one, for each of two lookups.
    for fault in [Fault::Html, Fault::Garbage] {
        app.sandbox.inject(Endpoint::ChatGet, fault, 1);
    }
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("**成员数**：37 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 3);

    for fault in [Fault::Truncated, Fault::HttpStatus(502)] {
        app.sandbox.inject(Endpoint::ChatGet, fault, 1);
    }
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("**成员数**：37 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 6);
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_error_pages_are_retried_then_explained() {
    let app = quiet_app().await;
    app.sandbox.inject(Endpoint::ChatGet, Fault::Html, 10);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("暂时连不上钉钉服务"), "{text}");
    // DingTalk's HTML never reaches the group.
    assert!(!text.contains("Tengine"), "{text}");
    assert!(app.sandbox.calls(Endpoint::ChatGet) > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_is_dropped_and_refreshed_once() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(40014, "不合法的access_token"), 1);
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    assert!(text.contains("**成员数**：37 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 2);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_replaced_transparently() {
    let app = quiet_app().await;
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    // DingTalk invalidates the token (e.g. the secret was reset elsewhere).
    app.sandbox.revoke_tokens();
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 2);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refused_twice_gets_the_bad_token_reply() {
    let app = quiet_app().await;
    app.sandbox
        .inject(Endpoint::ChatGet, errcode(40001, "无效的token"), 2);
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("两次拒绝了访问令牌"), "{text}");
    assert!(text.contains("40001"), "{text}");
    // One refresh, not a loop.
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 2);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_gettoken_gets_the_token_reply() {
    let app = quiet_app().await;
    app.sandbox.inject(
        Endpoint::GetToken,
        errcode(40089, "不合法的corpid或corpsecret"),
        1,
    );
    let text = info_reply(&app, BOUND).await;
    assert_error_reply(&text);
    assert!(text.contains("无法获取钉钉访问令牌"), "{text}");
    assert!(text.contains("40089"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);

    // Once DingTalk hands out tokens again, /info works without a restart.
    let text = info_reply(&app, BOUND).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dingtalk_gets_the_timeout_reply_promptly() {
    let app = spawn_app_with(|s| {
        without_fixture_group(s);
        s.dingtalk.request_timeout_ms = 300;
    })
    .await;
    app.sandbox
        .inject(Endpoint::ChatGet, Fault::Delay(Duration::from_secs(3)), 10);
    let started = Instant::now();
    let out = app.group_text(BOUND, "/info");
    app.send(&out).await.assert_accepted();
    let got = app
        .sandbox
        .wait_for_session_messages(&out.session, 1, Duration::from_secs(10))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(got.len(), 1, "no reply within 10 s");
    let text = got[0].text();
    assert_error_reply(&text);
    assert!(text.contains("钉钉响应太慢"), "{text}");
    // The lookup gives up well before DingTalk's 3 s answer would have come.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_without_chatid_gets_what_the_other_sources_know() {
    let app = spawn_app().await;
    let out = app.group_text(PLAIN, "/info");
    app.send(&out).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.contains("群信息：午餐拼单群"), "{text}");
    assert!(text.contains("**成员数**：7 人"), "{text}");
    assert!(text.contains("本群不是由本应用创建的"), "{text}");
    assert!(text.contains("/bind"), "{text}");
    assert_eq!(reply.title(), Some("群信息：午餐拼单群"));
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_without_chatid_or_title_gets_the_title_from_dingtalk() {
    let app = spawn_app().await;
    let out = app.group_text(PLAIN, "/info");
    let mut body = out.body.clone();
    body.as_object_mut().unwrap().remove("conversationTitle");
    app.post_signed(&body).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.starts_with("#### 群信息：午餐拼单群\n"), "{text}");
}
