#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: the cmocka
# unit tests and the end-to-end tests against the real pushaid binary, first
# in the normal build, then again under AddressSanitizer and UBSan.
#
# A throwaway PostgreSQL cluster (scripts/pg.sh) runs for the whole script:
# the store unit tests run against it as well as SQLite, and the end-to-end
# suite runs a second time with every server on PostgreSQL, which adds the
# multi-node tests. The sanitizer pass runs the end-to-end suite on SQLite
# only, to keep the script's time down.
#
# Usage: scripts/test.sh [--no-sanitizers]
# Ends with the line "N passed, N failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

sanitizers=1
[ "${1:-}" = "--no-sanitizers" ] && sanitizers=0

scripts/install-deps.sh --test || exit 1

passed=0
failed=0
logs=$(mktemp -d)
pg_dir=""

stop_pg() {
    if [ -n "$pg_dir" ]; then
        scripts/pg.sh stop "$pg_dir" || true
        pg_dir=""
    fi
}
trap stop_pg EXIT

# Runs every cmocka binary of one build and adds up its counts.
run_unit() {
    local build=$1 t out p f
    for t in "$build"/tests/test_*; do
        out="$logs/$(basename "$t").$(basename "$build").log"
        "$t" >"$out" 2>&1
        local rc=$?
        cat "$out"
        p=$(grep -Eo '^\[  PASSED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
        f=$(grep -Eo '^\[  FAILED  \] [0-9]+' "$out" | awk '{s+=$4} END {print s+0}')
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1 # crashed before cmocka could count
        fi
        passed=$((passed + p))
        failed=$((failed + f))
    done
}

# Runs the end-to-end suite against one binary and adds up its counts. A
# second argument names the run in its log file; extra environment settings
# come from the caller.
run_e2e() {
    local binary=$1 out="$logs/e2e.$(basename "$(dirname "$1")")${2:+.$2}.log" ran bad
    PUSHAID="$binary" python3 -m unittest discover -s tests/e2e -v >"$out" 2>&1
    local rc=$?
    cat "$out"
    ran=$(grep -Eo '^Ran [0-9]+ tests?' "$out" | awk '{print $2}' | tail -n 1)
    ran=${ran:-0}
    bad=$(grep -Eo '^FAILED \(.*\)' "$out" | grep -Eo '(failures|errors)=[0-9]+' | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        bad=1
    fi
    passed=$((passed + ran - bad))
    failed=$((failed + bad))
}

echo "== build"
make -s -j"$(nproc)" all || exit 1
echo "== PostgreSQL test cluster"
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/pushai-pg-XXXXXX")
if pg_url=$(scripts/pg.sh start "$pg_dir"); then
    export PUSHAI_TEST_PG_URL="$pg_url"
else
    echo "the PostgreSQL cluster did not start: the PostgreSQL tests cannot run" >&2
    rm -rf "$pg_dir"
    pg_dir=""
    failed=$((failed + 1))
fi
echo "== unit tests"
run_unit build
echo "== end-to-end tests (SQLite)"
run_e2e build/pushaid
if [ -n "$pg_dir" ]; then
    echo "== end-to-end tests (PostgreSQL)"
    PUSHAI_E2E_PG_URL="$pg_url" PUSHAI_E2E_PG_DIR="$pg_dir" run_e2e build/pushaid pg
fi

if [ "$sanitizers" -eq 1 ]; then
    echo "== build with AddressSanitizer and UBSan"
    make -s -j"$(nproc)" SANITIZE=1 all || exit 1
    export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    echo "== unit tests (sanitizers)"
    run_unit build-asan
    echo "== end-to-end tests (sanitizers)"
    run_e2e build-asan/pushaid
fi

stop_pg
rm -rf "$logs"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
