#!/usr/bin/env bash
# Lets a real Prometheus scrape neon-steward and checks, through Prometheus's HTTP API, that
# every Grafana panel query and every alert rule parses and evaluates, and that every panel
# query returns data.
#
# Usage:
#   deploy/test-prometheus.sh http://127.0.0.1:9187/metrics [--allow-empty "Panel title"]...
#   deploy/test-prometheus.sh --fixture      # self-test: serves deploy/testdata/metrics.prom
#
# Needs: prometheus (Debian package `prometheus`, or PROMETHEUS=/path/to/prometheus), python3.
# Prometheus listens on 127.0.0.1 on a free port with a throw-away TSDB and scrapes only the
# given URL (every second). Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
prometheus="${PROMETHEUS:-prometheus}"
dashboard="${DASHBOARD:-$here/grafana/neon-steward.json}"
rules="${RULES:-$here/prometheus/alerts.yaml}"

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[[ $# -ge 1 ]] || usage
target="$1"; shift
extra=("$@")

command -v "$prometheus" >/dev/null || { echo "FAIL: $prometheus not found (apt-get install prometheus)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 not found" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [[ "$target" == "--fixture" ]]; then
    port="$(free_port)"
    python3 -m http.server --bind 127.0.0.1 --directory "$here/testdata" "$port" >"$work/http.log" 2>&1 &
    pids+=("$!")
    target="http://127.0.0.1:$port/metrics.prom"
    echo "serving the fixture at $target"
fi

# Split the URL into what a scrape config wants.
read -r scheme hostport path < <(python3 -c '
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
if u.scheme not in ("http", "https") or not u.netloc:
    sys.exit("not an http(s) URL: " + sys.argv[1])
print(u.scheme, u.netloc, u.path or "/metrics")' "$target")

prom_port="$(free_port)"
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $rules
scrape_configs:
  - job_name: neon-steward
    # Deliberately no honor_labels: the daemon's labels must not clash with the target labels.
    scheme: $scheme
    metrics_path: $path
    static_configs:
      - targets: ["$hostport"]
YAML

echo "starting $("$prometheus" --version 2>&1 | head -n1) on 127.0.0.1:$prom_port, scraping $target"
"$prometheus" \
    --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" \
    --log.level=warn \
    >"$work/prometheus.log" 2>&1 &
prom_pid="$!"
pids+=("$prom_pid")

# Wait for Prometheus to be ready; fail fast if it exits (e.g. it rejected the rules file).
ready=0
for _ in $(seq 1 60); do
    if ! kill -0 "$prom_pid" 2>/dev/null; then
        echo "FAIL: prometheus exited; its log:"; cat "$work/prometheus.log"; exit 1
    fi
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$prom_port/-/ready" 2>/dev/null; then
        ready=1; break
    fi
    sleep 0.5
done
[[ $ready == 1 ]] || { echo "FAIL: prometheus not ready after 30s"; tail -n 30 "$work/prometheus.log"; exit 1; }

status=0
python3 "$here/check_prometheus_queries.py" \
    --prometheus "http://127.0.0.1:$prom_port" \
    --dashboard "$dashboard" \
    --rules-file "$rules" \
    ${extra[@]+"${extra[@]}"} || status=$?

if [[ $status -ne 0 ]]; then
    echo "--- prometheus log (last 30 lines) ---"
    tail -n 30 "$work/prometheus.log" || true
fi
exit "$status"
