"""The client/server gap as a dimension: predicted latency of every strategy against bandwidth and gap.

The measured experiment has one gap — its client under a 0.25-core quota is
3.7–5.6× slower than the server core — while the paper's Raspberry Pi
against a GTX 1080 is an order of magnitude more. Its conclusions (at 3G
everything runs locally; at 4G only multistream offloads) depend on that gap.
This sweep takes the experiment's own graphs and *server* profiles
(``--out/graphs``, ``--out/profiles``), makes the client ``gap`` times
slower than the server on every vertex (``client_slowdown=gap`` over the
server profile: the gap is then exactly ``gap`` for every model) and plans
every strategy with the one planner (:func:`opss.plan.plan_all`) over the
bandwidths of :data:`opss.lab.experiment.SWEEP_MBPS`.

Outputs: ``gap_sweep.csv`` (model, gap, Mbit/s, each strategy's predicted
latency, the winner, joint's and opss's speedup over po),
``experiment_gap_sweep.png`` (per gap: the speedups over po, and which
strategy wins for each model and bandwidth) and a Markdown table of where
each model starts to offload and where pipelining pays, per gap.

Winner: the least predicted latency, a tie within 1 % going to the simpler
strategy (lo, co, po, opss, joint in that order), so "joint" means the joint
planner's cut and order beat all the others by more than 1 %.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from opss.link import LinkModel
from opss.plan import STRATEGIES, PlanGraph, plan_all

__all__ = ["GAPS", "gap_sweep", "winner"]

#: client/server compute gaps of the predicted sweep (``--client-slowdown``)
GAPS = (5.0, 20.0, 50.0)
#: per-message delay of the swept links (seconds), as in the bandwidth sweep
SWEEP_C = 0.002
TIE = 0.01


def winner(latency: dict[str, float]) -> str:
    """The strategy with the least latency; a tie within :data:`TIE` goes to the earlier of STRATEGIES."""
    best = min(latency.values())
    return next(s for s in STRATEGIES if s in latency and latency[s] <= best * (1 + TIE))


def gap_sweep(out: Path, models: Sequence[str], mbps: Sequence[float], gaps: Sequence[float] = GAPS) -> list[dict]:
    """Plan every strategy for each (model, gap, bandwidth); write the CSV and the plot. Returns the rows."""
    out = Path(out)
    rows = []
    for model in models:
        pj, gj = out / "profiles" / f"{model}.json", out / "graphs" / f"{model}.json"
        if not (pj.exists() and gj.exists()):
            continue
        prof = json.loads(pj.read_text())
        graph = PlanGraph.from_json(json.loads(gj.read_text()))
        server = prof["server_s"] or prof["client_f"]
        for gap in gaps:
            for rate in mbps:
                plans = plan_all(graph, server, server, LinkModel(c=SWEEP_C, b=rate * 1e6 / 8), STRATEGIES,
                                 client_slowdown=gap)
                lat = {s: p.predicted.total for s, p in plans.items()}
                best = winner(lat)
                rows.append({"model": model, "gap": gap, "mbps": rate, **{f"{s}_s": lat[s] for s in STRATEGIES},
                             "winner": best, "joint_vs_po": lat["po"] / lat["joint"],
                             "opss_vs_po": lat["po"] / lat["opss"], "offloads": bool(plans[best].cut_bytes)})
    if not rows:
        return rows
    with (out / "gap_sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot(out / "experiment_gap_sweep.png", rows)
    return rows


def _span(rates: list[float]) -> str:
    return f"{rates[0]:g}–{rates[-1]:g}" if len(rates) > 1 else f"{rates[0]:g}" if rates else "never"


def gap_table(rows: list[dict]) -> str:
    """Per model and gap: from which bandwidth the best plan offloads, where joint beats po by 5 %+, its peak."""
    lines = ["| model | gap | best plan offloads at (Mbit/s) | joint >= 1.05x po at (Mbit/s) | "
             "peak joint vs po | opss vs po peak | winners (low -> high bandwidth) |",
             "|---|---:|---|---|---:|---:|---|"]
    keys = list(dict.fromkeys((r["model"], r["gap"]) for r in rows))
    for model, gap in keys:
        pts = [r for r in rows if r["model"] == model and r["gap"] == gap]
        off = [r["mbps"] for r in pts if r["offloads"]]
        gain = [r["mbps"] for r in pts if r["joint_vs_po"] >= 1.05]
        peak = max(pts, key=lambda r: r["joint_vs_po"])
        runs = [pts[0]["winner"]]
        for r in pts[1:]:
            if r["winner"] != runs[-1]:
                runs.append(r["winner"])
        lines.append(f"| {model} | {gap:g}x | {'from ' + f'{off[0]:g}' if off else 'never'} | {_span(gain)} | "
                     f"{peak['joint_vs_po']:.2f}x" + (f" at {peak['mbps']:g}" if peak["joint_vs_po"] > 1.005 else "")
                     + " | "
                     f"{max(r['opss_vs_po'] for r in pts):.2f}x | {' -> '.join(runs)} |")
    return "\n".join(lines)


_COLORS = {"lo": "#bbbbbb", "co": "#6baed6", "po": "#fdae6b", "opss": "#74c476", "joint": "#d62728"}


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    gaps = list(dict.fromkeys(r["gap"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    mbps = list(dict.fromkeys(r["mbps"] for r in rows))
    fig, axes = plt.subplots(2, len(gaps), figsize=(5.2 * len(gaps), 7.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    cmap = ListedColormap([_COLORS[s] for s in STRATEGIES])
    for col, gap in enumerate(gaps):
        ax = axes[0][col]
        for model in models:
            pts = [r for r in rows if r["model"] == model and r["gap"] == gap]
            line, = ax.plot([r["mbps"] for r in pts], [r["joint_vs_po"] for r in pts], marker="o", ms=3,
                            label=f"{model} joint")
            ax.plot([r["mbps"] for r in pts], [r["opss_vs_po"] for r in pts], ls="--", color=line.get_color(),
                    label=f"{model} opss")
        ax.set_xscale("log")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_title(f"client {gap:g}x slower than the server")
        ax.set_xlabel("uplink (Mbit/s)")
        ax.set_ylabel("predicted speedup over po")
        if col == 0:
            ax.legend(fontsize=6, ncol=2)
        ax = axes[1][col]
        grid = [[STRATEGIES.index(next(r["winner"] for r in rows
                                       if r["model"] == m and r["gap"] == gap and r["mbps"] == b))
                 for b in mbps] for m in models]
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(STRATEGIES) - 0.5, aspect="auto")
        ax.set_yticks(range(len(models)))
        ax.set_yticklabels(models, fontsize=7)
        ax.set_xticks(range(len(mbps)))
        ax.set_xticklabels([f"{b:g}" for b in mbps], fontsize=6, rotation=90)
        ax.set_xlabel("uplink (Mbit/s)")
        ax.set_title("predicted winner", fontsize=9)
    fig.legend(handles=[Patch(color=_COLORS[s], label=s) for s in STRATEGIES], loc="lower center",
               ncol=len(STRATEGIES), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
