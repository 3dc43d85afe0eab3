#!/usr/bin/env python3
"""Soak driver for bench/soak.sh: mixed callbacks against a running dingbot + sandbox.

Usage: soak_drive.py --bot URL --sandbox URL --secret S --bot-pid N --sandbox-pid N
                     --bot-log FILE [--seconds 60] [--rate 2000] [--conns 32]
                     [--groups 3000] [--fault-every 2] [--seed 1] [--json FILE]

Runs for --seconds (open loop at --rate requests/s, at most --conns in flight), then
waits (bounded) for the replies to drain, checks every invariant, prints a table and
exits 1 if any invariant fails (2 on usage / setup errors).

Request kinds (each with its own expected answer; see KINDS):
  valid     signed /info (or /help) callback: unique msgId, its own timestamp + sign,
            conversationId spread over --groups groups            -> 200 {}
  retry     an accepted callback's body resent, signed anew (DingTalk's retry)
                                                                    -> 200 {"status":"duplicate"}
  replay    an accepted (timestamp, sign) pair with another body   -> 401 replayed
  forged    fresh timestamp, well-formed wrong sign                -> 401 bad_signature
  stale     correctly signed timestamp 2-3 h old                   -> 401 stale_timestamp
  malformed correctly signed, body not JSON (truncated, empty, …)  -> 400 bad_json
  foreign   correctly signed, sessionWebhook on another origin     -> 400 webhook_refused

Every signed request gets a timestamp of its own (strictly increasing ms, like
dingbot::demo::unique_timestamp); soak.sh sets max_messages_per_signature = 1, so
dingbot refuses a second distinct message on a pair.
Meanwhile a task queues faults on the sandbox's chat/get every --fault-every seconds
(errcode -1, HTTP 500, HTML page, 2.5 s delay) through POST /_sandbox/faults.
Everything is bounded: the run by time and by count (rate x seconds), every request and
admin call by a timeout, the drain by 30 s.
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import random
import re
import sys
import time
import urllib.parse

# kind -> (weight, expected status, expected body check)
KINDS = {
    "valid": (55, 200, {}),
    "retry": (5, 200, {"status": "duplicate"}),
    "replay": (10, 401, "replayed"),
    "forged": (8, 401, "bad_signature"),
    "stale": (8, 401, "stale_timestamp"),
    "malformed": (7, 400, "bad_json"),
    "foreign": (7, 400, "webhook_refused"),
}
ORDER = list(KINDS)

# Faults queued on chat/get in turn; each applies to the next `times` chat/get calls.
FAULTS = [
    ("errcode -1", {"errcode": -1, "errmsg": "系统繁忙"}, 8),
    ("http 500", {"status": 500}, 8),
    ("html page", {"html": True}, 8),
    ("delay 2.5 s", {"delay_ms": 2500}, 4),
]

# Sessions of the sandbox's sessionWebhook: valid callbacks reply to VALID_SESSION; the
# refused kinds that carry a sandbox webhook use LEAK_SESSION, which must stay empty.
VALID_SESSION = "soak-valid"
LEAK_SESSION = "soak-leak"

REQUEST_TIMEOUT = 10.0
DRAIN_LIMIT = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Signer:
    """Strictly increasing ms timestamps and their signs."""

    def __init__(self, secret: str):
        self.key = secret.encode()
        self.suffix = b"\n" + self.key
        self.last = 0

    def sign(self, ts: int) -> str:
        mac = hmac.new(self.key, str(ts).encode() + self.suffix, hashlib.sha256)
        return base64.b64encode(mac.digest()).decode()

    def fresh(self):
        ts = max(now_ms(), self.last + 1)
        self.last = ts
        return str(ts), self.sign(ts)


class Conn:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None
        self.opened = 0

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict, body: bytes = b""):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and "close" in value.lower():
                close = True
            elif name == "transfer-encoding":
                raise RuntimeError("chunked answers are not expected")
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data


async def one_shot(base: str, method: str, path: str, payload=None, timeout=5.0):
    """A single request on a fresh connection; returns (status, parsed JSON or text)."""
    u = urllib.parse.urlsplit(base)
    conn = Conn(u.hostname, u.port)
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = {"Content-Type": "application/json", "Connection": "close"} if payload is not None else {"Connection": "close"}
    try:
        status, data = await asyncio.wait_for(conn.request(method, path, headers, body), timeout)
    finally:
        await conn.close()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")


def parse_metrics(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            pass
    return out


def proc_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.signer = Signer(a.secret)
        u = urllib.parse.urlsplit(a.bot)
        self.bot_host, self.bot_port = u.hostname, u.port
        self.path = u.path or "/dingtalk/callback"
        self.webhook = f"{a.sandbox}/robot/sendBySession?session={VALID_SESSION}"
        self.leak_webhook = f"{a.sandbox}/robot/sendBySession?session={LEAK_SESSION}"
        sp = urllib.parse.urlsplit(a.sandbox).port
        self.foreign_webhooks = [
            f"http://evil.example.com/robot/sendBySession?session={LEAK_SESSION}",
            f"http://127.0.0.1:{sp + 1 if sp < 65535 else sp - 1}/robot/sendBySession?session={LEAK_SESSION}",
            f"https://127.0.0.1:{sp}/robot/sendBySession?session={LEAK_SESSION}",
            f"http://user:pw@127.0.0.1:{sp}/robot/sendBySession?session={LEAK_SESSION}",
        ]
        self.weights = [KINDS[k][0] for k in ORDER]
        self.msg_seq = 0
        self.pool = collections.deque(maxlen=2000)  # accepted (ts, sign, body)
        self.sent = collections.Counter()
        self.statuses = {k: collections.Counter() for k in ORDER}
        self.wrong = {k: collections.Counter() for k in ORDER}  # unexpected answers
        self.wrong_examples = []
        self.latency = {k: [] for k in ORDER}
        self.transport_errors = collections.Counter()
        self.valid_accepted = 0
        self.groups_hit = set()
        self.faults = collections.Counter()
        self.fault_errors = 0
        self.rss = []  # (t, bot_kb, sandbox_kb)
        self.conns = []

    # ---- bodies ------------------------------------------------------------------------

    def body(self, group: int, text: str, webhook: str, created: int) -> bytes:
        self.msg_seq += 1
        msg = {
            "conversationId": f"cidGen{group}==",
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$soakrobot"}],
            "chatbotCorpId": "dingsoakcorp",
            "chatbotUserId": "$:LWCP_v1:$soakrobot",
            "msgId": f"msgSoak{os.getpid()}x{self.msg_seq}",
            "senderNick": "张小明",
            "isAdmin": False,
            "senderStaffId": "user123",
            "sessionWebhookExpiredTime": created + 5_400_000,
            "createAt": created,
            "senderCorpId": "dingsoakcorp",
            "conversationType": "2",
            "senderId": "$:LWCP_v1:$soaksender",
            "conversationTitle": f"压测群{group}",
            "isInAtList": True,
            "sessionWebhook": webhook,
            "text": {"content": f" {text}"},
            "robotCode": "dingdemoappkey",
            "msgtype": "text",
        }
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()

    def build(self, kind: str):
        """(kind, timestamp, sign, body, pooled entry or None) for one request."""
        rng = self.rng
        group = rng.randrange(self.a.groups)
        if kind in ("retry", "replay") and not self.pool:
            kind = "valid"
        if kind == "valid":
            ts, sign = self.signer.fresh()
            text = "/info" if rng.random() < 0.85 else "/help"
            self.groups_hit.add(group)
            return kind, ts, sign, self.body(group, text, self.webhook, int(ts))
        if kind == "retry":
            # DingTalk signs a redelivery anew; the msgId makes it a duplicate. (The old
            # pair itself is spent: with k = 1 it is refused from the headers.)
            _, _, body = rng.choice(self.pool)
            ts, sign = self.signer.fresh()
            return kind, ts, sign, body
        if kind == "replay":
            ts, sign, _ = rng.choice(self.pool)
            return kind, ts, sign, self.body(group, "/info", self.leak_webhook, int(ts))
        if kind == "forged":
            ts = str(max(now_ms(), self.signer.last))
            sign = base64.b64encode(rng.randbytes(32)).decode()
            return kind, ts, sign, self.body(group, "/info", self.leak_webhook, int(ts))
        if kind == "stale":
            ts = now_ms() - 2 * 3600 * 1000 - rng.randrange(3600 * 1000)
            return kind, str(ts), self.signer.sign(ts), self.body(group, "/info", self.leak_webhook, ts)
        if kind == "malformed":
            ts, sign = self.signer.fresh()
            good = self.body(group, "/info", self.leak_webhook, int(ts))
            body = rng.choice([
                good[: len(good) // 2],
                good[:-1],
                b"",
                b"not json at all",
                b'{"conversationId": "cidGen1==", "msgId": ',
                b"{" * 64,
                good.replace(b'":', b'"=', 1),
            ])
            return kind, ts, sign, body
        if kind == "foreign":
            ts, sign = self.signer.fresh()
            return kind, ts, sign, self.body(group, "/info", rng.choice(self.foreign_webhooks), int(ts))
        raise ValueError(kind)

    def check(self, kind: str, status: int, data: bytes) -> bool:
        _, want_status, want = KINDS[kind]
        if status != want_status:
            return False
        try:
            got = json.loads(data)
        except ValueError:
            return False
        if isinstance(want, dict):
            return got == want
        return isinstance(got, dict) and got.get("error") == want and bool(got.get("message"))

    # ---- tasks -------------------------------------------------------------------------

    async def worker(self, state):
        conn = Conn(self.bot_host, self.bot_port)
        self.conns.append(conn)
        loop = asyncio.get_running_loop()
        while True:
            i = state["next"]
            if i >= state["max"]:
                break
            state["next"] = i + 1
            at = state["t0"] + i / self.a.rate
            if at >= state["end"]:
                break
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = self.rng.choices(ORDER, self.weights)[0]
            kind, ts, sign, body = self.build(kind)
            headers = {"Content-Type": "application/json", "timestamp": ts, "sign": sign}
            self.sent[kind] += 1
            started = loop.time()
            try:
                status, data = await asyncio.wait_for(
                    conn.request("POST", self.path, headers, body), REQUEST_TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                    asyncio.LimitOverrunError, RuntimeError, ValueError, IndexError) as e:
                self.transport_errors[f"{kind}: {type(e).__name__}"] += 1
                self.statuses[kind]["error"] += 1
                self.wrong[kind]["error"] += 1
                await conn.close()
                continue
            self.latency[kind].append(loop.time() - started)
            self.statuses[kind][status] += 1
            if self.check(kind, status, data):
                if kind == "valid":
                    self.valid_accepted += 1
                    self.pool.append((ts, sign, body))
            else:
                self.wrong[kind][status] += 1
                if len(self.wrong_examples) < 10:
                    self.wrong_examples.append(f"{kind}: HTTP {status} {data[:200]!r}")
        await conn.close()

    async def fault_injector(self, state):
        loop = asyncio.get_running_loop()
        n = 0
        while loop.time() + self.a.fault_every < state["end"]:
            await asyncio.sleep(self.a.fault_every)
            name, fault, times = FAULTS[n % len(FAULTS)]
            n += 1
            try:
                status, _ = await one_shot(self.a.sandbox, "POST", "/_sandbox/faults",
                                           {"endpoint": "chat_get", "fault": fault, "times": times})
                if status == 200:
                    self.faults[name] += times
                else:
                    self.fault_errors += 1
            except Exception:
                self.fault_errors += 1

    async def sampler(self, state):
        loop = asyncio.get_running_loop()
        while True:
            t = max(0.0, loop.time() - state["t0"])
            self.rss.append((t, proc_kb(self.a.bot_pid, "VmRSS"), proc_kb(self.a.sandbox_pid, "VmRSS")))
            if loop.time() >= state["end"]:
                break
            await asyncio.sleep(min(1.0, max(0.05, state["end"] - loop.time())))

    async def drive(self):
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        state = {"next": 0, "t0": t0, "end": t0 + self.a.seconds,
                 "max": int(self.a.rate * self.a.seconds)}
        tasks = [asyncio.create_task(self.worker(state)) for _ in range(self.a.conns)]
        aux = [asyncio.create_task(self.fault_injector(state)),
               asyncio.create_task(self.sampler(state))]
        # Hard bound on the whole drive: duration + one request timeout + slack.
        done, pending = await asyncio.wait(tasks + aux, timeout=self.a.seconds + REQUEST_TIMEOUT + 10)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()
        self.elapsed = loop.time() - t0
        self.hung_tasks = len(pending)

    async def sandbox_stats(self):
        status, stats = await one_shot(self.a.sandbox, "GET", "/_sandbox/stats")
        if status != 200 or not isinstance(stats, dict):
            raise RuntimeError(f"sandbox stats: HTTP {status}")
        return stats

    async def drain(self, base_messages: int):
        """Waits until the sink got valid_accepted replies, or stops growing for 5 s (≤ 30 s)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        last, last_change = -1, start
        while True:
            got = (await self.sandbox_stats())["messages"] - base_messages
            if got != last:
                last, last_change = got, loop.time()
            if got >= self.valid_accepted or loop.time() - last_change > 5 or loop.time() - start > DRAIN_LIMIT:
                break
            await asyncio.sleep(0.1)
        # A little longer, so that a late duplicate would still be seen.
        await asyncio.sleep(1.0)
        self.drain_secs = loop.time() - start

    async def run(self):
        a = self.a
        checks = []  # (name, ok, detail)
        pre = await self.sandbox_stats()
        status, metrics_text = await one_shot(a.bot, "GET", "/metrics")
        m0 = parse_metrics(metrics_text if isinstance(metrics_text, str) else "")
        rss_start = proc_kb(a.bot_pid, "VmRSS")
        sbx_rss_start = proc_kb(a.sandbox_pid, "VmRSS")

        await self.drive()
        rss_mid = min(self.rss, key=lambda r: abs(r[0] - a.seconds / 2))[1] if self.rss else -1
        rss_load_end = self.rss[-1][1] if self.rss else -1
        await self.drain(pre["messages"])
        post = await self.sandbox_stats()
        rss_end = proc_kb(a.bot_pid, "VmRSS")
        hwm = proc_kb(a.bot_pid, "VmHWM")
        sbx_rss_end = proc_kb(a.sandbox_pid, "VmRSS")

        bot_alive, sbx_alive = alive(a.bot_pid), alive(a.sandbox_pid)
        try:
            hz_status, hz = await one_shot(a.bot, "GET", "/healthz")
        except Exception as e:  # noqa: BLE001 - reported as a failed invariant
            hz_status, hz = 0, str(e)
        try:
            _, metrics_text = await one_shot(a.bot, "GET", "/metrics")
            m1 = parse_metrics(metrics_text if isinstance(metrics_text, str) else "")
        except Exception:
            m1 = {}
        leaks = []
        for session in (LEAK_SESSION,):
            _, got = await one_shot(a.sandbox, "GET", f"/_sandbox/messages?session={session}")
            leaks.append(len(got) if isinstance(got, list) else -1)

        def metric(name, **labels):
            key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        replies = post["messages"] - pre["messages"]
        total_sent = sum(self.sent.values())

        # ---- invariants ----------------------------------------------------------------
        for k in ORDER:
            bad = sum(self.wrong[k].values())
            want = KINDS[k]
            want_s = f"{want[1]} {json.dumps(want[2], ensure_ascii=False) if isinstance(want[2], dict) else want[2]}"
            checks.append((f"{k}: every answer is {want_s}", bad == 0 and self.sent[k] > 0,
                           f"{bad} of {self.sent[k]} unexpected: {dict(self.wrong[k])}"))
        checks.append(("no transport errors or timeouts", not self.transport_errors,
                       dict(self.transport_errors) or "none"))
        checks.append(("driver finished in time", self.hung_tasks == 0, f"{self.hung_tasks} tasks hung"))
        checks.append(("dingbot process alive", bot_alive, f"pid {a.bot_pid}"))
        checks.append(("sandbox process alive", sbx_alive, f"pid {a.sandbox_pid}"))
        checks.append(("/healthz 200 at the end", hz_status == 200, f"HTTP {hz_status}"))
        checks.append(("replies received == valid callbacks accepted", replies == self.valid_accepted,
                       f"{replies} replies for {self.valid_accepted} accepted valid callbacks"))
        checks.append(("no reply to a refused callback", leaks == [0], f"{leaks[0]} messages in {LEAK_SESSION}"))
        sent_metric = metric("dingbot_replies_total", result="sent")
        failed_metric = metric("dingbot_replies_total", result="failed")
        throttled_metric = metric("dingbot_replies_total", result="throttled")
        checks.append(("dingbot counts every reply as sent",
                       sent_metric == self.valid_accepted and failed_metric == 0 and throttled_metric == 0,
                       f"sent {sent_metric:.0f}, failed {failed_metric:.0f}, throttled {throttled_metric:.0f}"))
        outcome_of = {"valid": "accepted", "retry": "duplicate", "replay": "replayed",
                      "forged": "bad_signature", "stale": "stale_timestamp",
                      "malformed": "bad_request", "foreign": "webhook_refused"}
        mismatch = {k: (self.sent[k], metric("dingbot_callbacks_total", outcome=o))
                    for k, o in outcome_of.items()
                    if metric("dingbot_callbacks_total", outcome=o) != self.sent[k]}
        for o in ("rate_limited", "shed", "too_large"):
            if metric("dingbot_callbacks_total", outcome=o):
                mismatch[o] = (0, metric("dingbot_callbacks_total", outcome=o))
        checks.append(("dingbot_callbacks_total{outcome} matches what was sent", not mismatch,
                       f"(sent, counted): {mismatch}" if mismatch else "all equal"))
        checks.append(("faults were injected on chat/get", sum(self.faults.values()) > 0 and self.fault_errors == 0,
                       f"{dict(self.faults)}, {self.fault_errors} admin errors"))

        levels, warn_kinds, panics = count_log(a.bot_log)
        checks.append(("no ERROR lines and no panic in dingbot's log", levels["ERROR"] == 0 and panics == 0,
                       f"ERROR {levels['ERROR']}, panics {panics}"))
        # Memory: the replay ring and the dedupe table have a fixed size, allocated at
        # start; a leak of even ~1 KiB per request would add tens of MiB over the second
        # half. Allowed: end ≤ 1.25 × middle + 16 MiB.
        limit_kb = rss_mid * 1.25 + 16 * 1024
        checks.append(("memory flat: RSS after drain ≤ 1.25 × middle + 16 MiB",
                       0 < rss_end <= limit_kb and rss_mid > 0,
                       f"start {rss_start / 1024:.1f}, middle {rss_mid / 1024:.1f}, end {rss_end / 1024:.1f} MiB "
                       f"(limit {limit_kb / 1024:.1f})"))
        # Flat over time, not only at the end: after the first quarter (allocator and pools
        # warmed up), the highest RSS of the last half may exceed the highest of the second
        # quarter by at most 10 % + 2 MiB. Over 30 minutes at 2,000/s (3.6 M callbacks) a
        # leak of 1 byte per callback would show as 3.4 MiB.
        warm = [b for t, b, _ in self.rss if a.seconds / 4 <= t < a.seconds / 2]
        late = [b for t, b, _ in self.rss if t >= a.seconds / 2]
        if warm and late:
            flat_kb = max(warm) * 1.10 + 2 * 1024
            checks.append(("memory flat over time: peak RSS of the last half ≤ 1.1 × second quarter's + 2 MiB",
                           max(late) <= flat_kb,
                           f"second quarter peak {max(warm) / 1024:.1f}, last half peak {max(late) / 1024:.1f} MiB "
                           f"(limit {flat_kb / 1024:.1f})"))

        # ---- report ---------------------------------------------------------------------
        lat = {k: sorted(v) for k, v in self.latency.items()}

        def pct(v, p):
            return f"{v[min(len(v) - 1, int(len(v) * p))] * 1000:.1f}" if v else "–"

        out = []
        out.append(f"## dingbot soak: {a.seconds} s, target {a.rate:g} req/s, {a.conns} connections, "
                   f"{a.groups} groups\n")
        out.append(f"Sent {total_sent} callbacks in {self.elapsed:.1f} s ({total_sent / self.elapsed:.0f} req/s); "
                   f"{len(self.groups_hit)} distinct groups got valid callbacks; "
                   f"{sum(c.opened for c in self.conns)} TCP connections opened.\n")
        out.append("| kind | sent | expected | HTTP statuses | unexpected | p50 ms | p99 ms |")
        out.append("|---|---:|---|---|---:|---:|---:|")
        for k in ORDER:
            w = KINDS[k]
            exp = f"{w[1]} " + (json.dumps(w[2], ensure_ascii=False) if isinstance(w[2], dict) else w[2])
            st = ", ".join(f"{s}×{n}" for s, n in sorted(self.statuses[k].items(), key=str))
            out.append(f"| {k} | {self.sent[k]} | {exp} | {st or '–'} | {sum(self.wrong[k].values())} "
                       f"| {pct(lat[k], 0.5)} | {pct(lat[k], 0.99)} |")
        out.append(f"| **total** | {total_sent} | | | {sum(sum(w.values()) for w in self.wrong.values())} | | |")
        out.append("")
        out.append("| figure | value |")
        out.append("|---|---|")
        out.append(f"| valid callbacks accepted (200 {{}}) | {self.valid_accepted} |")
        out.append(f"| replies received by the sink (/_sandbox/stats messages) | {replies} |")
        out.append(f"| lost / extra replies | {max(0, self.valid_accepted - replies)} / {max(0, replies - self.valid_accepted)} |")
        out.append(f"| replies to refused callbacks | {leaks[0]} |")
        out.append(f"| drain after the last request | {self.drain_secs:.1f} s |")
        out.append(f"| dingbot_replies_total sent / failed / throttled | {sent_metric:.0f} / {failed_metric:.0f} / {throttled_metric:.0f} |")
        out.append(f"| faults queued on chat/get (calls affected) | {', '.join(f'{k} ×{v}' for k, v in self.faults.items())} |")
        out.append(f"| sandbox calls: chat/get, gettoken, sendBySession | {post['chat_get'] - pre['chat_get']}, "
                   f"{post['gettoken'] - pre['gettoken']}, {post['send_by_session'] - pre['send_by_session']} |")
        code_re = re.compile(r'code="([^"]*)"')
        for endpoint in ("chat/get", "sendBySession"):
            prefix = f'dingbot_api_calls_total{{endpoint="{endpoint}"'
            codes = sorted((k, v - m0.get(k, 0.0)) for k, v in m1.items() if k.startswith(prefix))
            out.append(f"| dingbot {endpoint} results (code: calls) | " + ", ".join(
                f"{code_re.search(k).group(1)}: {v:.0f}" for k, v in codes if v and code_re.search(k)) + " |")
        retries = metric("dingbot_api_retries_total", endpoint="chat/get")
        out.append(f"| dingbot chat/get retries | {retries:.0f} |")
        out.append(f"| dingbot alive / sandbox alive / /healthz | {'yes' if bot_alive else 'NO'} / "
                   f"{'yes' if sbx_alive else 'NO'} / {hz_status} |")
        out.append(f"| dingbot VmRSS start / middle / end of load / after drain | {rss_start / 1024:.1f} / "
                   f"{rss_mid / 1024:.1f} / {rss_load_end / 1024:.1f} / {rss_end / 1024:.1f} MiB (peak VmHWM {hwm / 1024:.1f}) |")
        out.append(f"| sandbox VmRSS start / end | {sbx_rss_start / 1024:.1f} / {sbx_rss_end / 1024:.1f} MiB |")
        out.append(f"| dingbot log lines WARN / ERROR | {levels['WARN']} / {levels['ERROR']} |")
        out.append("")
        if warn_kinds:
            out.append("WARN lines by message: " + "; ".join(f"{m} ×{n}" for m, n in warn_kinds.most_common(8)))
            out.append("")
        series = " ".join(f"{t:.0f}s:{b / 1024:.0f}" for t, b, _ in self.rss[:: max(1, len(self.rss) // 12)])
        out.append(f"dingbot VmRSS MiB over time: {series}\n")
        out.append("| invariant | result | detail |")
        out.append("|---|---|---|")
        for name, ok, detail in checks:
            out.append(f"| {name} | {'ok' if ok else '**FAIL**'} | {detail} |")
        if self.wrong_examples:
            out.append("\nUnexpected answers (first 10):")
            out.extend(f"- {e}" for e in self.wrong_examples)
        failed = [c for c in checks if not c[1]]
        out.append("")
        out.append(f"SOAK {'PASSED' if not failed else 'FAILED'}: {len(checks) - len(failed)}/{len(checks)} invariants hold")
        report = "\n".join(out)
        print(report)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"sent": self.sent, "statuses": {k: {str(s): n for s, n in v.items()} for k, v in self.statuses.items()},
                           "valid_accepted": self.valid_accepted, "replies": replies,
                           "rss_kb": {"start": rss_start, "mid": rss_mid, "load_end": rss_load_end, "end": rss_end, "hwm": hwm},
                           "rss_series": self.rss, "log": levels, "checks": [(n, ok, str(d)) for n, ok, d in checks]},
                          f, ensure_ascii=False, indent=1, default=dict)
        return 0 if not failed else 1


LOG_LINE = re.compile(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s+(?:[^ ]*?: )?(.*)$")


def count_log(path: str):
    levels = collections.Counter({"WARN": 0, "ERROR": 0})
    kinds = collections.Counter()
    panics = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                if "panicked" in line:
                    panics += 1
                m = LOG_LINE.match(line)
                if not m:
                    continue
                levels[m.group(1)] += 1
                if m.group(1) == "WARN":
                    # The message is what precedes the first key=value field.
                    msg = re.split(r" \w+=", m.group(2), maxsplit=1)[0].strip()
                    kinds[msg] += 1
    except OSError:
        levels["ERROR"] += 1
    return levels, kinds, panics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bot", required=True)
    p.add_argument("--sandbox", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--bot-pid", type=int, required=True)
    p.add_argument("--sandbox-pid", type=int, required=True)
    p.add_argument("--bot-log", required=True)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--groups", type=int, default=3000)
    p.add_argument("--fault-every", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    if not (1 <= a.seconds <= 3600 and 1 <= a.rate <= 20000 and 1 <= a.conns <= 512 and 1 <= a.groups):
        print("soak_drive.py: bad arguments", file=sys.stderr)
        return 2
    return asyncio.run(Soak(a).run())


if __name__ == "__main__":
    sys.exit(main())
