//! Arbitrary callback bodies: parsing and validation never panic.
#![no_main]

use dingbot::dingtalk::RobotMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<RobotMessage>(data) {
        if let Ok(cb) = message.validate() {
            assert!(!cb.msg_id.is_empty());
            assert!(!cb.conversation_id.is_empty());
        }
    }
});
