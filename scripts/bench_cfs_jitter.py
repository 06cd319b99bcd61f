"""How evenly a CFS CPU quota slows a client: the jitter that makes small ``--client-cpu`` unreliable (root).

A worker process in a :class:`opss.lab.testbed.CpuQuota` cgroup runs a fixed
amount of CPU work (a busy loop of ``--work-ms`` of CPU time, an
inference-sized job) ``--reps`` times, timing each job's wall clock. Under a
quota ``q`` of a core the ideal wall time is ``work / q``; CFS grants the quota
per period, so a job that needs a fraction of a period more than its last
grant waits a whole period: the spread grows as the quota (and the job)
shrinks relative to the period. Prints, per quota and period, the median
wall time with its bootstrap 95 % CI, the slowdown against the ideal,
p90/median and max/median; writes the CSV to ``--out``.

Usage: ``sudo python scripts/bench_cfs_jitter.py [--quotas 0.1,0.25,0.5] [--periods 10000,100000]
[--work-ms 1,5,20] [--reps 60] [--out docs/results/experiment/cfs_jitter.csv]``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

from opss.lab.testbed import CpuQuota
from opss.stats import bootstrap_ci, median, p90

_WORKER = r"""
import sys, time
work, reps = float(sys.argv[1]) / 1e3, int(sys.argv[2])
sys.stdin.readline()
for _ in range(reps):
    t0 = time.perf_counter(); c0 = time.process_time()
    while time.process_time() - c0 < work:
        pass
    print(time.perf_counter() - t0, flush=True)
"""


def measure(quota: float, period_us: int, work_ms: float, reps: int) -> list[float]:
    """Wall seconds of each ``work_ms`` CPU job of a process under ``quota`` cores per ``period_us``."""
    with CpuQuota(quota, prefix="opssjit", period_us=period_us) as cg:
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(work_ms), str(reps)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        cg.add(proc.pid)
        out, _ = proc.communicate("go\n", timeout=600)
    return [float(x) for x in out.split()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quotas", default="0.1,0.25,0.5")
    ap.add_argument("--periods", default="10000,100000", help="CFS periods in microseconds")
    ap.add_argument("--work-ms", default="1,5,20", help="CPU milliseconds per job, comma-separated")
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("docs/results/experiment/cfs_jitter.csv"))
    args = ap.parse_args(argv)
    rows = []
    grid = [(w, p, q) for w in (float(x) for x in args.work_ms.split(",")) for p in (int(x) for x in
            args.periods.split(",")) for q in (float(x) for x in args.quotas.split(","))]
    for work_ms, period, quota in grid:
        if quota * period < 1000:
            print(f"skip quota {quota:g} at period {period} us: below the kernel's 1000 us least quota")
            continue
        walls = measure(quota, period, work_ms, args.reps)
        ideal = work_ms / 1e3 / quota
        med = median(walls)
        lo, hi = bootstrap_ci(walls)
        rows.append({"quota": quota, "period_us": period, "work_ms": work_ms, "reps": len(walls),
                     "ideal_ms": ideal * 1e3, "median_ms": med * 1e3, "ci_lo_ms": lo * 1e3, "ci_hi_ms": hi * 1e3,
                     "slowdown_vs_ideal": med / ideal, "p90_over_median": p90(walls) / med,
                     "max_over_median": max(walls) / med, "min_over_median": min(walls) / med})
    print(f"CFS quota jitter: {args.reps} jobs per row; wall time of each job against its ideal (CPU time / quota)")
    print("| CPU ms per job | quota | period ms | ideal ms | median ms [95 % CI] | median / ideal | p90/median | "
          "min/median | max/median |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['work_ms']:g} | {r['quota']:g} | {r['period_us'] / 1e3:g} | {r['ideal_ms']:.1f} | "
              f"{r['median_ms']:.1f} [{r['ci_lo_ms']:.1f}, {r['ci_hi_ms']:.1f}] | {r['slowdown_vs_ideal']:.2f} | "
              f"{r['p90_over_median']:.2f} | {r['min_over_median']:.2f} | {r['max_over_median']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
