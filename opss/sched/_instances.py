"""Built-in and seeded random instances (the demo, the tests and the benchmark share them)."""

from __future__ import annotations

import random

from opss.sched._graph import SchedGraph

# 4G uplink of the paper's experiments (Section VI-B, after Zhang et al.).
UPLINK_BITS_PER_S = 5.85e6
# Per-message delay c of the link model g = c + w / b (seconds).
MESSAGE_DELAY_S = 0.010


def upload_seconds(nbytes: int, bandwidth: float = UPLINK_BITS_PER_S, delay: float = MESSAGE_DELAY_S) -> float:
    """``g = c + w / b`` for ``nbytes`` of output over ``bandwidth`` bit/s."""
    return delay + nbytes * 8 / bandwidth


def demo_instance() -> SchedGraph:
    """A GoogLeNet-like client graph: the stem and inception(3a), cut at its four branch ends.

    Compute times are rough Raspberry Pi 4 (Cortex-A72, PyTorch, batch 1,
    224x224 input) figures in seconds; uploads are float32 outputs at 28x28
    over the paper's 4G uplink (5.85 Mbit/s) plus a 10 ms per-message delay:

        vertex     layer                           f (s)   output          g (s)
        conv1      7x7/2 conv 3->64 @112x112       0.060   -               0
        pool1      3x3/2 max-pool                  0.008   -               0
        conv2      1x1 conv 64->64 @56x56          0.012   -               0
        conv3      3x3 conv 64->192 @56x56         0.110   -               0
        pool2      3x3/2 max-pool -> 192@28x28     0.006   -               0
        b1         1x1 conv 192->64                0.006   64x28x28 fp32   0.010 + 200704 B = 0.2845
        b2_red     1x1 conv 192->96                0.008   -               0
        b2         3x3 conv 96->128                0.048   128x28x28 fp32  0.010 + 401408 B = 0.5589
        b3_red     1x1 conv 192->16                0.002   -               0
        b3         3x3 conv 16->32                 0.012   32x28x28 fp32   0.010 + 100352 B = 0.1472
        b4_pool    3x3/1 max-pool                  0.004   -               0
        b4         1x1 conv 192->32                0.003   32x28x28 fp32   0.010 + 100352 B = 0.1472
    """
    ch = 28 * 28 * 4  # bytes per channel of a 28x28 float32 map
    nodes = [
        ("conv1", 0.060, 0.0),
        ("pool1", 0.008, 0.0),
        ("conv2", 0.012, 0.0),
        ("conv3", 0.110, 0.0),
        ("pool2", 0.006, 0.0),
        ("b1", 0.006, upload_seconds(64 * ch)),
        ("b2_red", 0.008, 0.0),
        ("b2", 0.048, upload_seconds(128 * ch)),
        ("b3_red", 0.002, 0.0),
        ("b3", 0.012, upload_seconds(32 * ch)),
        ("b4_pool", 0.004, 0.0),
        ("b4", 0.003, upload_seconds(32 * ch)),
    ]
    edges = [
        ("conv1", "pool1"), ("pool1", "conv2"), ("conv2", "conv3"), ("conv3", "pool2"),
        ("pool2", "b1"),
        ("pool2", "b2_red"), ("b2_red", "b2"),
        ("pool2", "b3_red"), ("b3_red", "b3"),
        ("pool2", "b4_pool"), ("b4_pool", "b4"),
    ]  # fmt: skip
    return SchedGraph(nodes, edges)


def tree_counterexample() -> SchedGraph:
    """docs/architecture.md's tree on which Algorithm 3 is not optimal (30 vs 28.001)."""
    return SchedGraph(
        [("a", 2, 0), ("b", 9, 0), ("e", 9, 6), ("c", 1, 3), ("d", 1.001, 6)],
        [("a", "b"), ("a", "e"), ("b", "c"), ("b", "d")],
    )


def _cost(rng: random.Random) -> float:
    return round(rng.uniform(1.0, 10.0), 3)


