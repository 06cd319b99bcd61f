"""A lower bound on the optimal makespan, reported with every schedule."""

from __future__ import annotations

import math

from opss.sched._graph import SchedGraph
from opss.dag import bits
from opss.sched._johnson import johnson_order
from opss.sched._makespan import pipeline_times


def lower_bound(graph: SchedGraph) -> float:
    """A valid lower bound on the optimal makespan: the max of three bounds.

    (a) **Johnson relaxation.** Dropping the precedence constraints only
        enlarges the set of feasible orders, and without precedence the
        problem is the two-machine flow shop, which Johnson's rule
        (Algorithm 1) solves optimally. So Johnson's makespan over all
        vertices is <= the optimum.
    (b) **Last upload.** The last vertex ``x_n`` of any feasible order is a
        sink, and ``t_n >= f(x_1) + ... + f(x_n) + g(x_n) = sum f + g(x_n)``;
        hence ``t_n >= sum f + min over sinks of g``.
    (c) **First upload.** Let ``x_j`` be the first vertex with ``g > 0`` in the
        order. Its upload cannot start before it and all its ancestors are
        computed, so ``t_j >= f(anc(x_j) ∪ {x_j}) + g(x_j)``; every later
        upload adds its ``g`` (``t_i >= t_{i-1} + g(x_i)``) and vertices with
        ``g = 0`` add nothing, so ``t_n >= f(anc(x_j) ∪ {x_j}) + sum g``
        ``>= min over v with g(v) > 0 of f(anc(v) ∪ {v}) + sum g``.
        (Without any ``g > 0`` vertex, (b) gives ``sum f``, which is exact.)

    Each term is a valid bound, so their maximum is. An empty graph gives 0.
    """
    ids = graph.ids
    if not ids:
        return 0.0
    f, g = graph.f, graph.g
    a = pipeline_times((f[v], g[v]) for v in johnson_order((v, f[v], g[v]) for v in ids))[-1]
    total_f = graph.total_f()
    total_g = graph.total_g()
    b = total_f + min(g[v] for v in graph.sinks())
    c = _first_upload_bound(graph) + total_g if total_g > 0 else 0.0
    return max(a, b, c)


def _first_upload_bound(graph: SchedGraph) -> float:
    """min over v with g(v) > 0 of f(ancestors(v) ∪ {v})."""
    dag = graph.dag
    topo = dag.topo
    f, g = graph.f, graph.g
    fl = [f[v] for v in topo]  # by topological position, as the ancestor bitmasks
    # Longest f-path ending at v is a cheap lower estimate of f(anc ∪ v); use it
    # to visit candidates in a promising order and stop early.
    longest = [0.0] * len(topo)
    for i, v in enumerate(topo):
        longest[i] = fl[i] + max((longest[dag.position(p)] for p in dag.preds(v)), default=0.0)
    cands = sorted((longest[i], dag.index(v), i) for i, v in enumerate(topo) if g[v] > 0)
    if not cands:
        return 0.0
    anc = dag.ancestor_masks()
    best = math.inf
    for est, _, i in cands:
        if est >= best:
            break
        s = fl[i] + sum(fl[j] for j in bits(anc[i]))
        if s < best:
            best = s
    return best
