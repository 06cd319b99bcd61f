"""Exact and beam search over downsets (order ideals), with the glue reduction.

Both solvers work on the graph left by :func:`glue_reduce` and expand the
result back to the original vertices.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opss.errors import BudgetExceededError
from opss.sched._bounds import lower_bound
from opss.sched._graph import SchedGraph
from opss.sched._johnson import johnson_order
from opss.sched._makespan import pipeline_times
from opss.sched._result import ScheduleResult, finish, meets_bound

DEFAULT_MAX_STATES = 100_000
DEFAULT_BEAM_WIDTH = 16


# --------------------------------------------------------------------------- glue reduction


@dataclass(frozen=True)
class Reduction:
    """A smaller instance with the same optimum, and the map back.

    ``graph`` is the reduced graph; each of its vertices stands for the
    original vertices ``members[id]`` run back to back in that order; the
    original vertices in ``tail`` (already in run order) run after everything
    else. :meth:`expand` maps an order of ``graph`` to an order of the
    original graph with the same makespan.
    """

    graph: SchedGraph
    members: Mapping[str, tuple[str, ...]]
    tail: tuple[str, ...] = field(default=())

    def expand(self, order: Sequence[str]) -> tuple[str, ...]:
        out = [x for r in order for x in self.members[r]]
        out.extend(self.tail)
        return tuple(out)


def glue_reduce(graph: SchedGraph) -> Reduction:
    """Shrink the instance without losing the optimum; repeated to a fixpoint.

    **Glue.** A vertex ``v`` with ``g(v) = 0`` and exactly one successor ``u``
    is glued into ``u``: the pair becomes one vertex running ``v`` then ``u``
    (``f = f(v) + f(u)``, ``g = g(u)``, predecessors merged). Exchange
    argument: in any feasible order, move ``v`` from its place to just before
    ``u``. Its predecessors still precede it and ``u`` is its only
    successor, so the order stays feasible. Every vertex that was between
    them now finishes its computation ``f(v)`` earlier, so its ``t`` can
    only decrease (``t_i`` is monotone in the prefix sums and in
    ``t_{i-1}``); ``v``'s own step uploads nothing (``g = 0``), and from ``u``
    on the prefix sums are unchanged. So some optimal order runs ``v``
    immediately before ``u``.

    **Tail.** A vertex with ``g = 0`` and no successor can run last: moving it
    to the end only makes the others' computations finish earlier, and the
    makespan becomes ``max(sum f, t of the rest)``, which is also what any
    order ending with it achieves. It is removed and appended after the
    reduced order; removals are repeated (its predecessors may become
    such vertices or glue candidates).

    Glued and tail vertices are consumed in insertion order, so the result is
    deterministic.
    """
    f = {v: graph.f[v] for v in graph.ids}
    g = {v: graph.g[v] for v in graph.ids}
    preds = {v: set(graph.preds(v)) for v in graph.ids}
    succs = {v: set(graph.succs(v)) for v in graph.ids}
    members: dict[str, tuple[str, ...]] = {v: (v,) for v in graph.ids}
    alive = dict.fromkeys(graph.ids)
    tail_groups: list[tuple[str, ...]] = []
    stack = list(reversed(graph.ids))
    while stack:
        v = stack.pop()
        if v not in alive or g[v] != 0.0 or len(succs[v]) > 1:
            continue
        if succs[v]:
            (u,) = succs[v]
            members[u] = members[v] + members[u]
            f[u] += f[v]
            preds[u].discard(v)
            for p in preds[v]:
                succs[p].discard(v)
                succs[p].add(u)
                preds[u].add(p)
                stack.append(p)
        else:
            tail_groups.append(members[v])
            for p in preds[v]:
                succs[p].discard(v)
                stack.append(p)
        del alive[v]
        del members[v]
    ids = list(alive)
    reduced = SchedGraph(
        [(v, f[v], g[v]) for v in ids],
        [(u, w) for u in ids for w in sorted(succs[u], key=graph.index)],
    )
    tail = tuple(x for grp in reversed(tail_groups) for x in grp)
    return Reduction(reduced, {v: members[v] for v in ids}, tail)


# --------------------------------------------------------------------------- the downset DP


class _Instance:
    """Bitmask view of a graph: vertex i is bit i (insertion order)."""

    def __init__(self, graph: SchedGraph) -> None:
        self.ids = graph.ids
        n = len(self.ids)
        idx = {v: i for i, v in enumerate(self.ids)}
        self.n = n
        self.f = [graph.f[v] for v in self.ids]
        self.g = [graph.g[v] for v in self.ids]
        self.pred_mask = [0] * n
        self.succ = [[] for _ in range(n)]
        for u, v in graph.edges:
            self.pred_mask[idx[v]] |= 1 << idx[u]
            self.succ[idx[u]].append(idx[v])
        self.sources = sum(1 << i for i in range(n) if self.pred_mask[i] == 0)
        self.full = (1 << n) - 1

    def step(self, mask: int, avail: int, i: int) -> int:
        """Available set after running vertex i from state (mask, avail)."""
        m2 = mask | (1 << i)
        av = avail & ~(1 << i)
        for j in self.succ[i]:
            if self.pred_mask[j] & ~m2 == 0:
                av |= 1 << j
        return av

    def path(self, parent: Mapping[int, tuple[int, int]], mask: int) -> list[str]:
        out = []
        while mask:
            prev, i = parent[mask]
            out.append(self.ids[i])
            mask = prev
        out.reverse()
        return out


def downset_count_lower_bound(graph: SchedGraph, cap: int) -> int:
    """A lower bound on the number of downsets of ``graph`` (capped at ``cap + 1``).

    Group the vertices by depth (longest path from a source, in edges).
    Predecessors of a depth-``i`` vertex have depth < ``i``, so "every vertex
    of depth < ``i`` plus any non-empty subset of depth ``i``" is a downset;
    these are all distinct, so there are at least ``1 + sum_i (2^|L_i| - 1)``.
    """
    depth: dict[str, int] = {}
    sizes: dict[int, int] = {}
    for v in graph.topological_order():
        d = max((depth[p] + 1 for p in graph.preds(v)), default=0)
        depth[v] = d
        sizes[d] = sizes.get(d, 0) + 1
    total = 1
    for k in sizes.values():
        total += (1 << min(k, cap.bit_length() + 1)) - 1
        if total > cap:
            return cap + 1
    return total


def exact_schedule(graph: SchedGraph, max_states: int = DEFAULT_MAX_STATES) -> ScheduleResult:
    """The optimal order for any DAG: dynamic programming over downsets.

    A prefix of a feasible order is a *downset* ``D`` (closed under
    predecessors). Its compute sum ``F(D) = sum of f over D`` depends only on
    the set, and Proposition 1's step ``t' = max(F(D) + f(v), t) + g(v)`` is
    non-decreasing in ``t``. So among all orders of ``D`` only the one with
    the least ``t`` can lead to an optimal completion: any completion of a
    larger ``t`` is at least as late. The DP keeps, for every downset, the
    least ``t`` and how it was reached, extending downsets of size ``k`` to
    size ``k + 1`` by one available vertex; the answer is the least ``t`` of
    the full set. Downsets are bitmasks; ties keep the first vertex found
    (lowest insertion index), so the result is deterministic.

    The DP runs on :func:`glue_reduce`'s graph, which has the same optimum.
    ``max_states`` bounds the number of downsets created; exceeding it raises
    :class:`~opss.errors.BudgetExceededError` (never a non-optimal answer).
    It fails fast, before any search, when :func:`downset_count_lower_bound`
    already exceeds the budget.
    """
    start = time.perf_counter()
    red = glue_reduce(graph)
    at_least = downset_count_lower_bound(red.graph, max_states)
    if at_least > max_states:
        raise BudgetExceededError(
            f"exact search needs more than {max_states} states (the budget) for {len(graph)} vertices "
            f"({len(red.graph)} after glue reduction): their depth layers alone give more than "
            f"{max_states} downsets; expected <= {max_states}, use a larger budget or --method beam/auto"
        )
    inst = _Instance(red.graph)
    level: dict[int, list] = {0: [0.0, 0.0, inst.sources]}
    parent: dict[int, tuple[int, int]] = {}
    states = 1
    fl, gl = inst.f, inst.g
    for k in range(inst.n):
        nxt: dict[int, list] = {}
        for mask, (t, comp, avail) in level.items():
            a = avail
            while a:
                low = a & -a
                a ^= low
                i = low.bit_length() - 1
                c2 = comp + fl[i]
                t2 = (c2 if c2 > t else t) + gl[i]
                m2 = mask | low
                cur = nxt.get(m2)
                if cur is None:
                    states += 1
                    if states > max_states:
                        raise BudgetExceededError(
                            f"exact search needs more than {max_states} states (the budget) for "
                            f"{len(graph)} vertices ({inst.n} after glue reduction); it had reached "
                            f"downsets of size {k + 1} of {inst.n}: expected <= {max_states} states, "
                            f"use a larger budget or --method beam/auto"
                        )
                    nxt[m2] = [t2, c2, inst.step(mask, avail, i)]
                    parent[m2] = (mask, i)
                elif t2 < cur[0]:
                    cur[0] = t2
                    parent[m2] = (mask, i)
        level = nxt
    order = red.expand(inst.path(parent, inst.full)) if inst.n else red.tail
    return finish(graph, "exact", order, start, proven=True)


def frontier_work(graph: SchedGraph) -> int:
    """Sum, over the steps of one topological order, of the number of available vertices.

    This is the number of transitions a beam of width 1 examines (on the
    graph as given), so ``width * frontier_work`` estimates a beam's work
    (:meth:`opss.dag.Dag.frontier_work`).
    """
    return graph.dag.frontier_work()


def beam_schedule(graph: SchedGraph, width: int = DEFAULT_BEAM_WIDTH) -> ScheduleResult:
    """The downset DP of :func:`exact_schedule`, keeping only the best ``width`` states per level.

    After each level (downset size) the states are ranked by a lower bound
    on any completion from them, then by ``t``: for up to 64 vertices (after
    glue reduction) Johnson's relaxation over the remaining vertices started
    from the state's machine times ``(F(D), t)``; for larger graphs the
    cheaper ``t + sum of the remaining g`` (the link's busy time plus the idle
    time so far). The result is a valid order; it is marked optimal when the
    beam never dropped a state (then it is the exact DP) or when it meets
    the lower bound.
    """
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    start = time.perf_counter()
    red = glue_reduce(graph)
    inst = _Instance(red.graph)
    if inst.n <= 64:
        parent, pruned = _beam_small(inst, width)
    else:
        parent, pruned = _beam_large(inst, width)
    order = red.expand(inst.path(parent, inst.full)) if inst.n else red.tail
    return finish(graph, "beam", order, start, proven=not pruned)


def _beam_small(inst: _Instance, width: int) -> tuple[dict[int, tuple[int, int]], bool]:
    """Beam over bitmask states ranked by Johnson's relaxation from (F, t) (n <= 64)."""
    fl, gl = inst.f, inst.g
    jorder = johnson_order((i, fl[i], gl[i]) for i in range(inst.n))

    def rank(item: tuple[int, list]) -> tuple:
        mask, (t, comp, *_rest) = item
        rest = pipeline_times(((fl[i], gl[i]) for i in jorder if not (mask >> i) & 1), comp, t)
        return (rest[-1] if rest else t, t, mask)

    # state: [t, F, avail (of the parent until kept), parent mask, vertex]
    level: dict[int, list] = {0: [0.0, 0.0, inst.sources, 0, -1]}
    parent: dict[int, tuple[int, int]] = {}
    pruned = False
    for _ in range(inst.n):
        nxt: dict[int, list] = {}
        for mask, (t, comp, avail, _p, _v) in level.items():
            a = avail
            while a:
                low = a & -a
                a ^= low
                i = low.bit_length() - 1
                c2 = comp + fl[i]
                t2 = (c2 if c2 > t else t) + gl[i]
                m2 = mask | low
                cur = nxt.get(m2)
                if cur is None:
                    nxt[m2] = [t2, c2, avail, mask, i]
                elif t2 < cur[0]:
                    cur[0], cur[2], cur[3], cur[4] = t2, avail, mask, i
        if len(nxt) > width:
            pruned = True
            nxt = dict(heapq.nsmallest(width, nxt.items(), key=rank))
        for m2, st in nxt.items():
            st[2] = inst.step(st[3], st[2], st[4])
            parent[m2] = (st[3], st[4])
        level = nxt
    return parent, pruned


