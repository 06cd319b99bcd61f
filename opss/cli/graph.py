"""``opss graph --model NAME``: capture a model and report its DAG.

Prints the vertex and edge counts, the structure (``chain``: one path;
``tree``: every vertex has at most one predecessor; ``dag``: anything else),
the structure of the client part of a default small cut (the client set ``S``
= the vertex with the smallest output in the first half of the topological
order plus its ancestors; the paper observes that a partitioned DNN's client
part is usually a tree),
the largest and smallest outputs and the capture time. ``--json FILE`` writes
``{"model", "granularity", "nodes": [{"id", "op", "module", "bytes", ...}],
"edges": [[u, v], ...]}`` with the vertex ids that ``opss.split`` and the
planners use. An unknown model is one error line and exit status 2.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="capture a model as a layer DAG and report its size and structure",
        description=(
            "Trace a zoo model (or package.module:factory) with torch.fx and print its vertex and "
            "edge counts, structure (chain/tree/dag), largest and smallest outputs and capture "
            "time; --json writes the graph for outside tools."
        ),
    )
    parser.add_argument("--model", required=True, help="zoo name or package.module:factory")
    parser.add_argument(
        "--granularity",
        choices=("block", "layer"),
        default="block",
        help="block: named submodules are vertices; layer: every (fused) op is (default block)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the graph as JSON to FILE")
    parser.add_argument("--seed", type=int, default=0, help="weight initialization seed (default 0)")
    parser.add_argument("--weights", metavar="FILE", help="state dict to load (torch.save file)")
    parser.add_argument(
        "--small",
        action="store_true",
        help="capture at the model's small test input shape instead of its full input shape",
    )
    parser.set_defaults(func=run)


def smallest_cut_client(graph) -> tuple[str, frozenset[str]]:
    """The vertex with the smallest output in the first half of the topological
    order (the input excluded), and the client set it closes (itself and its
    ancestors): a cut that keeps the front of the model on the client. Falls
    back to the input for tiny graphs."""
    half = graph.ids[1 : max(2, (len(graph.ids) + 1) // 2)]
    inner = [graph.node(v) for v in half if v != graph.output_id]
    if not inner:
        return graph.input_id, frozenset([graph.input_id])
    best = min(inner, key=lambda n: (n.bytes, graph.ids.index(n.id)))
    seen = {best.id}
    stack = [best.id]
    while stack:
        for u in graph.preds(stack.pop()):
            if u not in seen:
                seen.add(u)
                stack.append(u)
    return best.id, frozenset(seen)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def run(args: argparse.Namespace) -> int:
    from opss import models
    from opss.split import cut_points

    spec = models.get_spec(args.model)
    model = models.build_model(spec, seed=args.seed, weights=args.weights)
    shape = spec.shape(args.small)
    graph = models.capture_at(spec, model, shape, args.granularity, seed=args.seed)

    largest = max(graph.nodes, key=lambda n: n.bytes)
    smallest = min(graph.nodes, key=lambda n: n.bytes)
    v, client = smallest_cut_client(graph)
    cut = cut_points(graph, client)
    print(f"model: {graph.model}  granularity: {graph.granularity}  input: {shape}")
    if spec.description:
        print(f"description: {spec.description}")
    print(f"vertices: {len(graph.nodes)}  edges: {len(graph.edges)}  structure: {graph.structure()}")
    print(
        f"client part at the small cut after {v} ({_count(len(client), 'vertex', 'vertices')}, "
        f"{_count(len(cut), 'cut point', 'cut points')}): {graph.structure(client)}"
    )
    print(f"largest output: {largest.bytes} bytes at {largest.id} {largest.shape}")
    print(f"smallest output: {smallest.bytes} bytes at {smallest.id} {smallest.shape}")
    print(f"capture time: {graph.capture_seconds:.3f} s")
    print(f"fingerprint: {models.fingerprint(model)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(graph.to_json(), fh, indent=1)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0
