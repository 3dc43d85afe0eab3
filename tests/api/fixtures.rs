//! DingTalk's documented callback payloads are accepted and answered.

use dingbot::dingtalk::client::SceneGroupInfo;
use dingbot::sandbox::Endpoint;
use serde_json::{Value, json};

use crate::helpers::{FIXTURE_GROUP, spawn_app, spawn_app_from_toml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_text_info_gets_the_group_summary() {
    let app = spawn_app().await;
    let out = app.fixture("group_text_info");
    app.send(&out).await.assert_accepted();

    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.contains("群信息：全员群"), "{text}");
    assert!(text.contains("**群名称**：全员群"), "{text}");
    assert!(text.contains("**群主**：王建国"), "{text}");
    assert!(text.contains("**成员数**：2 人"), "{text}");
    assert!(text.contains("全员禁言：未开启"), "{text}");
    assert!(!text.contains("已解散"), "{text}");
    assert_eq!(reply.at_user_ids(), vec!["16650000698".to_string()]);
    // The binding was learned at startup through the conversion API.
    assert_eq!(app.sandbox.calls(Endpoint::ConvertToOpenConversationId), 1);
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doc_example_greeting_gets_help_quoting_it() {
    let app = spawn_app().await;
    let out = app.fixture("group_text_doc_example");
    app.send(&out).await.assert_accepted();

    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.contains("没有听懂「你好」"), "{text}");
    assert!(text.contains("/info"), "{text}");
    assert_eq!(reply.at_user_ids(), vec!["user123".to_string()]);
    // Help needs no DingTalk lookup.
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_chat_unknown_word_gets_help() {
    let app = spawn_app().await;
    let out = app.fixture("single_chat_text");
    app.send(&out).await.assert_accepted();

    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.contains("没有听懂「hello」"), "{text}");
    assert!(text.contains("群信息机器人"), "{text}");
    assert_eq!(reply.at_user_ids(), vec!["0420000297".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_chat_info_is_only_available_in_groups() {
    let app = spawn_app().await;
    let mut out = app.fixture("single_chat_text");
    out.body["text"]["content"] = serde_json::json!("/info");
    app.send(&out).await.assert_accepted();

    let text = app.reply_text(&out.session).await;
    assert!(text.contains("/info 只在群里可用"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_text_info_is_understood() {
    let app = spawn_app().await;
    let out = app.fixture("group_richtext");
    app.send(&out).await.assert_accepted();

    let text = app.reply_text(&out.session).await;
    assert!(text.contains("群信息：全员群"), "{text}");
    assert!(text.contains("**成员数**：2 人"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_and_unknown_types_get_the_text_only_reply() {
    let app = spawn_app().await;
    for name in ["group_picture", "group_unknown_type"] {
        let out = app.fixture(name);
        app.send(&out).await.assert_accepted();
        let reply = app.replies(&out.session, 1).await.remove(0);
        let text = reply.text();
        assert!(text.contains("只看得懂文字命令"), "{name}: {text}");
        assert_eq!(reply.title(), Some("我只看得懂文字命令"), "{name}");
    }
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_replies_with_a_toml_configured_app() {
    let app = spawn_app_from_toml(|base| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1
[dingtalk]
app_key = "dingdemoappkey"
app_secret = "demo-app-secret-0123456789abcdef"
oapi_base = "{base}"
api_base = "{base}"
request_timeout_ms = 1000
[bot]
language = "en"
[[groups]]
chatid = "chate39f540dxxxx"
"#
        )
    })
    .await;

    let info = app.fixture("group_text_info");
    app.send(&info).await.assert_accepted();
    let text = app.reply_text(&info.session).await;
    assert!(text.contains("Group info: 全员群"), "{text}");
    assert!(text.contains("**Owner**: 王建国"), "{text}");
    assert!(text.contains("**Members**: 2"), "{text}");
    assert!(text.contains("Everyone muted: off"), "{text}");

    let hello = app.fixture("single_chat_text");
    app.send(&hello).await.assert_accepted();
    let text = app.reply_text(&hello.session).await;
    assert!(text.contains("I did not understand \"hello\""), "{text}");

    let picture = app.fixture("group_picture");
    app.send(&picture).await.assert_accepted();
    let text = app.reply_text(&picture.session).await;
    assert!(text.contains("I understand text commands"), "{text}");

    let unbound = app.group_text("cidPlain0001==", "/info");
    app.send(&unbound).await.assert_accepted();
    let text = app.reply_text(&unbound.session).await;
    assert!(text.contains("Group info: 午餐拼单群"), "{text}");
    assert!(
        text.contains("not available — this group was not created by this app"),
        "{text}"
    );
    assert_eq!(app.sandbox.group(FIXTURE_GROUP).unwrap().name, "全员群");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_mention_gets_plain_help() {
    let app = spawn_app().await;
    let out = app.group_text(crate::helpers::BOUND, "");
    app.send(&out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.starts_with("#### 群信息机器人 · 帮助"), "{text}");
    assert!(!text.contains("没有听懂"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_unknown_word_is_quoted_shortened() {
    let app = spawn_app().await;
    let word = "长".repeat(100);
    let out = app.group_text(crate::helpers::BOUND, &word);
    app.send(&out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(
        text.contains(&format!("没有听懂「{}」", "长".repeat(32))),
        "{text}"
    );
    assert!(!text.contains(&"长".repeat(33)), "{text}");
}

/// The JSON type of a value, for comparing shapes.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenegroup_get_fixture_is_what_the_sandbox_serves_and_dingbot_reads() {
    let fixture: Value =
        serde_json::from_str(include_str!("../fixtures/scenegroup_get_ok.json")).unwrap();
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let base = app.sandbox.base_url();
    let token: Value = http
        .get(format!(
            "{base}/gettoken?appkey=dingdemoappkey&appsecret={}",
            crate::helpers::SECRET
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let served: Value = http
        .post(format!(
            "{base}/topapi/im/chat/scenegroup/get?access_token={token}"
        ))
        .json(&json!({"open_conversation_id": "cidScene0001=="}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Same keys with the same JSON types, down into management_options.
    for (key, want) in fixture["result"].as_object().unwrap() {
        let got = &served["result"][key];
        assert_eq!(kind(got), kind(want), "result.{key}: {served}");
    }
    for (key, want) in fixture["result"]["management_options"].as_object().unwrap() {
        let got = &served["result"]["management_options"][key];
        assert_eq!(got, want, "management_options.{key}: {served}");
    }

    // dingbot's model reads the official shape: every flag, and the count.
    let info: SceneGroupInfo = serde_json::from_value(fixture["result"].clone()).unwrap();
    let o = &info.management_options;
    assert_eq!(
        [
            o.chat_banned_type,
            o.searchable,
            o.validation_type,
            o.mention_all_authority,
            o.management_type,
            o.show_history_type
        ],
        [Some(0), Some(1), Some(1), Some(0), Some(1), Some(0)]
    );
    assert_eq!(info.member_amount, Some(8));
    assert_eq!(info.owner_staff_id, "pm0815");
}
