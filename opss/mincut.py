"""Partition-only planning: the best cut when uploads do not overlap computation.

Without a pipeline the latency of a client set ``S`` (closed under
predecessors, containing the input) is additive::

    cost(S) = sum f(v) for v in S            (client compute)
            + sum g(v) for v in P(S)          (uploads, one per cut tensor)
            + sum s(v) for v not in S         (server compute)
            + reply  if the output is not in S

where ``P(S)`` are the client vertices with a successor outside ``S``.
Minimizing it is a minimum s-t cut (DADS, Hu et al. INFOCOM 2019; Zhang et
al. 2020), built as follows (source side = client, sink side = server):

- ``v -> T`` with capacity ``f(v)`` (cut when ``v`` runs on the client),
  ``SRC -> v`` with capacity ``s(v)`` (cut when ``v`` runs on the server; the
  output vertex also carries the reply here);
- each vertex ``u`` with several successors gets an auxiliary node
  ``a_u``: ``u -> a_u`` with capacity ``g(u)`` and ``a_u -> w`` infinite
  for every successor ``w``, so ``u``'s output is charged once however many
  server vertices consume it (a single successor ``w`` just gets
  ``u -> w`` with capacity ``g(u)``);
- ``w -> u`` infinite for every edge ``(u, w)``: no client vertex may follow a
  server vertex (the client set stays closed under predecessors);
- ``SRC -> input`` infinite: the input is on the client.

For chains, :func:`best_prefix` is the exhaustive scan over prefixes of
Neurosurgeon (Kang et al. ASPLOS 2017); it must agree with the min-cut.

No torch: max-flow is Dinic's algorithm, in pure Python on float
capacities for small graphs and with scipy's C implementation (capacities
scaled to int32) above ``SCIPY_MIN_NODES`` (48) nodes, where pure Python took
~60 ms per cut on RandWire's 534 layers (scipy is installed with
scikit-learn; it is imported only when needed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

from opss.errors import InvalidGraphError

__all__ = ["MinCutProblem", "additive_cost", "best_prefix", "max_flow_min_cut", "min_cut_partition"]

_EPS = 1e-12


def max_flow_min_cut(
    n: int, arcs: Sequence[tuple[int, int, float]], source: int, sink: int
) -> tuple[float, set[int]]:
    """Dinic max-flow; returns ``(flow value, source side of a minimum cut)``.

    ``arcs`` are ``(u, v, capacity)`` with ``capacity >= 0`` (``math.inf``
    allowed). The source side returned is the set reachable from ``source``
    in the residual graph: the smallest minimum cut's source side.
    Iterative (no recursion), so deep DNN graphs are fine.
    """
    head, to, cap, tol = _residual_graph(n, arcs)
    flow = 0.0
    while True:
        level = _levels(n, head, to, cap, source, tol)
        if level[sink] < 0:
            break
        it = [0] * n
        while (pushed := _augment(head, to, cap, level, it, source, sink, tol)) is not None:
            flow += pushed
    # the last levels are those of the final residual graph: reached = the source side
    return flow, {v for v in range(n) if level[v] >= 0}


def _residual_graph(
    n: int, arcs: Sequence[tuple[int, int, float]]
) -> tuple[list[list[int]], list[int], list[float], float]:
    """``(head, to, cap, tol)``: arc ``e`` goes to ``to[e]`` with residual ``cap[e]``,
    its reverse is ``e ^ 1``; ``head[u]`` lists the arcs leaving ``u``. Infinite
    capacities become more than all finite ones together; residuals at most
    ``tol`` count as saturated."""
    head: list[list[int]] = [[] for _ in range(n)]
    to: list[int] = []
    cap: list[float] = []
    finite_total = 0.0
    for _, _, c in arcs:
        if c < 0 or c != c:
            raise InvalidGraphError(f"arc capacity: expected a value >= 0, got {c!r}")
        if c != math.inf:
            finite_total += c
    big = 4.0 * finite_total + 1.0
    for u, v, c in arcs:
        head[u].append(len(to))
        to.append(v)
        cap.append(big if c == math.inf else float(c))
        head[v].append(len(to))
        to.append(u)
        cap.append(0.0)
    return head, to, cap, _EPS * max(1.0, finite_total)


def _levels(n: int, head: list[list[int]], to: list[int], cap: list[float], source: int,
            tol: float) -> list[int]:
    """BFS distance from ``source`` along unsaturated arcs (-1: not reached)."""
    level = [-1] * n
    level[source] = 0
    q = deque([source])
    while q:
        u = q.popleft()
        lu = level[u] + 1
        for e in head[u]:
            v = to[e]
            if level[v] < 0 and cap[e] > tol:
                level[v] = lu
                q.append(v)
    return level


def _augment(head: list[list[int]], to: list[int], cap: list[float], level: list[int], it: list[int],
             source: int, sink: int, tol: float) -> float | None:
    """Push flow along one level-increasing source-sink path (iterative DFS from
    the arc pointers ``it``, retreating from dead ends); the amount pushed, or
    None when the blocking flow is complete."""
    path: list[int] = []  # arc ids from the source
    u = source
    while u != sink:
        adj = head[u]
        i = it[u]
        lu = level[u] + 1
        while i < len(adj):
            e = adj[i]
            if cap[e] > tol and level[to[e]] == lu:
                break
            i += 1
        it[u] = i
        if i == len(adj):  # dead end: retreat
            if u == source:
                return None
            level[u] = -1
            e = path.pop()
            u = to[e ^ 1]
            it[u] += 1
            continue
        path.append(adj[i])
        u = to[adj[i]]
    pushed = min(cap[e] for e in path)
    for e in path:
        cap[e] -= pushed
        cap[e ^ 1] += pushed
    return pushed


#: graphs with more nodes than this go to scipy's C implementation of Dinic
SCIPY_MIN_NODES = 48


def _scipy_cut(n, rows, cols, caps, is_inf, source: int, sink: int) -> set[int]:
    """The source side of a minimum cut by ``scipy.sparse.csgraph.maximum_flow`` (Dinic, in C).

    scipy needs int32 capacities: they are scaled so that the finite ones sum
    to at most 2^28 units (``math.inf`` becomes 2^29 + 1, more than any finite
    cut), so each arc is rounded by at most ``total * 2^-29`` and a cut's
    cost by that times its arc count (relative error ~1e-7 at worst).
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    finite_total = float(caps[~is_inf].sum())
    unit = max(finite_total, 1e-300) / float(1 << 28)
    big = (1 << 29) + 1
    ints = np.where(is_inf, big, np.rint(np.where(is_inf, 0.0, caps) / unit)).astype(np.int32)
    cap = sp.csr_matrix((ints, (rows, cols)), shape=(n, n))
    cap.sum_duplicates()
    res = maximum_flow(cap, source, sink, method="dinic")
    residual = (cap - res.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    return set(reach.tolist())


def _check(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    index = {v: i for i, v in enumerate(ids)}
    if len(index) != len(ids):
        raise InvalidGraphError("partition graph: expected unique vertex ids, got duplicates")
    for u, w in edges:
        if u not in index or w not in index:
            raise InvalidGraphError(f"edge ({u!r}, {w!r}): expected both ends among the vertices")
    return index


def additive_cost(
    client: set[str] | frozenset[str],
    ids: Sequence[str],
    edges: Sequence[tuple[str, str]],
    f: Mapping[str, float],
    s: Mapping[str, float],
    g: Mapping[str, float],
    output_id: str,
    reply: float,
) -> float:
    """The no-overlap latency ``cost(S)`` of the module docstring (the min-cut objective)."""
    cut = {u for u, w in edges if u in client and w not in client}
    total = sum(f[v] for v in client) + sum(g[v] for v in cut)
    total += sum(s[v] for v in ids if v not in client)
    if output_id not in client:
        total += reply
    return total


class MinCutProblem:
    """The s-t graph of the module docstring, built once; :meth:`solve` cuts it with
    the upload costs scaled by ``g_scale`` (``joint`` tries several scales)."""

    def __init__(
        self,
        ids: Sequence[str],
        edges: Sequence[tuple[str, str]],
        f: Mapping[str, float],
        s: Mapping[str, float],
        g: Mapping[str, float],
        input_id: str,
        output_id: str,
        reply: float,
    ) -> None:
        index = _check(ids, edges)
        n = len(ids)
        succs: dict[str, list[str]] = {v: [] for v in ids}
        for u, w in edges:
            succs[u].append(w)
        src, snk = n, n + 1
        aux: dict[str, int] = {}  # only outputs with several consumers need the auxiliary node
        for v in ids:
            if len(succs[v]) > 1:
                aux[v] = n + 2 + len(aux)
        arcs: list[tuple[int, int, float]] = []
        g_arc: list[bool] = []

        def add(u: int, w: int, c: float, is_g: bool = False) -> None:
            arcs.append((u, w, c))
            g_arc.append(is_g)

        for v in ids:
            i = index[v]
            # v pays f(v) on the client or s(v) on the server: subtracting min(f, s) from both
            # terminal arcs shifts every cut by the same constant, and leaves most vertices
            # with one terminal arc only (far fewer augmenting paths)
            client_cost = f[v]
            server = s[v] + (reply if v == output_id else 0.0)
            common = min(client_cost, server)
            if client_cost - common > 0:
                add(i, snk, client_cost - common)
            if server - common > 0:
                add(src, i, server - common)
            if v in aux:
                add(i, aux[v], g[v], True)
                for w in succs[v]:
                    add(aux[v], index[w], math.inf)
                    add(index[w], i, math.inf)
            elif succs[v]:
                (w,) = succs[v]
                add(i, index[w], g[v], True)
                add(index[w], i, math.inf)
        add(src, index[input_id], math.inf)
        self.ids, self.edges = tuple(ids), tuple(edges)
        self.f, self.s, self.g = f, s, g
        self.output_id, self.reply = output_id, reply
        self.index = index
        self.n_nodes = n + 2 + len(aux)
        self.src, self.snk = src, snk
        self.arcs = arcs
        self.g_arc = g_arc
        self._np = None

    def solve(self, g_scale: float = 1.0) -> tuple[frozenset[str], float]:
        """The client set minimizing the additive cost with uploads ``g_scale * g``, and that cost."""
        if self.n_nodes > SCIPY_MIN_NODES:
            side = self._solve_scipy(g_scale)
        else:
            arcs = self.arcs if g_scale == 1.0 else [
                (u, w, c * g_scale if is_g else c) for (u, w, c), is_g in zip(self.arcs, self.g_arc)]
            _, side = max_flow_min_cut(self.n_nodes, arcs, self.src, self.snk)
        client = frozenset(v for v in self.ids if self.index[v] in side)
        g = self.g if g_scale == 1.0 else {v: g_scale * x for v, x in self.g.items()}
        return client, additive_cost(client, self.ids, self.edges, self.f, self.s, g, self.output_id, self.reply)

    def _solve_scipy(self, g_scale: float) -> set[int]:
        import numpy as np

        if self._np is None:
            rows = np.array([a[0] for a in self.arcs], dtype=np.int32)
            cols = np.array([a[1] for a in self.arcs], dtype=np.int32)
            caps = np.array([a[2] for a in self.arcs], dtype=np.float64)
            self._np = (rows, cols, caps, np.array(self.g_arc, dtype=bool), np.isinf(caps))
        rows, cols, caps, is_g, is_inf = self._np
        caps = caps.copy()
        caps[is_g] *= g_scale
        return _scipy_cut(self.n_nodes, rows, cols, caps, is_inf, self.src, self.snk)


def min_cut_partition(
    ids: Sequence[str],
    edges: Sequence[tuple[str, str]],
    f: Mapping[str, float],
    s: Mapping[str, float],
    g: Mapping[str, float],
    input_id: str,
    output_id: str,
    reply: float,
) -> tuple[frozenset[str], float]:
    """The client set minimizing :func:`additive_cost`, and that cost.

    ``g[v]`` is the upload time of ``v``'s output if it were a cut tensor.
    """
    return MinCutProblem(ids, edges, f, s, g, input_id, output_id, reply).solve()


def best_prefix(
    chain: Sequence[str],
    f: Mapping[str, float],
    s: Mapping[str, float],
    g: Mapping[str, float],
    reply: float,
) -> tuple[frozenset[str], float]:
    """Neurosurgeon: try every prefix ``chain[:k]`` (k >= 1) of a chain; least additive cost.

    Ties go to the shortest prefix (the same choice as the min-cut's smallest source side).
    """
    n = len(chain)
    if n == 0:
        raise InvalidGraphError("best_prefix: expected a non-empty chain, got none")
    suffix_s = [0.0] * (n + 1)
    for i in range(n - 1, -1, -1):
        suffix_s[i] = suffix_s[i + 1] + s[chain[i]]
    best_k, best = 0, math.inf
    prefix_f = 0.0
    for k in range(1, n + 1):
        prefix_f += f[chain[k - 1]]
        cost = prefix_f + (suffix_s[k] + g[chain[k - 1]] + reply if k < n else 0.0)
        if cost < best - 1e-12 * max(1.0, abs(best) if math.isfinite(best) else 1.0):
            best_k, best = k, cost
    return frozenset(chain[:best_k]), best
