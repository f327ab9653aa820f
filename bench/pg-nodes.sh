#!/usr/bin/env bash
# Measures run creation and run polling on PostgreSQL with one, two and three
# pushaid nodes sharing one database, all on 127.0.0.1, and prints a
# Markdown table of medians.
#
#   bench/pg-nodes.sh
#
# It starts a throwaway PostgreSQL cluster (scripts/pg.sh, fsync on), loads
# the organization, key and 20 agents that bench/run.sh uses, and for each
# node count starts that many `pushaid serve --rate-limit 0 --no-access-log`
# processes with their engines on (the echo provider completes each run at
# once, so every created run is also claimed and completed). Targets:
#
#   create          POST /api/v1/agents/1/runs (a 55-byte JSON body), with the
#                   default in-flight cap of 1000 runs per key, which locks the
#                   key's row for each creation
#   create-nocap    the same with --max-runs-per-key 0 (no lock)
#   poll            GET /api/v1/agents/{id}/runs/{run_id} of a succeeded run
#
# BENCH_THREADS (default 1) sets each node's --threads. Load:
# BENCH_CONNECTIONS (default 64) keep-alive connections split evenly
# over the nodes, one `wrk -t1 --latency` per node, all at once for
# BENCH_DURATION seconds (default 10); requests/s is their sum, p50 and p99
# the worst node's. Each target runs BENCH_ROUNDS times (default 3) after a
# 2 s warm-up, and the table shows medians, with the CPU time PostgreSQL and
# the nodes (engines included) spent per request during the measurement.
# Raw wrk outputs, CPU readings and machine.txt go to
# bench/results/<UTC date and time>-pg-nodes-t<threads>/. The defaults take
# about 5 minutes.
#
# On one machine the nodes, PostgreSQL and wrk share the same cores, so the
# numbers show what one more node costs or gains there, not what separate
# machines would do.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
duration_s=${BENCH_DURATION:-10}
rounds=${BENCH_ROUNDS:-3}
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-1}

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_init
pg_dir=""
stop_everything() {
    bench_stop_all
    if [ -n "$pg_dir" ]; then
        "$repo/scripts/pg.sh" stop "$pg_dir" || true
    fi
}
trap stop_everything EXIT

make -s build/pushaid

work=$(mktemp -d "${TMPDIR:-/tmp}/pushai-bench.XXXXXX")
results="$repo/bench/results/$(date -u +%Y-%m-%d_%H%M%SZ)-pg-nodes-t$threads"
mkdir -p "$results"

# --- the database ---------------------------------------------------------------
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/pushai-bench-pg.XXXXXX")
admin_url=$("$repo/scripts/pg.sh" start "$pg_dir")
psql -X -q -d "$admin_url" -c "CREATE DATABASE pushai_bench" >/dev/null
bench_db="${admin_url%/postgres}/pushai_bench"
"$repo/build/pushaid" --db "$bench_db" admin org create bench >/dev/null
bench_key=$("$repo/build/pushaid" --db "$bench_db" admin key create --org bench)
[[ $bench_key == pai_* ]] || bench_fail "admin key create printed no key"
python3 "$repo/bench/make_agents.py" "$work/agents-import.json"
"$repo/build/pushaid" --db "$bench_db" admin agent import --org bench "$work/agents-import.json" >/dev/null

cat >"$work/create.lua" <<'EOF'
-- POST one run of agent 1 with its required parameter bound
wrk.method = "POST"
wrk.body = '{"parameter_bindings":[{"name":"region","value":"EU"}]}'
wrk.headers["Content-Type"] = "application/json"
EOF

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores (nproc): $(nproc)"
    echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}') total"
    echo "kernel: $(uname -sr)"
    echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "postgresql: $(psql -X -A -t -d "$admin_url" -c 'SHOW server_version')," \
        "fsync $(psql -X -A -t -d "$admin_url" -c 'SHOW fsync'), synchronous_commit" \
        "$(psql -X -A -t -d "$admin_url" -c 'SHOW synchronous_commit'), data directory on" \
        "$(df -T "$pg_dir" | awk 'NR == 2 {print $2}')"
    echo "pushaid: $(build/pushaid --version), source $(git describe --always --dirty 2>/dev/null || echo 'not in git')"
    echo "wrk: $(wrk --version 2>&1 | head -n1 | awk '{print $2}')"
    echo "measurement: $connections connections split over the nodes, one wrk -t1 per node," \
        "${duration_s}s, rounds: $rounds, --threads $threads per node"
    echo "load average at start (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$results/machine.txt"

# --- measurements ------------------------------------------------------------------

pg_pid=$(head -n1 "$pg_dir/data/postmaster.pid")

# Prints the CPU seconds used so far by PostgreSQL (the postmaster, the
# backends it reaped, and its live children) and by the nodes in node_pids.
cpu_seconds() {
    python3 - "$pg_pid" "${node_pids[@]}" <<'CPU'
import os
import sys

hz = os.sysconf("SC_CLK_TCK")
postmaster, nodes = int(sys.argv[1]), {int(pid) for pid in sys.argv[2:]}
database = node = 0
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        with open("/proc/%s/stat" % entry) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    pid, ppid = int(entry), int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    if pid == postmaster:
        database += utime + stime + cutime + cstime
    elif ppid == postmaster:
        database += utime + stime
    elif pid in nodes:
        node += utime + stime
print("%.2f %.2f" % (database / hz, node / hz))
CPU
}

