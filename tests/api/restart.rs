//! Replay and dedupe records across a restart (security issue item 3): kept over a graceful
//! stop; after an unclean stop, timestamps from before the start are refused.

use dingbot::clock::now_ms;
use dingbot::config::{Language, Settings};
use dingbot::demo::sandbox_settings;
use dingbot::dingtalk::signature::sign;
use dingbot::sandbox::Org;
use serde_json::json;

use crate::helpers::{
    BOUND, TestApp, fresh_signature, spawn_app, spawn_app_on, spend, temp_data_dir,
};

/// The demo settings on `data_dir`.
fn settings_on(app: &TestApp, data_dir: std::path::PathBuf) -> Settings {
    let mut settings =
        sandbox_settings(&app.sandbox, &Org::demo(), Language::Zh, 100).expect("settings");
    settings.storage.data_dir = data_dir;
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_dedupe_records_survive_a_graceful_restart() {
    let mut app = spawn_app().await;
    let first = app.group_text(BOUND, "/help");
    app.send(&first).await.assert_accepted();
    app.replies(&first.session, 1).await;
    let (ts, sign) = fresh_signature(&app.secret);
    assert!(spend(&app, &ts, &sign).await >= 1);

    // SIGTERM, then a new dingbot on the same data dir.
    app.stop_gracefully().await;
    let restarted = spawn_app_on(
        app.sandbox.clone(),
        &settings_on(&app, app.data_dir.clone()),
    )
    .await;

    // The spent pair carries no new message.
    let forged = restarted.group_text(BOUND, "/info");
    restarted
        .post_with_signature(&ts, &sign, &forged.body)
        .await
        .assert_refused(401, "replayed");
    restarted.assert_no_reply(&forged.session).await;

    // A redelivery of a message answered before the restart is not answered again.
    let again = restarted.send(&first).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), json!({"status": "duplicate"}));
    restarted.assert_no_more(&first.session, 1).await;

    // And a new message is answered as usual.
    let fresh = restarted.group_text(BOUND, "/help");
    restarted.send(&fresh).await.assert_accepted();
    restarted.replies(&fresh.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_unclean_stop_timestamps_older_than_the_start_are_refused() {
    let app = spawn_app().await;
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;

    // The first dingbot never stops (as after kill -9 or a power cut); a second one starts
    // on its data dir.
    let started = now_ms();
    let second = spawn_app_on(
        app.sandbox.clone(),
        &settings_on(&app, app.data_dir.clone()),
    )
    .await;
    let old = (started - 60_000).to_string();
    let late = second.group_text(BOUND, "/help");
    let answer = second
        .post_with_signature(&old, &sign(&second.secret, &old), &late.body)
        .await;
    answer.assert_refused(401, "signed_before_restart");
    second.assert_no_reply(&late.session).await;
    // Signed after the start: answered.
    second.send(&late).await.assert_accepted();
    second.replies(&late.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_does_not_stop_startup_and_counts_as_an_unclean_stop() {
    let probe = spawn_app().await;
    let dir = temp_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admission.state"), b"not a state file at all").unwrap();
    let started = now_ms();
    let app = spawn_app_on(probe.sandbox.clone(), &settings_on(&probe, dir)).await;
    let old = (started - 60_000).to_string();
    let out = app.group_text(BOUND, "/help");
    app.post_with_signature(&old, &sign(&app.secret, &old), &out.body)
        .await
        .assert_refused(401, "signed_before_restart");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
}
