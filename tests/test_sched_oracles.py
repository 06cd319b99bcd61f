"""Independent oracles for the scheduling tests (brute force, an event simulation)."""

from __future__ import annotations

import math

from hypothesis import strategies as st

from opss.sched import SchedGraph


def simulate(graph: SchedGraph, order) -> float:
    """Event simulation of the client: one compute unit, one uplink, FIFO uploads.

    Written independently of Proposition 1's closed recurrence: the compute
    unit runs the layers back to back; each finished layer with g > 0 joins
    the upload queue; the link serves the queue in arrival order. The
    latency is when the last upload (or the last computation) ends.
    """
    clock = 0.0
    ready = []
    for v in order:
        clock += graph.f[v]
        ready.append((clock, graph.g[v]))
    link_free = 0.0
    end = clock
    for done_at, g in ready:
        if g > 0:
            link_free = max(link_free, done_at) + g
            end = max(end, link_free)
    return end if order else 0.0


def all_topological_orders(graph: SchedGraph):
    """Every topological order (for n <= 8)."""
    ids = graph.ids
    preds = {v: set(graph.preds(v)) for v in ids}
    out = []

    def rec(prefix, done):
        if len(prefix) == len(ids):
            out.append(tuple(prefix))
            return
        for v in ids:
            if v not in done and preds[v] <= done:
                prefix.append(v)
                done.add(v)
                rec(prefix, done)
                done.discard(v)
                prefix.pop()

    rec([], set())
    return out


def brute_force_optimum(graph: SchedGraph) -> float:
    """min over all topological orders of Proposition 1's latency, by DFS with running (F, t)."""
    ids = graph.ids
    f, g = graph.f, graph.g
    preds = {v: set(graph.preds(v)) for v in ids}
    best = math.inf
    n = len(ids)

    def rec(done, compute, t):
        nonlocal best
        if len(done) == n:
            best = min(best, t)
            return
        for v in ids:
            if v not in done and preds[v] <= done:
                c2 = compute + f[v]
                done.add(v)
                rec(done, c2, max(c2, t) + g[v])
                done.discard(v)

    rec(set(), 0.0, 0.0)
    return best if n else 0.0


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


_times = st.one_of(
    st.integers(0, 6).map(float),
    st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def graphs(draw, max_n: int = 8, tree: bool = False, min_n: int = 1):
    """Random DAGs (or out-forests) with shuffled insertion order and many g = 0 vertices."""
    n = draw(st.integers(min_n, max_n))
    f = [draw(_times) for _ in range(n)]
    g = [draw(st.one_of(st.just(0.0), _times)) for _ in range(n)]
    edges = []
    for j in range(1, n):
        if tree:
            p = draw(st.integers(-1, j - 1))
            if p >= 0:
                edges.append((p, j))
        else:
            for p in draw(st.sets(st.integers(0, j - 1), max_size=3)):
                edges.append((p, j))
    perm = draw(st.permutations(range(n)))
    name = [f"n{perm[i]}" for i in range(n)]
    nodes = sorted(((name[i], f[i], g[i]) for i in range(n)), key=lambda x: int(x[0][1:]))
    return SchedGraph(nodes, [(name[u], name[v]) for u, v in edges])


# The oracles checked on cases small enough to do by hand.


def test_oracles_by_hand():
    gr = SchedGraph([("a", 2, 0), ("b", 1, 4), ("c", 3, 1)], [("a", "b"), ("a", "c")])
    assert sorted(all_topological_orders(gr)) == [("a", "b", "c"), ("a", "c", "b")]
    assert simulate(gr, ("a", "b", "c")) == 8.0  # b uploads 3..7, c computed at 6, uploads 7..8
    assert simulate(gr, ("a", "c", "b")) == 10.0  # c uploads 5..6, b computed at 6, uploads 6..10
    assert brute_force_optimum(gr) == 8.0
    antichain = SchedGraph([(v, 1, 1) for v in "abcd"])
    assert len(all_topological_orders(antichain)) == 24
