#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks, in a directory of
# its own, listening on 127.0.0.1 and a Unix socket inside that directory.
#
# Usage:
#   scripts/pg.sh start [DIR]   create and start a cluster; prints its admin URL
#                               on stdout (DIR defaults to a new temporary one)
#   scripts/pg.sh stop DIR      stop the cluster and remove DIR
#   scripts/pg.sh halt DIR      stop the server but keep DIR (a database outage)
#   scripts/pg.sh resume DIR    start a halted server again on the same port
#   scripts/pg.sh url DIR       print the admin URL of DIR's cluster
#
# The cluster runs as the invoking user, or as the `postgres` system user
# (created by Debian's postgresql package) when invoked as root, because
# PostgreSQL refuses to run as root. The admin role is `pushai_admin` with a
# random password, password authentication (scram-sha-256) is required on
# every connection, and the URL is written to DIR/url (mode 0600).
#
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin),
# PG_MAX_CONNECTIONS (default 300), PG_FSYNC (on or off, default on; off
# keeps data across a server restart but not across a machine crash, which
# is enough for tests that want speed).
set -euo pipefail

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

find_pg_bin() {
    if [ -n "${PG_BIN:-}" ]; then
        echo "$PG_BIN"
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || die "no PostgreSQL server found under /usr/lib/postgresql; run scripts/install-deps.sh --test"
    echo "$dir"
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_ctl_start() {
    local dir=$1 bin
    bin=$(find_pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -s start >/dev/null ||
        die "the server did not start; see $dir/server.log"
}

pg_ctl_stop() {
    local dir=$1 bin
    bin=$(find_pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 -s stop >/dev/null
}

cmd_start() {
    local dir=${1:-} bin port password
    bin=$(find_pg_bin)
    if [ -z "$dir" ]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/pushai-pg-XXXXXX")
    else
        mkdir -p "$dir"
    fi
    [ ! -e "$dir/data" ] || die "$dir already contains a cluster; stop it or choose another directory"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres system user; install the postgresql package"
        chown postgres: "$dir"
    fi
    chmod 0700 "$dir"

    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    as_owner sh -c "umask 077 && printf '%s\n' '$password' > '$dir/pwfile'"
    as_owner "$bin/initdb" -D "$dir/data" -U pushai_admin --pwfile="$dir/pwfile" --auth=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"
    rm -f "$dir/pwfile"

    port=$(free_port)
    as_owner sh -c "cat >> '$dir/data/postgresql.conf'" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = ${PG_MAX_CONNECTIONS:-300}
fsync = ${PG_FSYNC:-on}
log_min_messages = warning
log_connections = off
EOF
    pg_ctl_start "$dir"

    as_owner sh -c "umask 077 && printf '%s\n' 'postgresql://pushai_admin:$password@127.0.0.1:$port/postgres' > '$dir/url'"
    cat "$dir/url"
    echo "pg.sh: cluster in $dir on 127.0.0.1:$port; stop it with: scripts/pg.sh stop $dir" >&2
}

cmd_stop() {
    local dir=${1:?usage: pg.sh stop DIR}
    [ -d "$dir/data" ] || die "no cluster found in $dir (no data directory)"
    pg_ctl_stop "$dir" 2>/dev/null || true
    rm -rf "$dir"
}

cmd_halt() {
    local dir=${1:?usage: pg.sh halt DIR}
    [ -d "$dir/data" ] || die "no cluster found in $dir (no data directory)"
    pg_ctl_stop "$dir"
}

cmd_resume() {
    local dir=${1:?usage: pg.sh resume DIR}
    [ -d "$dir/data" ] || die "no cluster found in $dir (no data directory)"
    pg_ctl_start "$dir"
}

cmd_url() {
    local dir=${1:?usage: pg.sh url DIR}
    cat "$dir/url"
}

case "${1:-}" in
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
halt) shift; cmd_halt "$@" ;;
resume) shift; cmd_resume "$@" ;;
url) shift; cmd_url "$@" ;;
*)
    sed -n '5,12p' "$0" >&2
    exit 2
    ;;
esac
