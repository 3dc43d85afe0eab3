//! Integration tests: dingbot behind real HTTP, talking to the sandbox (a fake DingTalk).
//! One binary for the whole suite (`cargo test --test api`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod coalescing;
mod config_cli;
mod dedupe;
mod delivery;
mod fallback;
mod fixtures;
mod groups;
mod health;
mod helpers;
mod info;
mod lifecycle;
mod ops;
mod overload;
mod ratelimit;
mod rejections;
mod rendering;
mod replicas;
mod restart;
mod shapes;
mod stalls;
mod stream;
mod throttle;
mod token;
