"""``auto_schedule`` and the ``schedule`` dispatcher."""

from __future__ import annotations

import dataclasses
import time

from opss.errors import BudgetExceededError
from opss.sched._bounds import lower_bound
from opss.sched._exact import DEFAULT_BEAM_WIDTH, DEFAULT_MAX_STATES, beam_schedule, exact_schedule
from opss.sched._graph import SchedGraph
from opss.sched._paper import pathwise_schedule, topo_schedule, tree_merge_schedule
from opss.sched._result import METHODS, ScheduleResult, meets_bound


def auto_schedule(
    graph: SchedGraph,
    max_states: int = DEFAULT_MAX_STATES,
    beam_width: int = DEFAULT_BEAM_WIDTH,
) -> ScheduleResult:
    """The exact optimum when it fits ``max_states``; otherwise the best of beam, tree and topo.

    ``tree`` (Algorithms 3-4) and ``pathwise`` (Algorithms 2+1) only join on
    trees. The fallback is marked optimal only when its makespan meets the
    lower bound (or the beam never pruned). Ties prefer beam, then tree,
    pathwise, topo. The result's ``method`` is ``"auto"``.
    """
    start = time.perf_counter()
    try:
        best = exact_schedule(graph, max_states=max_states)
    except BudgetExceededError:
        candidates = [beam_schedule(graph, width=beam_width)]
        if graph.is_tree():
            candidates += [tree_merge_schedule(graph), pathwise_schedule(graph)]
        candidates.append(topo_schedule(graph))
        best = min(candidates, key=lambda r: r.makespan)  # first of equal makespans wins
        lb = max(r.lower_bound for r in candidates)
        proven = any(r.optimal for r in candidates if r.makespan == best.makespan)
        best = dataclasses.replace(best, optimal=proven or meets_bound(best.makespan, lb))
    return dataclasses.replace(best, method="auto", seconds=time.perf_counter() - start)


def schedule(graph: SchedGraph, method: str = "auto", **opts) -> ScheduleResult:
    """Schedule ``graph`` with ``method`` (exact | tree | pathwise | topo | beam | auto).

    Options: ``max_states`` for exact and auto, ``width`` for beam,
    ``beam_width`` for auto. Every result carries the makespan recomputed by
    :func:`opss.sched.makespan` and :func:`opss.sched.lower_bound`.
    """
    if method == "exact":
        return exact_schedule(graph, **opts)
    if method == "beam":
        return beam_schedule(graph, **opts)
    if method == "auto":
        return auto_schedule(graph, **opts)
    funcs = {"tree": tree_merge_schedule, "pathwise": pathwise_schedule, "topo": topo_schedule}
    if method in funcs:
        if opts:
            raise TypeError(f"method {method!r} takes no options, got {sorted(opts)}")
        return funcs[method](graph)
    raise ValueError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")


__all__ = ["auto_schedule", "lower_bound", "schedule"]
