#!/usr/bin/env bash
# Writes bench/text-order.txt: the functions of the dingbot binary that a serving dingbot
# runs, hottest first, for the linker to place together (see build.rs for why).
#
# Runs the release build under callgrind (valgrind) through bench/run.sh's scenarios and
# bench/stream.sh, so start-up, the cold start of many groups, the warm /info path, /help,
# lookups with the cache off, refusals, the Stream door and shutdown all count; then keeps
# the functions callgrind saw in the dingbot binary, ordered by the instructions spent in
# them (the HTTP door's first, then those only the Stream door runs). Rerun after a change of
# toolchain or dependencies (their symbol names change) or when a hot path moves; a
# stale list costs memory, never correctness. Needs valgrind and wrk (Debian packages).
#
#   SCENARIOS ["info help miss forged"]  bench/run.sh scenarios to run under callgrind
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
command -v valgrind >/dev/null || {
    echo "text-order.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 1
}
WORK=$(mktemp -d /tmp/dingbot-text-order.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --locked --quiet

# bench/run.sh starts `[taskset -c N] dingbot serve …` after BOT_WRAP; callgrind runs the
# command without the pinning (valgrind runs the program on its own thread scheduler).
cat >"$WORK/wrap.sh" <<EOF
#!/usr/bin/env bash
if [[ \$1 == taskset ]]; then shift 3; fi
exec valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \\
    --callgrind-out-file="$WORK/callgrind.%p" "\$@"
EOF
BOT_WRAP="bash $WORK/wrap.sh" SKIP_BUILD=1 SCENARIOS="${SCENARIOS:-info help miss forged}" \
    WARMUP=2 DURATION=3 RUNS=1 CONNS=16 EXTRA_CONNS=16 bash bench/run.sh >"$WORK/run.log" 2>&1 || {
    tail -20 "$WORK/run.log" >&2
    exit 1
}

# The Stream door: bench/stream.sh runs `$BIN sandbox …` and `$BIN serve …`; only the latter
# goes under callgrind.
cat >"$WORK/bin.sh" <<EOF
#!/usr/bin/env bash
if [[ \$1 == serve ]]; then
    exec valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \\
        --callgrind-out-file="$WORK/stream-callgrind.%p" "$ROOT/target/release/dingbot" "\$@"
fi
exec "$ROOT/target/release/dingbot" "\$@"
EOF
chmod +x "$WORK/bin.sh"
BIN="$WORK/bin.sh" COUNT=2000 NGROUPS=200 WINDOW=16 ROUNDS=1 bash bench/stream.sh >"$WORK/stream.log" 2>&1 || {
    tail -20 "$WORK/stream.log" >&2
    exit 1
}

SCENARIO_COUNT=$(wc -w <<<"${SCENARIOS:-info help miss forged}")
python3 - "$ROOT/target/release/dingbot" "$ROOT/bench/text-order.txt" "$(rustc -V)" \
    "$ROOT/Cargo.lock" $((SCENARIO_COUNT + 1)) "$WORK" <<'PY'
import collections, glob, hashlib, os, sys
binary, out, rustc, lock, expected, work = sys.argv[1:7]
binary = os.path.realpath(binary)  # callgrind names objects by their real path
# callgrind writes its file when the program exits: one per dingbot run, each complete.
def complete(pattern):
    return [p for p in glob.glob(os.path.join(work, pattern))
            if any(l.startswith("totals:") for l in open(p, errors="replace"))]
http, stream = complete("callgrind.*"), complete("stream-callgrind.*")
if len(http) + len(stream) < int(expected):
    sys.exit(f"{len(http) + len(stream)} complete callgrind files for {expected} dingbot "
             "runs; a run was killed before it exited?")

def costs(paths):
    cost = collections.Counter()
    for path in paths:
        obj = fn = None
        after_call = False
        for line in open(path, errors="replace"):
            if line.startswith("ob="):
                obj = os.path.realpath(line[3:].strip())
            elif line.startswith("fn="):
                # Rust functions only (_ZN…, _R…): each is a section of its own the linker can
                # place. callgrind's 'N marks a recursion cycle of the same function.
                fn = line[3:].strip().split("'")[0] if obj == binary else None
                if fn and fn.startswith(("_ZN", "_R")):
                    cost[fn] += 0
                else:
                    fn = None
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the callee's, not this function's
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                elif fn:
                    parts = line.split()
                    if len(parts) >= 2:
                        cost[fn] += int(parts[1])
    return cost

# The HTTP door's functions first, then those only the Stream door runs: a deployment
# with one door then keeps the other's code out of its resident pages.
first, then = costs(http), costs(stream)
if len(first) < 500:
    sys.exit(f"only {len(first)} functions of {binary} seen; did the scenarios run?")
names = sorted(first, key=lambda name: (-first[name], name))
names += sorted((n for n in then if n not in first), key=lambda name: (-then[name], name))
lock_sha = hashlib.sha256(open(lock, "rb").read()).hexdigest()
with open(out, "w") as f:
    f.write("# Generated by bench/text-order.sh: the functions a serving dingbot runs, hottest\n")
    f.write("# first, for the linker (build.rs). Regenerate, do not edit.\n")
    f.write(f"# toolchain: {rustc}\n")
    f.write(f"# Cargo.lock sha256: {lock_sha}\n")
    f.write("\n".join(names) + "\n")
print(f"{len(names)} functions written to {out} ({len(names) - len(first)} for Stream only)")
PY
