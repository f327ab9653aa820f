# shellcheck shell=bash
# Shared steps of bench/run.sh and bench/profile.sh. Source it, do not run it.
#
# The caller sets `repo` (the repository root) and `work` (a private
# temporary directory) before calling anything here. Every process started
# through these functions has its PID in `bench_pids`, and bench_stop_all
# (installed as the EXIT trap by bench_init) stops exactly those processes.

# The variables these functions set (bench_url, bench_pid, nginx_url, ...)
# are read by the sourcing script, and it sets repo and work.
# shellcheck disable=SC2034,SC2154

bench_pids=()
bench_pushaid_prefix=() # a command that runs pushaid, such as valgrind (none by default)

bench_fail() {
    echo "bench: $*" >&2
    exit 1
}

# Checks for the tools the benchmarks need and installs the EXIT trap.
bench_init() {
    local tool
    for tool in wrk python3; do
        command -v "$tool" >/dev/null || bench_fail "$tool not found; run scripts/install-deps.sh --test"
    done
    bench_nginx=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$bench_nginx" ] || bench_fail "nginx not found; run scripts/install-deps.sh --test"
    trap bench_stop_all EXIT
    trap 'exit 130' INT TERM
}

# Returns success when PID has exited (it may still be an unreaped zombie).
bench_exited() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    [[ $state == Z* ]]
}

# Sends SIGTERM to every process in bench_pids, waits up to 15 s for each,
# then sends SIGKILL to any still running, and removes $work unless
# BENCH_KEEP_TMP=1.
bench_stop_all() {
    local pid i
    for pid in "${bench_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${bench_pids[@]}"; do
        for ((i = 0; i < 150; i++)); do
            bench_exited "$pid" && break
            sleep 0.1
        done
        if ! bench_exited "$pid"; then
            echo "bench: process $pid did not stop after SIGTERM, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    bench_pids=()
    if [ -n "${work:-}" ] && [ -d "$work" ]; then
        if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then
            echo "bench: kept $work" >&2
        else
            rm -rf "$work"
        fi
    fi
}

# Creates $work/bench.db with the organization "bench", one API key (stored in
# the variable bench_key, never written to a file) and the 20 published
# agents of bench/make_agents.py.
bench_setup_db() {
    bench_db="$work/bench.db"
    "$repo/build/pushaid" --db "$bench_db" admin org create bench >/dev/null
    bench_key=$("$repo/build/pushaid" --db "$bench_db" admin key create --org bench)
    [[ $bench_key == pai_* ]] || bench_fail "admin key create printed no key"
    python3 "$repo/bench/make_agents.py" "$work/agents-import.json"
    "$repo/build/pushaid" --db "$bench_db" admin agent import --org bench "$work/agents-import.json" >/dev/null
}

# bench_start_pushaid NAME [SERVE FLAGS...]
# Starts `pushaid serve` on 127.0.0.1:0 with the rate limit off, stderr
# appended to $work/NAME.log, and sets bench_url to the URL from its
# "listening on" line and bench_pid to its PID. Fails after 30 s without that line.
bench_start_pushaid() {
    local name=$1 log="$work/$1.log" pid line i
    shift
    "${bench_pushaid_prefix[@]}" "$repo/build/pushaid" --db "$bench_db" serve --listen 127.0.0.1:0 --rate-limit 0 "$@" \
        >/dev/null 2>>"$log" &
    pid=$!
    bench_pids+=("$pid")
    for ((i = 0; i < 300; i++)); do
        line=$(grep -m1 -oE 'listening on http://[0-9.]+:[0-9]+' "$log" || true)
        [ -n "$line" ] && break
        bench_exited "$pid" && { tail -n 20 "$log" >&2; bench_fail "pushaid $name exited before listening"; }
        sleep 0.1
    done
    [ -n "$line" ] || bench_fail "pushaid $name printed no 'listening on' line within 30 s (see $log)"
    bench_url=${line#listening on }
    bench_pid=$pid
}

# bench_start_nginx DOCROOT
# Starts nginx with its own prefix under $work/nginx, one worker, no access
# log, keep-alive, serving DOCROOT with Content-Type application/json, and
# sets nginx_url. Fails when nginx accepts no connection within 10 s.
bench_start_nginx() {
    local docroot=$1 prefix="$work/nginx" port i
    mkdir -p "$prefix/logs" "$prefix/temp"
    port=$(python3 "$repo/bench/fixture.py" free-port)
    cat >"$prefix/nginx.conf" <<EOF
# nginx as the reference: the same reply bytes served from files.
worker_processes 1;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path $prefix/temp/body;
    proxy_temp_path $prefix/temp/proxy;
    fastcgi_temp_path $prefix/temp/fastcgi;
    uwsgi_temp_path $prefix/temp/uwsgi;
    scgi_temp_path $prefix/temp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $docroot;
    }
}
EOF
    "$bench_nginx" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" >/dev/null 2>>"$prefix/logs/stderr.log" &
    bench_pid_nginx=$!
    bench_pids+=("$bench_pid_nginx")
    nginx_url="http://127.0.0.1:$port"
    for ((i = 0; i < 100; i++)); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
            "$port" 2>/dev/null; then
            return 0
        fi
        bench_exited "$bench_pid_nginx" && { cat "$prefix/logs/"*.log >&2; bench_fail "nginx exited at start"; }
        sleep 0.1
    done
    bench_fail "nginx did not accept connections on port $port within 10 s"
}
