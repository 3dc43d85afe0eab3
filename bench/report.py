#!/usr/bin/env python3
"""Turns bench/run.sh's per-run TSV into the markdown results table (medians over runs).

Usage: report.py RUNS_TSV SCENARIOS_TSV HEADER_FILE > results.md
"""

import csv
import statistics
import sys


def med(rows, key):
    vals = [float(r[key]) for r in rows if r[key] not in ("", "nan")]
    return statistics.median(vals) if vals else float("nan")


def rng(rows, key):
    vals = [float(r[key]) for r in rows if r[key] not in ("", "nan")]
    return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))


def main() -> int:
    runs_path, scen_path, header_path = sys.argv[1:4]
    with open(runs_path, newline="") as f:
        runs = list(csv.DictReader(f, delimiter="\t"))
    with open(scen_path, newline="") as f:
        scenarios = list(csv.DictReader(f, delimiter="\t"))
    with open(header_path) as f:
        sys.stdout.write(f.read())

    print(
        "| scenario | conns | req/s (min–max) | 2xx/s | replies/s | p50 ms | p99 ms | non-2xx | "
        "bot CPU µs/req | µs/reply | bot CPU % | sandbox µs/req | core0 / core1 busy % | "
        "replies / requests | chat/get per reply | idle RSS MiB | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in scenarios:
        rows = [r for r in runs if r["key"] == s["key"]]
        if not rows:
            continue
        lo, hi = rng(rows, "rps")
        req = med(rows, "requests")
        non2xx = med(rows, "non2xx")
        per_reply = med(rows, "bot_us_per_reply")
        replies = med(rows, "replies")
        lookups = med(rows, "chat_get")
        lookups = f"{lookups / replies:.3f}" if replies else "–"
        print(
            f"| {s['label']} | {s['conns']} "
            f"| {med(rows, 'rps'):,.0f} ({lo:,.0f}–{hi:,.0f}) "
            f"| {med(rows, 'ok_rps'):,.0f} | {med(rows, 'replies_rps'):,.0f} "
            f"| {med(rows, 'p50_ms'):.2f} | {med(rows, 'p99_ms'):.2f} "
            f"| {non2xx / req * 100 if req else 0:.1f} % "
            f"| {med(rows, 'bot_us_per_req'):.1f} "
            f"| {'–' if per_reply != per_reply else f'{per_reply:.1f}'} "
            f"| {med(rows, 'bot_cpu_pct'):.0f} "
            f"| {med(rows, 'sbx_us_per_req'):.1f} "
            f"| {med(rows, 'core0_pct'):.0f} / {med(rows, 'core1_pct'):.0f} "
            f"| {replies:,.0f} / {req:,.0f} ({med(rows, 'reply_ratio'):.3f}) | {lookups} "
            f"| {float(s['idle_rss_kb']) / 1024:.1f} | {float(s['peak_rss_kb']) / 1024:.1f} |"
        )
    print()
    notes = [r for r in runs if r.get("note")]
    for r in notes:
        print(f"- run {r['run']} of `{r['key']}`: {r['note']}")
    if notes:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
