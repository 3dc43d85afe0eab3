//! Arbitrary Stream frames: parsing never panics, a parsed frame's answer is valid JSON
//! carrying the same messageId, and a robot message's `data` is parsed without panicking.
#![no_main]

use dingbot::dingtalk::stream::{Frame, ack, not_supported, parse_frame, pong, robot_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = parse_frame(text) else {
        return;
    };
    let answer = match &frame {
        Frame::BotMessage { message_id, data } => {
            if let Ok(message) = robot_message(data) {
                let _ = message.validate();
            }
            ack(message_id)
        }
        Frame::Ping { message_id, data } => pong(message_id, data),
        Frame::Disconnect { message_id, .. } | Frame::Unsupported { message_id, .. } => {
            not_supported(message_id)
        }
    };
    let parsed: serde_json::Value = serde_json::from_str(&answer).expect("answers are JSON");
    assert_eq!(parsed["headers"]["messageId"], frame.message_id());
});
