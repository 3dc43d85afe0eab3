//! # dingbot
//!
//! A DingTalk (钉钉) group robot: group members @-mention it with `/info`, DingTalk POSTs a
//! signed callback, dingbot verifies it, looks the group up through DingTalk's server API
//! and answers in the chat with a markdown summary of the group.
//!
//! ## Layout
//!
//! - [`config`]: typed settings from a TOML file and `DINGBOT_*` variables, validated.
//! - [`startup`]: composes the service, owns background upkeep and the one shutdown path.
//! - [`stream`]: the Stream door: an outbound WebSocket to DingTalk into the same pipeline.
//! - [`http`]: the HTTP door: routes (callback, health, readiness, metrics), status mapping.
//! - [`pipeline`]: the transport-neutral callback path: admit → respond → deliver.
//! - [`clock`]: the wall clock in DingTalk's unit (ms since the epoch).
//! - [`dingtalk`]: DingTalk's wire formats: signature, callback body, replies, API client.
//! - [`bot`]: command parsing and what each command answers.
//! - [`render`]: reply templates (embedded defaults + admin overrides), markdown escaping.
//! - [`ratelimit`]: per-group budget on governor's keyed limiter.
//! - [`seen`]: bounded memory of handled msgIds and used signatures (dedupe, replays).
//! - [`store`]: the `/bind` bindings on disk (`bindings.json`, atomic writes).
//! - [`state`]: shared state in Redis for several replicas (connection, health, bindings,
//!   group-info cache); admission on Redis is `pipeline::redis`.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`sandbox`]: a fake DingTalk for `demo`, tests and benchmarks.
//! - [`demo`]: the scripted tour behind `dingbot demo`, and the signed-callback client.
//! - [`admin`]: `dingbot check` and `dingbot simulate`.

pub mod admin;
pub mod bot;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dingtalk;
pub mod http;
pub mod pipeline;
pub mod ratelimit;
pub mod render;
pub mod sandbox;
pub mod seen;
pub mod startup;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
