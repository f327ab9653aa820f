#!/usr/bin/env bash
# Measures pushaid's two hot GET routes against nginx serving the same reply
# bytes from files, all on 127.0.0.1, and prints a Markdown table of medians.
#
#   bench/run.sh
#
# Routes: GET /api/v1/agents (20 published agents, a few KB) and
# GET /api/v1/agents/{id}/runs/{run_id} (one succeeded echo run).
# pushaid variants, each its own process on one SQLite database: 1 HTTP thread
# with the access log on (the default), 1 thread with --no-access-log, and
# --threads 2 with the access log on. Each variant's access log goes to a file
# that is emptied before every measurement.
#
# Every measurement is `wrk -t1 -c64 -d<BENCH_DURATION>s --latency`; the
# variants and nginx take turns within each round, for BENCH_ROUNDS rounds.
# Raw wrk outputs, the reply bytes, the nginx config and machine.txt go to
# bench/results/<UTC date and time>/, with summary.md (the printed table).
#
# Environment: BENCH_DURATION seconds per measurement (default 10),
# BENCH_ROUNDS (default 5), BENCH_WARMUP seconds per target before round 1
# (default 2), BENCH_KEEP_TMP=1 keeps the temporary directory.
# The defaults take about 7.5 minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
duration_s=${BENCH_DURATION:-10}
rounds=${BENCH_ROUNDS:-5}
warmup_s=${BENCH_WARMUP:-2}
connections=64

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_init

make -s build/pushaid

work=$(mktemp -d "${TMPDIR:-/tmp}/pushai-bench.XXXXXX")
# the nginx worker may run as another user: it must reach the document root
chmod 711 "$work"
results="$repo/bench/results/$(date -u +%Y-%m-%d_%H%M%SZ)"
mkdir -p "$results"

# --- the machine --------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores (nproc): $(nproc)"
    echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
    echo "kernel: $(uname -sr)"
    echo "load average at start (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "pushaid: $(build/pushaid --version), source $(git describe --always --dirty 2>/dev/null || echo 'not in git')," \
        "binary sha256 $(sha256sum build/pushaid | cut -c1-16)"
    echo "h2o: $(dpkg-query -W -f='${Version}' libh2o-evloop-dev 2>/dev/null || echo unknown)"
    echo "nginx: $("$bench_nginx" -v 2>&1 | sed 's/.*: //')"
    echo "wrk: $(wrk --version 2>&1 | head -n1 | awk '{print $2}')"
    echo "measurement: wrk -t1 -c$connections -d${duration_s}s --latency, rounds: $rounds, warm-up per target: ${warmup_s}s"
} >"$results/machine.txt"

# --- database, servers, reply bytes -------------------------------------------
bench_setup_db

bench_start_pushaid pushaid
url_pushaid=$bench_url
bench_start_pushaid pushaid-nolog --no-access-log
url_pushaid_nolog=$bench_url
bench_start_pushaid pushaid-t2 --threads 2
url_pushaid_t2=$bench_url

www="$work/www"
mkdir -p "$www"
chmod 755 "$www"
python3 bench/fixture.py get "$url_pushaid/api/v1/agents" "$bench_key" "$www/agents"
run_path=$(python3 bench/fixture.py echo-run "$url_pushaid" "$bench_key" "$www/agents" "$www/run")
chmod 644 "$www/agents" "$www/run"
cp "$www/agents" "$results/reply-agents.json"
cp "$www/run" "$results/reply-run.json"

bench_start_nginx "$www"
cp "$work/nginx/nginx.conf" "$results/nginx.conf"

# every server must return exactly the bytes nginx serves
for base in "$url_pushaid" "$url_pushaid_nolog" "$url_pushaid_t2"; do
    python3 bench/fixture.py get "$base/api/v1/agents" "$bench_key" "$work/check"
    cmp -s "$work/check" "$www/agents" || bench_fail "$base returned other agent-list bytes than the first server"
    python3 bench/fixture.py get "$base$run_path" "$bench_key" "$work/check"
    cmp -s "$work/check" "$www/run" || bench_fail "$base returned other run bytes than the first server"
done
python3 bench/fixture.py get "$nginx_url/agents" "$bench_key" "$work/check"
cmp -s "$work/check" "$www/agents" || bench_fail "nginx did not serve the agent-list bytes unchanged"
python3 bench/fixture.py get "$nginx_url/run" "$bench_key" "$work/check"
cmp -s "$work/check" "$www/run" || bench_fail "nginx did not serve the run bytes unchanged"

if command -v curl >/dev/null; then
    for target in "pushaid $url_pushaid/api/v1/agents" "nginx $nginx_url/agents"; do
        curl -s -o /dev/null -D "$results/headers-${target%% *}.txt" -H "x-api-key: $bench_key" "${target#* }"
    done
fi

for name in pushaid pushaid-nolog pushaid-t2; do
    cp "$work/$name.log" "$results/server-$name.log"
done

