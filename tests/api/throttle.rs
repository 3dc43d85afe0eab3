//! DingTalk refusing or mishandling replies: 130101 send throttling silences one group,
//! a reply POST that times out is never resent, and repeated 5xx are retried a bounded
//! number of times, then counted as failed.

use std::time::{Duration, Instant};

use dingbot::config::ReplyFallback;
use dingbot::dingtalk::RetryPolicy;
use dingbot::sandbox::{Endpoint, Fault};
use serde_json::json;

use crate::helpers::{
    ABSENCE_WAIT, BOUND, FIXTURE_GROUP, PLAIN, SCENE, TestApp, spawn_app, spawn_app_with,
    without_fixture_group,
};

/// DingTalk's robot send throttling: "send too fast, exceed 20 times per minute".
const SEND_TOO_FAST: i64 = 130101;

/// The value of one Prometheus series `name{label="value"}`, 0 when absent.
fn metric(text: &str, name: &str, label: (&str, &str)) -> f64 {
    let series = format!("{name}{{{}=\"{}\"}}", label.0, label.1);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .map_or(0.0, |(_, v)| v.parse().expect("metric value is a number"))
}

/// The current value of `dingbot_replies_total{result}` (process-wide: the recorder is
/// shared by every test in this binary, so only increases are meaningful).
async fn replies_total(app: &TestApp, result: &str) -> f64 {
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    metric(&answer.text, "dingbot_replies_total", ("result", result))
}

