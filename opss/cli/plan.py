"""``opss plan --model NAME --link 4g``: plan lo/co/po/opss/joint and print the predicted terms.

Uses the committed profiles (client: this CPU, 1 thread; server: CUDA if
present, else this CPU with half its cores) and builds a missing one with a
progress bar. ``--json FILE`` writes ``{"model", "link": {"c", "b"},
"startup": {...}, "strategies": {name: {"client", "cut", "cut_bytes", "order",
"predicted": {...}, "seconds_to_plan"}}}`` (times in seconds, bytes/s for ``b``).
``startup`` holds the one-time work of the process before any plan (``imports_s``:
torch and the capture code; ``capture_s``, ``profiles_s``, ``codecs_s``: the codec
tables; ``prepare_s``: the planner's graph; ``total_s``), reported apart so each
``seconds_to_plan`` is the planning's own, from the first call.
torch is imported inside ``run`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from opss.cli._args import add_wire_arguments, codec_summary, slowdown, wire_from_args
from opss.errors import LinkModelError
from opss.plan import STRATEGIES

STRATEGY_CHOICES = ("all", *STRATEGIES)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="choose the cut and client order (lo, co, po, opss, joint) and predict the latency",
        description=(
            "Plan a model over a link: cut, client order and predicted latency with its terms "
            "(client compute, upload, hidden upload, server, reply). --link is a preset (3g = 1.1 Mbps, "
            "4g = 5.85 Mbps, wifi = 18.88 Mbps) or a rate such as 5.85mbit, 10Mbps, 2MB/s; --rtt sets the "
            "per-message delay c. The reply uses the same link (symmetric) unless --downlink is given."
        ),
    )
    parser.add_argument("--model", required=True, help="zoo name or package.module:factory")
    parser.add_argument("--link", "--bandwidth", dest="link", required=True,
                        help="3g | 4g | wifi | a rate (5.85mbit, 10Mbps, 2MB/s); --bandwidth is the same option")
    parser.add_argument("--rtt", default=None, help="per-message delay c, e.g. 20ms (default 0)")
    parser.add_argument("--downlink", default=None, help="downlink rate for the reply (default: same as --link)")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default="all", help="default all")
    parser.add_argument("--granularity", choices=("layer", "block"), default="layer",
                        help="plan over layers (default) or blocks (costs summed from the layer profile)")
    parser.add_argument("--client-slowdown", type=slowdown, default=1.0, metavar="X",
                        help="the client is X >= 1 times slower than its profile: multiply the client "
                             "profile's times by X (model a Pi-class client from a PC profile; default 1.0)")
    parser.add_argument("--server-wait", type=_wait_ms, default=0.0, metavar="MS",
                        help="expected queue wait on a loaded server, milliseconds, added to the server "
                             "term of every plan that offloads (default 0: an idle server)")
    parser.add_argument("--method", default="auto",
                        choices=("auto", "exact", "tree", "pathwise", "topo", "beam"),
                        help="client-order scheduler of opss.sched (default auto)")
    parser.add_argument("--profiles-dir", default=None, metavar="DIR",
                        help="root of the profile tables (default: the repository's profiles/ for zoo models, "
                             "~/.cache/opss/profiles for package.module:factory models)")
    parser.add_argument("--no-build", action="store_true", help="fail instead of measuring a missing profile")
    add_wire_arguments(parser)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the plans as JSON ('-' = stdout)")
    parser.add_argument("--show-order", action="store_true", help="also print each strategy's client order")
    parser.set_defaults(func=run)


def _wait_ms(text: str) -> float:
    import math

    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds >= 0, got {text!r}") from None
    if not (math.isfinite(x) and x >= 0):
        raise argparse.ArgumentTypeError(f"expected milliseconds >= 0, got {text!r}")
    return x / 1e3


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def format_table(plans, po_total: float | None = None) -> str:
    head = ["strategy", "client", "cut", "cut bytes", "wire bytes", "codecs", "compute ms", "upload ms", "hidden ms",
            "server ms", "reply ms", "total ms", "vs po", "plan ms", "order"]
    waits = any(p.predicted.server_wait for p in plans.values())
    if waits:  # the server term includes the expected wait on a loaded server
        head.insert(head.index("server ms") + 1, "wait ms")
    rows = [head]
    for name, p in plans.items():
        pr = p.predicted
        rows.append([
            name, str(len(p.client)), str(len(p.cut)) if p.cut_bytes else "0", f"{p.cut_bytes:,}",
            f"{p.wire_bytes:,}", codec_summary(p),
            _ms(pr.client_compute), _ms(pr.upload), _ms(pr.hidden_upload), _ms(pr.server), _ms(pr.reply),
            _ms(pr.total), f"{po_total / pr.total:.2f}x" if po_total else "-",
            f"{p.seconds_to_plan * 1e3:.1f}", "optimal" if p.optimal_order else ("-" if not p.pipelined else "heur."),
        ])
        if waits:
            rows[-1].insert(head.index("wait ms"), _ms(pr.server_wait))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_startup(startup: dict[str, float]) -> str:
    """``start-up 4.21 s (imports 2.90, capture 0.61, ...)``: the one-time work before planning."""
    parts = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in startup.items() if k != "total_s")
    return (f"start-up {startup['total_s']:.2f} s ({parts}), once per process and apart from the "
            "planning times (plan ms) below")


def run(args: argparse.Namespace) -> int:
    t_run = time.perf_counter()
    from opss.link import LinkModel, link_from_spec, parse_rate
    from opss.plan import STRATEGIES, plan_model, plans_to_json

    link = link_from_spec(args.link, rtt=args.rtt)
    downlink = None
    if args.downlink is not None:
        try:
            downlink = LinkModel(link.c, parse_rate(args.downlink))
        except LinkModelError as exc:
            raise LinkModelError(f"--downlink: {exc}") from None
    strategies = STRATEGIES if args.strategy == "all" else (args.strategy,)

    import opss.graph  # noqa: F401  (torch and torch.fx: counted as imports, not as capture)
    import opss.models  # noqa: F401
    from opss.profile import capture_model, load_or_build_profile

    startup = {"imports_s": time.perf_counter() - t_run}
    t = time.perf_counter()
    layer_graph = capture_model(args.model, "layer")
    startup["capture_s"] = time.perf_counter() - t
    t = time.perf_counter()
    kw = dict(root=args.profiles_dir, build_missing=not args.no_build, progress=True, graph=layer_graph)
    client_prof = load_or_build_profile(args.model, role="client", **kw)
    server_prof = load_or_build_profile(args.model, role="server", **kw)
    startup["profiles_s"] = time.perf_counter() - t
    t = time.perf_counter()
    wire = wire_from_args(args, layer_graph)
    startup["codecs_s"] = time.perf_counter() - t
    graph, plans = plan_model(
        args.model, link, strategies, granularity=args.granularity, client_profile=client_prof,
        server_profile=server_prof, client_slowdown=args.client_slowdown, downlink=downlink, method=args.method,
        layer_graph=layer_graph, wire=wire, startup=startup, server_wait=args.server_wait,
    )
    startup["total_s"] = sum(startup.values())
    po_total = plans["po"].total if "po" in plans else None
    # with --json - the JSON owns stdout; the human table goes to stderr
    table_out = sys.stderr if args.json == "-" else sys.stdout
    print(f"model {args.model} ({args.granularity}: {len(graph)} vertices, {len(graph.edges)} edges); "
          f"link c={link.c * 1e3:.2f} ms, b={link.mbps:.3f} Mbps ({link.b:,.0f} B/s); "
          f"downlink {'= uplink' if downlink is None else f'{downlink.mbps:.3f} Mbps'}", file=table_out)
    print(f"client profile {client_prof.device_tag} x{args.client_slowdown:g} slowdown "
          f"(sum {client_prof.total() * args.client_slowdown * 1e3:.2f} ms); server profile "
          f"{server_prof.device_tag} (sum {server_prof.total() * 1e3:.2f} ms)", file=table_out)
    print(format_startup(startup), file=table_out)
    print(format_table(plans, po_total), file=table_out)
    if args.show_order:
        for name, p in plans.items():
            print(f"{name}: cut {list(p.cut)}; order {' '.join(p.order)}", file=table_out)
    if args.json:
        doc = plans_to_json(args.model, link, plans, granularity=args.granularity,
                            client_slowdown=args.client_slowdown,
                            client_profile=client_prof.device_tag, server_profile=server_prof.device_tag,
                            startup=startup,
                            server_wait=args.server_wait)
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            print(f"wrote {args.json}")
    return 0
