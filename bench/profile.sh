#!/usr/bin/env bash
# Profiles one pushaid process under the load of bench/run.sh and writes the
# functions that take the most CPU time.
#
#   bench/profile.sh [list|run] [SERVE FLAGS...]
#
# The first argument picks the route: "list" (GET /api/v1/agents, the
# default) or "run" (GET of one succeeded echo run). Further arguments go to
# `pushaid serve`, for example --no-access-log. The database and agents are
# the ones bench/run.sh uses, and the access log goes to a file.
#
# With perf: `perf record --call-graph dwarf` on the server's PID for
# PROFILE_SECONDS (default 10) while `wrk -t1 -c64` runs. The event is
# "cycles" when the CPU counters work (`perf stat -e instructions true`
# counts), else the "cpu-clock" software timer, which virtual machines
# without counters still provide. Without a working perf: the server runs
# under `valgrind --tool=callgrind` with a 5 s `wrk -t1 -c8` load, and the
# report counts instructions instead of time. PROFILE_TOOL=perf or
# PROFILE_TOOL=callgrind picks one of the two instead of the automatic choice.
#
# Reports go to bench/results/<UTC date and time>-profile/: perf-self.txt
# (self time by function), perf-children.txt (time including callees) and
# perf-dso.txt (by library), or callgrind.txt (instructions by function) and
# callgrind-inclusive.txt (including callees).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
route=${1:-list}
[ $# -gt 0 ] && shift
case "$route" in
list | run) ;;
*) echo "usage: bench/profile.sh [list|run] [SERVE FLAGS...]" >&2 && exit 2 ;;
esac
profile_s=${PROFILE_SECONDS:-10}
case "${PROFILE_TOOL:-auto}" in
auto | perf | callgrind) ;;
*) echo "bench/profile.sh: PROFILE_TOOL must be auto, perf or callgrind" >&2 && exit 2 ;;
esac

# shellcheck source=bench/lib.sh
. "$repo/bench/lib.sh"
bench_init

make -s build/pushaid
work=$(mktemp -d "${TMPDIR:-/tmp}/pushai-profile.XXXXXX")
results="$repo/bench/results/$(date -u +%Y-%m-%d_%H%M%SZ)-profile"
mkdir -p "$results"

# pick the profiler
profiler=callgrind
if [ "${PROFILE_TOOL:-auto}" = perf ] || { [ "${PROFILE_TOOL:-auto}" = auto ] && command -v perf >/dev/null; }; then
    if perf stat -x, -e instructions true 2>&1 | grep -qE '^[0-9]+,'; then
        profiler=perf
        perf_event=cycles
    elif perf record -q -e cpu-clock -o "$work/probe.data" -- true >/dev/null 2>&1; then
        profiler=perf
        perf_event=cpu-clock
    fi
    [ "$profiler" = perf ] || [ "${PROFILE_TOOL:-auto}" = auto ] || bench_fail "perf can record no event here"
fi
if [ "$profiler" = callgrind ]; then
    command -v valgrind >/dev/null || bench_fail "neither a working perf nor valgrind is installed"
    bench_pushaid_prefix=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out"
        --log-file="$work/valgrind.log")
fi

bench_setup_db
bench_start_pushaid profiled "$@"
server_pid=$bench_pid
server_url=$bench_url

# the route's URL, and one request to check that it returns 200
python3 bench/fixture.py get "$server_url/api/v1/agents" "$bench_key" "$work/agents"
url="$server_url/api/v1/agents"
if [ "$route" = run ]; then
    url="$server_url$(python3 bench/fixture.py echo-run "$server_url" "$bench_key" "$work/agents" "$work/run")"
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "route: $route ($url)"
    echo "serve flags: --rate-limit 0 $*"
    echo "pushaid: source $(git describe --always --dirty 2>/dev/null || echo 'not in git')," \
        "binary sha256 $(sha256sum build/pushaid | cut -c1-16)"
    echo "profiler: $profiler${perf_event:+ (event $perf_event)}"
} >"$results/profile.txt"

if [ "$profiler" = perf ]; then
    # wrk starts first and ends after perf, so every sample is under load
    wrk -t1 -c64 -d"$((profile_s + 3))s" -H "x-api-key: $bench_key" "$url" >"$results/wrk.txt" &
    wrk_pid=$!
    bench_pids+=("$wrk_pid")
    sleep 1
    perf record -q -e "$perf_event" -F 999 --call-graph dwarf,16384 -p "$server_pid" -o "$work/perf.data" \
        -- sleep "$profile_s" 2>"$work/perf-record.log" || { cat "$work/perf-record.log" >&2; bench_fail "perf record failed"; }
    wait "$wrk_pid" || true
    perf report -i "$work/perf.data" --stdio --no-children --sort dso,sym --percent-limit 0.5 -g none \
        >"$results/perf-self.txt" 2>/dev/null
    perf report -i "$work/perf.data" --stdio --children --sort sym --percent-limit 3 -g none \
        >"$results/perf-children.txt" 2>/dev/null
    perf report -i "$work/perf.data" --stdio --no-children --sort dso -g none \
        >"$results/perf-dso.txt" 2>/dev/null
    grep -vE '^#|^$' "$results/perf-self.txt" | head -n 30
else
    wrk -t1 -c8 -d5s -H "x-api-key: $bench_key" "$url" >"$results/wrk.txt"
    kill -TERM "$server_pid"
    for ((i = 0; i < 300; i++)); do
        bench_exited "$server_pid" && break
        sleep 0.1
    done
    [ -s "$work/callgrind.out" ] || bench_fail "callgrind wrote no profile (see $work/valgrind.log)"
    callgrind_annotate --inclusive=no "$work/callgrind.out" >"$results/callgrind.txt"
    callgrind_annotate --inclusive=yes "$work/callgrind.out" >"$results/callgrind-inclusive.txt"
    sed -n 1,60p "$results/callgrind.txt"
fi
echo "reports: ${results#"$repo"/}" >&2
