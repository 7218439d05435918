#!/usr/bin/env python3
"""Summarise the measurements of benches/live.sh: table, ratios to `kernel`, targets, JSON.

The NAT configurations (nat-*) are compared with `nat-kernel` instead, and their CPU added
over `none` is not computed (`none` is the other test bed).

    report.py META.json RESULTS.jsonl [--json OUT]

META.json: {"machine": {...}, "parameters": {...}, "configs": [NAME, ...]}.
RESULTS.jsonl, one object per line, as benches/live.sh appends them:
    {"type": "sample", "config": C, "metric": M, "value": X}
    {"type": "info",   "config": C, "key": K, "value": ANY}
    {"type": "check",  "config": C, "name": TEXT, "ok": BOOL, "detail": TEXT}
    {"type": "error",  "config": C, "detail": TEXT}
Prints the tables on stdout. Exit status 0.
"""

import argparse
import json
import statistics
import sys

# (metric, label, decimals, higher_is_better)
METRICS = [
    ("bulk_gbps", "bulk FTP download, Gbit/s", 2, True),
    ("setup_per_s", "FTP data connections/s", 0, True),
    ("tftp_per_s", "TFTP transfers/s", 0, True),
    ("cpu_s_per_gb", "CPU-s/GB, whole machine", 2, False),
    ("cpu_added_s_per_gb", "CPU-s/GB added over none", 2, False),
    ("pinhole_cpu_s_per_gb", "CPU-s/GB, pinhole process", 2, False),
]
RATIO_METRICS = [
    ("bulk_gbps", "bulk"),
    ("setup_per_s", "setup"),
    ("tftp_per_s", "tftp"),
    ("cpu_s_per_gb", "CPU/GB"),
]
# The issues' targets: (config, metric, minimum ratio to its baseline). Issue 6: offload and
# inspect-all against kernel; issue 16 (NAT routers): nat-offload against nat-kernel, >= 0.9 on
# both; nat-inspect-all keeps inspect-all's bulk target and is held to 0.9 for setups.
TARGETS = [
    ("offload", "bulk_gbps", 0.9),
    ("offload", "setup_per_s", 0.8),
    ("inspect-all", "bulk_gbps", 0.3),
    ("nat-offload", "bulk_gbps", 0.9),
    ("nat-offload", "setup_per_s", 0.9),
    ("nat-inspect-all", "bulk_gbps", 0.3),
    ("nat-inspect-all", "setup_per_s", 0.9),
]


def baseline(config):
    """The configuration `config` is compared with."""
    return "nat-kernel" if config.startswith("nat-") else "kernel"


