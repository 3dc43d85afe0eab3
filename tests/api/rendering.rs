//! What a reply looks like on the wire, and that user-controlled text cannot change it.

use serde_json::json;

use crate::helpers::{BOUND, PLAIN, SECRET, SENDER, assert_no_secret, spawn_app, spawn_app_with};

const HOSTILE: &str = "**x** {{ secret }} [点我](http://evil.example) <b>粗</b>\n#### 伪造标题";

fn assert_rendered_literally(text: &str) {
    assert!(text.contains(r"\*\*x\*\*"), "{text}");
    assert!(!text.contains("**x**"), "{text}");
    assert!(text.contains("{{ secret }}"), "{text}");
    assert!(text.contains(r"\[点我\](http://evil.example)"), "{text}");
    assert!(text.contains(r"\<b\>粗\</b\>"), "{text}");
    // The newline is flattened: no heading of the attacker's own.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("#### 伪造标题")),
        "{text}"
    );
    assert!(text.contains(r"\#\#\#\# 伪造标题"), "{text}");
    assert_no_secret(text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_group_title_from_the_callback_renders_literally() {
    let app = spawn_app().await;
    // Every API denies this group: the callback's title is all there is.
    let out = app.group_text_titled("cidDenied001==", HOSTILE, "/info");
    app.send(&out).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await.remove(0);
    let text = reply.text();
    assert!(text.starts_with("#### 群信息："), "{text}");
    assert_rendered_literally(&text);
    assert_eq!(
        text.lines().filter(|l| l.starts_with('#')).count(),
        1,
        "{text}"
    );
    let title = reply.title().unwrap();
    assert!(!title.contains('\n'), "{title:?}");
    assert_no_secret(title);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_group_name_from_dingtalk_renders_literally() {
    let app = spawn_app().await;
    assert!(app.sandbox.update_group(BOUND, |g| {
        g.name = HOSTILE.to_string();
        g.owner = "*owner*".to_string();
    }));
    let out = app.group_text(BOUND, "/info");
    app.send(&out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.starts_with("#### 群信息："), "{text}");
    assert_rendered_literally(&text);
    assert!(text.contains(r"**群主**：\*owner\*"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unknown_command_is_quoted_literally() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "**x**{{secret}}");
    app.send(&out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.contains(r"没有听懂「\*\*x\*\*{{secret}}」"), "{text}");
    assert_no_secret(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_is_markdown_mentioning_the_sender() {
    let app = spawn_app().await;
    for command in ["/help", "/info", "hello"] {
        let out = app.group_text(BOUND, command);
        app.send(&out).await.assert_accepted();
        let reply = app.replies(&out.session, 1).await.remove(0);
        assert_eq!(reply.msgtype(), "markdown", "{:?}", reply.body);
        let title = reply.title().unwrap_or_default();
        assert!(!title.trim().is_empty(), "{:?}", reply.body);
        assert!(!title.starts_with('#'), "{title:?}");
        assert!(!reply.text().trim().is_empty());
        assert_eq!(reply.at_user_ids(), vec![SENDER.to_string()]);
        assert_eq!(
            reply.body["at"]["isAtAll"],
            json!(false),
            "{:?}",
            reply.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_sender_without_staff_id_is_not_mentioned() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/help");
    let mut body = out.body.clone();
    body.as_object_mut().unwrap().remove("senderStaffId");
    app.post_signed(&body).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await.remove(0);
    assert!(reply.at_user_ids().is_empty(), "{:?}", reply.body);
    assert_eq!(reply.msgtype(), "markdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_mention_appends_the_user_to_the_text() {
    let app = spawn_app_with(|s| s.bot.inline_mention = true).await;
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    let reply = app.replies(&out.session, 1).await.remove(0);
    assert!(
        reply.text().trim_end().ends_with(&format!("@{SENDER}")),
        "{}",
        reply.text()
    );
    assert_eq!(reply.at_user_ids(), vec![SENDER.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_appears_in_no_reply_and_no_error_body() {
    let app = spawn_app().await;
    // A user typing the secret gets it quoted back (they knew it); dingbot never adds it.
    let mut bodies = Vec::new();
    for command in ["/help", "/info", "你好", "/info extra"] {
        let out = app.group_text(BOUND, command);
        app.send(&out).await.assert_accepted();
        bodies.push(
            app.replies(&out.session, 1)
                .await
                .remove(0)
                .body
                .to_string(),
        );
    }
    let out = app.group_text(PLAIN, "/info");
    app.send(&out).await.assert_accepted();
    bodies.push(
        app.replies(&out.session, 1)
            .await
            .remove(0)
            .body
            .to_string(),
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        bodies.push(app.get(path).await.text);
    }
    let answer = app
        .post_with_signature("1", &"A".repeat(43), &json!({}))
        .await;
    bodies.push(answer.text);
    for body in &bodies {
        assert!(!body.contains(SECRET), "secret in {body}");
    }
}
