//! `/info` in every kind of group (the resolver chain), the back-off of refusing sources,
//! and `/bind` (checks, persistence across a restart, a corrupt store).

use dingbot::config::{Language, Settings};
use dingbot::demo::sandbox_settings;
use dingbot::sandbox::{Endpoint, Fault, Group, Org, Sandbox};
use dingbot::startup::{Application, StartupError};
use serde_json::json;

use crate::helpers::*;

/// Every API denies this group (sandbox `Access::NoPermission`).
const DENIED: &str = "cidDenied001==";
/// A group the app created (it has a chatid) that no config or binding knows yet.
const OWN: &str = "cidOwn0001==";
const OWN_CHATID: &str = "chatown0001";

fn own_group() -> Group {
    Group::new(
        OWN,
        "自建项目群",
        "manager4220",
        vec!["manager4220".into(), "user123".into(), "pm0815".into()],
    )
    .with_chatid(OWN_CHATID)
    .with_flags([0, 1, 0, 1, 1, 1])
}

/// Sends `text` in `cid` (optionally as a DingTalk group admin) and returns the reply.
async fn ask_as(app: &TestApp, cid: &str, text: &str, admin: bool) -> String {
    let mut out = app.group_text(cid, text);
    out.body["isAdmin"] = json!(admin);
    app.send(&out).await.assert_accepted();
    app.reply_text(&out.session).await
}

async fn info(app: &TestApp, cid: &str) -> String {
    ask_as(app, cid, "/info", false).await
}

fn calls(app: &TestApp) -> [u64; 5] {
    [
        Endpoint::ChatGet,
        Endpoint::SceneGroupGet,
        Endpoint::GroupBaseInfos,
        Endpoint::UserGet,
        Endpoint::ConvertToOpenConversationId,
    ]
    .map(|ep| app.sandbox.calls(ep))
}

