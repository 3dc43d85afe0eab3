//! Callbacks dingbot must refuse: each gets its status and `error` code, the group hears
//! nothing, and nothing is recorded (the same msgId, properly sent later, is processed).

use std::future::Future;

use dingbot::clock::now_ms;
use dingbot::config::ReplyFallback;
use dingbot::dingtalk::signature::sign;
use dingbot::sandbox::Endpoint;
use serde_json::json;

use crate::helpers::{
    Answer, BOUND, Outgoing, SECRET, TestApp, assert_no_secret, fresh_signature, spawn_app,
    spawn_app_from_toml, spawn_app_with,
};

/// Runs `refused` (a request about `out` that must be refused) and checks: status and
/// code, no reply, no call to the sandbox's webhook, no new msgId in the dedupe cache, no
/// new group in the limiter; then the same message, validly signed, is answered. Returns
/// the refusal for further checks.
async fn assert_refused_without_trace(
    app: &TestApp,
    out: &Outgoing,
    refused: impl Future<Output = Answer>,
    status: u16,
    code: &str,
) -> Answer {
    let sends = app.sandbox.calls(Endpoint::SendBySession);
    let groups = app.state.pipeline.remembered().groups;
    let answer = refused.await;
    answer.assert_refused(status, code);
    app.assert_no_reply(&out.session).await;
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        sends,
        "a refused callback caused a reply"
    );
    assert!(
        !app.state.handled_msg_id(out.msg_id.as_str()),
        "a refused callback's msgId was recorded"
    );
    assert_eq!(
        app.state.pipeline.remembered().groups,
        groups,
        "a refused callback reached the rate limiter"
    );
    app.send(out).await.assert_accepted();
    let text = app.reply_text(&out.session).await;
    assert!(text.contains("群信息机器人"), "{text}");
    answer
}

fn json_header() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

fn body_bytes(out: &Outgoing) -> Vec<u8> {
    serde_json::to_vec(&out.body).unwrap()
}

