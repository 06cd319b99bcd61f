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

Each code measured is labelled: ``--label`` names the code this script runs
under (default ``after``), and ``--code LABEL=DIR`` (repeatable) adds another,
run with ``PYTHONPATH=DIR``, where DIR holds a ``sitecustomize.py`` that puts
another checkout first on the import path (e.g. main's, ``before``: a copy of
the venv's ``__editable___opss_*_finder.py`` with the paths changed, installed
first on ``sys.meta_path``). The cold processes of the codes alternate point by
point (the first code changes every point) and the warm runs model by model,
so a busy machine loads every code alike. The CSV keeps the rows of labels not
measured in this run, so the table sets them side by side.

Outputs (``--out``, default docs/results/, file names from ``--name``):

- ``<name>.csv``: one row per sample (label, phase cold/warm, model, link,
  slowdown, strategy, planning ms; for cold rows the process wall time and the
  start-up seconds ``opss plan`` reports, when it reports them);
- ``<name>.md``: per model and strategy and label, the cold median (95 %
  bootstrap CI) and maximum, the warm median (CI), and whether the cold
  maximum meets the ``--target-ms`` (default 50) target; per model and label
  the median process wall time and start-up.

Usage: ``python scripts/bench_plan_cold.py [--models zoo,outside | a,b] [--links 3g,4g,wifi]
[--slowdowns 1,10] [--cold-repeats 1] [--warm-repeats 15] [--label after] [--code before=DIR]
[--name bench_plan_cold]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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


def _env(site: str | None) -> dict[str, str] | None:
    """The environment of a code: this one, or ``PYTHONPATH=site`` first."""
    if not site:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (site, env.get("PYTHONPATH")) if x)
    return env


