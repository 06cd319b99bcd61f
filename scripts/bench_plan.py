"""Benchmark the planners: predicted latency of lo/co/po/opss/joint per zoo model and link.

For every zoo model and every link (the paper's 3g/4g/wifi presets and a
1-100 Mbps sweep) it plans all five strategies on the committed profiles
(client = this CPU, 1 thread, times ``--client-slowdown``; server = this
machine's server profile), repeats the planning ``--repeats`` times and
reports the median planning time. Outputs (``--out``, default
docs/results/):

- ``bench_plan.csv``: one row per model, link and strategy (predicted terms,
  cut, planning time);
- ``bench_plan.summary.csv`` and ``bench_plan.md``: per model and preset, the
  predicted totals, the speedups of opss and joint over po and over the best
  of lo/co, and the planning time;
- ``bench_plan.png``: speedup of opss and joint over po against bandwidth.

Usage: ``python scripts/bench_plan.py [--models a,b] [--repeats 5] [--client-slowdown 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _bench import write_csv

PRESET_LINKS = ("3g", "4g", "wifi")
SWEEP_MBPS = (1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma list of zoo models (default all)")
    ap.add_argument("--repeats", type=int, default=5, help="planning repeats per model and link (median)")
    ap.add_argument("--client-slowdown", default="4,10",
                    help="comma list of client time factors (default 4,10: the testbed's 0.25-CPU client "
                         "quota, and a Pi-4-class client)")
    ap.add_argument("--rtt", default="0ms", help="per-message delay c of every link (default 0ms)")
    ap.add_argument("--out", default="docs/results", help="output folder (default docs/results)")
    ap.add_argument("--profiles-dir", default=None, help="profile root (default: the repository's profiles/)")
    args = ap.parse_args(argv)

    from opss import models
    from opss.link import link_from_spec
    from opss.plan import STRATEGIES, PlanGraph, plan_all
    from opss.profile import capture_model, load_or_build_profile

    slowdowns = [float(x) for x in str(args.client_slowdown).split(",") if x.strip()]
    names = models.names() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    links = [(name, link_from_spec(name, rtt=args.rtt)) for name in PRESET_LINKS]
    links += [(f"{mbps:g}mbit", link_from_spec(f"{mbps:g}mbit", rtt=args.rtt)) for mbps in SWEEP_MBPS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    summary: list[dict] = []
    for model in names:
        lg = capture_model(model, "layer")
        graph = PlanGraph.from_layer_graph(lg)
        kw = dict(root=args.profiles_dir, graph=lg, build_missing=True, progress=True)
        fprof = load_or_build_profile(model, role="client", **kw)
        sprof = load_or_build_profile(model, role="server", **kw)
        f = fprof.costs_for(graph)
        s = sprof.costs_for(graph)
        for slowdown in slowdowns:
            for link_name, link in links:
                runs = []
                walls = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    runs.append(plan_all(graph, f, s, link, STRATEGIES, client_slowdown=slowdown))
                    walls.append(time.perf_counter() - t0)
                plans = runs[-1]
                plan_ms = {k: statistics.median(r[k].seconds_to_plan for r in runs) * 1e3 for k in STRATEGIES}
                for k, p in plans.items():
                    pr = p.predicted
                    rows.append({
                        "model": model, "slowdown": slowdown, "link": link_name, "mbps": round(link.mbps, 4),
                        "strategy": k,
                        "total_ms": pr.total * 1e3, "client_compute_ms": pr.client_compute * 1e3,
                        "client_makespan_ms": pr.client_makespan * 1e3, "upload_ms": pr.upload * 1e3,
                        "hidden_upload_ms": pr.hidden_upload * 1e3, "server_ms": pr.server * 1e3,
                        "reply_ms": pr.reply * 1e3, "n_client": len(p.client), "n_cut": len(p.cut) if p.cut_bytes else 0,
                        "cut_bytes": p.cut_bytes, "optimal_order": p.optimal_order, "plan_ms_median": plan_ms[k],
                    })
                t = {k: plans[k].total for k in STRATEGIES}
                best_lc = min(t["lo"], t["co"])
                summary.append({
                    "model": model, "slowdown": slowdown, "link": link_name, "mbps": round(link.mbps, 4),
                    **{f"{k}_ms": t[k] * 1e3 for k in STRATEGIES},
                    "opss_over_po": t["po"] / t["opss"], "joint_over_po": t["po"] / t["joint"],
                    "opss_over_lo_co": best_lc / t["opss"], "joint_over_lo_co": best_lc / t["joint"],
                    "joint_n_cut": len(plans["joint"].cut) if plans["joint"].cut_bytes else 0,
                    "po_n_cut": len(plans["po"].cut) if plans["po"].cut_bytes else 0,
                    "opss_plan_ms": plan_ms["opss"], "joint_plan_ms": plan_ms["joint"],
                    "all_plan_ms": statistics.median(walls) * 1e3,
                    "opss_optimal_order": plans["opss"].optimal_order,
                })
        print(f"planned {model} ({len(graph)} vertices) over {len(links)} links", file=sys.stderr)

    write_csv(out / "bench_plan.csv", rows)
    write_csv(out / "bench_plan.summary.csv", summary)
    table = _table([r for r in summary if r["link"] in PRESET_LINKS], args.rtt) + "\n\n" + _sweep_table(summary)
    (out / "bench_plan.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    _plot(summary, names, out / "bench_plan.png", slowdowns)
    print("\nplanning time (all five strategies, median over repeats) per model, over every link and slowdown:")
    for model in names:
        ms = [r["all_plan_ms"] for r in summary if r["model"] == model]
        print(f"  {model:18s} median {statistics.median(ms):6.1f} ms  max {max(ms):6.1f} ms  "
              f"under 50 ms: {sum(m < 50 for m in ms)}/{len(ms)}")
    all_ms = [r["all_plan_ms"] for r in summary]
    print(f"\nplanning time of all five strategies per model and link: median {statistics.median(all_ms):.1f} ms, "
          f"max {max(all_ms):.1f} ms; wrote {out}/bench_plan.csv, bench_plan.summary.csv, bench_plan.md, "
          f"bench_plan.png")
    return 0


def _table(rows: list[dict], rtt: str) -> str:
    from opss.plan import STRATEGIES

    head = ["model", "client x", "link", "lo ms", "co ms", "po ms", "opss ms", "joint ms", "opss/po", "joint/po",
            "opss/best(lo,co)", "joint/best(lo,co)", "cuts po/joint", "plan ms opss", "plan ms joint",
            "plan ms all"]
    lines = [f"Predicted latency (rtt {rtt}; client x = client slowdown; speedup = baseline / strategy)", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["model"], f"{r['slowdown']:g}", r["link"], *(f"{r[k + '_ms']:.1f}" for k in STRATEGIES),
                 f"{r['opss_over_po']:.3f}", f"{r['joint_over_po']:.3f}", f"{r['opss_over_lo_co']:.3f}",
                 f"{r['joint_over_lo_co']:.3f}", f"{r['po_n_cut']}/{r['joint_n_cut']}",
                 f"{r['opss_plan_ms']:.1f}", f"{r['joint_plan_ms']:.1f}", f"{r['all_plan_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sweep_table(summary: list[dict]) -> str:
    """Where pipelining pays off over the 1-100 Mbps sweep, per model and client slowdown."""
    lines = ["Sweep 1-100 Mbps: best speedup over po and where joint gains more than 1 %", "",
             "| model | client x | max opss/po (at Mbps) | max joint/po (at Mbps) | Mbps where joint/po > 1.01 |",
             "|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["model"], r["slowdown"]) for r in summary))
    for model, slowdown in keys:
        rs = [r for r in summary if r["model"] == model and r["slowdown"] == slowdown and r["link"].endswith("mbit")]
        bo = max(rs, key=lambda r: r["opss_over_po"])
        bj = max(rs, key=lambda r: r["joint_over_po"])
        gain = [r["mbps"] for r in rs if r["joint_over_po"] > 1.01]
        where = f"{min(gain):g}-{max(gain):g}" if gain else "-"
        lines.append(f"| {model} | {slowdown:g} | {bo['opss_over_po']:.3f} ({bo['mbps']:g}) | "
                     f"{bj['joint_over_po']:.3f} ({bj['mbps']:g}) | {where} |")
    return "\n".join(lines)


def _plot(summary: list[dict], names: list[str], path: Path, slowdowns: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(slowdowns), 2, figsize=(12, 4.2 * len(slowdowns)), sharex=True, squeeze=False)
    for row, slowdown in enumerate(slowdowns):
        for col, (key, title) in enumerate((("opss_over_po", "opss over po"), ("joint_over_po", "joint over po"))):
            ax = axes[row][col]
            for model in names:
                pts = sorted((r["mbps"], r[key]) for r in summary
                             if r["model"] == model and r["slowdown"] == slowdown and r["link"].endswith("mbit"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=model)
            ax.set_xscale("log")
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_title(f"predicted speedup, {title} (client x{slowdown:g})")
            ax.grid(True, which="both", alpha=0.3)
            if row == len(slowdowns) - 1:
                ax.set_xlabel("uplink bandwidth (Mbps)")
            if col == 0:
                ax.set_ylabel("po latency / strategy latency")
    axes[0][1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
