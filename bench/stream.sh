#!/usr/bin/env bash
# Stream mode load run: the sandbox's Stream gateway pushes /info as fast as dingbot ACKs
# (unique msgIds over many groups), against signed HTTP callbacks to the same dingbot
# (dingtalk.mode = "both") in the same run. dingbot on core 0, the sandbox and the driver
# on core 1 (when taskset and 2 CPUs are there). Prints a markdown table and the ratio of
# dingbot CPU per answered /info, Stream / HTTP; writes it to bench/out/stream.md.
#
# Environment (defaults in brackets):
#   BIN [target/release/dingbot]  the dingbot binary (built with `cargo build --release`
#                                 unless it exists or SKIP_BUILD=1)
#   COUNT [20000]  messages per measured phase     NGROUPS [1000] groups (cidGen0== …)
#   WINDOW [64]    messages outstanding (Stream: unACKed frames; HTTP: connections)
#   ROUNDS [3]     stream/http phase pairs (the summary shows medians)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release/dingbot}
COUNT=${COUNT:-20000}
NGROUPS=${NGROUPS:-1000}
WINDOW=${WINDOW:-64}
ROUNDS=${ROUNDS:-3}
SKIP_BUILD=${SKIP_BUILD:-0}
for v in COUNT NGROUPS WINDOW ROUNDS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || { echo "$v must be a positive number" >&2; exit 1; }
done
(( COUNT <= 1000000 && NGROUPS <= 5000 && WINDOW <= 1024 && ROUNDS <= 20 )) ||
    { echo "COUNT ≤ 1000000, NGROUPS ≤ 5000, WINDOW ≤ 1024, ROUNDS ≤ 20" >&2; exit 1; }
while read -r v; do unset "$v"; done < <(compgen -e | grep '^DINGBOT_' || true)

if [[ ! -x $BIN && $SKIP_BUILD != 1 ]]; then
    cargo build --release --bin dingbot
fi
[[ -x $BIN ]] || { echo "no binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Core pinning (taskset, with 2 CPUs or more); arrays so that $! is the program's own pid.
CORE0=() CORE1=()
if command -v taskset >/dev/null && (( $(nproc) >= 2 )); then CORE0=(taskset -c 0) CORE1=(taskset -c 1); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # wait_http URL: up to 10 s
    for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "no answer from $1" >&2; return 1
}

SANDBOX_PORT=$(free_port)
DINGBOT_PORT=$(free_port)
SANDBOX=http://127.0.0.1:$SANDBOX_PORT
SECRET=demo-app-secret-0123456789abcdef

"${CORE1[@]}" "$BIN" sandbox --listen "127.0.0.1:$SANDBOX_PORT" --groups "$NGROUPS" --workers 1 \
    >"$WORK/sandbox.log" 2>&1 &
PIDS+=($!)
wait_http "$SANDBOX/_sandbox/stats"

cat >"$WORK/dingbot.toml" <<TOML
[server]
listen = "127.0.0.1:$DINGBOT_PORT"
workers = 1
[dingtalk]
app_key = "dingdemoappkey"
app_secret = "$SECRET"
oapi_base = "$SANDBOX"
api_base = "$SANDBOX"
mode = "both"
[rate_limit]
per_group_per_minute = 10000
[storage]
data_dir = "$WORK/data"
TOML
RUST_LOG=${RUST_LOG:-warn} "${CORE0[@]}" "$BIN" serve --config "$WORK/dingbot.toml" >"$WORK/dingbot.log" 2>&1 &
DINGBOT_PID=$!
PIDS+=("$DINGBOT_PID")
wait_http "http://127.0.0.1:$DINGBOT_PORT/healthz"
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$DINGBOT_PORT/readyz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$DINGBOT_PORT/readyz" >/dev/null || { cat "$WORK/dingbot.log" >&2; exit 1; }

mkdir -p bench/out
{
    echo "## Stream vs HTTP ($(date -u +%Y-%m-%d), $(basename "$BIN") $("$BIN" --version | cut -d' ' -f2), COUNT=$COUNT NGROUPS=$NGROUPS WINDOW=$WINDOW ROUNDS=$ROUNDS, $(nproc) CPUs)"
    echo
    "${CORE1[@]}" python3 bench/stream_drive.py "$DINGBOT_PID" "http://127.0.0.1:$DINGBOT_PORT" "$SANDBOX" \
        "$SECRET" "$COUNT" "$NGROUPS" "$WINDOW" "$ROUNDS"
} | tee bench/out/stream.md