# --- measurements -------------------------------------------------------------
# Each target is "ENDPOINT SERVER URL"; the order is the order within a round.
targets=(
    "list nginx $nginx_url/agents"
    "list pushaid $url_pushaid/api/v1/agents"
    "list pushaid-nolog $url_pushaid_nolog/api/v1/agents"
    "list pushaid-t2 $url_pushaid_t2/api/v1/agents"
    "run nginx $nginx_url/run"
    "run pushaid $url_pushaid$run_path"
    "run pushaid-nolog $url_pushaid_nolog$run_path"
    "run pushaid-t2 $url_pushaid_t2$run_path"
)

# CPU time in clock ticks, to tell how much other processes ran during a
# measurement. cpu_snapshot sets cpu_now to: the machine's user+nice+system
# time, its steal time, the servers' time, and the time of this shell's
# finished children (wrk among them). Interrupt time is left out on both
# sides, because the kernel may book the loopback traffic's softirq time to
# no process. It runs in this shell, not a subshell, so that `times` counts
# the children.
clock_ticks_per_s=$(getconf CLK_TCK)
server_pids=("${bench_pids[@]}")
for pid in $(cat /proc/"$bench_pid_nginx"/task/*/children); do
    server_pids+=("$pid")
done
cpu_snapshot() {
    local servers=0 pid fields machine
    for pid in "${server_pids[@]}"; do
        read -r -a fields <"/proc/$pid/stat" || continue
        servers=$((servers + fields[13] + fields[14]))
    done
    read -r -a machine </proc/stat
    times >"$work/times"
    cpu_now=("$((machine[1] + machine[2] + machine[3]))" "${machine[8]}" "$servers"
        "$(awk -v hz="$clock_ticks_per_s" 'NR == 2 {
            split($0, t, /[ms ]+/); printf "%d", ((t[1] + t[3]) * 60 + t[2] + t[4]) * hz }' "$work/times")")
}

# measure SECONDS URL OUT: one wrk run into OUT, the access logs emptied
# first. Unless OUT is /dev/null, the file OUT with .cpu for .txt gets the
# CPU that other processes and the hypervisor (steal) took, in percent of one
# core. It also names the three other processes that took the most, among
# those still running at the end. Kernel threads such as kworker count.
measure() {
    local before after
    : >"$work/pushaid.log"
    : >"$work/pushaid-t2.log"
    python3 bench/fixture.py proc-ticks "$work/ticks-before"
    cpu_snapshot
    before=("${cpu_now[@]}")
    timeout $(($1 + 30)) wrk -t1 -c"$connections" -d"$1s" --latency -H "x-api-key: $bench_key" "$2" >"$3"
    cpu_snapshot
    after=("${cpu_now[@]}")
    [ "$3" = /dev/null ] && return 0
    python3 bench/fixture.py proc-ticks "$work/ticks-after"
    {
        awk -v busy=$((after[0] - before[0])) -v steal=$((after[1] - before[1])) \
            -v ours=$((after[2] - before[2] + after[3] - before[3])) -v ticks=$(($1 * clock_ticks_per_s)) 'BEGIN {
                other = busy - ours; if (other < 0) other = 0
                printf "other_processes_cpu_percent %.1f\nsteal_cpu_percent %.1f\n", 100 * other / ticks, 100 * steal / ticks }'
        echo "other_processes_top $(python3 bench/fixture.py proc-ticks-top "$work/ticks-before" "$work/ticks-after" "$1" \
            "${server_pids[@]}")"
    } >"${3%.txt}.cpu"
}

if [ "$warmup_s" -gt 0 ]; then
    echo "warming up: ${warmup_s}s per target" >&2
    for target in "${targets[@]}"; do
        read -r _ _ url <<<"$target"
        measure "$warmup_s" "$url" /dev/null
    done
fi

for ((round = 1; round <= rounds; round++)); do
    for target in "${targets[@]}"; do
        read -r endpoint server url <<<"$target"
        out="$results/r${round}_${endpoint}_${server}.txt"
        measure "$duration_s" "$url" "$out"
        printf 'round %d/%d  %-4s %-14s %10s req/s  p99 %-8s other CPU %s%%\n' "$round" "$rounds" "$endpoint" \
            "$server" "$(awk '/^Requests\/sec:/ {print $2}' "$out")" "$(awk '$1 == "99%" {print $2}' "$out")" \
            "$(awk '$1 == "other_processes_cpu_percent" {print $2}' "${out%.txt}.cpu")" >&2
    done
done

for pid in "${bench_pids[@]}"; do
    bench_exited "$pid" && bench_fail "a server (PID $pid) exited during the measurements"
done

echo "load average at end (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/machine.txt"

# --- summary ------------------------------------------------------------------
{
    echo "## pushaid against nginx, $(date -u +%Y-%m-%d)"
    echo
    echo "Command: \`bench/run.sh\` (each measurement: \`wrk -t1 -c$connections -d${duration_s}s --latency" \
        "-H 'x-api-key: KEY' URL\`, rounds: $rounds, servers taking turns)."
    echo "Reply sizes: agent list $(wc -c <"$www/agents") bytes, run $(wc -c <"$www/run") bytes."
    echo
    echo '```'
    cat "$results/machine.txt"
    echo '```'
    echo
    python3 bench/summarize.py "$results"
} >"$results/summary.md"
cat "$results/summary.md"
echo "raw outputs: ${results#"$repo"/}" >&2
