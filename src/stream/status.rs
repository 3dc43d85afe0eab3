//! The Stream connection's state as others see it: `/readyz`, `dingbot check`, tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A counter readable from anywhere.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub(super) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Frames and connections since start.
#[derive(Debug, Default)]
pub struct StreamCounts {
    /// Connections opened (handshake done).
    pub connections: Count,
    /// Robot-message frames taken to the pipeline (frame duplicates excluded).
    pub callbacks: Count,
    /// ACKs (200) written for robot messages.
    pub acks: Count,
    /// Frames whose `messageId` was seen recently.
    pub duplicates: Count,
    /// Frames that are not Stream frames (bad JSON, no `messageId`, binary).
    pub malformed: Count,
    /// Robot-message frames whose `data` is not a usable robot message.
    pub bad_data: Count,
    /// Frames of a type or topic dingbot does not handle.
    pub unsupported: Count,
    /// Failed attempts to open a connection.
    pub open_failures: Count,
}

#[derive(Debug)]
struct Inner {
    open: bool,
    alive_at: Option<Instant>,
    problem: Option<String>,
    stopped: bool,
}

/// Shared connection state.
#[derive(Debug)]
pub struct StreamStatus {
    inner: Mutex<Inner>,
    idle_timeout: Duration,
    /// Counters.
    pub counts: StreamCounts,
}

impl StreamStatus {
    pub(super) fn new(idle_timeout: Duration) -> StreamStatus {
        StreamStatus {
            inner: Mutex::new(Inner {
                open: false,
                alive_at: None,
                problem: Some("the Stream connection is not open yet".into()),
                stopped: false,
            }),
            idle_timeout,
            counts: StreamCounts::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn opened(&self) {
        self.counts.connections.inc();
        self.with(|s| {
            s.open = true;
            s.alive_at = Some(Instant::now());
            s.problem = None;
        });
    }

    pub(super) fn alive(&self) {
        self.with(|s| s.alive_at = Some(Instant::now()));
    }

    pub(super) fn closed(&self) {
        self.with(|s| s.open = false);
    }

    pub(super) fn failed(&self, problem: &str) {
        self.with(|s| s.problem = Some(problem.to_string()));
    }

    pub(super) fn stopped(&self) {
        self.with(|s| {
            s.open = false;
            s.stopped = true;
        });
    }

    /// Whether a connection is open now.
    pub fn is_open(&self) -> bool {
        self.with(|s| s.open)
    }

    /// Ok while a connection is open and showed a sign of life within the watchdog
    /// period; the reason otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        self.with(|s| {
            if s.stopped {
                return Err("the Stream door has stopped".into());
            }
            if !s.open {
                let why = s.problem.as_deref().unwrap_or("no connection");
                return Err(format!("Stream connection not open: {why}"));
            }
            match s.alive_at {
                Some(at) if at.elapsed() <= self.idle_timeout => Ok(()),
                _ => Err(format!(
                    "Stream connection silent for more than {} ms",
                    self.idle_timeout.as_millis()
                )),
            }
        })
    }
}
