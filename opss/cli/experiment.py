"""``opss experiment``: LO / CO / PO / OPSS / joint over a wondershaper-shaped link (root).

Builds a server network namespace and a shaped veth uplink, runs
``opss-server`` inside it and a CPU-limited client worker beside it, and
writes runs.csv, summary.md and the plots of the seed's Figures 6 and 7 to
``--out``; with ``--server HOST:PORT --iface IFACE`` it runs on the client
machine against a remote opss-server instead, shaping IFACE's egress.
Resumable: finished (link, model) points are kept and skipped.

Two machines: start ``opss-server --host 0.0.0.0 --models ...`` on the GPU
machine, then on the client (a Raspberry Pi) ``sudo opss experiment --server
GPU:50051 --iface wlan0``. The interface's qdisc is restored on exit, errors,
SIGTERM and Ctrl-C; after a SIGKILL, ``opss experiment --cleanup`` (or the
next run) restores it from the state file under ``--state-dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opss.cli._args import add_wire_arguments, host_port, positive_int
from opss.errors import OpssError


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


def _gaps(text: str) -> tuple[float, ...]:
    try:
        gaps = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        gaps = ()
    if not gaps or not all(1 <= g <= 1000 for g in gaps):
        raise argparse.ArgumentTypeError(f"expected comma-separated gaps in [1, 1000] such as 5,20,50, got {text!r}")
    return gaps


def register(subparsers) -> None:
    from opss.lab.experiment import DEFAULT_IMAGE, DEFAULT_LINKS, DEFAULT_MODELS
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
    add_wire_arguments(p, image=False)
    p.add_argument("--image", default=DEFAULT_IMAGE, metavar="NAME",
                   help=f"the input: a sample photo an installed package ships (default {DEFAULT_IMAGE}); "
                        "beside the --codecs arms run the paper's raw float32 co@raw, po@raw and joint@raw")
    p.add_argument("--runs", type=positive_int, default=20, help="measured runs per strategy and point (default 20)")
    p.add_argument("--out", type=Path, default=Path("docs/results/experiment"),
                   help="output folder (default docs/results/experiment)")
    p.add_argument("--client-cpu", type=_share, default=None,
                   help="the client's CPU budget in cores, a cgroup quota (default 0.25 on one machine, "
                        "none with --server); below ~0.1 the CFS quota's jitter dominates (see the README)")
    p.add_argument("--cpu-period-us", type=int, default=10_000,
                   help="CFS period of the client's quota in microseconds (default 10000)")
    p.add_argument("--subnet", default="10.77.0.0/30",
                   help="private /30 used only between the testbed's veth ends (default 10.77.0.0/30)")
    p.add_argument("--shaper", choices=("auto", "wondershaper", "tc"), default="auto",
                   help="auto: wondershaper in the syntax the installed one speaks, falling back to tc HTB (default)")
    p.add_argument("--server", type=host_port, default=None,
                   help="HOST:PORT of a remote opss-server: two-machine mode (needs --iface)")
    p.add_argument("--iface", default="", help="with --server: the client's interface whose egress is shaped")
    p.add_argument("--state-dir", type=Path, default=Path("/run/opss"),
                   help="where what the experiment changed is recorded for --cleanup (default /run/opss)")
    p.add_argument("--cleanup", action="store_true",
                   help="restore interfaces and remove namespaces left by an experiment that was killed (root)")
    p.add_argument("--port", type=int, default=50061, help="server port inside the namespace")
    p.add_argument("--small", action="store_true", help="small test inputs (a quick smoke run)")
    p.add_argument("--client-slowdown", type=_gaps, default=None, metavar="X,Y,...",
                   help="client/server gaps of the predicted speedup-vs-bandwidth sweep in summary.md "
                        "(default 5,20,50)")
    p.add_argument("--summarize", action="store_true",
                   help="only rebuild summary.md and the plots from --out/runs.csv (no root needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opss.lab.experiment import ExperimentConfig, run_experiment, summarize

    if args.summarize:
        print(summarize(args.out, args.client_slowdown))
        return 0
    if args.cleanup:
        from opss.lab.shaping import require_root, restore_stale

        require_root("opss experiment --cleanup")
        lines = restore_stale(args.state_dir)
        print("\n".join(lines) if lines else f"opss experiment: nothing to clean up in {args.state_dir}")
        return 0
    if bool(args.server) != bool(args.iface):
        raise OpssError("--server and --iface go together: the remote opss-server and the client's interface "
                        "towards it")
    cfg = ExperimentConfig(models=args.models, links=args.links, strategies=args.strategies, runs=args.runs,
                           codecs=args.codecs, max_error=args.max_error, image=args.image,
                           out=args.out, client_cpu_share=args.client_cpu, cpu_period_us=args.cpu_period_us,
                           subnet=args.subnet, shaper=args.shaper, port=args.port, small=args.small,
                           server=args.server or "", iface=args.iface, state_dir=args.state_dir)
    out = run_experiment(cfg, gaps=args.client_slowdown)
    print((out / "summary.md").read_text())
    return 0
