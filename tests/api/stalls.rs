//! Connections that promise a body and stall: they must not take the in-flight slots
//! genuine callbacks need, and must not be held open for ever (security issue items 1, 2).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{BOUND, TestApp, fresh_signature, spawn_app, spawn_app_with, spend};

/// A request head for the callback path with `headers`, ending the head.
fn head(headers: &[(&str, &str)]) -> String {
    let mut h = String::from("POST /dingtalk/callback HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// Opens a connection and writes `bytes`, leaving it open.
async fn stall(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads until dingbot closes the connection (or `within` passes, which fails the test);
/// returns the status of the response it got and how long that took.
async fn answer_then_close(s: &mut TcpStream, within: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(within, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(
        read.is_ok(),
        "the connection was still open after {within:?}; got {text:?}"
    );
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response before the close: {text:?}"));
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_under_a_used_pair_do_not_take_the_slots() {
    let app = spawn_app_with(|s| {
        s.server.max_in_flight = std::num::NonZeroUsize::new(2).expect("at least 1");
        s.server.queue_wait_ms = 0;
    })
    .await;
    let (ts, sign) = fresh_signature(&app.secret);
    let first = app.group_text(BOUND, "/help");
    app.post_with_signature(&ts, &sign, &first.body)
        .await
        .assert_accepted();
    app.replies(&first.session, 1).await;

    // As many connections as there are slots re-send the pair, promise 2000 bytes, send
    // 10 and stall.
    let promise = head(&[
        ("timestamp", &ts),
        ("sign", &sign),
        ("content-type", "application/json"),
        ("content-length", "2000"),
    ]);
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stall(&app, format!("{promise}{{\"msgId\":1").as_bytes()).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A fresh, correctly signed callback is still answered.
    let fresh = app.group_text(BOUND, "/help");
    app.send(&fresh).await.assert_accepted();
    app.replies(&fresh.session, 1).await;

    // The stalled requests are answered within the body deadline (5 s by default) and
    // their connections closed.
    for mut s in stalled {
        let (status, _) = answer_then_close(&mut s, Duration::from_secs(8)).await;
        assert!(
            status == 408 || status == 401,
            "a stalled body got {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_pair_is_refused_from_the_headers_alone() {
    let app = spawn_app().await;
    let (ts, sign) = fresh_signature(&app.secret);
    let k = spend(&app, &ts, &sign).await;
    assert!(k >= 1);
    // The pair again, with a declared body that never comes: refused without waiting.
    let mut s = stall(
        &app,
        head(&[
            ("timestamp", &ts),
            ("sign", &sign),
            ("content-type", "application/json"),
            ("content-length", "2000"),
        ])
        .as_bytes(),
    )
    .await;
    let (status, took) = answer_then_close(&mut s, Duration::from_secs(4)).await;
    assert_eq!(status, 401);
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_request_with_a_missing_body_is_answered_and_closed() {
    let app = spawn_app().await;
    let (ts, _) = fresh_signature(&app.secret);
    let forged = "A".repeat(43) + "=";
    let mut s = stall(
        &app,
        head(&[
            ("timestamp", &ts),
            ("sign", &forged),
            ("content-type", "application/json"),
            ("content-length", "100"),
        ])
        .as_bytes(),
    )
    .await;
    let (status, took) = answer_then_close(&mut s, Duration::from_secs(4)).await;
    assert_eq!(status, 401);
    assert!(took <= Duration::from_millis(2500), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_requests_with_missing_bodies_do_not_lock_out_a_genuine_one() {
    let app = spawn_app().await;
    let (ts, _) = fresh_signature(&app.secret);
    let forged = "B".repeat(43) + "=";
    let promise = head(&[
        ("timestamp", &ts),
        ("sign", &forged),
        ("content-type", "application/json"),
        ("content-length", "100"),
    ]);
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(stall(&app, promise.as_bytes()).await);
    }
    // Every one of them is answered and closed within the bounded drain.
    let started = Instant::now();
    for mut s in held {
        let (status, _) = answer_then_close(&mut s, Duration::from_secs(4)).await;
        assert_eq!(status, 401);
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let out = app.group_text(BOUND, "/help");
    app.send(&out).await.assert_accepted();
    app.replies(&out.session, 1).await;
}