# measure NAME ROUND PATH [wrk args...]: one wrk per node at once, with the
# CPU seconds of PostgreSQL and of the nodes before and after in NAME_..._cpu.txt
measure() {
    local name=$1 round=$2 path=$3 i pids=() prefix
    shift 3
    local per_node=$(((connections + ${#urls[@]} - 1) / ${#urls[@]}))
    prefix="$results/${name}_n${#urls[@]}_r${round}"
    cpu_seconds >"${prefix}_cpu.txt"
    for i in "${!urls[@]}"; do
        wrk -t1 -c"$per_node" -d"${duration_s}s" --latency -H "x-api-key: $bench_key" "$@" "${urls[$i]}$path" \
            >"${prefix}_node$((i + 1)).txt" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i"
    done
    cpu_seconds >>"${prefix}_cpu.txt"
}

# start_nodes COUNT TAG [serve flags...]: stops the running nodes, starts COUNT
# new ones, each logging to $work/node<i>-TAG.log
start_nodes() {
    local count=$1 tag=$2 i
    shift 2
    bench_stop_all_nodes
    urls=()
    for ((i = 1; i <= count; i++)); do
        bench_start_pushaid "node$i-$tag" --no-access-log --threads "$threads" --node-id "node$i" "$@"
        urls+=("$bench_url")
        node_pids+=("$bench_pid")
    done
}

node_pids=()
bench_stop_all_nodes() {
    local pid
    for pid in "${node_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    node_pids=()
}

run_path=""
for nodes in 1 2 3; do
    for target in create create-nocap poll; do
        if [ "$target" = create-nocap ]; then
            start_nodes "$nodes" "$target-n$nodes" --max-runs-per-key 0
        else
            start_nodes "$nodes" "$target-n$nodes"
        fi
        if [ -z "$run_path" ]; then
            python3 bench/fixture.py get "${urls[0]}/api/v1/agents" "$bench_key" "$work/agents"
            run_path=$(python3 bench/fixture.py echo-run "${urls[0]}" "$bench_key" "$work/agents" "$work/run")
        fi
        echo "bench: $nodes node(s), $target" >&2
        case $target in
        create*) args=(-s "$work/create.lua") path=/api/v1/agents/1/runs ;;
        poll) args=() path=$run_path ;;
        esac
        duration_saved=$duration_s
        duration_s=2
        measure "warmup-$target" 0 "$path" "${args[@]}"
        duration_s=$duration_saved
        for ((round = 1; round <= rounds; round++)); do
            measure "$target" "$round" "$path" "${args[@]}"
        done
    done
done
bench_stop_all_nodes
psql -X -A -t -d "$bench_db" -c "SELECT status, count(*) FROM runs GROUP BY status ORDER BY 1" \
    >"$results/runs-by-status.txt"

# --- summary --------------------------------------------------------------------------
python3 - "$results" "$rounds" >"$results/summary.md" <<'EOF'
import glob, os, re, statistics, sys

results, rounds = sys.argv[1], int(sys.argv[2])

def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def parse(path):
    text = open(path).read()
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, p50, p99, int(bad.group(1)) if bad else 0, requests

def cpu_per_request_us(prefix, requests):
    """Return the CPU microseconds per request of PostgreSQL and of the nodes in one measurement."""
    before, after = (line.split() for line in open(prefix + "_cpu.txt").read().splitlines())
    return tuple((float(a) - float(b)) * 1e6 / requests for a, b in zip(after, before))

print("| target | nodes | requests/s (median) | p50 ms | p99 ms | PostgreSQL CPU µs/request"
      " | nodes CPU µs/request | per-round requests/s | non-2xx |")
print("|---|---|---|---|---|---|---|---|---|")
for target in ("create", "create-nocap", "poll"):
    for nodes in (1, 2, 3):
        per_round = []
        for r in range(1, rounds + 1):
            prefix = os.path.join(results, "%s_n%d_r%d" % (target, nodes, r))
            parsed = [parse(f) for f in sorted(glob.glob(prefix + "_node*.txt"))]
            requests = sum(p[4] for p in parsed)
            db_us, node_us = cpu_per_request_us(prefix, requests)
            per_round.append((sum(p[0] for p in parsed), max(p[1] for p in parsed), max(p[2] for p in parsed),
                              sum(p[3] for p in parsed), db_us, node_us))

        def median(i):
            return statistics.median(p[i] for p in per_round)

        print("| %s | %d | %.0f | %.2f | %.2f | %.0f | %.0f | %s | %d |" % (
            target, nodes, median(0), median(1), median(2), median(4), median(5),
            ", ".join("%.0f" % p[0] for p in per_round), sum(p[3] for p in per_round)))
EOF
echo "load average at end (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results/machine.txt"
cat "$results/summary.md"
echo "bench: results in $results" >&2
