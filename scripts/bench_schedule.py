#!/usr/bin/env python3
"""Benchmark the scheduling methods on seeded suites; print a table, write CSV and PNG.

Suites (all seeded, see opss.sched._instances):
  trees      random out-trees, n = 4..16
  dags       random DAGs, n = 4..14
  dnn        DNN-shaped client graphs at layer granularity (stem, 1-3 Inception-like
             modules of 2-4 branches, cut at the last module's branch ends): DAGs
  dnn-block  the same graphs with every uncut module as one vertex (trees)
  large      random trees and DAGs (predecessors within a window of 20), n = 100..2000

For the first four suites the reference is the exact optimum (the exact solver
must prove it on every instance); for ``large`` exact does not fit its budget and
the gap is measured to the lower bound instead (an upper bound on the true gap).
Run times are the median of ``--repeats`` calls per instance (one call on large).

Usage: python scripts/bench_schedule.py [--out docs/results] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from opss.errors import BudgetExceededError
from opss.sched import METHODS, dnn_instance, random_dag, random_tree, schedule

LARGE_SIZES = (100, 200, 500, 1000, 2000)


def suites(quick: bool):
    k = 4 if quick else 1
    yield "trees", [random_tree(4 + s % 13, seed=s) for s in range(0, 260, k)]
    yield "dags", [random_dag(4 + s % 11, seed=1000 + s) for s in range(0, 220, k)]
    yield "dnn", [dnn_instance(2000 + s) for s in range(0, 100, k)]
    yield "dnn-block", [dnn_instance(2000 + s, granularity="block") for s in range(0, 100, k)]
    large = []
    for n in LARGE_SIZES[: 3 if quick else None]:
        for s in range(1 if quick else 2):
            large.append(random_tree(n, seed=3000 + n + s))
            large.append(random_dag(n, seed=4000 + n + s, window=20))
    yield "large", large


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _gap(value, ref):
    """Relative gap in percent; float noise below 1e-9 % reads as 0."""
    if ref <= 0:
        return 0.0 if value <= ref else math.inf
    gap = (value / ref - 1) * 100
    return 0.0 if abs(gap) < 1e-9 else gap


def run_suite(name, graphs, repeats):
    """One row per (instance, method): n, makespan, optimal, lower bound, seconds, reference."""
    rows = []
    for k, gr in enumerate(graphs):
        per = {}
        for method in METHODS:
            if method in ("tree", "pathwise") and not gr.is_tree():
                continue
            times, res = [], None
            for _ in range(repeats):
                t0 = time.perf_counter()
                try:
                    res = schedule(gr, method)
                except BudgetExceededError:
                    res = None
                times.append(time.perf_counter() - t0)
            per[method] = (res, statistics.median(times))
        exact = per.get("exact", (None, 0))[0]
        lb = max(r.lower_bound for r, _ in per.values() if r is not None)
        ref, ref_kind = (exact.makespan, "opt") if exact is not None else (lb, "lb")
        for method, (res, secs) in per.items():
            rows.append(
                {
                    "suite": name,
                    "instance": k,
                    "n": len(gr),
                    "tree": gr.is_tree(),
                    "method": method,
                    "status": "ok" if res is not None else "over budget",
                    "makespan": res.makespan if res else math.nan,
                    "optimal": bool(res and res.optimal),
                    "lower_bound": lb,
                    "reference": ref,
                    "reference_kind": ref_kind,
                    "gap_pct": _gap(res.makespan, ref) if res else math.nan,
                    "seconds": secs,
                }
            )
    return rows


def summarize(rows):
    out = []
    keys = []
    for r in rows:
        if (r["suite"], r["method"]) not in keys:
            keys.append((r["suite"], r["method"]))
    keys.sort(key=lambda k: ([r["suite"] for r in rows].index(k[0]), METHODS.index(k[1])))
    for suite, method in keys:
        rs = [r for r in rows if r["suite"] == suite and r["method"] == method]
        ok = [r for r in rs if r["status"] == "ok"]
        gaps = [r["gap_pct"] for r in ok]
        secs = [r["seconds"] for r in rs]
        out.append(
            {
                "suite": suite,
                "method": method,
                "instances": len(rs),
                "solved": len(ok),
                "n_range": f"{min(r['n'] for r in rs)}-{max(r['n'] for r in rs)}",
                "proven_optimal_pct": 100.0 * sum(r["optimal"] for r in rs) / len(rs),
                "gap_to": rs[0]["reference_kind"] if len({r["reference_kind"] for r in rs}) == 1 else "mixed",
                "mean_gap_pct": statistics.fmean(gaps) if gaps else math.nan,
                "max_gap_pct": max(gaps) if gaps else math.nan,
                "median_ms": statistics.median(secs) * 1e3,
                "p95_ms": percentile(secs, 0.95) * 1e3,
            }
        )
    return out


def print_table(summary, file=sys.stdout):
    head = (
        f"{'suite':<10} {'method':<9} {'inst':>4} {'n':>9} {'solved':>6} {'proven%':>7} {'gap to':>6} "
        f"{'mean gap%':>9} {'max gap%':>9} {'median ms':>10} {'p95 ms':>9}"
    )
    print(head, file=file)
    print("-" * len(head), file=file)
    for s in summary:
        print(
            f"{s['suite']:<10} {s['method']:<9} {s['instances']:>4} {s['n_range']:>9} {s['solved']:>6} "
            f"{s['proven_optimal_pct']:>7.1f} {s['gap_to']:>6} {s['mean_gap_pct']:>9.4f} {s['max_gap_pct']:>9.4f} "
            f"{s['median_ms']:>10.3f} {s['p95_ms']:>9.3f}",
            file=file,
        )


def check_targets(rows, summary):
    by = {(s["suite"], s["method"]): s for s in summary}
    lines = []
    ok = all(by[(s, "exact")]["proven_optimal_pct"] == 100.0 for s in ("trees", "dags", "dnn", "dnn-block"))
    lines.append(f"exact proves the optimum on every trees/dags/dnn/dnn-block instance: {'yes' if ok else 'NO'}")
    med = by[("dnn", "exact")]["median_ms"]
    lines.append(f"exact median on dnn (layer granularity): {med:.3f} ms (target < 5 ms): {'yes' if med < 5 else 'NO'}")
    for s in ("trees", "dags"):
        a = by[(s, "auto")]
        good = a["mean_gap_pct"] <= 0.05 and a["max_gap_pct"] <= 1.0
        lines.append(
            f"auto on {s}: mean gap {a['mean_gap_pct']:.4f} %, max {a['max_gap_pct']:.4f} % "
            f"(target <= 0.05 % / <= 1 %): {'yes' if good else 'NO'}"
        )
    big = [r for r in rows if r["suite"] == "large" and r["n"] == max(r2["n"] for r2 in rows if r2["suite"] == "large")]
    for method in ("tree", "pathwise", "topo", "beam", "auto"):
        secs = [r["seconds"] for r in big if r["method"] == method]
        if secs:
            lines.append(
                f"{method} at n = {big[0]['n']}: max {max(secs):.3f} s"
                + (f" (target < 1 s): {'yes' if max(secs) < 1 else 'NO'}" if method in ("tree", "pathwise", "topo") else "")
            )
    return lines


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for method in METHODS:
        pts = {}
        for r in rows:
            if r["method"] == method and r["status"] == "ok":
                pts.setdefault(r["n"], []).append(r["seconds"])
        if not pts:
            continue
        ns = sorted(pts)
        ax.plot(ns, [statistics.median(pts[n]) * 1e3 for n in ns], marker="o", ms=3, lw=1.2, label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vertices n")
    ax.set_ylabel("median run time per instance (ms)")
    ax.set_title("opss.sched: run time against graph size (all suites)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/results"), help="output folder (default docs/results)")
    ap.add_argument("--repeats", type=int, default=3, help="calls per instance on the small suites (median)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the instances, large n <= 500")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for name, graphs in suites(args.quick):
        t = time.perf_counter()
        rows += run_suite(name, graphs, 1 if name == "large" else args.repeats)
        print(f"# {name}: {len(graphs)} instances in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    summary = summarize(rows)
    report = io.StringIO()
    print_table(summary, file=report)
    print(file=report)
    for line in check_targets(rows, summary):
        print(line, file=report)
    print(
        f"\n(total {time.perf_counter() - t0:.0f} s; gap to = opt: the exact optimum, lb: the lower bound;"
        f" run times are wall-clock on {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs)",
        file=report,
    )
    print(report.getvalue(), end="")
    (args.out / "bench_schedule.txt").write_text(report.getvalue())
    with open(args.out / "bench_schedule.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    with open(args.out / "bench_schedule.runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.out / "bench_schedule.png")
    print(f"wrote {args.out / 'bench_schedule.csv'}, bench_schedule.runs.csv, bench_schedule.txt, bench_schedule.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
