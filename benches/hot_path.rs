//! Micro-benchmarks of the per-callback hot path: signature check, body parsing and
//! validation, sessionWebhook check, command parsing, reply rendering and the per-group
//! rate limiter.
//!
//! CI only compiles them (`cargo bench --no-run`). To get numbers:
//!
//! ```text
//! cargo bench --bench hot_path                                   # criterion defaults
//! cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 2   # quick
//! cargo bench --bench hot_path -- signature                      # one group
//! ```
//!
//! Everything is deterministic: no clock, no network, fixed inputs.

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dingbot::bot::command;
use dingbot::config::Language;
use dingbot::dingtalk::signature::sign;
use dingbot::dingtalk::{RobotMessage, Verifier, WebhookPolicy};
use dingbot::ratelimit::GroupLimiter;
use dingbot::render::{Renderer, Template};
use secrecy::SecretString;
use serde::Serialize;

/// The sandbox demo org's secret (any 32-byte secret behaves the same).
const SECRET: &str = "demo-app-secret-0123456789abcdef";
/// A fixed "now" (2023-11-14T22:13:20Z), ms since the epoch.
const NOW_MS: i64 = 1_700_000_000_000;
/// Groups cycled through by the many-keys limiter benchmark (the load harness uses 5000).
const MANY_GROUPS: usize = 5000;

/// A group text callback as DingTalk sends it (every field of the documented payload,
/// `/info` after the robot's stripped @-mention).
const GROUP_TEXT_CALLBACK: &str = r#"{"conversationId":"cidGen42==","atUsers":[{"dingtalkId":"$:LWCP_v1:$h694sLh3ZF0kTqAoCWv5aNsvZ8QqR+Ms","staffId":"manager4220"}],"chatbotCorpId":"ding9f50b15bccd16741","chatbotUserId":"$:LWCP_v1:$h694sLh3ZF0kTqAoCWv5aNsvZ8QqR+Ms","msgId":"msgA1b2C3d4E5f6G7h8I9j0K1l2M3n4==","senderNick":"张小明","isAdmin":false,"senderStaffId":"user123","sessionWebhookExpiredTime":1700005400000,"createAt":1699999999512,"senderCorpId":"ding9f50b15bccd16741","conversationType":"2","senderId":"$:LWCP_v1:$ZxTqe3XhAqTJhBvUnW1ae7A==","conversationTitle":"压测群42","isInAtList":true,"sessionWebhook":"http://127.0.0.1:9700/robot/sendBySession?session=c2VzMTIzNDU2Nzg5MA==","text":{"content":" /info"},"robotCode":"dingdemoappkey","msgtype":"text"}"#;

/// Same fields as the bot's private `InfoView` (context of `info.md.j2`).
#[derive(Serialize)]
struct InfoView<'a> {
    name: &'a str,
    owner: &'a str,
    member_count: usize,
    dissolved: bool,
    muted: Option<bool>,
    searchable: Option<bool>,
    join_needs_approval: Option<bool>,
    mention_all_admins_only: Option<bool>,
    management_admins_only: Option<bool>,
    new_members_see_history: Option<bool>,
}

/// Same fields as the bot's private `HelpView` (context of `help.md.j2`).
#[derive(Serialize)]
struct HelpView<'a> {
    unknown: Option<&'a str>,
}

fn signature(c: &mut Criterion) {
    let verifier = Verifier::new(&SecretString::from(SECRET), 3600);
    let ts = (NOW_MS - 1_234).to_string();
    let good = sign(SECRET, &ts);
    // Right shape (44 base64 chars, 32 bytes), wrong key: goes all the way to the MAC compare.
    let forged = sign("not-the-secret", &ts);
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_valid", |b| {
        b.iter(|| {
            let r = verifier.verify(
                black_box(Some(ts.as_bytes())),
                black_box(Some(good.as_bytes())),
                NOW_MS,
            );
            assert!(r.is_ok());
            r
        })
    });
    g.bench_function("verify_forged", |b| {
        b.iter(|| {
            let r = verifier.verify(
                black_box(Some(ts.as_bytes())),
                black_box(Some(forged.as_bytes())),
                NOW_MS,
            );
            assert!(r.is_err());
            r
        })
    });
    g.bench_function("sign", |b| {
        b.iter(|| sign(black_box(SECRET), black_box(&ts)))
    });
    g.finish();
}

