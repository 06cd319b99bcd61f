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

With the codecs: where the experiment recorded what its client may send (``--out/wire``: the
codec table, the codecs, the photo's size and decode time), every strategy is planned a second
time with them (columns ``{strategy}_codecs_s``, ``winner_codecs``, ``joint_codecs_vs_po``: the
paper's raw po over joint with the codecs). The table's encode and decode times were measured on
the experiment's client under its quota; they are brought to the server's speed (divided by the
measured client/server gap of the model) before the sweep's gap is applied, as for the compute.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from opss.link import LinkModel
from opss.plan import STRATEGIES, PlanGraph, plan_all
from opss.problem import costs_of

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
        wire = _wire(out / "wire" / f"{model}.json", graph, prof["client_f"], server)
        for gap in gaps:
            for rate in mbps:
                link = LinkModel(c=SWEEP_C, b=rate * 1e6 / 8)
                plans = plan_all(graph, server, server, link, STRATEGIES, client_slowdown=gap)
                lat = {s: p.predicted.total for s, p in plans.items()}
                best = winner(lat)
                row = {"model": model, "gap": gap, "mbps": rate, **{f"{s}_s": lat[s] for s in STRATEGIES},
                       "winner": best, "joint_vs_po": lat["po"] / lat["joint"],
                       "opss_vs_po": lat["po"] / lat["opss"], "offloads": bool(plans[best].cut_bytes)}
                if wire is not None:
                    coded = plan_all(graph, server, server, link, STRATEGIES, client_slowdown=gap, wire=wire)
                    cl = {s: p.predicted.total for s, p in coded.items()}
                    best_c = winner(cl)
                    row.update({f"{s}_codecs_s": cl[s] for s in STRATEGIES}, winner_codecs=best_c,
                               joint_codecs_vs_po=lat["po"] / cl["joint"],
                               offloads_codecs=bool(coded[best_c].cut_bytes))
                rows.append(row)
    if not rows:
        return rows
    with (out / "gap_sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    _plot(out / "experiment_gap_sweep.png", rows)
    return rows


def _wire(path: Path, graph: PlanGraph, client_f: dict, server_s: dict) -> dict | None:
    """``plan_all``'s ``wire=`` from an experiment's ``wire/MODEL.json``, its codec times brought to
    the server's speed; None when the experiment recorded none (raw runs, older results)."""
    import dataclasses

    from opss.wirecosts import CodecTable

    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not data.get("codec_table"):
        return None
    table = CodecTable.from_json(data["codec_table"])
    client = sum(costs_of(client_f, graph, "client").values())
    server = sum(costs_of(server_s, graph, "server").values())
    speed = server / client if client > 0 and server > 0 else 1.0
    costs = {v: {c: dataclasses.replace(cost, encode_s=cost.encode_s * speed, decode_s=cost.decode_s * speed)
                 for c, cost in per.items()} for v, per in table.costs.items()}
    return {"codec_table": dataclasses.replace(table, costs=costs), "codecs": tuple(data["codecs"]),
            "max_error": data.get("max_error"), "image_bytes": data.get("image_bytes"),
            "image_decode_s": data.get("image_decode_s")}


def _span(rates: list[float]) -> str:
    return f"{rates[0]:g}–{rates[-1]:g}" if len(rates) > 1 else f"{rates[0]:g}" if rates else "never"


def _winners(pts: list[dict], key: str) -> str:
    runs = [pts[0][key]]
    for r in pts[1:]:
        if r[key] != runs[-1]:
            runs.append(r[key])
    return " -> ".join(runs)


def gap_table(rows: list[dict]) -> str:
    """Per model and gap: from which bandwidth the best plan offloads, where joint beats po by 5 %+, its peak;
    with the codecs (when the sweep has them) the same for joint with codecs against the paper's raw po."""
    coded = any("winner_codecs" in r for r in rows)
    lines = ["| model | gap | best plan offloads at (Mbit/s) | joint >= 1.05x po at (Mbit/s) | "
             "peak joint vs po | opss vs po peak | winners (low -> high bandwidth) |"
             + (" with codecs: offloads at | joint vs raw po peak | winners |" if coded else ""),
             "|---|---:|---|---|---:|---:|---|" + ("---|---:|---|" if coded else "")]
    keys = list(dict.fromkeys((r["model"], r["gap"]) for r in rows))
    for model, gap in keys:
        pts = [r for r in rows if r["model"] == model and r["gap"] == gap]
        off = [r["mbps"] for r in pts if r["offloads"]]
        gain = [r["mbps"] for r in pts if r["joint_vs_po"] >= 1.05]
        peak = max(pts, key=lambda r: r["joint_vs_po"])
        line = (f"| {model} | {gap:g}x | {'from ' + f'{off[0]:g}' if off else 'never'} | {_span(gain)} | "
                f"{peak['joint_vs_po']:.2f}x" + (f" at {peak['mbps']:g}" if peak["joint_vs_po"] > 1.005 else "")
                + " | "
                f"{max(r['opss_vs_po'] for r in pts):.2f}x | {_winners(pts, 'winner')} |")
        if coded:
            if "winner_codecs" in pts[0]:
                off_c = [r["mbps"] for r in pts if r["offloads_codecs"]]
                peak_c = max(pts, key=lambda r: r["joint_codecs_vs_po"])
                line += (f" {'from ' + f'{off_c[0]:g}' if off_c else 'never'} | "
                         f"{peak_c['joint_codecs_vs_po']:.2f}x at {peak_c['mbps']:g} | "
                         f"{_winners(pts, 'winner_codecs')} |")
            else:
                line += " - | - | - |"
        lines.append(line)
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
    coded = all("winner_codecs" in r for r in rows)
    grids = [("winner", "predicted winner, raw float32")] + (
        [("winner_codecs", "predicted winner with the codecs")] if coded else [])
    fig, axes = plt.subplots(1 + len(grids), len(gaps), figsize=(5.2 * len(gaps), 4.4 + 3.0 * len(grids)),
                             squeeze=False, gridspec_kw={"height_ratios": [3] + [2] * len(grids)})
    cmap = ListedColormap([_COLORS[s] for s in STRATEGIES])
    for col, gap in enumerate(gaps):
        ax = axes[0][col]
        for model in models:
            pts = [r for r in rows if r["model"] == model and r["gap"] == gap]
            line, = ax.plot([r["mbps"] for r in pts], [r["joint_vs_po"] for r in pts], marker="o", ms=3,
                            label=f"{model} joint")
            ax.plot([r["mbps"] for r in pts], [r["opss_vs_po"] for r in pts], ls="--", color=line.get_color(),
                    label=f"{model} opss")
            if coded:
                ax.plot([r["mbps"] for r in pts], [r["joint_codecs_vs_po"] for r in pts], ls=":",
                        color=line.get_color(), label=f"{model} joint, codecs")
        ax.set_xscale("log")
        ax.axhline(1.0, color="k", lw=0.6)
        ax.set_title(f"client {gap:g}x slower than the server")
        ax.set_xlabel("uplink (Mbit/s)")
        ax.set_ylabel("predicted speedup over po (raw)")
        if col == 0:
            ax.legend(fontsize=6, ncol=2)
        for row, (key, title) in enumerate(grids, 1):
            ax = axes[row][col]
            grid = [[STRATEGIES.index(next(r[key] for r in rows
                                           if r["model"] == m and r["gap"] == gap and r["mbps"] == b))
                     for b in mbps] for m in models]
            ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(STRATEGIES) - 0.5, aspect="auto")
            ax.set_yticks(range(len(models)))
            ax.set_yticklabels(models, fontsize=7)
            ax.set_xticks(range(len(mbps)))
            ax.set_xticklabels([f"{b:g}" for b in mbps], fontsize=6, rotation=90)
            ax.set_xlabel("uplink (Mbit/s)")
            ax.set_title(title, fontsize=9)
    fig.legend(handles=[Patch(color=_COLORS[s], label=s) for s in STRATEGIES], loc="lower center",
               ncol=len(STRATEGIES), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
