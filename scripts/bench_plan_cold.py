"""Planning time from the first call: every strategy in a fresh ``opss plan`` process, and warm.

For every model (the zoo and four torchvision models it never registered,
through the ``torchvision.models:NAME`` factory path), every link and every
client slowdown, it runs ``opss plan --json -`` in a fresh process
(``--cold-repeats`` times, the points interleaved round-robin so the
machine's drifts hit every model alike) and reads each strategy's
``seconds_to_plan``: the *cold* time, the first planning call of a process.
Then, in this process, it plans the same points ``--warm-repeats`` more
times after a first call (interleaved): the *warm* time. It also records
each cold process's wall time (its start-up: importing torch, building and
capturing the model, loading the profiles) apart from the planning.

Missing profiles (the torchvision models, the first time) are built by an
untimed ``opss plan`` per model before anything is measured.

Outputs (``--out``, default docs/results/, file names from ``--name``):

- ``<name>.csv``: one row per sample (phase cold/warm, model, link,
  slowdown, strategy, planning ms; the process wall time for cold rows);
- ``<name>.md``: per model and strategy, the cold median (95 % bootstrap CI)
  and maximum, the warm median (CI), and whether the cold maximum meets the
  ``--target-ms`` (default 50) target; the median start-up wall time per model.

Usage: ``python scripts/bench_plan_cold.py [--models zoo,outside | a,b] [--links 3g,4g,wifi]
[--slowdowns 1,10] [--cold-repeats 1] [--warm-repeats 15] [--name bench_plan_cold]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _bench import write_csv

#: torchvision models OPSS never registered, planned through the factory path
OUTSIDE = ("densenet121", "shufflenet_v2_x1_0", "efficientnet_b0", "regnet_y_400mf")


def _opss_command() -> list[str]:
    """The installed ``opss`` console script beside this interpreter (else ``python -m opss``)."""
    script = Path(sys.executable).with_name("opss")
    return [str(script)] if script.exists() else [sys.executable, "-m", "opss"]


def _models(spec: str) -> list[str]:
    from opss import models

    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if item == "zoo":
            out += models.names()
        elif item == "outside":
            out += [f"torchvision.models:{m}" for m in OUTSIDE]
        elif item:
            out.append(item)
    return out


def _cold(model: str, link: str, slowdown: str) -> tuple[dict[str, float], float]:
    """One fresh ``opss plan`` process: ``({strategy: planning seconds}, process wall seconds)``."""
    cmd = [*_opss_command(), "plan", "--model", model, "--link", link, "--client-slowdown", slowdown,
           "--no-build", "--json", "-"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_plan_cold: {' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    doc = json.loads(proc.stdout)
    return {k: float(v["seconds_to_plan"]) for k, v in doc["strategies"].items()}, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="zoo,outside",
                    help="comma list: zoo, outside (the four torchvision models) or names (default zoo,outside)")
    ap.add_argument("--links", default="3g,4g,wifi", help="comma list of links (default 3g,4g,wifi)")
    ap.add_argument("--slowdowns", default="1,10", help="comma list of client slowdowns (default 1,10)")
    ap.add_argument("--cold-repeats", type=int, default=1, help="fresh processes per point (default 1)")
    ap.add_argument("--warm-repeats", type=int, default=15, help="in-process repeats per point (default 15)")
    ap.add_argument("--target-ms", type=float, default=50.0, help="per-strategy target (default 50 ms)")
    ap.add_argument("--name", default="bench_plan_cold", help="output file stem (default bench_plan_cold)")
    ap.add_argument("--out", default="docs/results", help="output folder (default docs/results)")
    args = ap.parse_args(argv)

    names = _models(args.models)
    links = [x.strip() for x in args.links.split(",") if x.strip()]
    slowdowns = [x.strip() for x in args.slowdowns.split(",") if x.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for model in names:  # build missing profiles first, untimed
        subprocess.run([*_opss_command(), "plan", "--model", model, "--link", links[0]],
                       check=True, stdout=subprocess.DEVNULL)
    points = [(m, link, sd) for m in names for link in links for sd in slowdowns]
    rows: list[dict] = []
    for rep in range(args.cold_repeats):
        for k, (model, link, sd) in enumerate(points):
            times, wall = _cold(model, link, sd)
            for strategy, sec in times.items():
                rows.append({"phase": "cold", "model": model, "link": link, "slowdown": float(sd),
                             "strategy": strategy, "plan_ms": sec * 1e3, "process_s": wall, "repeat": rep})
            print(f"cold {rep + 1}/{args.cold_repeats} {k + 1}/{len(points)} {model} {link} x{sd}: "
                  + " ".join(f"{s} {t * 1e3:.1f}" for s, t in times.items()) + f" ms; process {wall:.1f}s",
                  file=sys.stderr, flush=True)
    rows += _warm(names, links, slowdowns, args.warm_repeats)
    write_csv(out / f"{args.name}.csv", rows)
    table = _table(rows, names, args.target_ms)
    (out / f"{args.name}.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\nwrote {out}/{args.name}.csv and {args.name}.md")
    return 0


def _warm(names: list[str], links: list[str], slowdowns: list[str], repeats: int) -> list[dict]:
    """Each point planned ``repeats`` times in this process after a first, untimed call."""
    from opss.link import link_from_spec
    from opss.plan import PlanGraph, plan_all
    from opss.profile import capture_model, load_or_build_profile

    rows: list[dict] = []
    for model in names:
        lg = capture_model(model, "layer")
        graph = PlanGraph.from_layer_graph(lg)
        cp = load_or_build_profile(model, role="client", graph=lg, build_missing=False)
        sp = load_or_build_profile(model, role="server", graph=lg, build_missing=False)
        pts = [(link, link_from_spec(link), float(sd)) for link in links for sd in slowdowns]
        plan_all(graph, cp, sp, pts[0][1], client_slowdown=pts[0][2])
        for rep in range(repeats):
            for name, link, sd in pts:
                for strategy, p in plan_all(graph, cp, sp, link, client_slowdown=sd).items():
                    rows.append({"phase": "warm", "model": model, "link": name, "slowdown": sd,
                                 "strategy": strategy, "plan_ms": p.seconds_to_plan * 1e3, "process_s": "",
                                 "repeat": rep})
        print(f"warm {model}: {repeats} x {len(pts)} points", file=sys.stderr, flush=True)
    return rows


def _table(rows: list[dict], names: list[str], target_ms: float) -> str:
    from opss.plan import STRATEGIES
    from opss.stats import bootstrap_ci, median

    def ms(phase: str, model: str, strategy: str) -> list[float]:
        return [r["plan_ms"] for r in rows if r["phase"] == phase and r["model"] == model
                and r["strategy"] == strategy]

    head = ["model", "strategy", "cold median ms (95 % CI)", "cold max ms", "warm median ms (95 % CI)",
            f"cold max <= {target_ms:g} ms"]
    lines = ["Planning time per strategy: cold = the first call in a fresh `opss plan` process, warm = "
             "later calls in one process (every link and slowdown pooled)", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    worst = 0.0
    for model in names:
        for strategy in STRATEGIES:
            cold, warm = ms("cold", model, strategy), ms("warm", model, strategy)
            if not cold:
                continue
            clo, chi = bootstrap_ci(cold)
            wlo, whi = bootstrap_ci(warm)
            worst = max(worst, max(cold))
            lines.append(f"| {model} | {strategy} | {median(cold):.2f} ({clo:.2f}-{chi:.2f}) | {max(cold):.2f} | "
                         f"{median(warm):.2f} ({wlo:.2f}-{whi:.2f}) | "
                         f"{'met' if max(cold) <= target_ms else 'MISSED'} |")
    lines += ["", "| model | process wall s, median (start-up + planning) |", "|---|---|"]
    for model in names:
        walls = sorted({(r["link"], r["slowdown"], r["repeat"]): r["process_s"] for r in rows
                        if r["phase"] == "cold" and r["model"] == model}.values())
        lines.append(f"| {model} | {median(walls):.1f} |")
    lines += ["", f"worst cold planning time of any strategy: {worst:.2f} ms "
              f"({'meets' if worst <= target_ms else 'misses'} the {target_ms:g} ms target)"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
