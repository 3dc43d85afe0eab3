#!/usr/bin/env python3
"""Sends signed DingTalk group callbacks to a robot, for bench/instructions.sh.

Usage: drive.py PORT HOOK COUNT CONCURRENCY MODE TAG [GROUPS]

MODE "valid": every request is distinct, as DingTalk's are: its own msgId (from TAG and
the index), its own timestamp (consecutive milliseconds from 30 minutes ago, offset per
TAG) and the matching sign. MODE "forged": a well-formed but wrong sign. The text is
"/info", the conversationId cidGen{i % GROUPS}==. Prints "sent N status S:count ...".
Loopback only; bounded by COUNT and by a 600 s deadline.
"""

import base64
import hashlib
import hmac
import http.client
import json
import sys
import threading
import time
import zlib

SECRET = b"demo-app-secret-0123456789abcdef"
FORGED = "Zm9yZ2VkLXNpZ25hdHVyZS0wMTIzNDU2Nzg5YWJjZGU="
DEADLINE = time.monotonic() + 600


def main() -> int:
    port, hook, count, conc, mode, tag = sys.argv[1:7]
    port, count, conc = int(port), int(count), int(conc)
    groups = int(sys.argv[7]) if len(sys.argv) > 7 else 100
    now = int(time.time() * 1000)
    # Distinct timestamps per TAG: a (timestamp, sign) pair is accepted once per process.
    base = now - 1_800_000 + (zlib.crc32(tag.encode()) % 1000) * 1000
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(t, count, conc):
            if time.monotonic() > DEADLINE:
                break
            ts = str(base + i)
            if mode == "valid":
                mac = hmac.new(SECRET, ts.encode() + b"\n" + SECRET, hashlib.sha256)
                sign = base64.b64encode(mac.digest()).decode()
            else:
                sign = FORGED
            g = i % groups
            body = json.dumps(
                {
                    "conversationId": f"cidGen{g}==",
                    "atUsers": [{"dingtalkId": "$:LWCP_v1:$benchrobot"}],
                    "chatbotCorpId": "dingbenchcorp",
                    "chatbotUserId": "$:LWCP_v1:$benchrobot",
                    "msgId": f"msgDrive{tag}{i}==",
                    "senderNick": "张小明",
                    "isAdmin": False,
                    "senderStaffId": "user123",
                    "sessionWebhookExpiredTime": now + 3_600_000,
                    "createAt": int(ts),
                    "senderCorpId": "dingbenchcorp",
                    "conversationType": "2",
                    "senderId": "$:LWCP_v1:$benchsender",
                    "conversationTitle": f"压测群{g}",
                    "isInAtList": True,
                    "sessionWebhook": hook,
                    "text": {"content": " /info"},
                    "robotCode": "dingdemoappkey",
                    "msgtype": "text",
                },
                ensure_ascii=False,
            ).encode()
            headers = {"Content-Type": "application/json", "timestamp": ts, "sign": sign}
            conn.request("POST", "/dingtalk/callback", body, headers)
            resp = conn.getresponse()
            resp.read()
            with lock:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = sum(statuses.values())
    print("sent", sent, "status", " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
    return 0 if sent == count else 1


if __name__ == "__main__":
    sys.exit(main())
