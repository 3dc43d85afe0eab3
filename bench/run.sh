#!/usr/bin/env bash
# Load harness: dingbot (core 0) against the built-in sandbox + wrk (core 1), on loopback.
# Prints a markdown table and writes it to bench/out/results.md. See bench/README.md.
#
# Environment overrides (defaults in brackets):
#   DURATION [10]       seconds per measured run
#   RUNS [3]            measured runs per scenario (the table shows medians)
#   CONNS ["16 64"]     connection counts for the main scenario (info)
#   EXTRA_CONNS [64]    connection count for the other scenarios
#   SCENARIOS ["info miss forged"]  (also available: help; redis: info with state.backend
#                       = "redis" against a redis-server on core 1, e.g. SCENARIOS="info redis")
#     info    /info with the group-info cache warm (the steady state)
#     miss    /info with the cache off (bot.info_cache_ttl_secs = 0): chat/get every time
#     help    /help (no lookup at all)
#     forged  wrong sign on every request (401)
#     groups  GROUPS_TOTAL [1000000] callbacks (GROUPS_TEXT [/info]) from as many distinct
#             groups, then the wait for eviction: peak RSS, what the limiter and caches hold
#     bare    not dingbot: examples/bare_handler, the baseline (verify, parse, reply inline)
#     bare-forged  the same baseline refusing forged signs (verify, 401): the rejection floor
#     ab      A/B: this dingbot and AB_BIN [same binary; "bare" = the baseline] with AB_ENV,
#             on core 0 at the same time, AB_ROUNDS [5] × DURATION; reports B/A CPU per request
#             (AB_TEXT [/info]; AB_MODE [valid] or forged)
#   WARMUP [2]          unmeasured seconds before each scenario's runs
#   BENCH_GROUPS [1000] groups the callbacks are spread over (cidGen0== … ), ≤ 5000
#   SKIP_BUILD [0]      1: use the existing target/release/dingbot as is
#   KEEP [0]            1: keep the work dir (configs, logs, signature table)
#   PROFILE [0]         1: `perf record -g` dingbot during run 1 of each scenario
#                       (bench/out/perf-<scenario>.data; needs linux-perf)
#   QUIET_WAIT [0]      wait up to this many seconds for the load average to drop below 1
#   RUST_LOG            passed to dingbot (default: dingbot's own, i.e. info)
#   BOT_WRAP            a command dingbot `serve` runs under, e.g. "env GLIBC_TUNABLES=…"
#                       (a wrapper must forward SIGTERM; peak RSS is then the wrapper's)
#   MAX_IN_FLIGHT [1024], MAX_PARALLEL [32]: server.max_in_flight and
#                       dingtalk.max_parallel_requests of the generated config
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh
OUT=$ROOT/bench/out
BIN=$ROOT/target/release/dingbot
BARE_BIN=$ROOT/target/release/examples/bare_handler

DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
CONNS=${CONNS:-"16 64"}
EXTRA_CONNS=${EXTRA_CONNS:-64}
SCENARIOS=${SCENARIOS:-"info miss forged"}
WARMUP=${WARMUP:-2}
BENCH_GROUPS=${BENCH_GROUPS:-1000}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-0}
QUIET_WAIT=${QUIET_WAIT:-0}
SANDBOX_GROUPS=5000
# Lines of signature table allowed per second of wrk before the rate is known (warm-up).
RATE_CAP=${RATE_CAP:-40000}

APP_KEY=dingdemoappkey
APP_SECRET=demo-app-secret-0123456789abcdef
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 1 && $DURATION -le 600 ]] || die "DURATION must be 1..600"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 && $RUNS -le 20 ]] || die "RUNS must be 1..20"
[[ $WARMUP =~ ^[0-9]+$ && $WARMUP -le 60 ]] || die "WARMUP must be 0..60"
[[ $QUIET_WAIT =~ ^[0-9]+$ && $QUIET_WAIT -le 3600 ]] || die "QUIET_WAIT must be 0..3600"
[[ $BENCH_GROUPS =~ ^[0-9]+$ && $BENCH_GROUPS -ge 1 && $BENCH_GROUPS -le $SANDBOX_GROUPS ]] ||
    die "BENCH_GROUPS must be 1..$SANDBOX_GROUPS"

# DINGBOT_* variables in the caller's environment would override the generated config.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^DINGBOT_' || true)

# ---- prerequisites ------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required (signature table, report)"
command -v curl >/dev/null || die "curl is required"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    if ! { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq wrk >/dev/null; }; then
        die "cannot install wrk"
    fi
fi
NCPU=$(nproc)
if ((NCPU >= 2)); then
    PIN_BOT=(taskset -c 0)
    PIN_LOAD=(taskset -c 1)
else
    log "only $NCPU CPU: running unpinned, numbers are not comparable"
    PIN_BOT=()
    PIN_LOAD=()
