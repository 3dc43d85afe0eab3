//! What the replay ring and the dedupe table cost in resident memory, measured on this
//! process (`/proc/self/status`). Its own test binary with a single test, so nothing else
//! allocates while it measures. Linux only (`/proc`), and the ring's pages are given back
//! only with 4 KiB pages (with larger ones no page fits in the stretch that is released).

#![cfg(target_os = "linux")]

use dingbot::seen::{DedupeSet, ReplayRing, Take};

/// A `Key:   N kB` field of a `/proc/self` file, in KiB.
fn kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Anonymous resident memory of this process, KiB.
fn rss_anon_kib() -> u64 {
    kib("status", "RssAnon").unwrap_or_else(|| panic!("no RssAnon in /proc/self/status"))
}

/// The system's page size, KiB (`KernelPageSize` of the first mapping).
fn page_kib() -> u64 {
    kib("smaps", "KernelPageSize").unwrap_or(4)
}

#[test]
fn the_ring_and_the_dedupe_table_take_memory_only_where_they_are_used() {
    if page_kib() != 4 {
        eprintln!("SKIPPED: pages are {} KiB, not 4 KiB", page_kib());
        return;
    }
    const HOUR_MS: i64 = 3_600_000;
    let t0: i64 = 1_700_000_000_000;
    let before = rss_anon_kib();

    // The default shapes: a ±1 h window with k = 3 (1.8 MB) and 262,144 msgIds (2.1 MB).
    let ring = ReplayRing::new(HOUR_MS, 3, t0);
    let dedupe = DedupeSet::new(262_144, 600_000);
    assert!(ring.bytes() + dedupe.bytes() > 3_900_000);
    let created = rss_anon_kib();
    assert!(
        created.saturating_sub(before) < 1024,
        "creating the tables made {} KiB resident; they are zeroed by the allocator and \
         should cost nothing until used",
        created.saturating_sub(before)
    );

    // Three hours of steady traffic, 5 callbacks a second, each signed 150 ms before it
    // arrives. The ring turns over every 2 h 1 min, so without giving pages back every
    // page would have been written by now; a page (4 KiB: 16 s of 2-bit cells) whose
    // milliseconds left the window goes back to the kernel.
    let mut now = t0;
    for i in 0..(3 * 3_600 * 5) {
        now = t0 + i * 200;
        assert_eq!(ring.take(now - 150, now), Take::Taken);
    }
    let used = rss_anon_kib();
    let ring_kib = (ring.bytes() / 1024) as u64;
    // The past hour (half the ring), the minute of guard and the sweep's lag, and slack
    // for RssAnon's per-CPU counting (it may lag by a few hundred KiB).
    let bound = ring_kib * 55 / 100 + 256;
    assert!(
        used.saturating_sub(created) <= bound,
        "the ring made {} KiB of its {ring_kib} KiB resident after 3 hours of traffic; \
         the past hour's cells ({bound} KiB) are all it may keep",
        used.saturating_sub(created)
    );
    // The counts of the past hour are still there: a replayed pair is still refused.
    assert_eq!(ring.take(now - 150, now), Take::Taken);
    assert_eq!(ring.take(now - 150, now), Take::Taken);
    assert_eq!(ring.take(now - 150, now), Take::Spent);
    assert_eq!(ring.count(now - 30 * 60_000 - 150, now), 1);
    drop(dedupe);
}
