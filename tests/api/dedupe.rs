//! At-most-once answers: msgId dedupe and the (timestamp, sign) replay defence.

use dingbot::sandbox::Endpoint;
use serde_json::json;

use crate::helpers::{BOUND, fresh_signature, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_msg_id_twice_is_answered_once() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/info");
    app.send(&out).await.assert_accepted();
    // DingTalk retrying the same message signs it again with a new timestamp.
    let again = app.send(&out).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), json!({"status": "duplicate"}));

    let text = app.reply_text(&out.session).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
    app.assert_no_more(&out.session, 1).await;
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_message_are_answered_once() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/help");
    let answers = futures_util::future::join_all((0..10).map(|_| app.send(&out))).await;
    let fresh = answers.iter().filter(|a| a.json() == json!({})).count();
    let duplicates = answers
        .iter()
        .filter(|a| a.json() == json!({"status": "duplicate"}))
        .count();
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!((fresh, duplicates), (1, 9), "{answers:?}");
    app.replies(&out.session, 1).await;
    app.assert_no_more(&out.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_with_new_msg_ids_is_answered_each_time() {
    let app = spawn_app().await;
    let first = app.group_text(BOUND, "/help");
    let mut second = app.group_text(BOUND, "/help");
    second.session.clone_from(&first.session);
    second.body["sessionWebhook"] = first.body["sessionWebhook"].clone();
    app.send(&first).await.assert_accepted();
    app.send(&second).await.assert_accepted();
    app.replies(&first.session, 2).await;
}

/// Messages one signed millisecond may carry by default (`max_messages_per_signature`).
const K: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_signature_beyond_k_messages_is_a_replay() {
    let app = spawn_app().await;
    let (ts, sign) = fresh_signature(&app.secret);
    // Two genuine callbacks signed in the same millisecond share the pair: up to k
    // messages with distinct msgIds are answered.
    let mut sessions = Vec::new();
    for _ in 0..K {
        let out = app.group_text(BOUND, "/help");
        app.post_with_signature(&ts, &sign, &out.body)
            .await
            .assert_accepted();
        sessions.push(out.session);
    }
    for session in &sessions {
        app.replies(session, 1).await;
    }

    // An eavesdropper replays the headers with a message of their own: refused.
    let forged = app.group_text(BOUND, "/info");
    let answer = app.post_with_signature(&ts, &sign, &forged.body).await;
    answer.assert_refused(401, "replayed");
    app.assert_no_reply(&forged.session).await;
    assert_eq!(app.sandbox.calls(Endpoint::ChatGet), 0);
    assert!(!app.state.handled_msg_id(forged.msg_id.as_str()));

    // The same message, honestly signed, is still answered: nothing was recorded for it.
    app.send(&forged).await.assert_accepted();
    let text = app.reply_text(&forged.session).await;
    assert!(text.contains("群信息：研发部全员群"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_signature_with_the_same_body_is_a_duplicate_not_a_replay() {
    let app = spawn_app().await;
    let (ts, sign) = fresh_signature(&app.secret);
    let out = app.group_text(BOUND, "/help");
    app.post_with_signature(&ts, &sign, &out.body)
        .await
        .assert_accepted();
    // A network-level retry of the very same request.
    let again = app.post_with_signature(&ts, &sign, &out.body).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), json!({"status": "duplicate"}));
    app.replies(&out.session, 1).await;
    app.assert_no_more(&out.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_signature_with_same_msg_id_but_altered_body_is_not_answered() {
    let app = spawn_app().await;
    let (ts, sign) = fresh_signature(&app.secret);
    let out = app.group_text(BOUND, "/help");
    app.post_with_signature(&ts, &sign, &out.body)
        .await
        .assert_accepted();
    app.replies(&out.session, 1).await;

    // Same msgId, but the reply is redirected to another session: the msgId was answered
    // already, so nothing is sent anywhere.
    let (other_session, other_webhook) = app.new_session();
    let mut altered = out.body.clone();
    altered["sessionWebhook"] = json!(other_webhook);
    let answer = app.post_with_signature(&ts, &sign, &altered).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "duplicate"}));
    app.assert_no_reply(&other_session).await;
    app.assert_no_more(&out.session, 1).await;
}
