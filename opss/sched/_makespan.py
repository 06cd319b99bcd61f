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


def pipeline_times(
    jobs: Iterable[tuple[float, float]], compute: float = 0.0, link: float = 0.0
) -> list[float]:
    """Proposition 1: the upload completion time ``t_i`` of each job ``(f, g)`` in turn.

    ``t_i = max(F_i, t_{i-1}) + g_i`` with ``F_i = compute + f_1 + ... + f_i``
    and ``t_0 = link``: the upload of job ``i`` starts when both its
    computation and the previous upload are done. ``compute`` and ``link``
    are the two machines' states before the first job (both 0 for a whole
    order; a partial order's ``(F(D), t)`` for the bounds of a search state).

    This is the one implementation of the recurrence: :func:`makespan`, the
    lower bounds, the beam's ranking and the latency model's arrival times
    all call it. The exact DP and the beam expand states with the same
    step inlined (one comparison and two additions per transition over
    millions of transitions, where a call would double the cost).
    """
    out = []
    t = link
    for f, g in jobs:
        compute += f
        t = (compute if compute > t else t) + g
        out.append(t)
    return out


def completion_times(graph: SchedGraph, order: Sequence[str]) -> list[float]:
    """``t_1 .. t_n`` of Proposition 1 for a validated order (``t_0 = 0``)."""
    seq = validate_order(graph, order)
    f, g = graph.f, graph.g
    return pipeline_times((f[v], g[v]) for v in seq)


def makespan(graph: SchedGraph, order: Iterable[str]) -> float:
    """Client-side latency ``t_|S|`` of ``order`` (Proposition 1), after validating it.

    An empty graph has makespan 0.
    """
    times = completion_times(graph, tuple(order))
    return times[-1] if times else 0.0
