#!/usr/bin/env bash
# Neon's own clients, unmodified, against `neon-sim serve`: the CLI (npm `neonctl` 5, which runs
# package `neon` 5, and the current `neon` 6 on its own), the TypeScript SDK (`@neondatabase/api-client`) and the python
# SDK (`neon-api`), each pinned, installed into a temporary directory. Every step a user runs
# daily must pass; the first failure stops the script with the command and its output.
# What is not emulated is listed in sim/spec/README.md.
#
# Usage: bash sim/compat/run.sh [--install-only]   (from anywhere; needs cargo, node >= 20,
#        npm, python3)
# NEON_SIM_BIN=PATH uses that neon-sim instead of building one.
# COMPAT_TOOLS_DIR=DIR installs the clients into DIR (kept, and reused when it already holds
# these versions) instead of a temporary directory; with --install-only the script stops
# after installing (.ci/run installs in the background while the tests build).
set -euo pipefail
install_only=0
case "${1:-}" in
    --install-only) install_only=1 ;;
    "") ;;
    *) echo "usage: bash sim/compat/run.sh [--install-only]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."

NEONCTL_VERSION=5.0.1
NEON_CLI_VERSION=6.2.3   # `neon`, neonctl's successor package
API_CLIENT_VERSION=2.7.3
NEON_API_PY_VERSION=0.3.0
PYDANTIC_VERSION=2.14.4  # what neon-api 0.3.0 resolves to today, pinned

