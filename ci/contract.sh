#!/usr/bin/env bash
# The OpenAPI contract run (SPEC §13): starts `agentnexus serve` on a free port with a fresh
# SQLite store, and runs schemathesis with every check against /api/openapi.json as its admin.
# usage: ci/contract.sh BINARY PYTHON_VENV   (both built or made by .ci/run)
set -euo pipefail
bin=$1 venv=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
cleanup() {
  [[ -n ${pid:-} ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The management rate limit is lifted for the run (the tester sends thousands of requests in
# seconds), and private webhook addresses are allowed: the documented pattern for outbound URLs
# includes IP literals, which a production server refuses at delivery when they are private.
# GitHub is a closed port here: a binding the tester makes syncs to a clear failure at once.
AGENTNEXUS_DATABASE_URL="sqlite://$work/contract.db" AGENTNEXUS_LISTEN="127.0.0.1:$port" \
  AGENTNEXUS_SECRET_KEY_FILE="$work/contract.key" AGENTNEXUS_BOOTSTRAP_EMAIL=contract@example.com \
  AGENTNEXUS_ADMIN_RATE_LIMIT_PER_SECOND=0 AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE=1 \
  AGENTNEXUS_TIMEOUT_SWEEP_SECS=0 RUST_LOG=warn \
  AGENTNEXUS_GITHUB_API_URL=http://127.0.0.1:9 AGENTNEXUS_GITHUB_POLL_SECS=0 \
  "$bin" serve >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 100); do
  grep -q "admin key" "$work/serve.out" 2>/dev/null && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
key=$(awk '/admin key/ {print $3}' "$work/serve.out")
[[ -n $key ]] || { echo "the server did not start:" >&2; cat "$work/serve.err" >&2; exit 1; }
# One worker: Python 3.11's `ast` is not safe to use from several threads at once, and
# Hypothesis parses sources while describing strategies (CPython gh-106905).
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "http://127.0.0.1:$port/api/openapi.json" \
  -H "Authorization: Bearer $key" --checks all --max-examples "${CONTRACT_EXAMPLES:-100}" \
  --seed "${CONTRACT_SEED:-20261204}" --workers 1 --no-color --generation-database none
