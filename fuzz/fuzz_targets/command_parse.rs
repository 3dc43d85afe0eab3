//! Arbitrary message text: command parsing never panics and quotes back at most 32 chars.
#![no_main]

use dingbot::bot::command::{Command, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Command::Unknown(word) = parse(text) {
        assert!(word.chars().count() <= 32);
    }
});