def summary(samples):
    if not samples:
        return None
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def fmt(s, decimals):
    if s is None:
        return "-"
    f = "%%.%df" % decimals
    if len(s["samples"]) == 1:
        return f % s["median"]
    return "%s [%s..%s]" % (f % s["median"], f % s["min"], f % s["max"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meta")
    p.add_argument("results")
    p.add_argument("--json")
    a = p.parse_args()
    with open(a.meta) as f:
        meta = json.load(f)
    records = []
    with open(a.results) as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    configs = meta["configs"]

    samples = {c: {} for c in configs}
    info = {c: {} for c in configs}
    checks = {c: [] for c in configs}
    errors = {c: [] for c in configs}
    for r in records:
        c = r["config"]
        if r["type"] == "sample":
            samples[c].setdefault(r["metric"], []).append(r["value"])
        elif r["type"] == "info":
            info[c][r["key"]] = r["value"]
        elif r["type"] == "check":
            checks[c].append({"name": r["name"], "ok": r["ok"], "detail": r.get("detail", "")})
        elif r["type"] == "error":
            errors[c].append(r["detail"])

    # CPU added over `none`: each sample minus none's median.
    none_cpu = summary(samples.get("none", {}).get("cpu_s_per_gb", []))
    if none_cpu is not None:
        for c in configs:
            if c != "none" and not c.startswith("nat-") and samples[c].get("cpu_s_per_gb"):
                samples[c]["cpu_added_s_per_gb"] = [
                    x - none_cpu["median"] for x in samples[c]["cpu_s_per_gb"]]

    stats = {c: {m: summary(samples[c].get(m, [])) for m, *_ in METRICS} for c in configs}

    # Table: one row per metric, one column per configuration.
    width = max(24, *(len(fmt(stats[c][m], d)) + 2 for c in configs for m, _, d, _ in METRICS))
    label_w = max(len(label) for _, label, _, _ in METRICS) + 2
    print("Results: median [min..max] over the repetitions")
    print("".ljust(label_w) + "".join(c.rjust(width) for c in configs))
    for m, label, d, _ in METRICS:
        print(label.ljust(label_w) + "".join(fmt(stats[c][m], d).rjust(width) for c in configs))
    for key, label in (("setup_errors", "FTP setup errors"), ("tftp_errors", "TFTP errors")):
        print(label.ljust(label_w) + "".join(
            (str(int(sum(samples[c][key]))) if samples[c].get(key) else "-").rjust(width)
            for c in configs))
    bg = {c: summary(samples[c].get("bg_busy_cores", [])) for c in configs}
    print("background busy CPUs".ljust(label_w) + "".join(fmt(bg[c], 2).rjust(width)
                                                          for c in configs))
    # pinhole's drops over all rounds (the rounds' snapshots; each round is a fresh daemon).
    pinhole_drops = {}
    for c in configs:
        rounds = [v for k, v in info[c].items() if k.startswith("pinhole_stats_round_")]
        if rounds:
            total = {}
            for r in rounds:
                for reason, n in (r.get("drops") or {}).items():
                    total[reason] = total.get(reason, 0) + n
            total["queue_enobufs"] = sum(r.get("queue_enobufs") or 0 for r in rounds)
            pinhole_drops[c] = total
            print("pinhole %s, all rounds: drops %s; queue ENOBUFS %d" % (
                c, ", ".join("%s %d" % kv for kv in sorted(total.items())
                             if kv[0] != "queue_enobufs") or "none", total["queue_enobufs"]))
    for c in configs:
        for e in errors[c]:
            print("FAILED %s: %s" % (c, e))

    # Ratios to kernel (to nat-kernel for the NAT configurations).
    ratios = {}
    for base in ("kernel", "nat-kernel"):
        group = [c for c in configs if baseline(c) == base]
        if not group:
            continue
        kernel = stats.get(base)
        print()
        if kernel is None:
            print("Ratios to %s: n/a (the %s configuration was not run)" % (base, base))
            continue
        print("Ratios of medians to %s (throughput and rates: higher is better; CPU/GB: lower)"
              % base)
        print("".ljust(17) + "".join(lbl.rjust(10) for _, lbl in RATIO_METRICS))
        for c in group:
            ratios[c] = {}
            row = c.ljust(17)
            for m, _ in RATIO_METRICS:
                k, x = kernel.get(m), stats[c].get(m)
                r = x["median"] / k["median"] if k and x and k["median"] else None
                ratios[c][m] = r
                row += ("%.2f" % r if r is not None else "-").rjust(10)
            print(row)

    # Targets.
    targets = []
    print()
    print("Targets (ratios of medians to kernel, or to nat-kernel)")
    for c, m, minimum in TARGETS:
        if c not in configs and baseline(c) not in configs:
            continue
        r = ratios.get(c, {}).get(m)
        status = "n/a" if r is None else ("PASS" if r >= minimum else "MISS")
        targets.append({"config": c, "metric": m, "minimum": minimum, "ratio": r,
                        "baseline": baseline(c), "status": status})
        print("  %-15s %-12s >= %.1f x %-10s: %s%s" % (
            c, m, minimum, baseline(c), status, "" if r is None else " (%.2f)" % r))

    failed_checks = [(c, k) for c in configs for k in checks[c] if not k["ok"]]
    if failed_checks:
        print()
        for c, k in failed_checks:
            print("CHECK FAILED %s: %s: %s" % (c, k["name"], k["detail"]))

    if a.json:
        out = {
            "machine": meta["machine"],
            "parameters": meta["parameters"],
            "configs": {
                c: {
                    "metrics": {m: stats[c][m] for m, *_ in METRICS if stats[c][m]},
                    "errors": {k: int(sum(samples[c][k])) for k in ("setup_errors", "tftp_errors")
                               if samples[c].get(k)},
                    "background_busy_cpus": bg[c],
                    "pinhole_drops": pinhole_drops.get(c),
                    "info": info[c],
                    "checks": checks[c],
                    "failures": errors[c],
                    "ratio_to_kernel": ratios.get(c),
                    "baseline": baseline(c),
                }
                for c in configs
            },
            "targets": targets,
        }
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print()
        print("JSON written to %s" % a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
