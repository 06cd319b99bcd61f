"""The ``opss`` command: ``main()`` only dispatches.

Each subcommand is one module in this package that defines
``register(subparsers)``; it adds its own parser and sets ``func`` to a
callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Modules are discovered, so adding a subcommand edits nothing here. A module
must not import torch at import time (``opss schedule`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from opss.cli._args import OneLineParser
from opss.errors import OpssError


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="opss",
        description="OPSS: plan and run pipelined cooperative DNN inference.",
    )
    from opss import __version__

    parser.add_argument("--version", action="version", version=f"opss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OpssError as exc:
        print(f"opss {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --json path, a full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"opss {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"opss {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `opss schedule ... | head`
        return 0