def _beam_large(inst: _Instance, width: int) -> tuple[dict[int, tuple[int, int]], bool]:
    """Beam for large graphs: candidates ranked by ``t + remaining g`` before any state is built.

    The uploaded total ``up`` depends only on the set, so among candidates
    reaching the same set the one ranked first has the least ``t``, which is
    the one the exact DP would keep.
    """
    fl, gl = inst.f, inst.g
    total_g = sum(gl)
    pred_mask, succ = inst.pred_mask, inst.succ
    sources = [i for i in range(inst.n) if pred_mask[i] == 0]
    # state: (mask, t, F, uploaded g, available vertices)
    level = [(0, 0.0, 0.0, 0.0, sources)]
    parent: dict[int, tuple[int, int]] = {}
    pruned = False

    def take(pool: list, level: list) -> list:
        """The first ``width`` distinct sets of ``pool`` (ranked), built into states."""
        nxt = []
        seen: set[int] = set()
        for _key, t2, k, i in pool:
            if len(nxt) == width:
                break
            mask, _t, comp, up, avail = level[k]
            m2 = mask | (1 << i)
            if m2 in seen:
                continue
            seen.add(m2)
            av2 = [x for x in avail if x != i]
            av2 += [j for j in succ[i] if pred_mask[j] & ~m2 == 0]
            nxt.append((m2, t2, comp + fl[i], up + gl[i], av2))
            parent[m2] = (mask, i)
        return nxt

    for _ in range(inst.n):
        cands = []
        for k, (_mask, t, comp, up, avail) in enumerate(level):
            for i in avail:
                c2 = comp + fl[i]
                t2 = (c2 if c2 > t else t) + gl[i]
                cands.append((t2 + total_g - up - gl[i], t2, k, i))
        if len(cands) > width:
            pruned = True
            pool = heapq.nsmallest(2 * width, cands)
        else:
            pool = sorted(cands)
        nxt = take(pool, level)
        if len(nxt) < width and len(pool) < len(cands):  # duplicates used up the pool
            nxt = take(sorted(cands), level)
        level = nxt
    return parent, pruned
