"""``opss demo``: the embedded default — an in-process server on loopback and five strategies compared.

Starts ``opss-server`` inside this process on 127.0.0.1 (port 0), shapes the
client's upload with a token bucket in the sender at the link rate (no root
needed), plans lo, co, po, opss and joint on the same graph, costs and link,
runs each a few times, verifies every output against the local full model,
and prints measured medians beside the predictions.

Client and server share this machine, so the client is made the weak side
by pacing: each client layer takes ``--client-slowdown`` times its profiled
time here (a Raspberry Pi 4 is several times slower than a desktop core; a
GPU server is faster still). For a real CPU quota on a separate client
process, use ``opss experiment`` (root).
"""

from __future__ import annotations

import argparse

from opss.cli._args import add_wire_arguments, positive_int, slowdown


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="in-process server on loopback, shaped uplink: lo/co/po/opss/joint measured and predicted",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--model", default="googlenet", help="zoo model or package.module:factory (default googlenet)")
    p.add_argument("--link", default="4g", help="uplink: 3g, 4g, wifi or a rate such as 10mbit (default 4g)")
    p.add_argument("--runs", type=positive_int, default=5,
                   help="measured rounds of every strategy (default 5, for the verdict's 95%% intervals)")
    p.add_argument("--client-slowdown", type=slowdown, default=10.0, metavar="X",
                   help="emulate a client X times slower than this CPU (default 10, a Pi-class board)")
    p.add_argument("--wire-dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="dtype of the cut tensors on the wire (default float32)")
    p.add_argument("--small", action="store_true", help="the models' small test inputs (seconds, not minutes)")
    add_wire_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opss.lab.demo import run_demo

    results = run_demo(args.model, args.link, args.runs, args.client_slowdown, args.small,
                       wire_dtype=args.wire_dtype, codecs=args.codecs, max_error=args.max_error, image=args.image)
    po = results.get("po", {}).get("median_s")
    best = min(r["median_s"] for r in results.values())
    if po and best >= po * 0.98:
        print("note: no strategy beat po by more than 2 % here (po's plan is the best one found); pipelining "
              "pays when the best cut sends several tensors, e.g. "
              "`opss demo --model alexnet_parallel --link wifi --codecs raw`")
    return 0 if all(r["verified"] for r in results.values()) else 1
