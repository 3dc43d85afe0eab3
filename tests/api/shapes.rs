//! What DingTalk really sends, held against dingbot over HTTP: each shape the sandbox
//! serves in a variant of its own (string and integer flags, `member_amount`, `extidlist`,
//! rich text without newline segments, string `createAt`, times in seconds, an unknown
//! `conversationType`), and chatids that would change the URL path of the token call.

use dingbot::clock::now_ms;
use dingbot::demo::SignedCallback;
use dingbot::sandbox::Endpoint;
use serde_json::json;

use crate::helpers::*;

/// A scene group whose flags come as numbers and whose answer has no `member_amount`.
const SCENE_INT: &str = "cidScene0002==";
/// A group with a chatid, 3 staff and 2 external members.
const MIXED: &str = "cidMixed0001==";
const MIXED_CHATID: &str = "chatmixed0001";

fn assert_contains_all(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
}

async fn reply_to(app: &TestApp, out: &Outgoing) -> String {
    app.send(out).await.assert_accepted();
    app.reply_text(&out.session).await
}

/// A rich-text callback in `cid` from a group admin: one segment per line, a picture after
/// the first, no "\n" segments (DingTalk's official example).
fn rich_text(app: &TestApp, cid: &str, lines: &[&str]) -> Outgoing {
    let (session, webhook) = app.new_session();
    let msg_id = unique("msgRich");
    let title = app.sandbox.group(cid).map(|g| g.name).unwrap_or_default();
    let mut cb = SignedCallback::group_rich_text(cid, &title, lines, &msg_id, &webhook);
    cb.body["isAdmin"] = json!(true);
    Outgoing {
        body: cb.body,
        session,
        msg_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scene_group_with_integer_flags_and_no_member_amount_asks_base_infos() {
    let app = spawn_app().await;
    let text = reply_to(&app, &app.group_text(SCENE_INT, "/info")).await;
    assert_contains_all(
        &text,
        &[
            "#### 群信息：项目群·测试",
            "**群主**：陈思远",
            "**成员数**：4 人",
            "全员禁言：已开启",
            "可被搜索：否",
            "入群验证：无需验证",
            "@所有人 权限：仅群主和管理员",
            "群管理：所有成员",
            "新成员查看历史消息：可以",
        ],
    );
    assert_eq!(app.sandbox.calls(Endpoint::SceneGroupGet), 1);
    assert_eq!(app.sandbox.calls(Endpoint::GroupBaseInfos), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scene_group_with_string_flags_shows_every_setting_in_english() {
    let app = spawn_app_with(|s| s.bot.language = dingbot::config::Language::En).await;
    let text = reply_to(&app, &app.group_text(SCENE, "/info")).await;
    assert_contains_all(
        &text,
        &[
            "**Members**: 8",
            "Everyone muted: off",
            "Searchable: yes",
            "Joining: needs approval by the owner or an admin",
            "@all: every member",
            "Group management: owner and admins only",
            "New members see history: no",
        ],
    );
    assert!(!text.contains("not available"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_get_counts_external_members() {
    let app = spawn_app_with(|s| s.groups.push(binding(MIXED_CHATID, MIXED))).await;
    let text = reply_to(&app, &app.group_text(MIXED, "/info")).await;
    assert!(text.contains("**成员数**：5 人"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
    assert_eq!(app.sandbox.calls(Endpoint::GroupBaseInfos), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_text_lines_are_not_glued_together() {
    let app = spawn_app().await;
    // "/info", a picture, "谢谢": not "/info谢谢".
    let text = reply_to(&app, &rich_text(&app, BOUND, &["/info", "谢谢"])).await;
    assert!(text.contains("#### 群信息：研发部全员群"), "{text}");
    // A greeting first: the command is on the next line.
    let text = reply_to(&app, &rich_text(&app, BOUND, &["你好", "/help"])).await;
    assert!(text.starts_with("#### 群信息机器人 · 帮助"), "{text}");
    assert!(!text.contains("没有听懂"), "{text}");
    // /bind with the chatid on the next line.
    let text = reply_to(&app, &rich_text(&app, MIXED, &["/bind", MIXED_CHATID])).await;
    assert!(text.starts_with("#### 已绑定本群"), "{text}");
    let text = reply_to(&app, &app.group_text(MIXED, "/info")).await;
    assert!(text.contains("**成员数**：5 人"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_create_at_and_an_expiry_in_seconds_are_answered() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/help");
    // SignedCallback writes createAt as DingTalk's field table types it: a string.
    assert!(out.body["createAt"].is_string(), "{}", out.body);
    assert!(reply_to(&app, &out).await.contains("帮助"));

    // The expiry as a numeric string, in seconds: an hour ahead, not "expired in 1970".
    let mut out = app.group_text(BOUND, "/help");
    out.body["sessionWebhookExpiredTime"] = json!(((now_ms() / 1000) + 3600).to_string());
    assert!(reply_to(&app, &out).await.contains("帮助"));
    // Seconds in the past are still read as expired: the webhook is not used and the reply
    // goes through the robot send API (`reply.fallback` defaults to `robot_api`).
    let mut out = app.group_text(BOUND, "/help");
    out.body["sessionWebhookExpiredTime"] = json!((now_ms() / 1000) - 60);
    let before = app.sandbox.calls(Endpoint::SendBySession);
    app.send(&out).await.assert_accepted();
    let got = app
        .sandbox
        .wait_for_messages(3, std::time::Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[2].via, Endpoint::RobotGroupSend);
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_conversation_type_is_answered() {
    let app = spawn_app().await;
    let mut out = app.group_text(BOUND, "/info");
    out.body["conversationType"] = json!("3");
    // Only groups carry a title: read as a group.
    let text = reply_to(&app, &out).await;
    assert!(text.contains("#### 群信息：研发部全员群"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_fields_dingbot_does_without_are_answered_and_counted() {
    let app = spawn_app().await;
    // Installs the recorder, so what follows is counted.
    app.get("/metrics").await;
    let mut out = app.group_text(BOUND, "/help");
    out.body["isAdmin"] = json!("leaked-value-7f3a");
    out.body["sessionWebhookExpiredTime"] = json!("leaked-value-9c1d");
    out.body["createAt"] = json!({"odd": true});
    let text = reply_to(&app, &out).await;
    assert!(text.contains("帮助"), "{text}");
    assert!(!text.contains("leaked-value"), "{text}");
    let metrics = app.get("/metrics").await.text;
    for field in ["isAdmin", "sessionWebhookExpiredTime", "createAt"] {
        assert!(
            metrics.contains(&format!(
                "dingbot_callback_odd_fields_total{{field=\"{field}\"}}"
            )),
            "{field}: {metrics}"
        );
    }
    assert!(!metrics.contains("leaked-value"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_dot_segments_are_invalid_and_never_reach_dingtalk() {
    let app = spawn_app().await;
    let converted = app.sandbox.calls(Endpoint::ConvertToOpenConversationId);
    for arg in [
        "..",
        ".",
        "../chatbound0001",
        "chat%2e%2e",
        "-chat",
        "chat/x",
    ] {
        let mut out = app.group_text(MIXED, &format!("/bind {arg}"));
        out.body["isAdmin"] = json!(true);
        let text = reply_to(&app, &out).await;
        assert!(text.starts_with("#### 这不像一个 chatid"), "{arg}: {text}");
    }
    assert_eq!(
        app.sandbox.calls(Endpoint::ConvertToOpenConversationId),
        converted
    );
    assert!(!app.data_dir.join("bindings.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_calls_ask_for_json_and_the_conversion_sends_no_body() {
    // The sandbox answers /v1.0 calls without `Accept: application/json` with XML, and
    // refuses a body on convertToOpenConversationId.
    let app = spawn_app().await;
    // The fixture group was learned at startup through the conversion.
    let text = reply_to(&app, &app.fixture("group_text_info")).await;
    assert!(text.contains("群信息：全员群"), "{text}");
    // baseInfos answered JSON: the plain group's count.
    let text = reply_to(&app, &app.group_text(PLAIN, "/info")).await;
    assert!(text.contains("**成员数**：7 人"), "{text}");
    // /bind's conversion.
    let mut out = app.group_text(MIXED, &format!("/bind {MIXED_CHATID}"));
    out.body["isAdmin"] = json!(true);
    let text = reply_to(&app, &out).await;
    assert!(text.starts_with("#### 已绑定本群"), "{text}");
}
