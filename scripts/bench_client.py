"""Benchmark of the pipelined client runtime against its own predictions.

For each model and link preset: an in-process opss-server on loopback, the
client's upload shaped by the sender's token bucket at the preset rate, and
every strategy (lo, co, po, opss, joint) run ``--runs`` times round-robin after
one warm-up round, every output verified against the local full model.

Reports per model, link and strategy: the measured median (and p90) latency,
the predicted latency, the prediction error; per model and link: the runtime
overhead of ``lo`` (measured - predicted, relative; nothing crosses the network
so this is the runtime's own cost) and the measured and predicted speedup of
``opss`` over ``po``. Targets: median absolute prediction error <= 10 %, lo
overhead < 5 %.

Profiles are measured fresh (in memory, not stored) for each model right
before its runs: client and server share this machine's cores with whatever
else runs on it, and a table measured under another load predicts another
machine. ``--client-slowdown X`` emulates a client X times slower than this CPU,
the planners scaled alike. ``--emulation pace`` (the default) makes every client
layer take exactly X times its profiled time (the compute thread sleeps out the
rest after the real computation; trace-driven, so the other jobs on this shared
machine do not leak into the client's compute); ``--emulation scale`` multiplies
the real, measured compute by X instead (the machine's noise multiplied too).
With X = 1 nothing is emulated: the client's compute is real.

    python scripts/bench_client.py [--models ...] [--links 3g 4g wifi] [--runs 10]
                                   [--client-slowdown 1] [--small] [--out docs/results/]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

from opss.plan import STRATEGIES

MODELS = ("googlenet", "resnet18", "alexnet_parallel", "multistream", "randwire")
LINKS = ("3g", "4g", "wifi")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--links", nargs="+", default=list(LINKS))
    p.add_argument("--runs", type=int, default=10, help="measured runs per strategy (default 10)")
    p.add_argument("--client-slowdown", type=float, default=1.0, metavar="X")
    p.add_argument("--emulation", choices=("pace", "scale"), default="pace")
    p.add_argument("--small", action="store_true", help="small test inputs (a quick check, not the benchmark)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results/", help="output folder (default docs/results/)")
    p.add_argument("--tag", default="bench_client", help="file name stem (default bench_client)")
    args = p.parse_args(argv)

    from opss.lab.harness import measure_strategies, open_session, start_server
    from opss.link import link_from_spec

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    summary: list[dict] = []
    t_all = time.perf_counter()
    for model in args.models:
        server = start_server(model, args.small, args.seed, fresh_profile=True)
        try:
            session = None
            for link_name in args.links:
                link = link_from_spec(link_name)
                cfg = dict(model=model, server=f"127.0.0.1:{server.port}", link=link_name, throttle=link.b,
                           small=args.small, seed=args.seed, client_slowdown=args.client_slowdown, progress=False,
                           fresh_profile=True, timeout=120.0, pace=args.emulation == "pace")
                if session is None:
                    session = open_session(STRATEGIES, **cfg)
                    profiles = (session.client_profile, session.server_profile)
                else:  # same model: keep its profiles, new link
                    session.close()
                    session = open_session(STRATEGIES, client_profile=profiles[0], server_profile=profiles[1],
                                           **cfg)
                t0 = time.perf_counter()
                res = measure_strategies(session, STRATEGIES, args.runs, seed=args.seed)
                for name, r in res.items():
                    err = (r["median_s"] - r["predicted_s"]) / r["predicted_s"]
                    rows.append({
                        "model": model, "link": link_name, "mbps": round(link.mbps, 3), "strategy": name,
                        "client_vertices": r["client_vertices"], "cut": " ".join(r["cut"]),
                        "cut_bytes": r["cut_bytes"], "predicted_s": r["predicted_s"],
                        "measured_median_s": r["median_s"], "measured_p90_s": r["p90_s"],
                        "error": err, "runs": len(r["runs_s"]), "fallbacks": r["fallbacks"],
                        "verified": r["verified"],
                    })
                po, op = res["po"], res["opss"]
                summary.append({
                    "model": model, "link": link_name,
                    "median_abs_error": statistics.median(abs(row["error"]) for row in rows[-len(res):]),
                    "lo_overhead": (res["lo"]["median_s"] - res["lo"]["predicted_s"]) / res["lo"]["predicted_s"],
                    "opss_over_po_measured": po["median_s"] / op["median_s"],
                    "opss_over_po_predicted": po["predicted_s"] / op["predicted_s"],
                    "joint_over_po_measured": po["median_s"] / res["joint"]["median_s"],
                    "seconds": time.perf_counter() - t0,
                })
                s = summary[-1]
                print(f"{model:<17}{link_name:<5} |err| {s['median_abs_error'] * 100:5.1f}%  lo overhead "
                      f"{s['lo_overhead'] * 100:+6.1f}%  opss/po measured {s['opss_over_po_measured']:.2f}x "
                      f"(predicted {s['opss_over_po_predicted']:.2f}x)  [{s['seconds']:.0f}s]",
                      file=sys.stderr, flush=True)
            if session is not None:
                session.close()
        finally:
            server.stop(0).wait(5)

    stem = args.tag
    with open(out_dir / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out_dir / f"{stem}.summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    table = format_tables(rows, summary, args)
    print(table)
    (out_dir / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
    plot(rows, out_dir / f"{stem}.png")
    print(f"\nwrote {out_dir / (stem + '.csv')}, {stem}.summary.csv, {stem}.md, {stem}.png "
          f"in {time.perf_counter() - t_all:.0f}s", file=sys.stderr)
    return 0


def format_tables(rows: list[dict], summary: list[dict], args: argparse.Namespace) -> str:
    head = (f"| model | link | strategy | client vertices | cut kB | predicted ms | measured median ms "
            f"| p90 ms | error | verified |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    lines = [f"bench_client: {args.runs} runs per strategy (median), client slowdown {args.client_slowdown:g}x "
             f"({args.emulation if args.client_slowdown > 1 else 'none'}), "
             f"{'small inputs' if args.small else 'full-size inputs'}, application token-bucket throttle, "
             f"in-process server on loopback, fresh profiles", "", head]
    for r in rows:
        lines.append(f"| {r['model']} | {r['link']} | {r['strategy']} | {r['client_vertices']} | "
                     f"{r['cut_bytes'] / 1e3:.1f} | {r['predicted_s'] * 1e3:.1f} | {r['measured_median_s'] * 1e3:.1f} | "
                     f"{r['measured_p90_s'] * 1e3:.1f} | {r['error'] * 100:+.1f}% | "
                     f"{'ok' if r['verified'] else 'FAILED'} |")
    lines += ["", "| model | link | median abs error | lo overhead | opss/po measured | opss/po predicted "
              "| joint/po measured |", "|---|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(f"| {s['model']} | {s['link']} | {s['median_abs_error'] * 100:.1f}% | "
                     f"{s['lo_overhead'] * 100:+.1f}% | {s['opss_over_po_measured']:.2f}x | "
                     f"{s['opss_over_po_predicted']:.2f}x | {s['joint_over_po_measured']:.2f}x |")
    errs = [abs(r["error"]) for r in rows]
    lo = [s["lo_overhead"] for s in summary]
    lines += ["", f"overall: median |prediction error| {statistics.median(errs) * 100:.1f}% (target <= 10%), "
              f"median lo overhead {statistics.median(lo) * 100:+.1f}% (target < 5%), "
              f"{sum(not r['verified'] for r in rows)} verify failures, {sum(r['fallbacks'] for r in rows)} fallbacks"]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    for strategy, marker in zip(STRATEGIES, "os^vD"):
        pts = [(r["predicted_s"] * 1e3, r["measured_median_s"] * 1e3) for r in rows if r["strategy"] == strategy]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, label=strategy, alpha=0.8)
    lim = max(max(r["predicted_s"], r["measured_median_s"]) for r in rows) * 1e3 * 1.1
    ax.plot([0, lim], [0, lim], "k--", lw=0.8, label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("measured median latency (ms)")
    ax.set_title("opss-client: measured vs predicted")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
