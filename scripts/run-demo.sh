#!/usr/bin/env bash
# Installs what is missing, builds, and starts pushaid on 127.0.0.1:8080 with
# the embedded default: a SQLite database ./pushai.db holding a "demo"
# organization, one API key and the agents of examples/agents.json.
#
# On the first start the key is printed once and saved to ./pushai-demo.key
# (mode 0600). The agents use the offline "echo" provider, or OpenAI when
# PUSHAI_OPENAI_API_KEY is set (model: $PUSHAI_OPENAI_MODEL, default
# gpt-4o-mini). Extra arguments go to `pushaid serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
make -s -j"$(nproc)" build/pushaid

db=./pushai.db
key_file=./pushai-demo.key
pushaid=build/pushaid

if [ ! -e "$db" ]; then
    "$pushaid" --db "$db" admin org create demo --name "Demo organization" >/dev/null
    (umask 077 && "$pushaid" --db "$db" admin key create --org demo --label demo >"$key_file")
    if [ -n "${PUSHAI_OPENAI_API_KEY:-}" ]; then
        "$pushaid" --db "$db" admin agent import --org demo examples/agents.json \
            --provider openai --model "${PUSHAI_OPENAI_MODEL:-gpt-4o-mini}" >/dev/null
    else
        "$pushaid" --db "$db" admin agent import --org demo examples/agents.json >/dev/null
    fi
    echo
    echo "Demo API key, shown once (also saved in $key_file, mode 0600):"
    echo
    echo "    $(cat "$key_file")"
    echo
fi

exec "$pushaid" --db "$db" serve "$@"
