#!/usr/bin/env python3
"""Stream door against HTTP door, in one run, against one dingbot (dingtalk.mode = "both").

Usage: stream_drive.py DINGBOT_PID DINGBOT_URL SANDBOX_URL SECRET COUNT GROUPS WINDOW ROUNDS

Phases, each COUNT messages "@robot /info" with unique msgIds over GROUPS groups
(cidGen0== …), at most WINDOW outstanding:
  warm    one /info per group over Stream (fills the group-info cache; not measured)
  stream  the sandbox gateway pushes as fast as dingbot ACKs (/_sandbox/stream/load)
  http    signed callbacks over WINDOW keep-alive connections
stream and http alternate ROUNDS times. A phase ends when the sandbox's sessionWebhook
has received every reply. Measured per phase: dingbot's CPU time (utime + stime from
/proc/PID/stat), the wall time, the replies received. Prints a markdown table, the
medians and the ratio of CPU per answered /info (stream / http).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Last callback timestamp used: every callback of the run gets its own millisecond, so no
# (timestamp, sign) pair is ever reused (dingbot would refuse it as a replay).
LAST_TS = [0]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def post_json(url: str, body) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def replies(sandbox: str) -> int:
    return int(get_json(f"{sandbox}/_sandbox/stats")["messages"])


def wait_replies(sandbox: str, target: int, limit_s: float) -> int:
    deadline = time.monotonic() + limit_s
    while True:
        got = replies(sandbox)
        if got >= target or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def payload(i: int, run: str, groups: int, sandbox: str, now: int) -> bytes:
    session = urllib.parse.quote(f"http-{run}-{i}")
    return json.dumps(
        {
            "conversationId": f"cidGen{i % groups}==",
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$benchrobot"}],
            "chatbotUserId": "$:LWCP_v1:$benchrobot",
            "msgId": f"msgHttp{run}x{i}",
            "senderNick": "张小明",
            "isAdmin": False,
            "senderStaffId": "user123",
            "sessionWebhookExpiredTime": now + 5_400_000,
            "createAt": now,
            "conversationType": "2",
            "senderId": "$:LWCP_v1:$sender",
            "conversationTitle": "load",
            "isInAtList": True,
            "sessionWebhook": f"{sandbox}/robot/sendBySession?session={session}",
            "text": {"content": " /info"},
            "msgtype": "text",
        },
        ensure_ascii=False,
    ).encode()


def http_requests(url: str, sandbox: str, secret: str, count: int, groups: int,
                  run: str) -> list:
    """COUNT signed callbacks as raw HTTP/1.1 requests, built before the clock starts."""
    parsed = urllib.parse.urlsplit(url)
    host, port, path = parsed.hostname, parsed.port, parsed.path
    now = int(time.time() * 1000)
    key = secret.encode()
    requests = []
    for i in range(count):
        LAST_TS[0] = max(now + i, LAST_TS[0] + 1)
        ts = str(LAST_TS[0])
        sign = base64.b64encode(
            hmac.new(key, f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        ).decode()
        body = payload(i, run, groups, sandbox, now)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\ntimestamp: {ts}\r\nsign: {sign}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


async def http_phase(url: str, requests: list, window: int) -> None:
    """Sends `requests` over WINDOW keep-alive connections."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname, parsed.port
    queue = iter(requests)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(host, port)
        for req in queue:
            writer.write(req)
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            if b" 200 " not in status:
                failures += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(window)))
    if failures:
        print(f"stream_drive: {failures} HTTP callbacks not answered 200", file=sys.stderr)


def stream_phase(sandbox: str, count: int, groups: int, window: int) -> None:
    post_json(f"{sandbox}/_sandbox/stream/load",
              {"count": count, "groups": groups, "window": window, "text": "/info"})


def measure(name: str, pid: int, sandbox: str, count: int, start) -> dict:
    before_replies = replies(sandbox)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    start()
    got = wait_replies(sandbox, before_replies + count, 300) - before_replies
    wall = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    return {"door": name, "answered": got, "wall": wall, "cpu": cpu,
            "rate": got / wall if wall else 0.0,
            "cpu_us": cpu / got * 1e6 if got else float("nan")}


def main() -> int:
    pid, dingbot, sandbox, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    count, groups, window, rounds = map(int, sys.argv[5:9])
    callback = f"{dingbot}/dingtalk/callback"

    # Warm the group-info cache: one /info per group, not measured.
    measure("warm", pid, sandbox, groups, lambda: stream_phase(sandbox, groups, groups, window))
    rows = []
    for r in range(rounds):
        rows.append(measure("stream", pid, sandbox, count,
                            lambda: stream_phase(sandbox, count, groups, window)))
        reqs = http_requests(callback, sandbox, secret, count, groups, f"r{r}")
        rows.append(measure("http", pid, sandbox, count,
                            lambda: asyncio.run(http_phase(callback, reqs, window))))
    print("| door | answered | wall s | msgs/s | dingbot CPU s | CPU µs per answered /info |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['door']} | {row['answered']} | {row['wall']:.2f} | {row['rate']:.0f} | "
              f"{row['cpu']:.2f} | {row['cpu_us']:.0f} |")
    med = {d: (statistics.median(x["rate"] for x in rows if x["door"] == d),
               statistics.median(x["cpu_us"] for x in rows if x["door"] == d))
           for d in ("stream", "http")}
    ratio = med["stream"][1] / med["http"][1]
    print()
    print(f"medians: stream {med['stream'][0]:.0f} msgs/s, {med['stream'][1]:.0f} µs CPU per "
          f"answered /info; http {med['http'][0]:.0f} msgs/s, {med['http'][1]:.0f} µs")
    print(f"CPU per answered /info, stream / http = {ratio:.2f}")
    short = [x for x in rows if x["answered"] < count]
    if short:
        print(f"stream_drive: {len(short)} phase(s) short of {count} replies", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
