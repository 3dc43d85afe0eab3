#!/usr/bin/env python3
"""Layering checks for src/ (issue "One pipeline, any door"), run by .ci/run.

1. No DingTalk error code outside src/dingtalk/ (and src/sandbox/, which plays DingTalk):
   codes are interpreted once, in dingtalk::error, and everything else uses ErrorKind.
   Comments and `#[cfg(test)]` modules are not code and are skipped.
2. No module circles: the `crate::<module>` references between top-level modules of
   src/ (outside tests and comments) form no cycle.

Prints every violation and exits 1 if there is one.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Every errcode dingbot's DingTalk code knows (dingtalk/error.rs), and the session and
# robot-API codes the protocol doc names. A number that means something else in code
# (a port, a size) is not in this list.
CODES = [
    "130101", "43007", "40016", "49000", "40014", "40001", "42001", "70001", "400020",
    "40035", "60121", "60003", "60011", "90002", "90005", "90006", "90018", "90019",
    "300001", "300005",
]
CODE_RE = re.compile(r"(?<![\w.])(" + "|".join(CODES) + r")(?![\w.])")
OWNERS = ("dingtalk", "sandbox")


def code_only(text):
    """The text with `#[cfg(test)] mod ...` blocks at the end and // comments removed."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod \w+", text, re.M)
    if cut:
        text = text[: cut.start()]
    return re.sub(r"//.*", "", text)


def modules():
    for dirpath, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, SRC)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if rel.endswith(os.sep + "tests.rs"):
                continue
            with open(path, encoding="utf-8") as f:
                yield rel, top, code_only(f.read())


def main():
    failures = []
    edges = {}
    for rel, top, code in modules():
        if top not in OWNERS:
            for n, line in enumerate(code.splitlines(), 1):
                m = CODE_RE.search(line)
                if m:
                    failures.append(
                        f"src/{rel}:{n}: DingTalk code {m.group(1)} outside src/dingtalk/: "
                        "use dingtalk::ErrorKind"
                    )
        if top in ("lib", "main"):
            continue
        for m in re.finditer(r"\bcrate::([a-z_]+)", code):
            if m.group(1) != top:
                edges.setdefault(top, set()).add(m.group(1))
    # Cycles: depth-first search over the module graph.
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                failures.append("module circle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    for top in sorted(edges):
        print(f"  {top} -> {', '.join(sorted(edges[top]))}")
    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print("layering: ok (no DingTalk code outside dingtalk/, no module circle)")


main()