/// A `/help` in a group of its own, so each case has its own limiter key.
fn help(app: &TestApp) -> Outgoing {
    app.group_text(&crate::helpers::unique("cidCase"), "/help")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_timestamp_header_is_refused() {
    let app = spawn_app().await;
    let out = help(&app);
    let (_, sign) = fresh_signature(&app.secret);
    let answer = assert_refused_without_trace(
        &app,
        &out,
        app.post_raw(&[("sign", sign), json_header()], body_bytes(&out)),
        401,
        "bad_signature",
    )
    .await;
    assert!(answer.text.contains("timestamp"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sign_header_is_refused() {
    let app = spawn_app().await;
    let out = help(&app);
    let (ts, _) = fresh_signature(&app.secret);
    let answer = assert_refused_without_trace(
        &app,
        &out,
        app.post_raw(&[("timestamp", ts), json_header()], body_bytes(&out)),
        401,
        "bad_signature",
    )
    .await;
    assert!(answer.text.contains("sign"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_signature_headers_are_refused() {
    let app = spawn_app().await;
    let (ts1, sign1) = fresh_signature(&app.secret);
    let (ts2, sign2) = fresh_signature(&app.secret);
    let variants: [Vec<(&str, String)>; 3] = [
        vec![
            ("timestamp", ts1.clone()),
            ("sign", sign1.clone()),
            ("timestamp", ts2.clone()),
            ("sign", sign2.clone()),
        ],
        // The same valid pair twice is still ambiguous.
        vec![
            ("timestamp", ts1.clone()),
            ("timestamp", ts1.clone()),
            ("sign", sign1.clone()),
        ],
        vec![
            ("timestamp", ts2.clone()),
            ("sign", sign2.clone()),
            ("sign", sign2.clone()),
        ],
    ];
    for mut headers in variants {
        let out = help(&app);
        headers.push(json_header());
        assert_refused_without_trace(
            &app,
            &out,
            app.post_raw(&headers, body_bytes(&out)),
            401,
            "bad_signature",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_timestamps_are_refused() {
    let app = spawn_app().await;
    let now = now_ms();
    for ts in [
        "abc".to_string(),
        format!("-{now}"),
        "-1".to_string(),
        format!("{now}.0"),
        format!("0x{now:x}"),
        format!("{now}0000000"),
        "99999999999999999999".to_string(),
        String::new(),
    ] {
        let out = help(&app);
        // Signed over the malformed value itself, so only its shape is wrong.
        let sign = sign(&app.secret, &ts);
        assert_refused_without_trace(
            &app,
            &out,
            app.post_raw(
                &[("timestamp", ts.clone()), ("sign", sign), json_header()],
                body_bytes(&out),
            ),
            401,
            "bad_signature",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_two_hours_old_is_stale() {
    let app = spawn_app().await;
    let out = help(&app);
    let ts = (now_ms() - 2 * 3_600_000).to_string();
    let sign = sign(&app.secret, &ts);
    assert_refused_without_trace(
        &app,
        &out,
        app.post_with_signature(&ts, &sign, &out.body),
        401,
        "stale_timestamp",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_two_hours_ahead_is_stale() {
    let app = spawn_app().await;
    let out = help(&app);
    let ts = (now_ms() + 2 * 3_600_000).to_string();
    let sign = sign(&app.secret, &ts);
    assert_refused_without_trace(
        &app,
        &out,
        app.post_with_signature(&ts, &sign, &out.body),
        401,
        "stale_timestamp",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_inside_the_window_is_accepted() {
    let app = spawn_app().await;
    // DingTalk allows an hour of skew; 50 minutes either way is fine.
    for offset in [-50 * 60_000, 50 * 60_000] {
        let out = help(&app);
        let ts = (now_ms() + offset).to_string();
        app.post_with_signature(&ts, &sign(&app.secret, &ts), &out.body)
            .await
            .assert_accepted();
        app.replies(&out.session, 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_refused() {
    let app = spawn_app().await;
    let (ts, good) = fresh_signature(&app.secret);
    let cases = [
        ("too short", "abc".to_string()),
        ("too long", format!("{good}A")),
        ("not base64", "!".repeat(44)),
        ("wrong padding", format!("{}==", &good[..42])),
        ("wrong secret", sign("not-the-secret", &ts)),
        (
            "other timestamp",
            sign(&app.secret, &(ts.parse::<i64>().unwrap() - 1).to_string()),
        ),
        ("flipped character", {
            let mut s = good.clone().into_bytes();
            s[0] = if s[0] == b'A' { b'B' } else { b'A' };
            String::from_utf8(s).unwrap()
        }),
    ];
    for (what, sign) in cases {
        let out = help(&app);
        let answer = assert_refused_without_trace(
            &app,
            &out,
            app.post_with_signature(&ts, &sign, &out.body),
            401,
            "bad_signature",
        )
        .await;
        assert!(!answer.text.contains(&good), "{what}: {answer:?}");
    }
}

/// `out` padded with an unknown field to exactly `len` bytes of JSON.
fn padded(out: &Outgoing, len: usize) -> Vec<u8> {
    let mut body = out.body.clone();
    body["padding"] = json!("");
    let base = serde_json::to_vec(&body).unwrap().len();
    body["padding"] = json!("x".repeat(len - base));
    let bytes = serde_json::to_vec(&body).unwrap();
    assert_eq!(bytes.len(), len);
    bytes
}

fn raw_head(headers: &[(&str, String)]) -> String {
    let mut head = String::from("POST /dingtalk/callback HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_at_the_limit_is_accepted() {
    let app = spawn_app().await;
    let out = help(&app);
    let (ts, sign) = fresh_signature(&app.secret);
    app.post_raw(
        &[("timestamp", ts), ("sign", sign), json_header()],
        padded(&out, 64 * 1024),
    )
    .await
    .assert_accepted();
    app.replies(&out.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let out = help(&app);
    let (ts, sign) = fresh_signature(&app.secret);
    assert_refused_without_trace(
        &app,
        &out,
        app.raw_http(
            raw_head(&[
                ("timestamp", ts),
                ("sign", sign),
                json_header(),
                ("content-length", (64 * 1024 + 1).to_string()),
            ]),
            padded(&out, 64 * 1024 + 1),
        ),
        413,
        "too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_huge_body_is_refused_without_waiting_for_it() {
    let app = spawn_app().await;
    let out = help(&app);
    let (ts, sign) = fresh_signature(&app.secret);
    // Only the head is sent: dingbot must answer from Content-Length alone.
    assert_refused_without_trace(
        &app,
        &out,
        app.raw_http(
            raw_head(&[
                ("timestamp", ts),
                ("sign", sign),
                json_header(),
                ("content-length", (1024 * 1024 * 1024).to_string()),
            ]),
            Vec::new(),
        ),
        413,
        "too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_too_large() {
    let app = spawn_app().await;
    let out = help(&app);
    let (ts, sign) = fresh_signature(&app.secret);
    let body = padded(&out, 80 * 1024);
    let mut chunked = Vec::new();
    for piece in body.chunks(8 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_refused_without_trace(
        &app,
        &out,
        app.raw_http(
            raw_head(&[
                ("timestamp", ts),
                ("sign", sign),
                json_header(),
                ("transfer-encoding", "chunked".to_string()),
            ]),
            chunked,
        ),
        413,
        "too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_huge_body_is_refused_before_it_is_read() {
    let app = spawn_app().await;
    let out = help(&app);
    // 1 GiB promised, nothing sent: the signature check comes first and needs no body.
    assert_refused_without_trace(
        &app,
        &out,
        app.raw_http(
            raw_head(&[
                json_header(),
                ("content-length", (1024 * 1024 * 1024).to_string()),
            ]),
            Vec::new(),
        ),
        401,
        "bad_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused() {
    let app = spawn_app().await;
    let out = help(&app);
    let full = serde_json::to_string(&out.body).unwrap();
    for (what, body) in [
        ("truncated", full[..full.len() / 2].to_string()),
        ("not json", "msgId=1&text=/help".to_string()),
        ("trailing garbage", format!("{full}}}")),
        ("array", format!("[{full}]")),
        ("empty", String::new()),
    ] {
        let (ts, sign) = fresh_signature(&app.secret);
        let answer = app
            .post_raw(
                &[("timestamp", ts), ("sign", sign), json_header()],
                body.into_bytes(),
            )
            .await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        answer.assert_refused(400, "bad_json");
        // The message never echoes the body's text.
        assert!(!answer.text.contains("/help"), "{what}: {answer:?}");
    }
    let (ts, sign) = fresh_signature(&app.secret);
    let mut cut = body_bytes(&out);
    cut.truncate(cut.len() - 1);
    assert_refused_without_trace(
        &app,
        &out,
        app.post_raw(&[("timestamp", ts), ("sign", sign), json_header()], cut),
        400,
        "bad_json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_is_refused() {
    let app = spawn_app().await;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let out = help(&app);
        let (ts, sign) = fresh_signature(&app.secret);
        assert_refused_without_trace(
            &app,
            &out,
            app.post_raw(
                &[
                    ("timestamp", ts),
                    ("sign", sign),
                    ("content-type", ct.to_string()),
                ],
                body_bytes(&out),
            ),
            415,
            "unsupported_media_type",
        )
        .await;
    }
    // Parameters and case do not matter.
    let out = help(&app);
    let (ts, sign) = fresh_signature(&app.secret);
    app.post_raw(
        &[
            ("timestamp", ts),
            ("sign", sign),
            (
                "content-type",
                "Application/JSON; charset=utf-8".to_string(),
            ),
        ],
        body_bytes(&out),
    )
    .await
    .assert_accepted();
    app.replies(&out.session, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_without_msg_id_is_invalid() {
    let app = spawn_app().await;
    let out = help(&app);
    let mut body = out.body.clone();
    body.as_object_mut().unwrap().remove("msgId");
    let answer =
        assert_refused_without_trace(&app, &out, app.post_signed(&body), 400, "invalid_callback")
            .await;
    assert!(answer.text.contains("msgId"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_with_other_defects_is_invalid() {
    let app = spawn_app().await;
    for (field, value) in [
        ("msgId", json!({"id": 1})),
        ("conversationId", json!("")),
        ("sessionWebhook", json!("")),
        ("msgId", json!("x".repeat(300))),
    ] {
        let out = help(&app);
        let mut body = out.body.clone();
        body[field] = value;
        let answer = assert_refused_without_trace(
            &app,
            &out,
            app.post_signed(&body),
            400,
            "invalid_callback",
        )
        .await;
        assert!(answer.text.contains(field), "{field}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_session_webhook_is_refused() {
    let app = spawn_app().await;
    let sandbox_port = app.sandbox.local_addr().port();
    for webhook in [
        "https://evil.example/robot/sendBySession?session=x".to_string(),
        "https://oapi.dingtalk.com/robot/sendBySession?session=x".to_string(),
        format!("http://127.0.0.1:{sandbox_port}@evil.example/robot/sendBySession"),
        format!("http://localhost:{sandbox_port}/robot/sendBySession?session=x"),
        format!("https://127.0.0.1:{sandbox_port}/robot/sendBySession?session=x"),
        format!(
            "http://127.0.0.1:{}/robot/sendBySession?session=x",
            app.port
        ),
        "/robot/sendBySession?session=x".to_string(),
    ] {
        let out = help(&app);
        let mut body = out.body.clone();
        body["sessionWebhook"] = json!(webhook);
        assert_refused_without_trace(&app, &out, app.post_signed(&body), 400, "webhook_refused")
            .await;
    }
    // The sandbox's webhook was only ever called for the honest follow-ups.
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_webhook_is_refused_without_the_fallback() {
    // With the default `reply.fallback = "robot_api"` an expired webhook is answered
    // through the robot send API instead (tests/api/fallback.rs).
    let app = spawn_app_with(|s| s.reply.fallback = ReplyFallback::None).await;
    let out = help(&app);
    let mut body = out.body.clone();
    body["sessionWebhookExpiredTime"] = json!(now_ms() - 1_000);
    let answer =
        assert_refused_without_trace(&app, &out, app.post_signed(&body), 400, "webhook_refused")
            .await;
    assert!(answer.text.contains("expired"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stays_healthy_after_a_barrage_of_bad_requests() {
    let app = spawn_app().await;
    let out = help(&app);
    let app_ref = &app;
    let mut sends = Vec::new();
    for i in 0..40 {
        let body = body_bytes(&out);
        let headers: Vec<(&str, String)> = match i % 4 {
            0 => vec![json_header()],
            1 => vec![
                ("timestamp", "x".into()),
                ("sign", "y".into()),
                json_header(),
            ],
            2 => {
                let (ts, _) = fresh_signature(&app.secret);
                vec![
                    ("timestamp", ts),
                    ("sign", "A".repeat(43) + "="),
                    json_header(),
                ]
            }
            _ => {
                let (ts, sign) = fresh_signature(&app.secret);
                vec![
                    ("timestamp", ts),
                    ("sign", sign),
                    ("content-type", "text/plain".into()),
                ]
            }
        };
        sends.push(async move { app_ref.post_raw(&headers, body).await });
    }
    for answer in futures_util::future::join_all(sends).await {
        assert!(matches!(answer.status, 401 | 415), "{answer:?}");
        assert_no_secret(&answer.text);
    }
    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_refused_without_trace(
        &app,
        &out,
        app.post_raw(&[json_header()], body_bytes(&out)),
        401,
        "bad_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_and_path_do_not_reach_the_bot() {
    let app = spawn_app().await;
    let get = app.get("/dingtalk/callback").await;
    assert!(matches!(get.status, 404 | 405), "{get:?}");
    let out = app.group_text(BOUND, "/help");
    let resp = app
        .http
        .post(format!("{}/dingtalk/callback/extra", app.address))
        .json(&out.body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    app.assert_no_reply(&out.session).await;
}

/// A plain TCP listener standing in for an allowed webhook origin: it records whether
/// anything connected to it at all.
struct Recorder(std::net::TcpListener);

impl Recorder {
    fn start() -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Recorder(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn assert_untouched(&self, what: &str) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{what}: something connected to the recorder: {other:?}"),
        }
    }
}

/// dingbot replying to the sandbox, and also allowed to reply to the recorder's origin and
/// to `http://127.0.0.1` (port 80).
async fn spawn_app_allowing(recorder: &Recorder) -> TestApp {
    let extra = format!("http://127.0.0.1:{}", recorder.port());
    spawn_app_from_toml(|base| {
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
extra_webhook_hosts = ["{extra}", "http://127.0.0.1"]
[rate_limit]
per_group_per_minute = 1000
"#
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_webhook_with_a_malformed_port_is_refused() {
    let recorder = Recorder::start();
    let app = spawn_app_allowing(&recorder).await;
    let port = recorder.port();
    let sandbox_port = app.sandbox.local_addr().port();
    let path = "/robot/sendBySession?session=x";
    for webhook in [
        // Spellings a lenient parser reads as the recorder's or the sandbox's port.
        format!("http://127.0.0.1:+{port}{path}"),
        format!("http://127.0.0.1:0{port}{path}"),
        format!("http://127.0.0.1:+{sandbox_port}{path}"),
        format!("http://127.0.0.1:00{sandbox_port}{path}"),
        // Spellings that used to fall back to the default port (80, allowed here).
        format!("http://127.0.0.1:99999{path}"),
        format!("http://127.0.0.1:65616{path}"),
        format!("http://127.0.0.1:abc{path}"),
        format!("http://127.0.0.1:+80{path}"),
        format!("http://127.0.0.1:-1{path}"),
        format!("http://127.0.0.1:0{path}"),
        format!("http://127.0.0.1:{path}"),
    ] {
        let out = help(&app);
        let mut body = out.body.clone();
        body["sessionWebhook"] = json!(webhook);
        assert_refused_without_trace(&app, &out, app.post_signed(&body), 400, "webhook_refused")
            .await;
        recorder.assert_untouched(&webhook);
    }
    assert_eq!(
        app.sandbox.message_count(),
        11,
        "only the honest follow-ups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_webhook_on_another_path_is_refused() {
    let recorder = Recorder::start();
    let app = spawn_app_allowing(&recorder).await;
    let sandbox = app.sandbox.base_url();
    let recorded = format!("http://127.0.0.1:{}", recorder.port());
    for webhook in [
        format!("{recorded}/anything?x"),
        format!("{recorded}/robot/send?access_token=attacker0token"),
        format!("{recorded}/robot/sendBySession/?session=x"),
        format!("{recorded}/ROBOT/sendBySession?session=x"),
        format!("{recorded}/robot/%73endBySession?session=x"),
        format!("{recorded}/robot/sendBySession"),
        format!("{recorded}/robot/sendBySession?session="),
        format!("{recorded}/robot/sendBySession?sessionx=1&x=session"),
        recorded.clone(),
        format!("{sandbox}/robot/sendBySession"),
        format!("{sandbox}/robot/sendBySession?session=&other=1"),
    ] {
        let out = help(&app);
        let mut body = out.body.clone();
        body["sessionWebhook"] = json!(webhook);
        assert_refused_without_trace(&app, &out, app.post_signed(&body), 400, "webhook_refused")
            .await;
        recorder.assert_untouched(&webhook);
    }
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        11,
        "only the honest follow-ups"
    );
}
