//! Endpoints the sandbox serves and the faults tests can make them answer with.
//!
//! Faults are queued per endpoint and consumed first-in first-out, one per request.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use crate::dingtalk::endpoint::{Endpoint, UnknownEndpoint};

/// A misbehaviour an endpoint answers with instead of (or on top of) its normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// A DingTalk error. oapi endpoints: HTTP 200 `{"errcode","errmsg"[,"sub_code","sub_msg"]}`.
    /// api.dingtalk.com endpoints: HTTP 400 `{"code","requestid","message"}` where `code`
    /// is `sub_code` if given, else the errcode as a string.
    ErrCode {
        /// `errcode` of the answer.
        errcode: i64,
        /// `errmsg` (and `sub_msg` when `sub_code` is set).
        errmsg: String,
        /// Optional `sub_code`, e.g. `"60011"` with errcode 88.
        sub_code: Option<String>,
    },
    /// That HTTP status with an empty body (unknown codes become 500).
    HttpStatus(u16),
    /// HTTP 200 with an HTML error page, `content-type: text/html`.
    Html,
    /// The normal answer (side effects included) cut in half.
    Truncated,
    /// HTTP 200 with random bytes that are not JSON (nor UTF-8).
    Garbage,
    /// The normal answer after this delay.
    Delay(Duration),
}

/// The legacy host's "no permission for this call" errcode.
pub const NO_PERMISSION_ERRCODE: i64 = 43007;

impl Fault {
    /// The legacy host refusing a call for a missing permission (errcode 43007).
    pub fn no_permission() -> Fault {
        Fault::errcode(NO_PERMISSION_ERRCODE, "没有调用权限")
    }

    /// Shorthand for an [`Fault::ErrCode`] without `sub_code`.
    pub fn errcode(errcode: i64, errmsg: impl Into<String>) -> Fault {
        Fault::ErrCode {
            errcode,
            errmsg: errmsg.into(),
            sub_code: None,
        }
    }
}

#[derive(Debug)]
struct Queued {
    fault: Fault,
    /// Requests this entry still applies to; `u32::MAX` never runs out.
    remaining: u32,
}

/// Per-endpoint FIFO queues of pending faults.
#[derive(Debug, Default)]
pub(crate) struct FaultBook {
    queues: [Mutex<VecDeque<Queued>>; Endpoint::ALL.len()],
    /// Number of queued entries over all endpoints, so a request to an endpoint
    /// without faults does not take a lock.
    pending: AtomicUsize,
}

impl FaultBook {
    fn queue(&self, ep: Endpoint) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        // `index()` is always in range because the array is sized by `Endpoint::ALL`.
        let slot = &self.queues[ep.index()];
        slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `fault` for the next `times` requests to `ep` (after already queued faults).
    pub(crate) fn inject(&self, ep: Endpoint, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        let mut queue = self.queue(ep);
        queue.push_back(Queued {
            fault,
            remaining: times,
        });
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the fault for one request to `ep`, if any.
    pub(crate) fn take(&self, ep: Endpoint) -> Option<Fault> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.queue(ep);
        let front = queue.front_mut()?;
        if front.remaining == u32::MAX {
            return Some(front.fault.clone());
        }
        front.remaining -= 1;
        if front.remaining > 0 {
            return Some(front.fault.clone());
        }
        let done = queue.pop_front()?;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        Some(done.fault)
    }

    /// Drops every queued fault.
    pub(crate) fn clear(&self) {
        for ep in Endpoint::ALL {
            let mut queue = self.queue(ep);
            let n = queue.len();
            queue.clear();
            self.pending.fetch_sub(n, Ordering::AcqRel);
        }
    }
}
