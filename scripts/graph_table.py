"""The zoo table for the README: per model and granularity, the vertex and edge
counts, the structure, the client-part structure at the default small cut and
the capture time at the full input shape (median over --repeats).

    .venv/bin/python scripts/graph_table.py [--repeats 3] [--small] [--threads 1] [--out docs/results]

Prints a Markdown table and writes graph_table.csv to --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="use the small test shapes")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    from opss import models
    from opss.cli.graph import smallest_cut_client
    from opss.graph import capture

    rows = []
    for name in models.names():
        model = models.get_model(name, seed=args.seed)
        x = models.example_input(name, small=args.small, seed=args.seed)
        for granularity in ("block", "layer"):
            times = []
            for _ in range(args.repeats):
                graph = capture(model, x, granularity, name=name)
                times.append(graph.capture_seconds)
            _, client = smallest_cut_client(graph)
            rows.append(
                {
                    "model": name,
                    "granularity": granularity,
                    "input": "x".join(str(d) for d in x.shape[2:]),
                    "vertices": len(graph.nodes),
                    "edges": len(graph.edges),
                    "structure": graph.structure(),
                    "client_at_small_cut": graph.structure(client),
                    "capture_s": round(statistics.median(times), 3),
                }
            )
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "graph_table.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path} (torch {torch.__version__}, {torch.get_num_threads()} threads)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
