# Helpers shared by the bench scripts (sourced, not run). soak.sh keeps its own stop_pid,
# which also records the exit status.

stop_pid() { # pid [seconds, default 5]: TERM, wait that long, then KILL
    local pid=$1 secs=${2:-5} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url seconds: wait until it answers 200
    local url=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
