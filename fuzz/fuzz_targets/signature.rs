//! Arbitrary `timestamp` / `sign` header bytes: verification must never panic, and must
//! accept only what `sign` produces.
#![no_main]

use dingbot::dingtalk::Verifier;
use dingbot::dingtalk::signature::sign;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

const SECRET: &str = "fuzz-secret";
const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let verifier = Verifier::new(&SecretString::from(SECRET), 3600);
    let split = data.first().map(|b| usize::from(*b)).unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let (ts, sg) = rest.split_at(split.min(rest.len()));
    if verifier.verify(Some(ts), Some(sg), NOW).is_ok() {
        // Only the genuine signature of this timestamp may pass.
        let ts = std::str::from_utf8(ts).expect("accepted timestamps are ASCII digits");
        assert_eq!(sign(SECRET, ts).as_bytes(), sg);
    }
});
