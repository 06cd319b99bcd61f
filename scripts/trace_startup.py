"""The walk of the client's start-up: which project files ``ClientSession(config)`` passes through.

Starts an in-process opss-server on loopback (not traced), then constructs one
:class:`opss.client.session.ClientSession` against it under ``sys.settrace``.
The trace is of this thread only: the server's threads (and the server's own
loading) are not counted. What is counted, over the files of this checkout
under ``opss/``, ``client/`` and ``server/`` (generated stubs included):

- files passed: the distinct project files in which some function runs;
- stops: function entries into a project file from another one (the caller is
  the nearest project frame below the callee, so a way through torch or grpc
  back into the same file is no stop; the first entry, from this script into
  ``client/session.py``, is one);
- captures: calls of ``opss/graph.py:capture``; beside it the model builds
  (``get_model``, and ``build_model`` where it exists: ``get_model`` calls it),
  spec lookups (``get_spec``), weight fingerprints and graph hashes;
- distinct stops: the different (caller file:function -> callee file:function)
  pairs among them (a loop over the vertices repeats one stop);
- the stops that land in ``opss/models/`` and in ``opss/profile.py``.

Two rows: "until planning" is the walk up to the first stop into
``opss/plan.py`` (resolving the config: model, graph, profiles, server, link);
"whole construction" adds the planner, the scheduler and the splits.

Module-level code that an import runs during the construction is left out
(that is importing, not the walk). ``--walk`` prints every stop in order.

    .venv/bin/python scripts/trace_startup.py [--model resnet18] [--small] [--strategy opss]
                                              [--link wifi] [--walk]

Without ``--small`` the client's profiles come from the committed tables
(``profiles/``), as ``opss-client`` does; with it they are measured fresh.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

FOLDERS = ("opss", "client", "server")

#: the first stop into this file ends the part of the walk that resolves the config
PLANNER = "opss/plan.py"

#: (file, function) pairs reported by name beside the totals
WATCHED = (
    ("captures", "opss/graph.py", "capture"),
    ("get_model calls", "opss/models/__init__.py", "get_model"),
    ("build_model calls", "opss/models/__init__.py", "build_model"),
    ("spec lookups", "opss/models/__init__.py", "get_spec"),
    ("fingerprints", "opss/models/__init__.py", "fingerprint"),
    ("graph hashes", "opss/profile.py", "graph_hash"),
)


class Walk:
    """A ``sys.settrace`` function that records project function entries and the stops between files."""

    def __init__(self, root: Path) -> None:
        self.prefixes = tuple(str(root / f) + "/" for f in FOLDERS)
        self.root = str(root) + "/"
        self._rel: dict[str, str | None] = {}
        self.importing = 0
        self.calls: Counter[tuple[str, str]] = Counter()
        self.stops: list[tuple[str | None, str | None, str, str]] = []

    def rel(self, filename: str) -> str | None:
        """The path relative to the checkout of a project file, else None (cached)."""
        try:
            return self._rel[filename]
        except KeyError:
            path = str(Path(filename).resolve()) if filename and not filename.startswith("<") else ""
            rel = path[len(self.root):] if path.startswith(self.prefixes) else None
            self._rel[filename] = rel
            return rel

    def _module_body(self, frame, event, arg):
        if event == "return":
            self.importing -= 1
        return self._module_body

    def __call__(self, frame, event, arg):
        code = frame.f_code
        rel = self.rel(code.co_filename)
        if rel is None:
            return None
        if code.co_name == "<module>":
            self.importing += 1
            return self._module_body
        if self.importing:
            return None
        self.calls[(rel, code.co_name)] += 1
        caller = frame.f_back
        while caller is not None and self.rel(caller.f_code.co_filename) is None:
            caller = caller.f_back
        src = self.rel(caller.f_code.co_filename) if caller is not None else None
        if src != rel:
            self.stops.append((src, caller.f_code.co_name if caller is not None else None, rel, code.co_name))
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18", help="zoo name (default resnet18)")
    p.add_argument("--small", action="store_true", help="small test input on both sides (fresh client profile)")
    p.add_argument("--strategy", default="opss", help="the session's strategy (default opss)")
    p.add_argument("--link", default="wifi",
                   help="link spec (default wifi, fixed; auto probes over loopback, a number of probes that varies)")
    p.add_argument("--walk", action="store_true", help="print every stop in order")
    args = p.parse_args(argv)

    import opss
    from opss.client.session import ClientConfig, ClientSession
    from opss.server.app import build_server
    from opss.server.config import ServerConfig

    root = Path(opss.__file__).resolve().parent.parent
    server = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=(args.model,),
                                       small=args.small, warmup_runs=0, max_inflight=2, max_workers=4))
    walk = Walk(root)
    try:
        cfg = ClientConfig(model=args.model, server=f"127.0.0.1:{server.port}", strategy=args.strategy,
                           link=args.link, small=args.small, progress=False)
        sys.settrace(walk)
        try:
            session = ClientSession(cfg, out=None, err=None)
        finally:
            sys.settrace(None)
        session.close()
    finally:
        server.stop(0).wait(5)

    if args.walk:
        for i, (src, fn, dst, callee) in enumerate(walk.stops, 1):
            print(f"{i:4d}  {src or '(caller)'}:{fn or '-'} -> {dst}:{callee}")
    planning = next((i for i, stop in enumerate(walk.stops) if stop[2] == PLANNER), len(walk.stops))
    print(f"ClientSession({args.model!r}, strategy={args.strategy}, link={args.link}"
          f"{', small' if args.small else ''}): the start-up walk")
    print(f"{'':24s} {'files':>6s} {'stops':>6s} {'distinct':>9s} {'models/':>8s} {'profile.py':>11s}")
    for label, stops in (("until planning", walk.stops[:planning]), ("whole construction", walk.stops)):
        into = Counter(dst for _, _, dst, _ in stops)
        print(f"{label:24s} {len(into):6d} {len(stops):6d} {len(set(stops)):9d} "
              f"{sum(n for f, n in into.items() if f.startswith('opss/models/')):8d} {into['opss/profile.py']:11d}")
    for label, rel, fn in WATCHED:
        print(f"{label}: {walk.calls[(rel, fn)]}")
    print(f"function entries (same-file calls included): {sum(walk.calls.values())}")
    files = Counter(dst for _, _, dst, _ in walk.stops[:planning])
    print("until planning, stops per file: " + ", ".join(f"{f} {n}" for f, n in files.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
