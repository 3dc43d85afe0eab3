//! Per-group budget: a burst is answered up to the limit, the group is told once to slow
//! down, and other groups are unaffected.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::{BOUND, PLAIN, SCENE, per_minute, spawn_app_with};

fn is_notice(text: &str) -> bool {
    text.contains("请慢一点") && text.contains("秒后再试")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_gets_its_budget_and_one_notice() {
    let app = spawn_app_with(|s| s.rate_limit.per_group_per_minute = per_minute(5)).await;
    let groups = [BOUND, SCENE, PLAIN];
    // One session per group: every reply of a group goes to the same chat.
    let mut sessions = HashMap::new();
    let mut outs = Vec::new();
    for cid in groups {
        let (session, webhook) = app.new_session();
        for _ in 0..12 {
            let mut out = app.group_text(cid, "/help");
            out.body["sessionWebhook"] = json!(webhook);
            out.session.clone_from(&session);
            outs.push((cid, out));
        }
        sessions.insert(cid, session);
    }
    let answers = futures_util::future::join_all(outs.iter().map(|(_, out)| app.send(out))).await;

    let mut accepted: HashMap<&str, usize> = HashMap::new();
    let mut limited: HashMap<&str, usize> = HashMap::new();
    for ((cid, _), answer) in outs.iter().zip(&answers) {
        assert_eq!(answer.status, 200, "{answer:?}");
        let body = answer.json();
        if body == json!({}) {
            *accepted.entry(cid).or_default() += 1;
        } else {
            assert_eq!(body, json!({"status": "rate_limited"}), "{answer:?}");
            *limited.entry(cid).or_default() += 1;
        }
    }

    let mut total = 0;
    for cid in groups {
        assert_eq!(accepted.get(cid), Some(&5), "{cid}: {accepted:?}");
        assert_eq!(limited.get(cid), Some(&7), "{cid}: {limited:?}");
        let session = &sessions[cid];
        let got = app.replies(session, 6).await;
        app.assert_no_more(session, 6).await;
        let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
        let notices: Vec<&String> = texts.iter().filter(|t| is_notice(t)).collect();
        assert_eq!(notices.len(), 1, "{cid}: {texts:#?}");
        let answers = texts.iter().filter(|t| t.contains("群信息机器人")).count();
        assert_eq!(answers, 5, "{cid}: {texts:#?}");
        // 5 per minute: the next command is possible in at most 12 s.
        let secs: u64 = notices[0]
            .split("请 ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no wait time in {}", notices[0]));
        assert!((1..=12).contains(&secs), "{secs} s in {}", notices[0]);
        total += got.len();
    }
    assert_eq!(total, 18);
    assert_eq!(app.sandbox.message_count(), 18);
    assert_eq!(app.state.pipeline.remembered().groups, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_is_sent_once_per_window() {
    let app = spawn_app_with(|s| s.rate_limit.per_group_per_minute = per_minute(2)).await;
    let (session, webhook) = app.new_session();
    for round in 0..6 {
        let mut out = app.group_text(BOUND, "/help");
        out.body["sessionWebhook"] = json!(webhook);
        let answer = app.send(&out).await;
        assert_eq!(answer.status, 200);
        let expected = if round < 2 {
            json!({})
        } else {
            json!({"status": "rate_limited"})
        };
        assert_eq!(answer.json(), expected, "round {round}");
    }
    let got = app.replies(&session, 3).await;
    app.assert_no_more(&session, 3).await;
    let notices: Vec<_> = got.iter().filter(|m| is_notice(&m.text())).collect();
    assert_eq!(notices.len(), 1, "{got:#?}");
    // The notice @-mentions whoever hit the limit.
    assert_eq!(notices[0].at_user_ids(), vec!["16650000698".to_string()]);
    assert_eq!(notices[0].title(), Some("请慢一点"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_refusals_do_not_spend_the_budget() {
    let app = spawn_app_with(|s| s.rate_limit.per_group_per_minute = per_minute(2)).await;
    let first = app.group_text(BOUND, "/help");
    app.send(&first).await.assert_accepted();
    // DingTalk retries the same message three times; a forger tries twice.
    for _ in 0..3 {
        assert_eq!(
            app.send(&first).await.json(),
            json!({"status": "duplicate"})
        );
    }
    for _ in 0..2 {
        let forged = app.group_text(BOUND, "/help");
        app.post_with_signature("1700000000000", &"A".repeat(43), &forged.body)
            .await
            .assert_refused(401, "bad_signature");
    }
    // The second real command still fits in the budget of 2.
    let second = app.group_text(BOUND, "/help");
    app.send(&second).await.assert_accepted();
    app.replies(&first.session, 1).await;
    app.replies(&second.session, 1).await;
    // The third does not.
    let third = app.group_text(BOUND, "/help");
    assert_eq!(
        app.send(&third).await.json(),
        json!({"status": "rate_limited"})
    );
}