fn callback(c: &mut Criterion) {
    let body = GROUP_TEXT_CALLBACK.as_bytes();
    let oapi = match url::Url::parse("http://127.0.0.1:9700") {
        Ok(u) => u,
        Err(e) => panic!("base URL: {e}"),
    };
    let paths = ["/robot/sendBySession".to_string()];
    let policy = WebhookPolicy::new(&oapi, std::iter::empty(), &paths);
    let webhook = "http://127.0.0.1:9700/robot/sendBySession?session=c2VzMTIzNDU2Nzg5MA==";
    let mut g = c.benchmark_group("callback");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_validate", |b| {
        b.iter(|| {
            let Ok(msg) = serde_json::from_slice::<RobotMessage>(black_box(body)) else {
                panic!("benchmark payload does not parse");
            };
            let Ok(cb) = msg.validate() else {
                panic!("benchmark payload does not validate");
            };
            cb
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("webhook_check", |b| {
        b.iter(|| {
            let r = policy.check(black_box(webhook), Some(NOW_MS + 5_400_000), NOW_MS);
            assert!(r.is_ok());
            r
        })
    });
    g.finish();
}

fn command_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_info", |b| {
        b.iter(|| command::parse(black_box(" /info")))
    });
    g.bench_function("parse_mentions_zh", |b| {
        b.iter(|| command::parse(black_box(" @张三 @李四 群信息 谢谢")))
    });
    g.bench_function("parse_unknown", |b| {
        b.iter(|| command::parse(black_box(" hello DingTalk, what can you do?")))
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let renderer = match Renderer::new(Language::Zh, None) {
        Ok(r) => r,
        Err(e) => panic!("embedded templates: {e}"),
    };
    let info = InfoView {
        name: "压测群42 · **研发**_部",
        owner: "manager4220",
        member_count: 10,
        dissolved: false,
        muted: Some(false),
        searchable: Some(true),
        join_needs_approval: Some(false),
        mention_all_admins_only: Some(true),
        management_admins_only: Some(false),
        new_members_see_history: None,
    };
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Elements(1));
    g.bench_function("info_zh", |b| {
        b.iter(|| renderer.render(Template::Info, black_box(&info)))
    });
    g.bench_function("help_zh", |b| {
        b.iter(|| renderer.render(Template::Help, black_box(&HelpView { unknown: None })))
    });
    g.bench_function("help_zh_unknown", |b| {
        b.iter(|| {
            renderer.render(
                Template::Help,
                black_box(&HelpView {
                    unknown: Some("hello"),
                }),
            )
        })
    });
    g.finish();
}

fn ratelimit(c: &mut Criterion) {
    // A budget so large it never runs out: measures the Allow path only.
    let unlimited = NonZeroU32::MAX;
    let keys: Vec<String> = (0..MANY_GROUPS).map(|i| format!("cidGen{i}==")).collect();
    let mut g = c.benchmark_group("ratelimit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("allow_one_key", |b| {
        let limiter = GroupLimiter::new(unlimited);
        b.iter(|| limiter.check(black_box("cidGen42==")))
    });
    g.bench_function("allow_5000_keys", |b| {
        let limiter = GroupLimiter::new(unlimited);
        // Pre-populate so the map is at steady size, as in a long-running process.
        for k in &keys {
            let _ = limiter.check(k);
        }
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % MANY_GROUPS;
            let key = keys.get(i).map_or("", String::as_str);
            limiter.check(black_box(key))
        })
    });
    g.bench_function("limited_one_key", |b| {
        // One per minute: after the first call every check is a refusal (no notice after
        // the first), i.e. the path a flooding group takes.
        let limiter = GroupLimiter::new(NonZeroU32::MIN);
        let _ = limiter.check("cidGen42==");
        let _ = limiter.check("cidGen42==");
        b.iter(|| limiter.check(black_box("cidGen42==")))
    });
    g.bench_function("first_sight_new_key", |b| {
        // The first command of a group the limiter does not track yet (map insert).
        b.iter_batched_ref(
            || GroupLimiter::new(unlimited),
            |limiter| limiter.check(black_box("cidGen42==")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    signature,
    callback,
    command_parse,
    render,
    ratelimit
);
criterion_main!(benches);
