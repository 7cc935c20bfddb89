#!/usr/bin/env python3
"""Checks the Grafana dashboard and the alert rules against a live Prometheus (stdlib only).

Run by deploy/test-prometheus.sh once Prometheus has scraped neon-steward a few times and
loaded deploy/prometheus/alerts.yaml. For every dashboard query (after substituting Grafana's
variables the way an "All" selection would) it asks /api/v1/query and requires success and a
non-empty result; for every template variable it requires label_values(...) to find values;
for every alert rule it requires that Prometheus loaded it, evaluated it without error, and
that its expression also succeeds through /api/v1/query. Prints one line per check.
"""

import argparse
import json
import re
import time
import sys
import urllib.error
import urllib.parse
import urllib.request

# Grafana's built-in interval variables -> values for an instant query during a short CI run.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def api(base, path, params=None):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error body
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": f"request failed: {e}"}


def substitute(expr, variables):
    """Replaces Grafana variables; returns (expr, [unknown variable names])."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return variables[name]
        unknown.append(name)
        return m.group(0)

    return VAR_RE.sub(repl, expr), unknown


def wait_for_data(base, job, min_scrapes, timeout):
    """Waits until Prometheus has `min_scrapes` successful scrapes of `job` and has evaluated
    every loaded rule at least once. Prints why on timeout."""
    deadline = time.monotonic() + timeout
    query = f'sum_over_time(up{{job="{job}"}}[5m])'
    last = "no answer from Prometheus"
    while time.monotonic() < deadline:
        res = api(base, "/api/v1/query", {"query": query})
        if res.get("status") == "success":
            result = res["data"]["result"]
            ups = float(result[0]["value"][1]) if result else 0.0
            last = f"{ups:.0f} successful scrape(s) so far"
            if ups >= min_scrapes:
                rules = api(base, "/api/v1/rules")
                groups = rules.get("data", {}).get("groups", []) if rules.get("status") == "success" else []
                pending = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "unknown"]
                if not pending:
                    print(f"Prometheus has {last}; rules evaluated")
                    return True
                last += f"; rules not yet evaluated: {pending}"
            else:
                targets = api(base, "/api/v1/targets")
                active = targets.get("data", {}).get("activeTargets", []) if targets.get("status") == "success" else []
                last += "".join(f"; target {t.get('scrapeUrl')} is {t.get('health')}: {t.get('lastError') or '-'}" for t in active)
        time.sleep(1)
    print(f"FAIL  timed out after {timeout:.0f}s waiting for scrapes: {last}")
    return False


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules-file", required=True, help="path Prometheus loaded the rules from")
    ap.add_argument(
        "--allow-empty",
        action="append",
        default=[],
        metavar="TITLE",
        help="a panel title whose queries may return no data (reported, not failed); repeatable",
    )
    ap.add_argument("--scrape-job", default="neon-steward", help="scrape job name to wait for")
    ap.add_argument("--min-scrapes", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=90, help="seconds to wait for scrapes")
    args = ap.parse_args()
    base = args.prometheus.rstrip("/")
    failures = 0

    if not wait_for_data(base, args.scrape_job, args.min_scrapes, args.timeout):
        return 1

    def report(ok, what, detail=""):
        nonlocal failures
        if ok is False:
            failures += 1
        tag = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        print(f"{tag}  {what}" + (f"\n        {detail}" if detail else ""))

    # The daemon's labels must not clash with Prometheus's target labels: a clashing scraped
    # label is renamed `exported_<name>` (the scrape config deliberately has no honor_labels).
    print("== Scraped labels")
    res = api(base, "/api/v1/query", {"query": '{__name__=~"neon_steward_.+"}'})
    if res.get("status") != "success":
        report(False, "neon_steward_* series", res.get("error", ""))
    else:
        series = res["data"]["result"]
        clashes = sorted({k for s in series for k in s["metric"] if k.startswith("exported_")})
        report(bool(series) and not clashes,
               f"{len(series)} neon_steward_* series, labels renamed by Prometheus: {clashes or 'none'}")
        jobs = sorted({s["metric"].get("job") for s in series} - {None})
        report(jobs == [args.scrape_job], f"`job` is the scrape job on every series: {jobs}")

    with open(args.dashboard, encoding="utf-8") as f:
        dash = json.load(f)

    # Template variables: an "All" selection becomes the variable's allValue (or .*).
    variables = {}
    var_queries = []
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") in ("query", "custom", "textbox", "interval"):
            variables[v["name"]] = v.get("allValue") or ".*"
            if v.get("type") == "query":
                q = v.get("query")
                q = q.get("query") if isinstance(q, dict) else q
                var_queries.append((v["name"], q or ""))
        elif v.get("type") == "datasource":
            variables[v["name"]] = "prometheus"

    print(f"== Dashboard template variables ({args.dashboard})")
    for name, q in var_queries:
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            report(False, f"${name}: unsupported variable query {q!r}")
            continue
        selector, label = substitute(m.group(1), variables)[0], m.group(2)
        res = api(base, "/api/v1/query", {"query": selector})
        if res.get("status") != "success":
            report(False, f"${name}: {selector}", res.get("error", ""))
            continue
        values = sorted({s["metric"].get(label) for s in res["data"]["result"]} - {None})
        report(bool(values), f"${name}: label_values({selector}, {label}) -> {values}")

    print(f"== Dashboard panel queries")
    allowed = set(args.allow_empty)
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            raw = t.get("expr")
            if not raw:
                continue
            title = f"[{p.get('title')}] {t.get('refId', '?')}"
            expr, unknown = substitute(raw, variables)
            if unknown:
                report(False, title, f"unknown variables {unknown} in {raw}")
                continue
            res = api(base, "/api/v1/query", {"query": expr})
            if res.get("status") != "success":
                report(False, title, f"{res.get('errorType', 'error')}: {res.get('error')}\n        {expr}")
                continue
            data = res["data"]
            n = len(data["result"]) if data["resultType"] in ("vector", "matrix") else 1
            if n == 0:
                ok = None if p.get("title") in allowed else False
                report(ok, f"{title}: query ok but NO DATA" + (" (allowed)" if ok is None else ""), expr)
            else:
                report(True, f"{title}: {n} series")

    print(f"== Alert rules (as loaded by Prometheus from {args.rules_file})")
    res = api(base, "/api/v1/rules")
    if res.get("status") != "success":
        report(False, "/api/v1/rules", res.get("error", ""))
    else:
        rules = [
            r
            for g in res["data"]["groups"]
            if g.get("file") and g["file"].endswith(args.rules_file.split("/")[-1])
            for r in g["rules"]
        ]
        report(bool(rules), f"{len(rules)} rules loaded")
        for r in rules:
            name = r.get("name")
            if r.get("health") != "ok":
                report(False, f"{name}: rule health {r.get('health')}", r.get("lastError", ""))
                continue
            q = api(base, "/api/v1/query", {"query": r["query"]})
            if q.get("status") != "success":
                report(False, f"{name}: query", q.get("error", ""))
            else:
                report(True, f"{name}: evaluates (state now: {r.get('state', 'n/a')})")

    print("== " + ("all checks passed" if failures == 0 else f"{failures} check(s) FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
