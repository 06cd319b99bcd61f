"""Scheduling core (pure Python, no torch): which order should the client run its layers in?

The client computes its layers one at a time while its uplink uploads the
cut-point outputs in the same order; Proposition 1 of the paper gives the
latency of an order (:func:`makespan`). This package holds the graph type,
the objective and its feasibility check, the paper's Algorithms 1-5
(heuristics, faithful to the pseudo-code), an exact solver (DP over
downsets with the glue reduction), a beam search, ``auto``, and a lower
bound reported with every result.

    >>> from opss.sched import SchedGraph, schedule
    >>> g = SchedGraph([("a", 2, 0), ("b", 1, 3), ("c", 1, 1)], [("a", "b"), ("a", "c")])
    >>> schedule(g, "exact").order
    ('a', 'b', 'c')
"""

from opss.sched._api import auto_schedule, schedule
from opss.sched._bounds import lower_bound
from opss.sched._exact import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_MAX_STATES,
    Reduction,
    beam_schedule,
    downset_count_lower_bound,
    exact_schedule,
    frontier_work,
    glue_reduce,
)
from opss.sched._graph import SchedGraph, SchedNode
from opss.sched._instances import (
    demo_instance,
    dnn_instance,
    random_dag,
    random_tree,
    tree_counterexample,
    upload_seconds,
)
from opss.sched._johnson import johnson_key, johnson_order
from opss.sched._makespan import completion_times, makespan, pipeline_times, validate_order
from opss.sched._paper import Path, pathwise_schedule, topo_schedule, tree_merge_schedule, tree_to_paths
from opss.sched._result import METHODS, ScheduleResult

__all__ = [
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_MAX_STATES",
    "METHODS",
    "Path",
    "Reduction",
    "SchedGraph",
    "SchedNode",
    "ScheduleResult",
    "auto_schedule",
    "beam_schedule",
    "completion_times",
    "demo_instance",
    "dnn_instance",
    "downset_count_lower_bound",
    "exact_schedule",
    "frontier_work",
    "glue_reduce",
    "johnson_key",
    "johnson_order",
    "lower_bound",
    "makespan",
    "pathwise_schedule",
    "pipeline_times",
    "random_dag",
    "random_tree",
    "schedule",
    "topo_schedule",
    "tree_counterexample",
    "tree_merge_schedule",
    "tree_to_paths",
    "upload_seconds",
]