/// Polls (bounded) until every callback slot is free again, i.e. every reply task has
/// finished (a task holds its callback's slot until the reply is sent or given up).
/// `max` is the number of free slots of the idle app.
async fn wait_replies_done(app: &TestApp, max: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while app.state.pipeline.free_slots() < max {
        assert!(
            Instant::now() < deadline,
            "reply tasks still running after {within:?}: {} slots taken",
            max - app.state.pipeline.free_slots()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_too_fast_silences_that_group_only() {
    let app = spawn_app().await;
    let idle = app.state.pipeline.free_slots();
    let throttled_before = replies_total(&app, "throttled").await;
    app.sandbox.inject(
        Endpoint::SendBySession,
        Fault::errcode(SEND_TOO_FAST, "send too fast, exceed 20 times per minute"),
        1,
    );

    // The reply to this command is refused by DingTalk with 130101: not delivered, and
    // not retried (retrying is what DingTalk just refused).
    let first = app.group_text(BOUND, "/help");
    app.send(&first).await.assert_accepted();
    wait_replies_done(&app, idle, Duration::from_secs(5)).await;
    app.assert_no_reply(&first.session).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), 1);
    let throttled = replies_total(&app, "throttled").await;
    assert!(
        throttled > throttled_before,
        "dingbot_replies_total{{result=\"throttled\"}} stayed at {throttled}"
    );

    // Later commands from that group: accepted as rate limited, answered by nobody.
    let mut silenced = Vec::new();
    for text in ["/help", "/info", "/help"] {
        let out = app.group_text(BOUND, text);
        let answer = app.send(&out).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json(),
            json!({"status": "rate_limited"}),
            "{answer:?}"
        );
        silenced.push(out);
    }

    // Other groups are answered as usual.
    let mut others = Vec::new();
    for cid in [SCENE, PLAIN, FIXTURE_GROUP] {
        let out = app.group_text(cid, "/help");
        app.send(&out).await.assert_accepted();
        others.push(out);
    }
    for out in &others {
        app.replies(&out.session, 1).await;
    }
    for out in &silenced {
        app.assert_no_reply(&out.session).await;
    }
    // Nothing was even attempted for the silenced group (no slow-down notice either):
    // the one refused POST plus one per other group.
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        1 + others.len() as u64
    );
    assert_eq!(app.sandbox.message_count(), others.len() as u64);
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_that_times_out_is_not_resent() {
    // Timeout 500 ms; DingTalk answers the reply POST only after 1.5 s.
    let app = spawn_app_with(|s| {
        s.dingtalk.request_timeout_ms = 500;
        without_fixture_group(s);
    })
    .await;
    let idle = app.state.pipeline.free_slots();
    let failed_before = replies_total(&app, "failed").await;
    let delay = Duration::from_millis(1500);
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::Delay(delay), 1);

    let out = app.group_text(BOUND, "/help");
    let sent = Instant::now();
    app.send(&out).await.assert_accepted();

    // dingbot gives up after its timeout, well before DingTalk answers, and counts the
    // reply as failed.
    wait_replies_done(&app, idle, Duration::from_secs(5)).await;
    assert!(
        sent.elapsed() < delay,
        "the reply task waited {:?} for a POST with a 500 ms timeout",
        sent.elapsed()
    );
    let failed = replies_total(&app, "failed").await;
    assert!(
        failed > failed_before,
        "dingbot_replies_total{{result=\"failed\"}} stayed at {failed}"
    );
    // Wait until the slow POST had every chance to land, plus the usual margin: the
    // message may have been delivered (DingTalk took it, the answer was late), but it is
    // never POSTed a second time.
    let rest = (delay + ABSENCE_WAIT + Duration::from_millis(500)).saturating_sub(sent.elapsed());
    tokio::time::sleep(rest).await;
    let got = app.sandbox.messages_for(&out.session);
    assert!(
        got.len() <= 1,
        "the group got the reply {} times",
        got.len()
    );
    assert_eq!(
        app.sandbox.calls(Endpoint::SendBySession),
        1,
        "a timed-out reply POST was repeated"
    );

    // The group is not penalised: its next command is answered.
    let next = app.group_text(BOUND, "/help");
    app.send(&next).await.assert_accepted();
    app.replies(&next.session, 1).await;
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_server_errors_are_retried_a_bounded_number_of_times_then_counted() {
    // Without the fallback: this is about the sessionWebhook path alone (with it, the
    // replies go through the robot send API; tests/api/fallback.rs).
    let app = spawn_app_with(|s| {
        without_fixture_group(s);
        s.reply.fallback = ReplyFallback::None;
    })
    .await;
    let idle = app.state.pipeline.free_slots();
    let attempts = u64::from(RetryPolicy::default().attempts);
    let failed_before = replies_total(&app, "failed").await;
    // The webhook answers 503 to everything until the faults are cleared.
    app.sandbox
        .inject(Endpoint::SendBySession, Fault::HttpStatus(503), u32::MAX);

    // Replies to several groups at once, all failing.
    let groups = [BOUND, SCENE, PLAIN, FIXTURE_GROUP];
    let outs: Vec<_> = groups
        .iter()
        .map(|cid| app.group_text(cid, "/help"))
        .collect();
    for out in &outs {
        app.send(out).await.assert_accepted();
    }
    let n = outs.len() as u64;

    // Every reply task gives up (the retry deadline is 1.6 × the 2 s request timeout)
    // and frees its callback slot: nothing queues up.
    wait_replies_done(&app, idle, Duration::from_secs(10)).await;
    let calls = app.sandbox.calls(Endpoint::SendBySession);
    assert!(
        calls > n && calls <= n * attempts,
        "{calls} POSTs for {n} replies: expected retries, at most {attempts} attempts each"
    );
    let failed = replies_total(&app, "failed").await;
    assert!(
        failed - failed_before >= n as f64,
        "failed replies went from {failed_before} to {failed}, expected +{n}"
    );
    // Bounded: no further attempts once a reply is given up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.sandbox.calls(Endpoint::SendBySession), calls);
    for out in &outs {
        assert!(app.sandbox.messages_for(&out.session).is_empty());
    }

    // Still healthy; once DingTalk recovers, replies flow again and no group was silenced.
    assert_eq!(app.get("/healthz").await.status, 200);
    app.sandbox.clear_faults();
    for cid in groups {
        let out = app.group_text(cid, "/help");
        app.send(&out).await.assert_accepted();
        app.replies(&out.session, 1).await;
    }
}
