"""Compares the Prometheus exposition of zerohop and Envoy for a list of series.

Usage: compare.py ZEROHOP_FILE ENVOY_FILE SERIES_FILE ZEROHOP_LISTENER ENVOY_LISTENER

Both texts are parsed with prometheus_client (as a Prometheus server would read them).
Each line of SERIES_FILE names one sample, `name{label="value",...}`; the listener's
address label (`envoy_listener_address`) is the one placeholder, `LISTENER`, which stands
for each proxy's own listener. Prints one JSON object: the samples missing on either side
and those whose values differ, each with both values. Exit status 0 either way.
"""

import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(path, listener):
    out = {}
    with open(path) as f:
        text = f.read()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if labels.get("envoy_listener_address") == listener:
                labels["envoy_listener_address"] = "LISTENER"
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


def wanted(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if not m:
                raise SystemExit(f"bad series line: {line}")
            labels = dict(LABEL.findall(m.group(2) or ""))
            out.append((line, (m.group(1), frozenset(labels.items()))))
    return out


def main():
    z_path, e_path, series, z_listener, e_listener = sys.argv[1:6]
    z = samples(z_path, z_listener)
    e = samples(e_path, e_listener)
    report = {"missing_in_zerohop": [], "missing_in_envoy": [], "different": [], "compared": 0}
    for line, (name, labels) in wanted(series):
        # prometheus_client names a counter's samples `<family>_total`: a counter Envoy
        # calls `..._destroy` reads as `..._destroy_total` on both sides.
        key = (name, labels)
        if key not in e and key not in z:
            key = (name + "_total", labels)
        if key not in e:
            report["missing_in_envoy"].append(line)
            continue
        if key not in z:
            report["missing_in_zerohop"].append(line)
            continue
        report["compared"] += 1
        if z[key] != e[key]:
            report["different"].append({"series": line, "zerohop": z[key], "envoy": e[key]})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
