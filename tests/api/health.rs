//! Liveness and readiness probes.

use dingbot::sandbox::{Endpoint, Fault};
use serde_json::json;

use crate::helpers::{
    assert_no_secret, spawn_app, spawn_app_faulted, spawn_app_with, without_fixture_group,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let answer = app.get("/healthz").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_when_a_token_can_be_had() {
    let app = spawn_app_with(without_fixture_group).await;
    let answer = app.get("/readyz").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "ready"}));
    // The probe fetched the token; later probes reuse it.
    for _ in 0..5 {
        assert_eq!(app.get("/readyz").await.status, 200);
    }
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_when_gettoken_fails() {
    let app = spawn_app_faulted(
        vec![(
            Endpoint::GetToken,
            Fault::errcode(40089, "不合法的corpid或corpsecret"),
            u32::MAX,
        )],
        without_fixture_group,
    )
    .await;
    let answer = app.get("/readyz").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["status"], "not_ready", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("40089"), "{body}");
    assert_no_secret(&answer.text);
    // Liveness is independent of DingTalk.
    assert_eq!(app.get("/healthz").await.status, 200);

    // A failed check is reused for a while instead of hammering DingTalk.
    let calls = app.sandbox.calls(Endpoint::GetToken);
    for _ in 0..5 {
        assert_eq!(app.get("/readyz").await.status, 503);
    }
    assert_eq!(app.sandbox.calls(Endpoint::GetToken), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_answers_prometheus_text() {
    let app = spawn_app().await;
    let resp = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_no_secret(&resp.text().await.unwrap());
}
