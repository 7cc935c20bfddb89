#!/usr/bin/env python3
"""Checks what kubernetes-validate cannot: the ServiceMonitor (a CRD, not in the core schemas)
against testdata/servicemonitor-v1.schema.json, and that the manifests fit together (selectors
match labels, named ports exist, probes hit /healthz and /readyz, the policy in the ConfigMap is
TOML whose api_key_file is where the Secret is mounted, kustomization lists every file).

Needs PyYAML and jsonschema (both come with kubernetes-validate). Usage:
    check_kubernetes.py deploy/kubernetes deploy/testdata/servicemonitor-v1.schema.json
"""

import json
import os
import sys

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover
    tomllib = None

import jsonschema
import yaml

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
    print(("ok    " if ok else "FAIL  ") + what)


def main(directory, schema_path):
    docs = {}
    files = sorted(f for f in os.listdir(directory) if f.endswith((".yaml", ".yml")))
    for name in files:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.setdefault(doc.get("kind"), []).append((name, doc))

    def one(kind):
        items = docs.get(kind, [])
        check(len(items) == 1, f"exactly one {kind} (found {len(items)})")
        return items[0][1] if items else {}

    kustomization = one("Kustomization")
    listed = set(kustomization.get("resources", []))
    manifests = {f for f in files if f != "kustomization.yaml"}
    check(listed == manifests, f"kustomization lists every manifest ({sorted(manifests)})")

    # ServiceMonitor against the hand-written CRD subset.
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    sm = one("ServiceMonitor")
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(sm), key=str)
    for e in errors:
        print(f"        {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
    check(not errors, "ServiceMonitor matches the monitoring.coreos.com/v1 subset schema")

    cm, secret, dep, svc = one("ConfigMap"), one("Secret"), one("Deployment"), one("Service")
    pod = dep.get("spec", {}).get("template", {})
    pod_labels = pod.get("metadata", {}).get("labels", {})
    spec = pod.get("spec", {})
    containers = {c["name"]: c for c in spec.get("containers", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}

    sel = dep.get("spec", {}).get("selector", {}).get("matchLabels", {})
    check(sel.items() <= pod_labels.items(), "Deployment selector matches its pod labels")
    check(len(containers) >= 2 and "neon-steward" in containers, "pod has the app and the neon-steward sidecar")

    ns = containers.get("neon-steward", {})
    ports = {p.get("name"): p.get("containerPort") for p in ns.get("ports", [])}
    probes = {k: ns.get(k, {}).get("httpGet", {}) for k in ("livenessProbe", "readinessProbe")}
    check(probes["livenessProbe"].get("path") == "/healthz", "liveness probe on /healthz")
    check(probes["readinessProbe"].get("path") == "/readyz", "readiness probe on /readyz")
    for k, g in probes.items():
        check(g.get("port") in ports or g.get("port") in ports.values(), f"{k} port {g.get('port')!r} is a container port")
    env = {e["name"]: e.get("value") for e in ns.get("env", [])}
    listen = env.get("NEON_STEWARD_LISTEN", "")
    check(listen.startswith("0.0.0.0:") and int(listen.rsplit(":", 1)[1]) in ports.values(),
          f"NEON_STEWARD_LISTEN={listen!r} is on all interfaces at a declared container port")
    sc = ns.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
          and spec.get("securityContext", {}).get("runAsNonRoot") is True,
          "sidecar runs non-root, read-only root filesystem, no privilege escalation")

    # Service -> pod, ServiceMonitor -> Service.
    svc_sel = svc.get("spec", {}).get("selector", {})
    check(bool(svc_sel) and svc_sel.items() <= pod_labels.items(), "Service selects the pod")
    svc_ports = {p.get("name"): p for p in svc.get("spec", {}).get("ports", [])}
    for p in svc_ports.values():
        check(p.get("targetPort") in ports or p.get("targetPort") in ports.values(),
              f"Service port {p.get('name')!r} targets a sidecar port")
    sm_sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
    svc_labels = svc.get("metadata", {}).get("labels", {})
    check(bool(sm_sel) and sm_sel.items() <= svc_labels.items(), "ServiceMonitor selects the Service")
    for ep in sm.get("spec", {}).get("endpoints", []):
        check(ep.get("port") in svc_ports, f"ServiceMonitor endpoint port {ep.get('port')!r} is a Service port")
        # The daemon's labels do not clash with the target labels; honorLabels would only let a
        # scraped label overwrite Prometheus's `job`/`instance`.
        check(not ep.get("honorLabels"), "ServiceMonitor leaves the target labels alone (no honorLabels)")

    # ConfigMap and Secret are mounted where the daemon looks.
    mounts = {m["name"]: m["mountPath"] for m in ns.get("volumeMounts", [])}
    cm_vol = next((n for n, v in volumes.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"]), None)
    sec_vol = next((n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]), None)
    check(cm_vol in mounts, "the policy ConfigMap is mounted in the sidecar")
    check(sec_vol in mounts, "the API key Secret is mounted in the sidecar")
    args = ns.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    cm_files = {f"{mounts.get(cm_vol)}/{k}": v for k, v in cm.get("data", {}).items()}
    check(config_path in cm_files, f"--config {config_path} is a file of the ConfigMap")
    policy_text = cm_files.get(config_path, "")
    if tomllib is None:
        print("warn  Python < 3.11: policy TOML not parsed")
        return
    try:
        policy = tomllib.loads(policy_text)
    except tomllib.TOMLDecodeError as e:
        check(False, f"policy is valid TOML: {e}")
        return
    check(True, "policy is valid TOML")
    key_file = policy.get("api", {}).get("api_key_file")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    check(key_file in {f"{mounts.get(sec_vol)}/{k}" for k in secret_keys},
          f"api_key_file {key_file} is the mounted Secret key")
    state = env.get("STATE_DIRECTORY")
    check(state in mounts.values(), f"STATE_DIRECTORY {state} is a mounted (writable) volume")
    store = policy.get("store", {}).get("url", "")
    check(not store or store.startswith(f"sqlite://{state}/"), f"store {store!r} lives on the state volume")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
    print("== " + ("all checks passed" if failures == 0 else f"{failures} check(s) FAILED"))
    sys.exit(1 if failures else 0)
