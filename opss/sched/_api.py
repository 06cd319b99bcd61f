"""``auto_schedule`` and the ``schedule`` dispatcher."""

from __future__ import annotations

import dataclasses
import time

from opss.errors import BudgetExceededError
from opss.sched._bounds import lower_bound
from opss.sched._exact import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_MAX_STATES,
    beam_schedule,
    exact_schedule,
    frontier_work,
    glue_reduce,
)
from opss.sched._graph import SchedGraph
from opss.sched._paper import pathwise_schedule, topo_schedule, tree_merge_schedule
from opss.sched._result import METHODS, ScheduleResult, meets_bound


# auto scales its beam so that width * frontier work stays below this many transitions.
AUTO_BEAM_WORK = 1_000_000


def auto_schedule(
    graph: SchedGraph,
    max_states: int = DEFAULT_MAX_STATES,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    beam_work: int = AUTO_BEAM_WORK,
) -> ScheduleResult:
    """The best order it can find, proven optimal whenever possible.

    1. The paper's heuristics that apply (``tree`` and ``pathwise`` on trees,
       ``topo`` always) run first; they take milliseconds. If one meets the
       lower bound, it is optimal and is returned.
    2. Otherwise the exact DP runs within ``max_states``; if it fits, its
       optimum is returned.
    3. Otherwise beam search runs, with its width reduced from
       ``beam_width`` on large graphs so that ``width x frontier work`` stays
       under ``beam_work`` transitions (default ``AUTO_BEAM_WORK``; at least width 1), and the best of
       beam and the heuristics is returned, marked optimal only if it meets the
       lower bound (or the beam never pruned).

    Ties prefer beam, then tree, pathwise, topo. The result's ``method`` is
    ``"auto"``; ``seconds`` covers all the steps.
    """
    start = time.perf_counter()
    lb = lower_bound(graph)
    heuristics = []
    if graph.is_tree():
        heuristics += [tree_merge_schedule(graph), pathwise_schedule(graph)]
    heuristics.append(topo_schedule(graph))
    best = min(heuristics, key=lambda r: r.makespan)
    if not best.optimal:
        try:
            best = exact_schedule(graph, max_states=max_states)
        except BudgetExceededError:
            reduced = glue_reduce(graph).graph
            width = max(1, min(beam_width, beam_work // max(1, frontier_work(reduced))))
            beam = beam_schedule(graph, width=width)
            best = min([beam, *heuristics], key=lambda r: r.makespan)  # first of equal makespans
    optimal = best.optimal or meets_bound(best.makespan, lb)
    return dataclasses.replace(
        best, method="auto", optimal=optimal, lower_bound=min(lb, best.makespan) if optimal else lb,
        seconds=time.perf_counter() - start,
    )


def schedule(graph: SchedGraph, method: str = "auto", **opts) -> ScheduleResult:
    """Schedule ``graph`` with ``method`` (exact | tree | pathwise | topo | beam | auto).

    Options: ``max_states`` for exact and auto, ``width`` for beam,
    ``beam_width`` and ``beam_work`` for auto. Every result carries the makespan recomputed by
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