fi
if [[ $PROFILE == 1 ]]; then command -v perf >/dev/null || die "PROFILE=1 needs perf (apt-get install linux-perf)"; fi
if [[ $SKIP_BUILD == 1 && -x $BIN ]]; then
    log "SKIP_BUILD=1: using $BIN as is"
else
    log "cargo build --release (no-op when up to date)"
    timeout 3600 cargo build --release --locked --quiet || die "build failed"
    if [[ " $SCENARIOS " == *" bare "* || " $SCENARIOS " == *" bare-forged "* || ${AB_BIN:-} == bare ]]; then
        timeout 3600 cargo build --release --locked --quiet --example bare_handler || die "build failed"
    fi
fi

# ---- work dir, process bookkeeping, cleanup -------------------------------------------
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/dingbot-bench.XXXXXX)
SANDBOX_PID=""
BOT_PID=""
AB_PID=""

REDIS_PID=""
cleanup() {
    stop_pid "$REDIS_PID"
    stop_pid "$BOT_PID"
    stop_pid "$AB_PID"
    stop_pid "$SANDBOX_PID"
    if [[ $KEEP == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

proc_ticks() { # utime+stime of a whole process, in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
proc_kb() { # pid field (VmRSS|VmHWM)
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}
cpu_busy() { # cpuN: "busy total" jiffies from /proc/stat
    awk -v c="$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}
sandbox_stat() { # field name from /_sandbox/stats
    curl -fsS --max-time 2 "$SANDBOX_URL/_sandbox/stats" |
        python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"
}

# ---- sandbox (core 1) -----------------------------------------------------------------
SANDBOX_PORT=$(free_port)
SANDBOX_URL=http://127.0.0.1:$SANDBOX_PORT
log "starting sandbox on $SANDBOX_URL ($SANDBOX_GROUPS generated groups, core 1)"
"${PIN_LOAD[@]}" "$BIN" sandbox --listen "127.0.0.1:$SANDBOX_PORT" --groups "$SANDBOX_GROUPS" \
    --workers 1 >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
wait_http "$SANDBOX_URL/_sandbox/stats" 20 || {
    tail -20 "$WORK/sandbox.log" >&2
    die "sandbox did not start"
}
HOOK="$SANDBOX_URL/robot/sendBySession?session=bench"

# ---- dingbot (core 0) -------------------------------------------------------------------
BOT_PORT=$(free_port)
BOT_URL=http://127.0.0.1:$BOT_PORT
write_config() { # file info_cache_ttl_secs [bindings, default BENCH_GROUPS]
    {
        cat <<EOF
# Generated by bench/run.sh
[server]
listen = "127.0.0.1:$BOT_PORT"
workers = 1
shutdown_grace_secs = 2
max_in_flight = ${MAX_IN_FLIGHT:-1024}

[dingtalk]
app_key = "$APP_KEY"
app_secret = "$APP_SECRET"
oapi_base = "$SANDBOX_URL"
max_parallel_requests = ${MAX_PARALLEL:-32}
api_base = "$SANDBOX_URL"

[rate_limit]
per_group_per_minute = 10000

[bot]
language = "zh"
info_cache_ttl_secs = $2

[storage]
data_dir = "${DATA_DIR:-$WORK/data}"

[log]
format = "text"
${EXTRA_TOML:-}
EOF
        for ((i = 0; i < ${3:-$BENCH_GROUPS}; i++)); do
            printf '\n[[groups]]\nchatid = "chatgen%d"\nopen_conversation_id = "cidGen%d=="\n' "$i" "$i"
        done
    } >"$1"
}

start_bot() { # config log [bare]
    if [[ ${3:-} == bare ]]; then
        "${PIN_BOT[@]}" "$BARE_BIN" "127.0.0.1:$BOT_PORT" "$APP_SECRET" >"$2" 2>&1 &
    else
        ${BOT_WRAP:-} "${PIN_BOT[@]}" "$BIN" serve --config "$1" >"$2" 2>&1 &
    fi
    BOT_PID=$!
    wait_http "$BOT_URL/healthz" 20 || {
        tail -20 "$2" >&2
        die "dingbot did not start"
    }
    # Fetches and caches the access token, so the first measured request does not.
    wait_http "$BOT_URL/readyz" 10 || die "dingbot is not ready (see $2)"
}

# ---- signature table --------------------------------------------------------------------
# One line per valid request; a line is never reused within one dingbot process (dingbot
# refuses a second message on a (timestamp, sign) pair). dingbot restarts per scenario, so
# each scenario starts again at line 0. Timestamps are consecutive ms from TABLE_BASE,
# which must stay inside dingbot's ±3600 s window.
TABLE=$WORK/signs.txt
TABLE_BASE=0
TABLE_HAVE=0
new_table() {
    TABLE_BASE=$(($(now_ms) - 30 * 60 * 1000))
    TABLE_HAVE=0
    : >"$TABLE"
}
ensure_table() { # lines needed in total
    local need=$1 now
    now=$(now_ms)
    if ((TABLE_BASE + need > now + 55 * 60 * 1000)); then
        die "a scenario needs $need signed requests; more than the clock window holds (lower DURATION/RUNS)"
    fi
    if ((need > TABLE_HAVE)); then
        python3 "$ROOT/bench/signs.py" "$TABLE" "$APP_SECRET" "$TABLE_BASE" "$TABLE_HAVE" \
            $((need - TABLE_HAVE)) || die "signature table generation failed"
        TABLE_HAVE=$need
    fi
}

# ---- one wrk run ------------------------------------------------------------------------
# Sets the WRK_* variables from the BENCH line callback.lua prints.
CURSOR=0
WRK_FIELDS="requests duration_us p50_us p99_us non2xx timeouts connect_err read_err write_err next_index exhausted"
WRK_requests=0 WRK_duration_us=0 WRK_p50_us=0 WRK_p99_us=0 WRK_non2xx=0 WRK_timeouts=0
WRK_connect_err=0 WRK_read_err=0 WRK_write_err=0 WRK_next_index=0 WRK_exhausted=0
run_wrk() { # mode text conns seconds avail
    local mode=$1 text=$2 conns=$3 secs=$4 avail=$5 out
    if [[ $mode == valid ]]; then ensure_table $((CURSOR + avail)); fi
    out=$(timeout $((secs + 60)) "${PIN_LOAD[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
        -s "$ROOT/bench/callback.lua" "$BOT_URL/dingtalk/callback" -- \
        "$mode" "$TABLE" "$CURSOR" "$avail" "$text" "$BENCH_GROUPS" "$HOOK" \
        $(($(now_ms) + 3 * 3600 * 1000)) 1 "$(now_ms)") || die "wrk failed: $out"
    local line
    line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk: $out"
    local kv k v
    for kv in ${line#BENCH }; do
        k=${kv%%=*} v=${kv#*=}
        [[ " $WRK_FIELDS " == *" $k "* && $v =~ ^[0-9]+$ ]] || die "unexpected wrk output: $kv"
        printf -v "WRK_$k" '%s' "$v"
    done
    if [[ $mode == valid ]]; then CURSOR=$WRK_next_index; fi
}

wait_replies() { # base expected: wait (≤ 15 s) until the sink has base+expected messages or stops growing
    local base=$1 expected=$2 last=-1 same=0 cur i
    for ((i = 0; i < 150; i++)); do
        cur=$(sandbox_stat messages)
        ((cur - base >= expected)) && break
        if ((cur == last)); then
            same=$((same + 1))
            ((same >= 10)) && break
        else
            same=0
        fi
        last=$cur
        sleep 0.1
    done
}

# ---- scenarios ----------------------------------------------------------------------------
RUNS_TSV=$OUT/runs.tsv
SCEN_TSV=$WORK/scenarios.tsv
printf 'key\trun\trequests\trps\tok_rps\treplies_rps\tp50_ms\tp99_ms\tnon2xx\tbot_us_per_req\tbot_us_per_reply\tbot_cpu_pct\tsbx_us_per_req\tcore0_pct\tcore1_pct\treplies\treply_ratio\tchat_get\tnote\n' >"$RUNS_TSV"
printf 'key\tlabel\tconns\tidle_rss_kb\tpeak_rss_kb\n' >"$SCEN_TSV"

scenario() { # key label mode text conns info_cache_ttl_secs [bare]
    local key=$1 label=$2 mode=$3 text=$4 conns=$5 ttl=$6 run
    log "scenario $key: $label, $conns connections, ${WARMUP}s warm-up + $RUNS × ${DURATION}s"
    curl -fsS --max-time 2 -X POST -o /dev/null "$SANDBOX_URL/_sandbox/reset" || die "sandbox reset failed"
    if [[ $mode == valid ]]; then new_table; fi
    CURSOR=0
    write_config "$WORK/dingbot-$key.toml" "$ttl"
    start_bot "$WORK/dingbot-$key.toml" "$WORK/dingbot-$key.log" "${7:-}"
    local idle_kb
    idle_kb=$(proc_kb "$BOT_PID" VmRSS)

    local rate=$RATE_CAP
    if ((WARMUP > 0)); then
        local mw
        mw=$(sandbox_stat messages)
        run_wrk "$mode" "$text" "$conns" "$WARMUP" $((WARMUP * RATE_CAP))
        rate=$((WRK_requests * 1000000 / (WRK_duration_us > 0 ? WRK_duration_us : 1)))
        ((WRK_exhausted == 0)) || log "warm-up ran out of signatures (raise RATE_CAP)"
        if [[ $mode == valid ]]; then wait_replies "$mw" $((WRK_requests - WRK_non2xx)); fi
    fi
    # Enough signatures for twice the warm-up rate (at least 1000/s).
    local avail=$((DURATION * (rate * 2 > 1000 ? rate * 2 : 1000)))

    for ((run = 1; run <= RUNS; run++)); do
        local m0 c0 t0 s0 b0 a0 w0 m1 c1 t1 s1 b1 a1 w1 note=""
        m0=$(sandbox_stat messages)
        c0=$(sandbox_stat chat_get)
        t0=$(proc_ticks "$BOT_PID")
        s0=$(proc_ticks "$SANDBOX_PID")
        read -r b0 a0 < <(cpu_busy cpu0)
        read -r w0 _ < <(cpu_busy cpu1)
        local wall0 perf_pid=""
        wall0=$(now_ms)
        if [[ $PROFILE == 1 && $run == 1 ]]; then
            timeout $((DURATION + 30)) perf record -q -e cpu-clock -F ${PERF_FREQ:-997} ${PERF_CG:--g} -p "$BOT_PID" \
                -o "$OUT/perf-$key.data" -- sleep "$DURATION" >/dev/null 2>&1 &
            perf_pid=$!
        fi
        run_wrk "$mode" "$text" "$conns" "$DURATION" "$avail"
        if [[ -n $perf_pid ]]; then wait "$perf_pid" || log "perf record failed"; fi
        local ok=$((WRK_requests - WRK_non2xx))
        if [[ $mode == valid ]]; then wait_replies "$m0" "$ok"; else wait_replies "$m0" 0; fi
        local wall=$(($(now_ms) - wall0))
        m1=$(sandbox_stat messages)
        c1=$(sandbox_stat chat_get)
        t1=$(proc_ticks "$BOT_PID")
        s1=$(proc_ticks "$SANDBOX_PID")
        read -r b1 a1 < <(cpu_busy cpu0)
        read -r w1 _ < <(cpu_busy cpu1)
        local req=$WRK_requests
        ((WRK_exhausted == 0)) || note="ran out of signatures after $CURSOR lines ($WRK_exhausted requests resent; their 403s are in non-2xx)"
        ((WRK_timeouts + WRK_connect_err + WRK_read_err + WRK_write_err == 0)) ||
            note="${note:+$note; }socket errors: connect $WRK_connect_err, read $WRK_read_err, write $WRK_write_err, timeout $WRK_timeouts"
        python3 - "$key" "$run" "$req" "$WRK_duration_us" "$WRK_p50_us" "$WRK_p99_us" "$WRK_non2xx" \
            "$((t1 - t0))" "$((s1 - s0))" "$CLK_TCK" "$wall" "$((b1 - b0))" "$((a1 - a0))" \
            "$((w1 - w0))" "$((m1 - m0))" "$((c1 - c0))" "$note" >>"$RUNS_TSV" <<'PY'
import sys
(key, run, req, dur_us, p50, p99, non2xx, bot_t, sbx_t, tck, wall_ms, busy0, all0, busy1,
 replies, chat_get, note) = sys.argv[1:]
req, dur_us, tck, wall_ms = int(req), int(dur_us), int(tck), int(wall_ms)
ok, replies = req - int(non2xx), int(replies)
bot_us = int(bot_t) * 1e6 / tck
sbx_us = int(sbx_t) * 1e6 / tck
all0 = int(all0) or 1
rate = lambda n: f"{n * 1e6 / dur_us:.1f}" if dur_us else "nan"
per = lambda us, n: f"{us / n:.2f}" if n else "nan"
row = [key, run, req, rate(req), rate(ok), rate(replies),
       f"{int(p50) / 1000:.3f}", f"{int(p99) / 1000:.3f}", non2xx,
       per(bot_us, req), per(bot_us, replies), f"{bot_us / 1000 / wall_ms * 100:.1f}",
       per(sbx_us, req), f"{int(busy0) / all0 * 100:.1f}", f"{int(busy1) / all0 * 100:.1f}",
       replies, f"{replies / req:.3f}" if req else "nan", chat_get, note]
print("\t".join(str(x) for x in row))
PY
        log "  run $run: $(tail -1 "$RUNS_TSV" | cut -f3-10 | tr '\t' ' ') (requests, req/s, 2xx/s, replies/s, p50, p99 ms, non-2xx, bot µs/req)"
    done
    ${SCENARIO_END_HOOK:-:}
    local peak_kb
    peak_kb=$(proc_kb "$BOT_PID" VmHWM)
    printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "$conns" "$idle_kb" "$peak_kb" >>"$SCEN_TSV"
    stop_pid "$BOT_PID"
    BOT_PID=""
}

# ---- redis: the info scenario with state.backend = "redis" -------------------------------
# A redis-server (no persistence) pinned with the load generator on core 1; per connection
# count the same /info load as `info`, then Redis's own counters: commands per answered
# callback (INFO commandstats; the health ping excluded) and memory per remembered callback
# (INFO memory used_memory after the scenario minus after FLUSHALL, ÷ remembered msgIds).
# Writes $WORK/redis.md.
redis_cmd() { redis-cli -p "$REDIS_PORT" "$@"; }
redis_field() { # section field
    redis_cmd INFO "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f {print $2}'
}
redis_bot_metrics() { # dingbot's own count of Redis round trips, before it stops
    curl -fsS --max-time 2 "$BOT_URL/metrics" >"$WORK/redis-bot-metrics.txt" || :
}
redis_scenario() {
    command -v redis-server >/dev/null || die "redis scenario: redis-server not installed (apt-get install redis-server)"
    if [[ -z $REDIS_PID ]]; then
        REDIS_PORT=$(free_port)
        "${PIN_LOAD[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 50); do redis_cmd PING >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    {
        echo
        echo "### Redis backend (\`SCENARIOS=redis\`)"
        echo
        echo "redis-server $(redis_field server redis_version) on core 1 with the load generator; commands and memory from Redis's INFO."
        echo
        echo "Round trips as dingbot counts them (\`dingbot_state_round_trips_total\`): *admission* is the one EVALSHA per callback; *group info* is the shared cache's claim (binding + summary or lock), once per group per 5 s per replica (its local cache's lifetime when replicas share one)."
        echo
        echo "| scenario | answered callbacks | admission round trips per callback | group-info round trips per callback | EVALSHA per callback (Redis) | all commands per callback (Redis) | Redis memory per remembered callback |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
    } >"$WORK/redis.md"
    local c
    for c in $CONNS; do
        redis_cmd FLUSHALL >/dev/null
        redis_cmd CONFIG RESETSTAT >/dev/null
        local mem0
        mem0=$(redis_field memory used_memory)
        EXTRA_TOML=$(printf '\n[state]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT")
        SCENARIO_END_HOOK=redis_bot_metrics
        scenario "redis-c$c" "/info like info-c$c, state.backend = redis (EVALSHA per callback)" \
            valid "/info" "$c" 3600
        SCENARIO_END_HOOK=""
        EXTRA_TOML=""
        local answered evalsha all mem1 remembered
        answered=$(sandbox_stat messages)
        evalsha=$(redis_cmd INFO commandstats | tr -d '\r' | awk -F'[=,:]' '$1 == "cmdstat_evalsha" {print $3}')
        all=$(redis_cmd INFO commandstats | tr -d '\r' |
            awk -F'[=,:]' '/^cmdstat_/ && $1 !~ /cmdstat_(ping|info|config|flushall|client|hello|select)$/ {n += $3} END {print n + 0}')
        mem1=$(redis_field memory used_memory)
        remembered=$(redis_cmd --scan --pattern 'dingbot:m:*' | wc -l)
        python3 - "$c" "$answered" "${evalsha:-0}" "$all" "$mem0" "$mem1" "$remembered" "$WORK/redis-bot-metrics.txt" >>"$WORK/redis.md" <<'PY'
import re, sys
c = sys.argv[1]
answered, evalsha, all_, mem0, mem1, remembered = map(int, sys.argv[2:8])
text = open(sys.argv[8]).read() if sys.argv[8] else ""
def metric(pattern):
    return sum(float(m) for m in re.findall(pattern + r"\S*\s+([0-9.e+]+)", text))
admit = metric(r'dingbot_state_round_trips_total\{operation="admit"\}')
info = metric(r'dingbot_state_round_trips_total\{operation="info"\}')
per = lambda n, d: f"{n / d:.3f}" if d else "nan"
mem = f"{(mem1 - mem0) / remembered:.0f} B ({remembered} remembered)" if remembered else "nan"
print(f"| redis-c{c} | {answered} | {per(admit, answered)} | {per(info, answered)} | {per(evalsha, answered)} | {per(all_, answered)} | {mem} |")
PY
    done
}

# ---- groups: many distinct groups, then eviction ------------------------------------------
# GROUPS_TOTAL callbacks, each from a group of its own (no [[groups]] bindings, so /info runs
# the resolver chain against the sandbox and caches what it finds), as fast as dingbot takes
# them; then waits (≤ 150 s) for the limiter, the summary cache and the dedupe/replay sets
# to shrink, reading dingbot's own gauges from /metrics. Writes $WORK/groups.md.
metric() { # name[{labels}]: value from dingbot's /metrics, or -1
    curl -fsS --max-time 2 "$BOT_URL/metrics" 2>/dev/null |
        awk -v n="$1" '$1 == n { v = $2 } END { print (v == "" ? -1 : int(v)) }'
}
groups_scenario() {
    local total=${GROUPS_TOTAL:-1000000} text=${GROUPS_TEXT:-/info} conns=$EXTRA_CONNS
    [[ $total =~ ^[0-9]+$ && $total -ge 1000 && $total -le 2000000 ]] || die "GROUPS_TOTAL must be 1000..2000000"
    log "scenario groups: $total callbacks from $total distinct groups ($text), then eviction"
    curl -fsS --max-time 2 -X POST -o /dev/null "$SANDBOX_URL/_sandbox/reset" || die "sandbox reset failed"
    new_table
    CURSOR=0
    write_config "$WORK/dingbot-groups.toml" 60 0
    start_bot "$WORK/dingbot-groups.toml" "$WORK/dingbot-groups.log"
    local idle_kb peak_tracked=0 peak_cached=0 t n m0 started
    idle_kb=$(proc_kb "$BOT_PID" VmRSS)
    m0=$(sandbox_stat messages)
    started=$(now_ms)
    local saved_groups=$BENCH_GROUPS chunk=0
    BENCH_GROUPS=$total
    while ((CURSOR < total && chunk < 60)); do
        chunk=$((chunk + 1))
        run_wrk valid "$text" "$conns" 10 $((total - CURSOR))
        t=$(metric dingbot_tracked_groups)
        n=$(metric dingbot_cached_groups)
        ((t > peak_tracked)) && peak_tracked=$t
        ((n > peak_cached)) && peak_cached=$n
        log "  $CURSOR / $total sent; RSS $(($(proc_kb "$BOT_PID" VmRSS) / 1024)) MiB, peak $(($(proc_kb "$BOT_PID" VmHWM) / 1024)) MiB; tracked $t, cached $n"
    done
    BENCH_GROUPS=$saved_groups
    local sent=$CURSOR secs=$((($(now_ms) - started) / 1000))
    wait_replies "$m0" "$sent"
    local replies=$(($(sandbox_stat messages) - m0))
    local peak_kb end_kb i
    peak_kb=$(proc_kb "$BOT_PID" VmHWM)
    for ((i = 0; i < 30; i++)); do
        t=$(metric dingbot_tracked_groups)
        n=$(metric dingbot_cached_groups)
        ((t > peak_tracked)) && peak_tracked=$t
        ((n > peak_cached)) && peak_cached=$n
        ((t == 0 && n == 0)) && break
        sleep 5
    done
    end_kb=$(proc_kb "$BOT_PID" VmRSS)
    {
        echo
        echo "### Distinct groups"
        echo
        echo "$sent callbacks ($text) from $sent distinct groups in ${secs}s, $replies replies; then idle until evicted."
        echo
        echo "| measure | value |"
        echo "|---|---:|"
        echo "| idle RSS before | $((idle_kb / 1024)) MiB |"
        echo "| peak RSS (VmHWM) | $((peak_kb / 1024)) MiB |"
        echo "| RSS after eviction | $((end_kb / 1024)) MiB |"
        echo "| limiter groups: highest seen → after | $peak_tracked → $t |"
        echo "| cached group summaries: highest seen → after | $peak_cached → $n |"
        echo "| remembered msgIds / signature pairs after | $(metric 'dingbot_remembered_entries{set="dedupe"}') / $(metric 'dingbot_remembered_entries{set="replay"}') |"
    } >"$WORK/groups.md"
    stop_pid "$BOT_PID"
    BOT_PID=""
}

# ---- ab: two servers at once on core 0 ----------------------------------------------------
# A is this dingbot; B is AB_BIN (a dingbot binary, default the same one, or "bare") started
# with AB_ENV (e.g. "DINGBOT_SERVER__MAX_IN_FLIGHT=32"). Both share core 0 and each gets its
# own wrk (core 1) at EXTRA_CONNS connections, at the same time, for AB_ROUNDS rounds of
# DURATION s. Whatever else the machine does then slows both alike, so the per-round ratio
# B/A holds still where one server's µs/req, run after the other, moves by 20-40 %.
# Writes $WORK/ab.md.
bench_field() { # file field: a number from the BENCH line wrk printed
    awk -v k="$2" '$1 == "BENCH" { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' "$1"
}
ab_scenario() {
    local rounds=${AB_ROUNDS:-5} conns=$EXTRA_CONNS text=${AB_TEXT:-/info} bin_b=${AB_BIN:-$BIN}
    local mode=${AB_MODE:-valid}
    [[ $mode == valid || $mode == forged ]] || die "AB_MODE must be valid or forged"
    [[ $rounds =~ ^[0-9]+$ && $rounds -ge 1 && $rounds -le 50 ]] || die "AB_ROUNDS must be 1..50"
    log "scenario ab: A = dingbot, B = $bin_b${AB_ENV:+ with $AB_ENV}; $text, $rounds rounds × ${DURATION}s, $conns connections each"
    curl -fsS --max-time 2 -X POST -o /dev/null "$SANDBOX_URL/_sandbox/reset" || die "sandbox reset failed"
    new_table
    CURSOR=0
    local port_a=$BOT_PORT port_b
    port_b=$(free_port)
    write_config "$WORK/ab-a.toml" 3600
    start_bot "$WORK/ab-a.toml" "$WORK/ab-a.log"
    # Until B is up, A's pid waits in AB_PID, so the exit trap stops both if B fails.
    local pid_a=$BOT_PID
    AB_PID=$pid_a
    BOT_PORT=$port_b BOT_URL=http://127.0.0.1:$port_b
    # A data dir of its own: B would otherwise find A's "running" marker in the replay
    # record, take it for an unclean stop and refuse every timestamp signed before it.
    DATA_DIR=$WORK/data-b write_config "$WORK/ab-b.toml" 3600
    if [[ $bin_b == bare ]]; then
        start_bot "$WORK/ab-b.toml" "$WORK/ab-b.log" bare
    else
        local -a env_b
        read -ra env_b <<<"${AB_ENV:-}"
        env "${env_b[@]}" "${PIN_BOT[@]}" "$bin_b" serve --config "$WORK/ab-b.toml" >"$WORK/ab-b.log" 2>&1 &
        BOT_PID=$!
        wait_http "$BOT_URL/readyz" 20 || {
            tail -20 "$WORK/ab-b.log" >&2
            die "B did not start"
        }
    fi
    AB_PID=$BOT_PID BOT_PID=$pid_a # from here: A in BOT_PID, B in AB_PID
    BOT_PORT=$port_a BOT_URL=http://127.0.0.1:$port_a

    local avail=$((DURATION * RATE_CAP)) round
    printf 'round\tA req/s\tA µs/req\tB req/s\tB µs/req\tB/A\n' >"$WORK/ab.tsv"
    for ((round = 0; round <= rounds; round++)); do # round 0 is the warm-up
        ensure_table $((CURSOR + avail))
        local ta0 tb0 m0 port secs=$DURATION
        ((round == 0)) && secs=$((WARMUP > 0 ? WARMUP : 1))
        ta0=$(proc_ticks "$BOT_PID")
        tb0=$(proc_ticks "$AB_PID")
        m0=$(sandbox_stat messages)
        local -a wrk_pids=()
        for port in "$port_a" "$port_b"; do
            timeout $((secs + 60)) "${PIN_LOAD[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
                -s "$ROOT/bench/callback.lua" "http://127.0.0.1:$port/dingtalk/callback" -- \
                "$mode" "$TABLE" "$CURSOR" "$avail" "$text" "$BENCH_GROUPS" "$HOOK" \
                $(($(now_ms) + 3 * 3600 * 1000)) 1 "$(now_ms)" >"$WORK/wrk-$port.out" 2>&1 &
            wrk_pids+=($!)
        done
        wait "${wrk_pids[@]}" || die "wrk failed: $(cat "$WORK"/wrk-*.out)"
        local ra rb na nb ea eb
        ra=$(bench_field "$WORK/wrk-$port_a.out" requests)
        rb=$(bench_field "$WORK/wrk-$port_b.out" requests)
        [[ -n $ra && -n $rb ]] || die "no BENCH line from wrk: $(cat "$WORK/wrk-$port_a.out" "$WORK/wrk-$port_b.out")"
        ea=$(bench_field "$WORK/wrk-$port_a.out" non2xx)
        eb=$(bench_field "$WORK/wrk-$port_b.out" non2xx)
        na=$(bench_field "$WORK/wrk-$port_a.out" next_index)
        nb=$(bench_field "$WORK/wrk-$port_b.out" next_index)
        CURSOR=$((na > nb ? na : nb))
        if [[ $mode == forged ]]; then
            wait_replies "$m0" 0 # every request refused (401), nothing sent
        else
            wait_replies "$m0" $((ra - ea + rb - eb))
        fi
        local da db dm
        da=$(($(proc_ticks "$BOT_PID") - ta0))
        db=$(($(proc_ticks "$AB_PID") - tb0))
        dm=$(($(sandbox_stat messages) - m0))
        [[ $mode == forged ]] || ((ea + eb == 0)) || log "  round $round: non-2xx A $ea, B $eb"
        # wrk does not count the requests still open when it stops (up to conns each);
        # dingbot took and answered those too.
        [[ $mode == forged ]] || ((dm >= ra + rb - ea - eb && dm <= ra + rb - ea - eb + 2 * conns)) ||
            log "  round $round: $dm replies for $((ra + rb - ea - eb)) accepted callbacks"
        ((round == 0)) && continue
        python3 - "$round" "$ra" "$da" "$rb" "$db" "$CLK_TCK" "$DURATION" >>"$WORK/ab.tsv" <<'PY'
import sys
r, ra, da, rb, db, tck, secs = map(int, sys.argv[1:])
ua, ub = da * 1e6 / tck / max(ra, 1), db * 1e6 / tck / max(rb, 1)
print(f"{r}\t{ra / secs:.0f}\t{ua:.1f}\t{rb / secs:.0f}\t{ub:.1f}\t{ub / ua:.3f}")
PY
        log "  round $round: $(tail -1 "$WORK/ab.tsv" | cut -f2- | tr '\t' ' ') (A req/s, A µs/req, B req/s, B µs/req, B/A)"
    done
    python3 - "$WORK/ab.tsv" "$bin_b" "${AB_ENV:-}" "$text$([[ $mode == forged ]] && echo ', forged sign')" "$conns" >"$WORK/ab.md" <<'PY'
import statistics, sys
path, bin_b, env_b, text, conns = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path)][1:]
med = lambda i: statistics.median(float(r[i]) for r in rows)
ratios = sorted(float(r[5]) for r in rows)
print("\n### A/B at the same time on core 0\n")
print(f"A: this dingbot. B: {bin_b}{' with ' + env_b if env_b else ''}. `{text}`, {conns} connections each, "
      f"{len(rows)} rounds; µs/req = the server's utime+stime ÷ its requests in the round.\n")
print("| | req/s | CPU µs/req |\n|---|---:|---:|")
print(f"| A | {med(1):,.0f} | {med(2):.1f} |")
print(f"| B | {med(3):,.0f} | {med(4):.1f} |")
print(f"\nB/A CPU per request: median **{statistics.median(ratios):.3f}**, "
      f"rounds {', '.join(f'{x:.3f}' for x in ratios)}")
PY
    stop_pid "$AB_PID"
    AB_PID=""
    stop_pid "$BOT_PID"
    BOT_PID=""
}

if ((QUIET_WAIT > 0)); then
    log "waiting up to ${QUIET_WAIT}s for the 1-minute load average to fall below 1.0"
    for ((i = 0; i < QUIET_WAIT; i++)); do
        awk '{exit !($1 < 1.0)}' /proc/loadavg && break
        sleep 1
    done
fi
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%FT%TZ)
for s in $SCENARIOS; do
    case $s in
    info)
        for c in $CONNS; do
            scenario "info-c$c" "/info, group-info cache warm (ttl 3600 s): render + sendBySession" \
                valid "/info" "$c" 3600
        done
        ;;
    miss)
        scenario "miss-c$EXTRA_CONNS" "/info, cache off (ttl 0): chat/get + sendBySession every time (upstream-bound)" \
            valid "/info" "$EXTRA_CONNS" 0
        ;;
    help)
        scenario "help-c$EXTRA_CONNS" "/help: render + sendBySession, no group lookup" \
            valid "/help" "$EXTRA_CONNS" 3600
        ;;
    forged)
        scenario "forged-c$EXTRA_CONNS" "forged sign → 401 (connection kept alive)" \
            forged "/info" "$EXTRA_CONNS" 3600
        ;;
    groups) groups_scenario ;;
    ab) ab_scenario ;;
    redis) redis_scenario ;;
    bare)
        scenario "bare-c$EXTRA_CONNS" "baseline, not dingbot: examples/bare_handler (verify + parse + sendBySession inline)" \
            valid "/info" "$EXTRA_CONNS" 3600 bare
        ;;
    bare-forged)
        scenario "bare-forged-c$EXTRA_CONNS" "baseline, not dingbot: examples/bare_handler, forged sign → 401" \
            forged "/info" "$EXTRA_CONNS" 3600 bare
        ;;
    *) die "unknown scenario $s (info, miss, help, forged, bare, bare-forged, groups, ab, redis)" ;;
    esac
