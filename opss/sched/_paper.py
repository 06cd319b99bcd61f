"""The seed paper's heuristics, faithful to its pseudo-code: Algorithms 2+1, 3+4 and 5.

None of them is optimal in general (the paper's Theorem 1 claims Algorithm 3
is optimal on trees; docs/architecture.md gives a counterexample), so their
results are marked ``optimal`` only when the makespan meets the lower bound.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass

from opss.errors import InvalidGraphError
from opss.sched._graph import SchedGraph
from opss.sched._johnson import johnson_key, johnson_order
from opss.sched._result import ScheduleResult, finish

# A forest is scheduled as a tree under this zero-cost root, removed from the output.
_VROOT = None


def _require_tree(graph: SchedGraph, method: str) -> None:
    for v in graph.ids:
        p = graph.preds(v)
        if len(p) > 1:
            raise InvalidGraphError(
                f"{method} method needs a tree: node {v!r} has {len(p)} predecessors "
                f"({', '.join(map(repr, p))}); expected at most 1"
            )


def _children(graph: SchedGraph) -> tuple[object, dict[object, list[object]]]:
    """Root and child lists; a forest (or a graph with one root) hangs off ``_VROOT`` if needed."""
    roots = list(graph.sources())
    children: dict[object, list[object]] = {v: list(graph.succs(v)) for v in graph.ids}
    if len(roots) == 1:
        return roots[0], children
    children[_VROOT] = roots
    return _VROOT, children


# --------------------------------------------------------------------------- Algorithm 2


@dataclass(frozen=True)
class Path:
    """One independent path of Algorithm 2's converted graph.

    ``vertices`` runs from a child of the root down to a leaf (the root itself
    is not duplicated, line 4, and runs first); ``f`` is the sum of compute
    times along the path, duplicated layers included; ``g`` is the upload time
    of its last vertex (Section IV-A).
    """

    vertices: tuple[str, ...]
    f: float
    g: float


def tree_to_paths(graph: SchedGraph) -> tuple[Path, ...]:
    """Algorithm 2 (DAG conversion): split a tree into independent root-to-leaf paths.

    Lines 1-3: BFS from the root ``v_r``. Lines 4-7: every non-root vertex
    with out-degree ``m > 1`` is duplicated ``m - 1`` times with its incoming
    edge, each copy keeping one child; applied top-down this gives every
    leaf its own copy of the whole path from the root's child down to it.
    Paths are returned in BFS order of their leaves (children in edge order).
    A forest is converted under a virtual root, so each real root starts its
    paths. A single-vertex tree has no path (the root alone runs).
    """
    _require_tree(graph, "pathwise")
    if not graph.ids:
        return ()
    root, children = _children(graph)
    f, g = graph.f, graph.g
    paths: list[Path] = []
    queue: deque[tuple[object, tuple[str, ...]]] = deque([(root, ())])
    while queue:
        v, prefix = queue.popleft()
        kids = children[v]
        if v is not root and not kids:
            paths.append(Path(prefix, sum(f[x] for x in prefix), g[prefix[-1]]))
        for c in kids:
            queue.append((c, prefix + (c,)))  # the copy of the path prefix for this child
    return tuple(paths)


def pathwise_schedule(graph: SchedGraph) -> ScheduleResult:
    """Algorithms 2 then 1: convert the tree into paths and order the paths by Johnson's rule.

    The root runs first; then the paths in Johnson order (Algorithm 1, ties
    in path order). A layer duplicated by the conversion executes once, at
    its first occurrence (the paper's "execution status table"), so the
    result is an order over the original vertices. Raises InvalidGraphError
    when the graph is not a tree (a node with 2+ predecessors).
    """
    start = time.perf_counter()
    paths = tree_to_paths(graph)
    order: list[str] = []
    done: set[str] = set()
    if graph.ids:
        root, _ = _children(graph)
        if root is not _VROOT:
            order.append(root)
            done.add(root)
    ranked = johnson_order((k, p.f, p.g) for k, p in enumerate(paths))
    for k in ranked:
        for v in paths[k].vertices:
            if v not in done:
                done.add(v)
                order.append(v)
    return finish(graph, "pathwise", order, start)


# --------------------------------------------------------------------------- Algorithms 3 and 4


class _Element:
    """An element of a scheduling list: a group of vertices run back to back, with summed f and g."""

    __slots__ = ("members", "f", "g")

    def __init__(self, members: tuple, f: float, g: float) -> None:
        self.members = members
        self.f = f
        self.g = g


def _merge_lists(lists: list[list[_Element]]) -> list[_Element]:
    """Algorithm 4: merge scheduling lists by repeatedly taking the smallest head.

    Lines 3-5 compare the heads of all lists with Johnson's rule
    (:func:`johnson_key`: communication-heavy before computation-heavy, then
    ascending f, resp. descending g); ties go to the list that comes first in
    ``lists`` (children in edge order). Lines 6-7 append it and drop empty
    lists. A heap over (key, list index) selects the same element as the
    linear scan.
    """
    heap = [(johnson_key(lst[0].f, lst[0].g), k, 0) for k, lst in enumerate(lists) if lst]
    heapq.heapify(heap)
    out: list[_Element] = []
    while heap:
        _, k, pos = heapq.heappop(heap)
        lst = lists[k]
        out.append(lst[pos])
        if pos + 1 < len(lst):
            nxt = lst[pos + 1]
            heapq.heappush(heap, (johnson_key(nxt.f, nxt.g), k, pos + 1))
    return out


def tree_merge_schedule(graph: SchedGraph) -> ScheduleResult:
    """Algorithms 3 and 4: recursive merge of the children's lists, with the grouping trick.

    Lines 1-3: every leaf ``v`` maps to the list ``[(f(v), g(v))]``.
    Lines 4-11: take the parent ``v_p`` of a deepest leaf (internal vertices
    are handled by decreasing depth, ties by insertion index — the result
    does not depend on that order since vertices of equal depth are in
    disjoint subtrees), merge its children's lists with Algorithm 4 (line 7),
    and group ``v_p`` with the head element ``v_l`` (lines 8-10): the new head
    runs ``v_p`` then ``v_l``'s group, with ``f = f(v_p) + f(v_l)`` and
    ``g = g(v_p) + g(v_l)`` as the paper writes (the paper assumes
    ``g(v_p) = 0`` for internal vertices; the summed ``g`` only steers
    later comparisons — the reported makespan is recomputed exactly).
    Line 12 returns the root's list, flattened.

    This is a heuristic: it is not optimal on all trees (see docs/architecture.md).
    A forest is scheduled under a zero-cost virtual root (dropped from the
    output). Raises InvalidGraphError on a node with 2+ predecessors.
    """
    start = time.perf_counter()
    _require_tree(graph, "tree")
    if not graph.ids:
        return finish(graph, "tree", [], start)
    root, children = _children(graph)
    f = dict(graph.f)
    g = dict(graph.g)
    f[_VROOT] = g[_VROOT] = 0.0
    index = {v: i for i, v in enumerate(graph.ids)}
    index[_VROOT] = -1
    depth: dict[object, int] = {root: 0}
    queue = deque([root])
    internal: list[object] = []
    while queue:
        v = queue.popleft()
        if children[v]:
            internal.append(v)
        for c in children[v]:
            depth[c] = depth[v] + 1
            queue.append(c)
    phi: dict[object, list[_Element]] = {}
    for v in depth:
        if not children[v]:
            phi[v] = [_Element((v,), f[v], g[v])]
    for vp in sorted(internal, key=lambda v: (-depth[v], index[v])):
        merged = _merge_lists([phi.pop(c) for c in children[vp]])
        head = merged[0]
        merged[0] = _Element((vp,) + head.members, f[vp] + head.f, g[vp] + head.g)
        phi[vp] = merged
    order = [v for el in phi[root] for v in el.members if v is not _VROOT]
    return finish(graph, "tree", order, start)


# --------------------------------------------------------------------------- Algorithm 5


def topo_schedule(graph: SchedGraph) -> ScheduleResult:
    """Algorithm 5: reverse topological peeling with Johnson's rule inside each layer.

    Line 3: ``T`` = vertices of the remaining set with no outgoing edge inside
    it. Lines 4-5: ``T1 = {f < g}`` by ascending ``f``, ``T2 = {f >= g}`` by
    descending ``g`` (Johnson's rule, ties by insertion index), and
    ``σ <- σ1 || σ2 || σ``. Line 6 removes ``T``. Works on any DAG; a
    heuristic.
    """
    start = time.perf_counter()
    f, g = graph.f, graph.g
    index = {v: i for i, v in enumerate(graph.ids)}
    outdeg = {v: len(graph.succs(v)) for v in graph.ids}
    layer = [v for v in graph.ids if outdeg[v] == 0]
    blocks: list[list[str]] = []
    while layer:
        blocks.append(johnson_order((v, f[v], g[v]) for v in layer))
        nxt = []
        for v in layer:
            for p in graph.preds(v):
                outdeg[p] -= 1
                if outdeg[p] == 0:
                    nxt.append(p)
        layer = sorted(nxt, key=index.__getitem__)
    order = [v for block in reversed(blocks) for v in block]
    return finish(graph, "topo", order, start)
