#!/usr/bin/env python3
"""Appends (timestamp, sign) lines to the table the wrk script reads.

Usage: signs.py FILE SECRET BASE_MS FROM_INDEX COUNT

Line i (0-based) is "<BASE_MS + i> <sign>\\n", where
sign = base64(HMAC-SHA256(key=SECRET, msg=f"{ts}\\n{SECRET}")). Every line has the same
length (13-digit ms timestamp, 44-char sign), so the Lua side can seek to line i directly.
Lines FROM_INDEX .. FROM_INDEX+COUNT-1 are appended; the file must hold exactly
FROM_INDEX lines before.
"""

import base64
import hashlib
import hmac
import os
import sys

LINE_LEN = 13 + 1 + 44 + 1


def main() -> int:
    path, secret, base_ms, start, count = sys.argv[1:6]
    key = secret.encode()
    suffix = b"\n" + key
    base_ms, start, count = int(base_ms), int(start), int(count)
    have = os.path.getsize(path) // LINE_LEN if os.path.exists(path) else 0
    if have != start:
        print(f"signs.py: {path} has {have} lines, expected {start}", file=sys.stderr)
        return 1
    template = hmac.new(key, digestmod=hashlib.sha256)
    out = []
    for i in range(start, start + count):
        ts = str(base_ms + i).encode()
        if len(ts) != 13:
            print("signs.py: timestamp is not 13 digits", file=sys.stderr)
            return 1
        h = template.copy()
        h.update(ts + suffix)
        out.append(ts + b" " + base64.b64encode(h.digest()) + b"\n")
    with open(path, "ab") as f:
        f.write(b"".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
