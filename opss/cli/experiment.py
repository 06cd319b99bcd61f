"""``opss experiment``: LO / CO / PO / OPSS / joint over a wondershaper-shaped link (root).

Builds a server network namespace and a shaped veth uplink, runs
``opss-server`` inside it and a CPU-limited client worker beside it, and
writes runs.csv, summary.md and the plots of the seed's Figures 6 and 7 to
``--out``. Resumable: finished (link, model) points are kept and skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opss.cli._args import positive_int


def _names(text: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _share(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a CPU share such as 0.25, got {text!r}") from None
    if not 0.01 <= x <= 64:
        raise argparse.ArgumentTypeError(f"expected a CPU share in [0.01, 64], got {text!r}")
    return x


def register(subparsers) -> None:
    from opss.lab.experiment import DEFAULT_LINKS, DEFAULT_MODELS
    from opss.plan import STRATEGIES

    p = subparsers.add_parser(
        "experiment",
        help="bandwidth experiment over a shaped link between network namespaces (root)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--models", type=_names, default=DEFAULT_MODELS,
                   help=f"comma-separated zoo models (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--links", type=_names, default=DEFAULT_LINKS,
                   help="comma-separated presets (3g, 4g, wifi) or rates such as 10mbit (default 3g,4g,wifi)")
    p.add_argument("--strategies", type=_names, default=STRATEGIES,
                   help=f"comma-separated strategies (default {','.join(STRATEGIES)})")
    p.add_argument("--runs", type=positive_int, default=20, help="measured runs per strategy and point (default 20)")
    p.add_argument("--out", type=Path, default=Path("docs/results/experiment"),
                   help="output folder (default docs/results/experiment)")
    p.add_argument("--client-cpu", type=_share, default=0.25,
                   help="the client's CPU budget in cores, a cgroup quota (default 0.25)")
    p.add_argument("--cpu-period-us", type=int, default=10_000,
                   help="CFS period of the client's quota in microseconds (default 10000)")
    p.add_argument("--subnet", default="10.77.0.0/30",
                   help="private /30 used only between the testbed's veth ends (default 10.77.0.0/30)")
    p.add_argument("--shaper", choices=("auto", "wondershaper", "tc"), default="auto",
                   help="auto: wondershaper, falling back to tc HTB (default)")
    p.add_argument("--port", type=int, default=50061, help="server port inside the namespace")
    p.add_argument("--small", action="store_true", help="small test inputs (a quick smoke run)")
    p.add_argument("--summarize", action="store_true",
                   help="only rebuild summary.md and the plots from --out/runs.csv (no root needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opss.lab.experiment import ExperimentConfig, run_experiment, summarize

    if args.summarize:
        print(summarize(args.out))
        return 0
    cfg = ExperimentConfig(models=args.models, links=args.links, strategies=args.strategies, runs=args.runs,
                           out=args.out, client_cpu_share=args.client_cpu, cpu_period_us=args.cpu_period_us,
                           subnet=args.subnet, shaper=args.shaper, port=args.port, small=args.small)
    out = run_experiment(cfg)
    print((out / "summary.md").read_text())
    return 0