def _cold(model: str, link: str, slowdown: str, site: str | None = None
          ) -> tuple[dict[str, float], float, float | None]:
    """One fresh ``opss plan`` process: ``({strategy: planning seconds}, process wall seconds,
    the start-up seconds it reports or None)``."""
    cmd = [*_opss_command(), "plan", "--model", model, "--link", link, "--client-slowdown", slowdown,
           "--no-build", "--json", "-"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(site))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_plan_cold: {' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    doc = json.loads(proc.stdout)
    startup = doc.get("startup", {}).get("total_s")
    return {k: float(v["seconds_to_plan"]) for k, v in doc["strategies"].items()}, wall, startup


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="zoo,outside",
                    help="comma list: zoo, outside (the four torchvision models) or names (default zoo,outside)")
    ap.add_argument("--links", default="3g,4g,wifi", help="comma list of links (default 3g,4g,wifi)")
    ap.add_argument("--slowdowns", default="1,10", help="comma list of client slowdowns (default 1,10)")
    ap.add_argument("--cold-repeats", type=int, default=1, help="fresh processes per point (default 1)")
    ap.add_argument("--warm-repeats", type=int, default=15, help="in-process repeats per point (default 15)")
    ap.add_argument("--target-ms", type=float, default=50.0, help="per-strategy target (default 50 ms)")
    ap.add_argument("--label", default="after", help="label of this run's rows, e.g. before / after (default after)")
    ap.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                    help="also measure the code whose sitecustomize.py is in DIR, labelled LABEL (repeatable)")
    ap.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)  # one code's warm rows, JSON
    ap.add_argument("--name", default="bench_plan_cold", help="output file stem (default bench_plan_cold)")
    ap.add_argument("--out", default="docs/results", help="output folder (default docs/results)")
    args = ap.parse_args(argv)

    names = _models(args.models)
    links = [x.strip() for x in args.links.split(",") if x.strip()]
    slowdowns = [x.strip() for x in args.slowdowns.split(",") if x.strip()]
    if args.warm_only:
        json.dump(_warm(names, links, slowdowns, args.warm_repeats), sys.stdout)
        return 0
    codes: list[tuple[str, str | None]] = [(args.label, None)]
    for spec in args.code:
        label, sep, site = spec.partition("=")
        if not sep or not label or not Path(site, "sitecustomize.py").is_file():
            raise SystemExit(f"bench_plan_cold: --code {spec!r}: expected LABEL=DIR with DIR/sitecustomize.py")
        codes.append((label, site))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for model in names:  # build missing profiles first, untimed
        subprocess.run([*_opss_command(), "plan", "--model", model, "--link", links[0]],
                       check=True, stdout=subprocess.DEVNULL)
    points = [(m, link, sd) for m in names for link in links for sd in slowdowns]
    rows: list[dict] = []
    for rep in range(args.cold_repeats):
        for k, (model, link, sd) in enumerate(points):
            turn = (k + rep) % len(codes)
            for label, site in codes[turn:] + codes[:turn]:
                load = os.getloadavg()[0]  # the machine's 1-minute load as the process starts
                times, wall, startup = _cold(model, link, sd, site)
                for strategy, sec in times.items():
                    rows.append({"label": label, "phase": "cold", "model": model, "link": link,
                                 "slowdown": float(sd), "strategy": strategy, "plan_ms": sec * 1e3,
                                 "process_s": wall, "startup_s": "" if startup is None else startup, "repeat": rep,
                                 "load1": load})
                print(f"cold {rep + 1}/{args.cold_repeats} {k + 1}/{len(points)} {label} {model} {link} x{sd}: "
                      + " ".join(f"{s} {t * 1e3:.1f}" for s, t in times.items()) + f" ms; process {wall:.1f}s",
                      file=sys.stderr, flush=True)
    for model in names:
        for label, site in codes:
            rows += [{"label": label, **r} for r in _warm_rows(model, links, slowdowns, args.warm_repeats, site)]
    path = out / f"{args.name}.csv"
    measured = {label for label, _ in codes}
    rows = [r for r in _other_labels(path) if r["label"] not in measured] + rows
    write_csv(path, rows)
    table = _table(rows, names, args.target_ms)
    (out / f"{args.name}.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"\nwrote {out}/{args.name}.csv and {args.name}.md")
    return 0


def _warm_rows(model: str, links: list[str], slowdowns: list[str], repeats: int, site: str | None) -> list[dict]:
    """:func:`_warm` of one model under a code: in this process, or in one under ``site``."""
    if site is None:
        return _warm([model], links, slowdowns, repeats)
    cmd = [sys.executable, __file__, "--warm-only", "--models", model, "--links", ",".join(links),
           "--slowdowns", ",".join(slowdowns), "--warm-repeats", str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=_env(site))
    if proc.returncode != 0:
        raise SystemExit(f"bench_plan_cold: warm runs of {model} under {site} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def _other_labels(path: Path) -> list[dict]:
    """The rows of ``path`` (an earlier run's CSV), numbers parsed."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("slowdown", "plan_ms", "process_s", "startup_s", "load1"):
            if r.get(k):
                r[k] = float(r[k])
        r["repeat"] = int(r["repeat"])
    return rows


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

    labels = list(dict.fromkeys(r["label"] for r in rows))
    names = list(dict.fromkeys([*names, *(r["model"] for r in rows)]))

    def ms(label: str, phase: str, model: str, strategy: str) -> list[float]:
        return [r["plan_ms"] for r in rows if r["label"] == label and r["phase"] == phase
                and r["model"] == model and r["strategy"] == strategy]

    def ci(xs: list[float]) -> str:
        lo, hi = bootstrap_ci(xs)
        return f"{median(xs):.2f} ({lo:.2f}-{hi:.2f})"

    head = ["model", "strategy", "code", "cold median ms (95 % CI)", "cold max ms", "warm median ms (95 % CI)",
            f"cold max <= {target_ms:g} ms"]
    lines = ["Planning time per strategy: cold = the first call in a fresh `opss plan` process, warm = "
             "later calls in one process (every link and slowdown pooled)", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    worst: dict[str, float] = {}
    for model in names:
        for strategy in STRATEGIES:
            for label in labels:
                cold, warm = ms(label, "cold", model, strategy), ms(label, "warm", model, strategy)
                if not cold:
                    continue
                worst[label] = max(worst.get(label, 0.0), max(cold))
                lines.append(f"| {model} | {strategy} | {label} | {ci(cold)} | {max(cold):.2f} | "
                             f"{ci(warm) if warm else '-'} | {'met' if max(cold) <= target_ms else 'MISSED'} |")
    lines += ["", "| model | code | process wall s, median | start-up s reported apart, median | "
              "1-min load at the cold starts, median (max) |", "|---|---|---|---|---|"]
    for model in names:
        for label in labels:
            procs = {(r["link"], r["slowdown"], r["repeat"]): r for r in rows
                     if r["label"] == label and r["phase"] == "cold" and r["model"] == model}
            if not procs:
                continue
            startup = [r["startup_s"] for r in procs.values() if r.get("startup_s") not in ("", None)]
            loads = [r["load1"] for r in procs.values() if r.get("load1") not in ("", None)]
            lines.append(f"| {model} | {label} | {median([r['process_s'] for r in procs.values()]):.1f} | "
                         f"{f'{median(startup):.2f}' if startup else 'not reported'} | "
                         f"{f'{median(loads):.1f} ({max(loads):.1f})' if loads else '-'} |")
    lines.append("")
    for label in labels:
        if label in worst:
            lines.append(f"{label}: worst cold planning time of any strategy {worst[label]:.2f} ms "
                         f"({'meets' if worst[label] <= target_ms else 'misses'} the {target_ms:g} ms target)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