done

# ---- report -----------------------------------------------------------------------------
HEADER=$WORK/header.md
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock templates 2>/dev/null || COMMIT="$COMMIT+dirty"
{
    echo "## dingbot load benchmark"
    echo
    echo "$STARTED, commit $COMMIT, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $NCPU CPUs,"
    echo "load average before: $LOAD0, after: $LOAD1 (anything else running on the machine skews every number)."
    echo "dingbot \`serve\` (1 worker) pinned to core 0; \`dingbot sandbox\` (1 worker) and \`wrk -t1\` share core 1."
    echo "Each scenario: fresh dingbot, ${WARMUP}s warm-up, $RUNS runs × ${DURATION}s; medians shown."
    echo "Every valid request has its own msgId, timestamp and matching sign; ${BENCH_GROUPS} groups, round-robin."
    echo
    echo "- **bot CPU µs/req**: dingbot's utime+stime over the run (including the wait for replies to drain) ÷ completed requests; **µs/reply** ÷ replies instead."
    echo "- **2xx/s**: callbacks accepted per second; the rest were refused (503 once server.max_in_flight replies are pending, 401 when forged)."
    echo "- **replies / requests**: messages the sandbox's sessionWebhook sink received ÷ completed requests; **chat/get per reply**: upstream group lookups per reply (0 = all cache hits)."
    echo "- **p50/p99**: latency of the HTTP answer to the callback (the reply is sent afterwards, asynchronously)."
    echo "- **core0 / core1 busy**: whole-core utilisation from /proc/stat; core 1 at ~100 % means the load side (sandbox + wrk) is the limit, not dingbot."
    echo "- **peak RSS**: VmHWM of the dingbot process at the end of the scenario (warm-up included)."
    echo
} >"$HEADER"
python3 "$ROOT/bench/report.py" "$RUNS_TSV" "$SCEN_TSV" "$HEADER" >"$OUT/results.md"
if [[ -f $WORK/groups.md ]]; then cat "$WORK/groups.md" >>"$OUT/results.md"; fi
if [[ -f $WORK/ab.md ]]; then cat "$WORK/ab.md" >>"$OUT/results.md"; fi
if [[ -f $WORK/redis.md ]]; then cat "$WORK/redis.md" >>"$OUT/results.md"; fi
cat "$OUT/results.md"
log "written $OUT/results.md (per-run data: $RUNS_TSV)"
