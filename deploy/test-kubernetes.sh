#!/usr/bin/env bash
# Validates deploy/kubernetes/:
#   1. the core objects (ConfigMap, Secret, Deployment, Service) against the Kubernetes OpenAPI
#      schemas bundled in PyPI's kubernetes-validate, in strict mode (unknown fields are errors),
#      for the oldest and newest Kubernetes versions in K8S_VERSIONS;
#   2. the ServiceMonitor (a CRD, absent from the core schemas) against
#      deploy/testdata/servicemonitor-v1.schema.json, a hand-written subset of the CRD, and the
#      manifests' consistency (selectors, ports, probes, mounts, policy) with check_kubernetes.py;
#   3. if NEON_STEWARD_BIN names a built neon-steward binary, the policy in the ConfigMap with
#      `neon-steward validate` (otherwise this step is reported as not run).
# kubernetes-validate comes from $K8S_VALIDATE_VENV (default /opt/neon-steward-ci/venv, made
# by deploy/ci.sh) or from PATH; without it this script FAILS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$here/kubernetes"
venv="${K8S_VALIDATE_VENV:-/opt/neon-steward-ci/venv}"
versions="${K8S_VERSIONS:-1.29.0 1.37.0}"

if [[ -x "$venv/bin/kubernetes-validate" ]]; then
    kv="$venv/bin/kubernetes-validate"; py="$venv/bin/python"
elif command -v kubernetes-validate >/dev/null 2>&1; then
    kv="$(command -v kubernetes-validate)"; py="python3"
else
    echo "FAIL: kubernetes-validate not found (deploy/ci.sh installs it: pip install kubernetes-validate)" >&2
    exit 1
fi

fail=0
core=("$dir/configmap.yaml" "$dir/secret.yaml" "$dir/deployment.yaml" "$dir/service.yaml")
echo "== core objects, strict schemas ($("$kv" --version))"
for v in $versions; do
    if ! "$kv" --strict -k "$v" "${core[@]}"; then fail=1; fi
done
# Make sure nothing outside `core` and the ServiceMonitor slipped in unvalidated.
for f in "$dir"/*.yaml; do
    case "$(basename "$f")" in
        configmap.yaml|secret.yaml|deployment.yaml|service.yaml|servicemonitor.yaml|kustomization.yaml) ;;
        *) echo "FAIL: $f is not validated by this script; add it"; fail=1 ;;
    esac
done

ha=("$dir/ha/configmap.yaml" "$dir/ha/secret.yaml" "$dir/ha/deployment.yaml")
echo "== ha/ (2 replicas on PostgreSQL), strict schemas"
for v in $versions; do
    if ! "$kv" --strict -k "$v" "${ha[@]}"; then fail=1; fi
done
for f in "$dir"/ha/*.yaml; do
    case "$(basename "$f")" in
        configmap.yaml|secret.yaml|deployment.yaml|kustomization.yaml) ;;
        *) echo "FAIL: $f is not validated by this script; add it"; fail=1 ;;
    esac
done
if ! grep -q '^  replicas: 2$' "$dir/ha/deployment.yaml"; then
    echo "FAIL: ha/deployment.yaml does not run 2 replicas"; fail=1
fi

echo "== ServiceMonitor schema subset and cross-manifest checks"
"$py" "$here/check_kubernetes.py" "$dir" "$here/testdata/servicemonitor-v1.schema.json" || fail=1

echo "== policy in the ConfigMap"
if [[ -n "${NEON_STEWARD_BIN:-}" ]]; then
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    "$py" -c '
import sys, yaml
cm = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "ConfigMap")
sys.stdout.write(cm["data"]["config.toml"])' "$dir/configmap.yaml" > "$tmp/config.toml"
    # A dummy key: validation must not need the real Secret file.
    if NEON_API_KEY=validation-only "$NEON_STEWARD_BIN" --config "$tmp/config.toml" validate; then
        echo "ok    neon-steward validate accepts the ConfigMap's policy"
    else
        echo "FAIL  neon-steward validate rejects the ConfigMap's policy"; fail=1
    fi
    "$py" -c '
import sys, yaml
cm = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "ConfigMap")
sys.stdout.write(cm["data"]["config.toml"])' "$dir/ha/configmap.yaml" > "$tmp/ha.toml"
    # The store URL comes from the Secret through the environment, as in the Deployment.
    if NEON_API_KEY=validation-only NEON_STEWARD_STORE_URL=postgres://steward@db.invalid/steward \
        "$NEON_STEWARD_BIN" --config "$tmp/ha.toml" validate; then
        echo "ok    neon-steward validate accepts ha/'s policy"
    else
        echo "FAIL  neon-steward validate rejects ha/'s policy"; fail=1
    fi
else
    echo "not run: set NEON_STEWARD_BIN=target/debug/neon-steward to validate the policy"
fi

[[ $fail == 0 ]] && echo "== kubernetes: all checks passed" || echo "== kubernetes: FAILED"
exit "$fail"
