//! The wall clock, in the unit DingTalk uses: milliseconds since the Unix epoch.
//!
//! One small module so that every layer (doors, pipeline, maintenance, tests) reads time
//! the same way without importing the HTTP code.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