work="$(mktemp -d)"
sim_pid=""
cleanup() {
    if [[ -n "$sim_pid" ]]; then kill -INT "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

tools="${COMPAT_TOOLS_DIR:-$work/tools}"
versions="neonctl@$NEONCTL_VERSION neon@$NEON_CLI_VERSION @neondatabase/api-client@$API_CLIENT_VERSION neon-api==$NEON_API_PY_VERSION pydantic==$PYDANTIC_VERSION"
if [[ -f "$tools/installed" && "$(cat "$tools/installed")" == "$versions" ]]; then
    echo "=== compat: clients already in $tools ($versions)"
else
    echo "=== compat: installing $versions"
    rm -rf "$tools"
    mkdir -p "$tools/neon6"
    (cd "$tools" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error \
        "neonctl@$NEONCTL_VERSION" "@neondatabase/api-client@$API_CLIENT_VERSION" >/dev/null)
    (cd "$tools/neon6" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error \
        "neon@$NEON_CLI_VERSION" >/dev/null)
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "neon-api==$NEON_API_PY_VERSION" "pydantic==$PYDANTIC_VERSION"
    echo "$versions" >"$tools/installed"
fi
[[ $install_only == 1 ]] && exit 0

# NEON_SIM_BIN: a neon-sim binary built already (.ci/run passes the one `cargo test` built).
sim_bin="${NEON_SIM_BIN:-}"
if [[ -z "$sim_bin" ]]; then
    cargo build --quiet -p neon-sim --bin neon-sim
    sim_bin=target/debug/neon-sim
fi
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="compat-key-$RANDOM$RANDOM"
# 405 projects in one organization: listings page past Neon's 400 limit.
"$sim_bin" serve --port "$port" --projects 405 --orgs 1 --api-key "$key" \
    --operation-duration 300ms --no-rate-limit >"$work/sim.log" 2>&1 &
sim_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
    if curl -fsS "$base/_sim/clock" >/dev/null 2>&1; then break; fi
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.log"; echo "FAIL: neon-sim exited"; exit 1; }
    sleep 0.1
done
export NEON_API_HOST="$base/api/v2" NEON_API_KEY="$key" NEON_SIM_BASE="$base"

passed=0
failed=0
# step NAME CMD...: runs CMD; its output is kept in $out.
step() {
    local name="$1"; shift
    if out="$("$@" 2>&1)"; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name: $*"
        echo "$out" | head -40
        echo "--- neon-sim log (tail)"; tail -20 "$work/sim.log"
        echo "$passed passed, $failed failed"
        exit 1
    fi
}
# expect NAME NEEDLE: the last step's output contains NEEDLE.
expect() {
    if grep -qF -- "$2" <<<"$out"; then return 0; fi
    failed=$((failed + 1))
    echo "FAIL $1: output lacks ${2@Q}:"; echo "$out" | head -40
    echo "$passed passed, $failed failed"
    exit 1
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1" <<<"$out"; }

neon() {
    "$tools/node_modules/.bin/neonctl" --no-analytics --no-color --config-dir "$work/neon-config" \
        --context-file "$work/neon-context" "$@"
}

echo "=== compat: neonctl $NEONCTL_VERSION"
step "neonctl me" neon me -o json
expect "me has a billing account" '"billing_account"'
step "neonctl orgs list" neon orgs list -o json
org="$(json 'd[0]["id"]')"
step "neonctl projects list (no org: owned and shared)" neon projects list
expect "shared section" "shared with you"
step "neonctl projects list --org-id, past 400 (json)" neon projects list --org-id "$org" -o json
count="$(json 'len(d["projects"]) if isinstance(d, dict) else len(d)')"
[[ "$count" -ge 405 ]] || { echo "FAIL projects list paged to $count, want >= 405"; exit 1; }
step "neonctl projects list --org-id (yaml)" neon projects list --org-id "$org" -o yaml
step "neonctl projects create" neon projects create --name compat --org-id "$org" -o json
project="$(json 'd["project"]["id"]')"
step "neonctl projects get" neon projects get "$project" -o yaml
expect "project yaml" "name: compat"
step "neonctl projects update" neon projects update "$project" --name compat-renamed -o json
expect "renamed" '"compat-renamed"'
step "neonctl set-context" neon set-context --project-id "$project"

expiry="$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc)+d.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))')"
step "neonctl branches create with compute and expiry" \
    neon branches create --name preview/pr-1 --expires-at "$expiry" -o json
expect "expiry kept" '"expires_at"'
step "neonctl branches create (staging)" neon branches create --name staging -o json
step "neonctl branches list (table)" neon branches list
expect "branch listed" "preview/pr-1"
step "neonctl branches get" neon branches get preview/pr-1 -o json
step "neonctl branches rename" neon branches rename preview/pr-1 preview-pr-1 -o json
expect "renamed branch" '"preview-pr-1"'
step "neonctl branches set-expiration" neon branches set-expiration preview-pr-1 --expires-at "$expiry" -o json
step "neonctl branches set-default staging" neon branches set-default staging -o json
step "neonctl branches set-default main" neon branches set-default main -o json
step "neonctl branches reset --parent" neon branches reset staging --parent -o json
step "neonctl branches restore ^parent" neon branches restore staging ^parent -o json
step "neonctl branches add-compute (read_only)" neon branches add-compute staging --type read_only -o json
step "neonctl databases create" neon databases create --name orders --branch staging -o json
step "neonctl databases list" neon databases list --branch staging -o json
expect "database listed" '"orders"'
step "neonctl roles create" neon roles create --name app --branch staging -o json
step "neonctl roles list" neon roles list --branch staging -o yaml
expect "role listed" "name: app"
step "neonctl connection-string" neon connection-string staging --database-name orders --role-name app
expect "a postgres URI" "postgresql://app:"
step "neonctl connection-string --pooled" neon connection-string staging --database-name neondb --role-name neondb_owner --pooled
expect "pooled host" "-pooler."
step "neonctl roles delete" neon roles delete app --branch staging -o json
step "neonctl databases delete" neon databases delete orders --branch staging -o json
step "neonctl operations list" neon operations list -o json
expect "operations" '"action"'
step "neonctl snapshots create (root branch)" neon snapshots create --branch main --name compat-snap -o json
snapshot="$(json 'd["snapshot"]["id"] if "snapshot" in d else d["id"]')"
step "neonctl snapshots list" neon snapshots list -o json
expect "snapshot listed" "compat-snap"
step "neonctl snapshots schedule get" neon snapshots schedule get --branch main -o json
step "neonctl snapshots restore --name" neon snapshots restore "$snapshot" --name from-snap -o json
step "neonctl snapshots delete" neon snapshots delete "$snapshot" -o json
step "neonctl branches delete" neon branches delete preview-pr-1 -o json
step "neonctl projects delete" neon projects delete "$project" -o json
step "neonctl projects list --recoverable-only" neon projects list --recoverable-only -o json
expect "recoverable" "$project"
step "neonctl projects recover" neon projects recover "$project" -o json

echo "=== compat: neon $NEON_CLI_VERSION (neonctl's successor)"
neon6() {
    "$tools/neon6/node_modules/.bin/neon" --no-analytics --no-color --config-dir "$work/neon6-config" \
        --context-file "$work/neon6-context" "$@"
}
step "neon me" neon6 me -o json
expect "me has a billing account" '"billing_account"'
step "neon projects list" neon6 projects list
expect "shared section" "shared with you"
step "neon projects create" neon6 projects create --name compat-six --org-id "$org" -o json
project6="$(json 'd["project"]["id"]')"
step "neon set-context" neon6 set-context --project-id "$project6"
step "neon branches create with compute and expiry" neon6 branches create --name preview/six --expires-at "$expiry" -o yaml
expect "expiry kept" "expires_at"
step "neon branches list" neon6 branches list -o json
expect "branch listed" "preview/six"
step "neon connection-string" neon6 connection-string preview/six
expect "a postgres URI" "postgresql://neondb_owner:"
step "neon branches delete" neon6 branches delete preview/six -o json
step "neon projects delete" neon6 projects delete "$project6" -o json

echo "=== compat: @neondatabase/api-client $API_CLIENT_VERSION"
step "api-client daily calls" node "sim/compat/api_client.mjs" "$tools/node_modules/@neondatabase/api-client"

echo "=== compat: python neon-api $NEON_API_PY_VERSION"
step "neon-api daily calls" "$tools/venv/bin/python" sim/compat/python_sdk.py

echo "$passed passed, $failed failed"
