#!/usr/bin/env python3
"""Checks that deploy/testdata/metrics.prom (the fixture test-prometheus.sh --fixture scrapes)
still matches the metric families declared in src/telemetry/metrics.rs: the same family
names, each with exactly the declared label names (plus `le` on histogram buckets). Stdlib
only. Usage: check_fixture.py src/telemetry/metrics.rs deploy/testdata/metrics.prom"""

import re
import sys


def declared(rust_src):
    """family -> set of label names, from the register(...) blocks of metrics.rs."""
    fams = {}
    for block in re.split(r"\bregister\(", rust_src)[1:]:
        name = re.search(r'(?:opts|HistogramOpts::new)\(\s*"(\w+)"', block)
        if not name:
            continue
        labels = re.search(r"&\[([^\]]*)\]", block.split("registry: r")[0])
        label_set = set(re.findall(r'"(\w+)"', labels.group(1))) if labels else set()
        fams["neon_steward_" + name.group(1)] = label_set
    # Families made outside register(...) (the consumption gauges, built by a function so
    # that each exporter can have its own): `opts("name", ...)` with a `let labels = &[...]`.
    for fn in re.finditer(r"fn \w+_families\(\)[^{]*\{(.*?)\n\}", rust_src, re.S):
        body = fn.group(1)
        labels = re.search(r"let labels = &\[([^\]]*)\]", body)
        label_set = set(re.findall(r'"(\w+)"', labels.group(1))) if labels else set()
        for name in re.findall(r'opts\(\s*"(\w+)"', body):
            fams["neon_steward_" + name] = label_set
    return fams


def scraped(text):
    fams = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\w+)(?:\{(.*)\})?\s", line)
        if not m:
            sys.exit(f"unparsable fixture line: {line}")
        name, labels = m.group(1), set(re.findall(r'(\w+)="', m.group(2) or ""))
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base != name and name.endswith("_bucket"):
            labels.discard("le")
        fams.setdefault(base, set()).update(labels)
    return fams


def main(rust_path, fixture_path):
    want = declared(open(rust_path, encoding="utf-8").read())
    got = scraped(open(fixture_path, encoding="utf-8").read())
    bad = 0
    if len(want) < 10:
        print(f"FAIL  found only {len(want)} families in {rust_path}: has its layout changed?")
        return 1
    for fam in sorted(set(want) | set(got)):
        if fam not in got:
            print(f"FAIL  {fam} is declared in metrics.rs but missing from the fixture"); bad += 1
        elif fam not in want:
            print(f"FAIL  {fam} is in the fixture but not declared in metrics.rs"); bad += 1
        elif want[fam] != got[fam]:
            print(f"FAIL  {fam}: labels {sorted(got[fam])} in the fixture, {sorted(want[fam])} declared"); bad += 1
    print(f"{'ok' if not bad else 'FAIL'}  fixture vs metrics.rs: {len(want)} families compared")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
