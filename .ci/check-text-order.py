#!/usr/bin/env python3
"""Checks that a release dingbot's code is laid out by bench/text-order.txt (see build.rs).

usage: check-text-order.py <binary> <order file>

Fails (exit 1) when fewer than 95 % of the listed functions exist in the binary (the list
is stale: Cargo.lock changed, or functions were renamed or removed; run
bench/text-order.sh), or when they are not placed first in .text in the listed order (the
linker ignored the list). When the binary was built by another toolchain than the one the
list was made with, every symbol name differs: that is reported loudly and not failed,
since CI's toolchain is not ours to choose (a pinned one would have to be downloaded).
"""
import hashlib
import os
import subprocess
import sys


def main(binary, order_path):
    lines = open(order_path).read().splitlines()
    made_with = next((l[len("# toolchain: "):].strip() for l in lines
                      if l.startswith("# toolchain: ")), None)
    listed = [l.strip() for l in lines if l.strip() and not l.startswith("#")]
    this = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    if made_with != this:
        print(f"WARNING: {order_path} was made with {made_with}, this toolchain is {this}: "
              "the code layout is not applied and resident memory is higher than the README "
              "states; run bench/text-order.sh with this toolchain")
        return 0
    try:
        nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True)
    except FileNotFoundError:
        print("FAIL: nm (binutils) is needed to read the binary's symbols")
        return 1
    if nm.returncode != 0:
        print(f"nm failed on {binary}: {nm.stderr.strip()}")
        return 1
    where = {}
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            where.setdefault(parts[2], int(parts[0], 16))
    found = [name for name in listed if name in where]
    share = len(found) / len(listed) if listed else 0.0
    print(f"{len(found)} of {len(listed)} listed functions are in {binary} ({share:.1%})")
    failed = False
    if share < 0.95:
        lock = os.path.join(os.path.dirname(os.path.abspath(order_path)), "..", "Cargo.lock")
        made_for = next((l.split(":", 1)[1].strip() for l in lines
                         if l.startswith("# Cargo.lock sha256:")), None)
        this_lock = hashlib.sha256(open(lock, "rb").read()).hexdigest()
        cause = ("Cargo.lock changed since it was made" if made_for != this_lock
                 else "functions were renamed or removed")
        print(f"FAIL: the list is stale ({cause}); "
              "run bench/text-order.sh and commit bench/text-order.txt")
        failed = True
    addresses = [where[name] for name in found]
    out_of_order = sum(1 for a, b in zip(addresses, addresses[1:]) if b < a)
    listed_set = set(found)
    end = max(addresses, default=0)
    # Functions of the binary outside the list that the linker put among the listed ones.
    inside = sum(1 for name, addr in where.items()
                 if name not in listed_set and min(addresses, default=0) <= addr < end)
    print(f"listed functions out of order: {out_of_order}; unlisted ones among them: {inside}")
    if out_of_order or inside > len(found) // 100:
        print("FAIL: the linker did not lay the code out by the list (see build.rs)")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