def random_tree(n: int, seed: int, p_internal_cut: float = 0.25) -> SchedGraph:
    """A random out-tree of ``n`` vertices (seeded).

    Vertex ``i > 0`` hangs off a uniformly random earlier vertex or, half the
    time, one of the last three (deeper trees). Leaves are cut-points
    (``g`` in [1, 12]); an internal vertex is one with probability
    ``p_internal_cut``; ``f`` in [1, 10].
    """
    rng = random.Random(seed)
    parent = [-1] + [
        rng.randrange(i) if rng.random() < 0.5 else rng.randrange(max(0, i - 3), i) for i in range(1, n)
    ]
    has_child = set(parent[1:])
    nodes = []
    for i in range(n):
        cut = i not in has_child or rng.random() < p_internal_cut
        nodes.append((f"v{i}", _cost(rng), round(rng.uniform(1.0, 12.0), 3) if cut else 0.0))
    return SchedGraph(nodes, [(f"v{parent[i]}", f"v{i}") for i in range(1, n)])


def random_dag(n: int, seed: int, window: int | None = None, p_internal_cut: float = 0.3) -> SchedGraph:
    """A random DAG of ``n`` vertices (seeded).

    Vertex ``i > 0`` has 1-3 predecessors among the previous ``window``
    vertices (all earlier ones when ``window`` is None), or none with
    probability 0.1. Sinks are cut-points; other vertices with probability
    ``p_internal_cut``.
    """
    rng = random.Random(seed)
    edges = []
    for i in range(1, n):
        if rng.random() < 0.1:
            continue
        lo = 0 if window is None else max(0, i - window)
        k = min(i - lo, rng.choice((1, 1, 2, 2, 3)))
        for j in sorted(rng.sample(range(lo, i), k)):
            edges.append((f"v{j}", f"v{i}"))
    has_succ = {u for u, _ in edges}
    nodes = []
    for i in range(n):
        name = f"v{i}"
        cut = name not in has_succ or rng.random() < p_internal_cut
        nodes.append((name, _cost(rng), round(rng.uniform(1.0, 12.0), 3) if cut else 0.0))
    return SchedGraph(nodes, edges)


def dnn_instance(seed: int, granularity: str = "layer") -> SchedGraph:
    """A DNN-shaped client graph (seeded): a stem, then 1-3 Inception-like modules.

    The stem is a chain of 3-5 layers; each module has 2-4 branches of 1-3
    layers; every module but the last ends in a concat layer; the client
    graph stops at the last module's branch ends, which are the cut-points.
    With ``granularity="layer"`` every layer is a vertex (a DAG: branches
    join at the concat); with ``"block"`` each module without a cut inside is
    one vertex (its layers' compute summed), as the paper treats GoogLeNet,
    which leaves a tree. The same seed gives the same costs in both.
    Times are in seconds, Raspberry-Pi-like: ``f`` 2-60 ms per layer; ``g``
    uploads a float32 map of 16-256 channels at 14x14 or 28x28 over 5.85
    Mbit/s plus 10 ms.
    """
    if granularity not in ("layer", "block"):
        raise ValueError(f"granularity must be 'layer' or 'block', got {granularity!r}")
    rng = random.Random(seed)
    nodes: list[tuple[str, float, float]] = []
    edges: list[tuple[str, str]] = []

    def layer(name: str, g: float = 0.0) -> str:
        nodes.append((name, round(rng.uniform(0.002, 0.060), 4), g))
        return name

    prev = None
    for i in range(rng.randint(3, 5)):
        cur = layer(f"stem{i}")
        if prev is not None:
            edges.append((prev, cur))
        prev = cur
    modules = rng.randint(1, 3)
    side = rng.choice((14, 28))
    for m in range(modules):
        last = m == modules - 1
        first_node, first_edge = len(nodes), len(edges)
        ends = []
        for b in range(rng.randint(2, 4)):
            src = prev
            length = rng.randint(1, 3)
            for k in range(length):
                is_end = k == length - 1
                g = upload_seconds(rng.choice((16, 32, 64, 128, 256)) * side * side * 4) if last and is_end else 0.0
                cur = layer(f"m{m}b{b}l{k}", g)
                edges.append((src, cur))
                src = cur
            ends.append(src)
        if last:
            break
        cat = layer(f"m{m}cat")
        edges.extend((e, cat) for e in ends)
        if granularity == "block":
            block_f = round(sum(f for _, f, _ in nodes[first_node:]), 4)
            del nodes[first_node:], edges[first_edge:]
            nodes.append((f"m{m}", block_f, 0.0))
            edges.append((prev, f"m{m}"))
            cat = f"m{m}"
        prev = cat
    return SchedGraph(nodes, edges)
