"""Proposition 1 of the paper: the latency of a client order, and the feasibility check.

This module is the *one* implementation of the objective and of feasibility:
every method, the CLI, the tests and the benchmarks recompute the makespans
they report with :func:`makespan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opss.errors import InfeasibleOrderError
from opss.sched._graph import SchedGraph


def validate_order(graph: SchedGraph, order: Iterable[str]) -> tuple[str, ...]:
    """Check that ``order`` is a permutation of ``graph.ids`` respecting every edge.

    Returns the order as a tuple. Raises :class:`~opss.errors.InfeasibleOrderError`
    naming the first offending node: an unknown id, a repeated id, a node that
    runs before one of its predecessors, or a node missing from the order.
    """
    seq = tuple(order)
    done: set[str] = set()
    for pos, v in enumerate(seq):
        if v not in graph:
            raise InfeasibleOrderError(
                f"order[{pos}] = {v!r} is not a node of the graph: expected one of its {len(graph)} ids"
            )
        if v in done:
            raise InfeasibleOrderError(f"node {v!r} appears twice in the order: expected each node once")
        for p in graph.preds(v):
            if p not in done:
                raise InfeasibleOrderError(
                    f"node {v!r} at position {pos} runs before its predecessor {p!r}: "
                    f"expected {p!r} earlier in the order"
                )
        done.add(v)
    if len(done) != len(graph):
        missing = next(v for v in graph.ids if v not in done)
        raise InfeasibleOrderError(
            f"node {missing!r} is missing from the order: expected all {len(graph)} nodes, got {len(done)}"
        )
    return seq


def completion_times(graph: SchedGraph, order: Sequence[str]) -> list[float]:
    """``t_1 .. t_n`` of Proposition 1 for a validated order (``t_0 = 0``).

    ``t_i = max(f(x_1) + ... + f(x_i), t_{i-1}) + g(x_i)``: the upload of
    ``x_i`` starts when both its computation and the previous upload are done.
    """
    seq = validate_order(graph, order)
    f, g = graph.f, graph.g
    compute = 0.0
    t = 0.0
    out = []
    for v in seq:
        compute += f[v]
        t = (compute if compute > t else t) + g[v]
        out.append(t)
    return out


def makespan(graph: SchedGraph, order: Iterable[str]) -> float:
    """Client-side latency ``t_|S|`` of ``order`` (Proposition 1), after validating it.

    An empty graph has makespan 0.
    """
    seq = validate_order(graph, order)
    f, g = graph.f, graph.g
    compute = 0.0
    t = 0.0
    for v in seq:
        compute += f[v]
        t = (compute if compute > t else t) + g[v]
    return t
