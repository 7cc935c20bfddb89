#!/usr/bin/env bash
# cargo-deny over the dependency tree (see deny.toml): licences, bans (duplicate versions,
# wildcards) and sources. Installs the pinned cargo-deny once (a cold `cargo install` takes
# about 3-4 minutes on 2 cores) under CI_TOOLS (default /opt/neon-steward-ci), then checks.
#
#   deploy/deny.sh                  install if needed, then check
#   deploy/deny.sh --advisories     also check advisories (needs the advisory database,
#                                   a git repository this project's CI machines cannot reach)
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
root="${CI_TOOLS:-/opt/neon-steward-ci}/cargo-deny-$version"
checks=(licenses bans sources)
if [[ "${1:-}" == "--advisories" ]]; then checks+=(advisories); fi

if ! "$root/bin/cargo-deny" --version 2>/dev/null | grep -qx "cargo-deny $version"; then
    echo "=== deny: installing cargo-deny $version into $root"
    start=$SECONDS
    cargo install --locked --quiet cargo-deny --version "$version" --root "$root"
    echo "installed in $((SECONDS - start))s"
fi
echo "=== deny: cargo deny check ${checks[*]}"
"$root/bin/cargo-deny" check "${checks[@]}"
