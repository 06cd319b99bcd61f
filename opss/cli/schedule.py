"""``opss schedule FILE...``: schedule instance files, one JSON line per file.

Contract (docs/architecture.md): each FILE holds ``{"nodes": [{"id", "f", "g"}, ...],
"edges": [[u, v], ...]}``; for each, in input order, one line
``{"instance": FILE, "method", "order", "makespan", "optimal", "lower_bound", "seconds"}``
goes to stdout. ``-`` reads an instance from stdin.

A bad file (unreadable, invalid JSON, invalid graph, ``tree`` on a non-tree,
``exact`` over budget) prints one line ``opss schedule: error: FILE: problem``
on stderr and produces no stdout line; the remaining files are still
processed, and the exit status is then 2. Pure Python: no torch import.
"""

from __future__ import annotations

import argparse

from opss.cli._args import positive_int
import json
import sys

from opss.errors import OpssError
from opss.sched import DEFAULT_BEAM_WIDTH, DEFAULT_MAX_STATES, METHODS, SchedGraph, schedule




def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="order a client's layers to hide uploads behind computation (JSON lines out)",
        description=(
            "Read scheduling instances ({'nodes': [{'id','f','g'}], 'edges': [[u, v]]}) and print "
            "one JSON object per file: instance, method, order, makespan, optimal, lower_bound, "
            "seconds. Bad files are reported on stderr (one line each), the others still run; "
            "the exit status is 2 if any file failed."
        ),
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="instance JSON file, or - for stdin")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="instead of files: every method side by side on a built-in GoogLeNet-like instance "
        "(with --json: print that instance)",
    )
    parser.add_argument("--json", action="store_true", help="with --demo: print the demo instance JSON")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="exact (DP over downsets), tree (paper Alg. 3-4), pathwise (Alg. 2+1), "
        "topo (Alg. 5), beam, or auto (a paper heuristic if it meets the lower bound, else exact "
        "within --budget, else the best of beam and the heuristics); default auto",
    )
    parser.add_argument(
        "--budget",
        type=positive_int,
        default=DEFAULT_MAX_STATES,
        metavar="N",
        help=f"max downset states for exact/auto (default {DEFAULT_MAX_STATES})",
    )
    parser.add_argument(
        "--beam-width",
        type=positive_int,
        default=DEFAULT_BEAM_WIDTH,
        metavar="K",
        help=f"states kept per level by beam (and auto's fallback; default {DEFAULT_BEAM_WIDTH})",
    )
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict:
    if args.method == "exact":
        return {"max_states": args.budget}
    if args.method == "beam":
        return {"width": args.beam_width}
    if args.method == "auto":
        return {"max_states": args.budget, "beam_width": args.beam_width}
    return {}


def _load(name: str) -> SchedGraph:
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise OpssError(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise OpssError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OpssError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise OpssError("invalid JSON: nested too deeply") from None
    return SchedGraph.from_json(data)


def run(args: argparse.Namespace) -> int:
    if args.demo:
        from opss.cli._sched_demo import print_demo

        return print_demo(as_json=args.json)
    if not args.files:
        raise OpssError("expected one or more instance FILEs (or - for stdin, or --demo)")
    opts = _options(args)
    failed = 0
    out = sys.stdout
    for name in args.files:
        try:
            graph = _load(name)
            result = schedule(graph, args.method, **opts)
        except (OpssError, ValueError, ArithmeticError) as exc:
            failed += 1
            out.flush()
            msg = " ".join(str(exc).split())  # one line, whatever the message holds
            print(f"opss schedule: error: {name}: {msg}", file=sys.stderr, flush=True)
            continue
        line = {"instance": name, **result.to_json()}
        out.write(json.dumps(line) + "\n")
    out.flush()
    return 2 if failed else 0