fn assert_contains_all(text: &str, expected: &[&str]) {
    for e in expected {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
}

/// A whole configuration; `bot` lines go into `[bot]`, `tail` after it (before `[[groups]]`).
fn config(base: &str, bot: &str, tail: &str) -> String {
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
request_timeout_ms = 2000
[rate_limit]
per_group_per_minute = 1000
[bot]
info_cache_ttl_secs = 0
{bot}
{tail}
[[groups]]
chatid = "chatbound0001"
open_conversation_id = "{BOUND}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_group_gets_the_full_summary_with_the_owner_by_name() {
    let app = spawn_app().await;
    let text = info(&app, BOUND).await;
    assert_contains_all(
        &text,
        &[
            "#### 群信息：研发部全员群",
            "**群主**：王建国",
            "**成员数**：37 人",
            "全员禁言：已开启",
            "新成员查看历史消息：可以",
        ],
    );
    assert!(!text.contains("暂无法获取"), "{text}");
    assert!(!text.contains("/bind"), "{text}");
    // chat/get alone completes the summary; user/get names the owner.
    assert_eq!(calls(&app), [1, 0, 0, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scene_group_shows_owner_and_settings_without_a_chatid() {
    let app = spawn_app().await;
    let text = info(&app, SCENE).await;
    assert_contains_all(
        &text,
        &[
            "#### 群信息：项目群·发布",
            "**群主**：陈思远",
            "**成员数**：8 人",
            "全员禁言：未开启",
            "可被搜索：是",
            "入群验证：需要群主或管理员审批",
            "@所有人 权限：所有成员",
            "群管理：仅群主和管理员",
            "新成员查看历史消息：不可以",
        ],
    );
    assert!(!text.contains("暂无法获取"), "{text}");
    // DingTalk sends this group's flags as "0"/"1" strings and its member_amount: no
    // chatid, scenegroup/get alone for owner, settings and count (user/get for the name).
    assert_eq!(calls(&app), [0, 1, 0, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_group_shows_title_and_count_and_explains_the_rest() {
    let app = spawn_app().await;
    let text = info(&app, PLAIN).await;
    assert_contains_all(
        &text,
        &[
            "#### 群信息：午餐拼单群",
            "**群名称**：午餐拼单群",
            "**成员数**：7 人",
            "**群主**：暂无法获取 — 本群不是由本应用创建的",
            "暂无法获取 — 本群不是由本应用创建的。\n",
            "/bind",
        ],
    );
    // Nothing is blamed on a permission, and no bare error code is shown.
    assert!(!text.contains("qyapi"), "{text}");
    assert!(!text.contains("400020"), "{text}");
    // Group members are told what they can do, never pointed at a file of the deployment.
    assert!(!text.contains("README"), "{text}");
    assert_eq!(calls(&app), [0, 1, 1, 0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_group_in_english() {
    let app = spawn_app_with(|s| s.bot.language = Language::En).await;
    let text = info(&app, PLAIN).await;
    assert_contains_all(
        &text,
        &[
            "#### Group info: 午餐拼单群",
            "**Members**: 7",
            "**Owner**: not available — this group was not created by this app",
            "Not available — this group was not created by this app.\n",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_denying_every_api_gets_the_callback_title_and_the_permission_named() {
    let app = spawn_app().await;
    let out = app.group_text_titled(DENIED, "外部协作群（回调标题）", "/info");
    app.send(&out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert_contains_all(
        &text,
        &[
            "#### 群信息：外部协作群（回调标题）",
            "**成员数**：暂无法获取 — dingbot 不知道本群的 chatid；应用没有 qyapi_chat_read 权限（scenegroup/get）；应用没有 qyapi_chat_read 权限（groups/baseInfos/query）",
            "应用没有 qyapi_chat_read 权限（scenegroup/get）",
            "**管理员请处理**：在钉钉开发者后台为本应用开通 qyapi_chat_read 权限",
        ],
    );
    assert!(!text.contains("88"), "a bare error code leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_known_at_all_gets_the_setup_reply_with_reasons() {
    let app = spawn_app().await;
    let out = app.group_text(DENIED, "/info");
    let mut body = out.body.clone();
    body.as_object_mut().unwrap().remove("conversationTitle");
    app.post_signed(&body).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.starts_with("#### 还不认识这个群\n"), "{text}");
    assert_contains_all(
        &text,
        &[
            "应用没有 qyapi_chat_read 权限",
            "开通 qyapi_chat_read",
            "/bind",
            "cidDenied001==",
        ],
    );
    assert_eq!(reply.title(), Some("还不认识这个群"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_source_is_not_asked_again_within_its_back_off() {
    let app = spawn_app().await;
    // The group-info cache is off in these settings: every /info runs the chain.
    for _ in 0..3 {
        let text = info(&app, PLAIN).await;
        assert!(text.contains("本群不是由本应用创建的"), "{text}");
    }
    // scenegroup/get said "not a scene group" once; baseInfos answers every time.
    assert_eq!(app.sandbox.calls(Endpoint::SceneGroupGet), 1);
    assert_eq!(app.sandbox.calls(Endpoint::GroupBaseInfos), 3);

    for _ in 0..3 {
        let text = info(&app, DENIED).await;
        assert!(text.contains("qyapi_chat_read"), "{text}");
    }
    // Both refused once for this group, and the reply still names the permission.
    assert_eq!(app.sandbox.calls(Endpoint::SceneGroupGet), 2);
    assert_eq!(app.sandbox.calls(Endpoint::GroupBaseInfos), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_back_off_refusing_sources_are_asked_every_time() {
    let app =
        spawn_app_from_toml(|base| config(base, "", "[group_info]\ndenied_backoff_secs = 0\n"))
            .await;
    for _ in 0..3 {
        info(&app, PLAIN).await;
    }
    assert_eq!(app.sandbox.calls(Endpoint::SceneGroupGet), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_sources_are_asked() {
    let app = spawn_app_from_toml(|base| {
        config(
            base,
            "",
            "[group_info]\nsources = [\"base_info\", \"callback\"]\n",
        )
    })
    .await;
    let text = info(&app, BOUND).await;
    assert_contains_all(
        &text,
        &[
            "**成员数**：37 人",
            "**群主**：暂无法获取 — 配置中未启用 chat_get；配置中未启用 scene_group",
        ],
    );
    assert_eq!(calls(&app)[..4], [0, 0, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_dingtalk_still_gets_the_error_reply() {
    let app = spawn_app().await;
    app.sandbox
        .inject(Endpoint::SceneGroupGet, Fault::errcode(-1, "系统繁忙"), 20);
    let text = info(&app, PLAIN).await;
    assert!(text.contains("#### 暂时无法获取群信息"), "{text}");
    assert!(text.contains("钉钉系统繁忙"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_name_falls_back_to_the_userid_and_says_why() {
    let app = spawn_app().await;
    app.sandbox.inject(
        Endpoint::UserGet,
        Fault::ErrCode {
            errcode: 88,
            errmsg: "鉴权异常".into(),
            sub_code: Some("60011".into()),
        },
        1,
    );
    let text = info(&app, BOUND).await;
    assert!(
        text.contains(
            "**群主**：manager4220（未能显示姓名：应用没有 qyapi_get_member 权限（user/get））"
        ),
        "{text}"
    );
    assert!(text.contains("开通 qyapi_get_member"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_gives_the_full_summary_and_survives_a_restart() {
    let mut app = spawn_app().await;
    app.sandbox.put_group(own_group());

    let before = info(&app, OWN).await;
    assert!(before.contains("**成员数**：3 人"), "{before}");
    assert!(before.contains("本群不是由本应用创建的"), "{before}");
    assert!(before.contains("/bind"), "{before}");

    let reply = ask_as(&app, OWN, &format!("/bind {OWN_CHATID}"), true).await;
    assert!(reply.starts_with("#### 已绑定本群"), "{reply}");
    assert!(reply.contains(OWN_CHATID), "{reply}");
    let stored = std::fs::read_to_string(app.data_dir.join("bindings.json")).unwrap();
    assert!(
        stored.contains(OWN) && stored.contains(OWN_CHATID),
        "{stored}"
    );

    let chat_gets = app.sandbox.calls(Endpoint::ChatGet);
    let after = info(&app, OWN).await;
    assert_contains_all(
        &after,
        &[
            "#### 群信息：自建项目群",
            "**群主**：王建国",
            "**成员数**：3 人",
            "可被搜索：是",
            "新成员查看历史消息：可以",
        ],
    );
    assert!(!after.contains("暂无法获取"), "{after}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), chat_gets + 1);

    // Restart: a new dingbot on the same data dir knows the binding without a /bind.
    app.stop_gracefully().await;
    let mut settings =
        sandbox_settings(&app.sandbox, &Org::demo(), Language::Zh, 100).expect("settings");
    settings.storage.data_dir = app.data_dir.clone();
    let restarted = spawn_app_on(app.sandbox.clone(), &settings).await;
    let text = info(&restarted, OWN).await;
    assert!(text.contains("#### 群信息：自建项目群"), "{text}");
    assert!(text.contains("新成员查看历史消息：可以"), "{text}");
    assert!(!text.contains("暂无法获取"), "{text}");
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), chat_gets + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_is_for_admins_and_listed_users_only() {
    let app = spawn_app().await;
    app.sandbox.put_group(own_group());
    let text = ask_as(&app, OWN, &format!("/bind {OWN_CHATID}"), false).await;
    assert!(text.starts_with("#### 只有管理员可以绑定"), "{text}");
    // What the member can do in the chat, not a config key of the deployment.
    assert!(text.contains("请群主或群管理员来发送"), "{text}");
    assert!(!text.contains("admin_user_ids"), "{text}");
    // Refused before asking DingTalk; nothing stored.
    assert_eq!(app.sandbox.calls(Endpoint::ConvertToOpenConversationId), 1);
    assert!(!app.data_dir.join("bindings.json").exists());

    // A user listed in [bot] admin_user_ids may bind without being a group admin.
    let listed =
        spawn_app_from_toml(|base| config(base, &format!("admin_user_ids = [\"{SENDER}\"]"), ""))
            .await;
    listed.sandbox.put_group(own_group());
    let text = ask_as(&listed, OWN, &format!("/bind {OWN_CHATID}"), false).await;
    assert!(text.starts_with("#### 已绑定本群"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_checks_the_chatid_with_dingtalk() {
    let app = spawn_app().await;
    app.sandbox.put_group(own_group());

    // Another group's chatid.
    let text = ask_as(&app, OWN, "/bind chatbound0001", true).await;
    assert!(text.starts_with("#### 这个 chatid 不属于本群"), "{text}");
    // A chatid DingTalk does not know.
    let text = ask_as(&app, OWN, "/bind chatnosuchgroup", true).await;
    assert!(text.starts_with("#### 钉钉不认识这个 chatid"), "{text}");
    // The conversion is denied: the permission is named.
    let text = ask_as(&app, "cidNoRead001==", "/bind chatnoread0001", true).await;
    assert!(text.starts_with("#### 暂时无法验证 chatid"), "{text}");
    assert!(text.contains("qyapi_chat_read"), "{text}");
    // Not a chatid at all; no argument; in a 1:1 chat.
    let text = ask_as(&app, OWN, "/bind ../../etc/passwd", true).await;
    assert!(text.starts_with("#### 这不像一个 chatid"), "{text}");
    let text = ask_as(&app, OWN, "/bind", true).await;
    assert!(text.starts_with("#### 用法：/bind chatid"), "{text}");
    let mut single = app.fixture("single_chat_text");
    single.body["text"]["content"] = json!("/bind chatown0001");
    single.body["isAdmin"] = json!(true);
    app.send(&single).await.assert_accepted();
    let text = app.reply_text(&single.session).await;
    assert!(text.starts_with("#### /bind 只在群里可用"), "{text}");

    assert!(!app.data_dir.join("bindings.json").exists());
    // /info in the group is unchanged.
    let text = info(&app, OWN).await;
    assert!(text.contains("本群不是由本应用创建的"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_bindings_file_stops_startup_naming_it() {
    let sandbox = Sandbox::start(Org::demo()).await.unwrap();
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bindings.json");
    std::fs::write(&file, "{\"version\":1,\"bindings\":").unwrap();
    let mut settings: Settings =
        sandbox_settings(&sandbox, &Org::demo(), Language::Zh, 100).unwrap();
    settings.storage.data_dir = dir.clone();
    let err = match Application::build(&settings).await {
        Ok(_) => panic!("started with a corrupt bindings.json"),
        Err(e) => e,
    };
    assert!(matches!(err, StartupError::Storage(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&file.display().to_string()), "{shown}");
    assert!(shown.contains("corrupt"), "{shown}");
    // The file is kept for the admin to inspect.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"version\":1,\"bindings\":"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
