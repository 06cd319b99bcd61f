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
scaled to int32) above ``SCIPY_MIN_NODES`` nodes, where pure Python took
~60 ms per cut on RandWire's 534 layers (scipy is installed with
scikit-learn; it is imported only when needed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

from opss.errors import InvalidGraphError

__all__ = ["additive_cost", "best_prefix", "max_flow_min_cut", "min_cut_partition"]

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
    flow = 0.0
    tol = _EPS * max(1.0, finite_total)
    while True:
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
        if level[sink] < 0:
            break
        it = [0] * n
        # blocking flow: iterative DFS along level-increasing arcs
        while True:
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
                        break
                    level[u] = -1
                    e = path.pop()
                    u = to[e ^ 1]
                    it[u] += 1
                    continue
                path.append(adj[i])
                u = to[adj[i]]
            if u != sink:
                break
            pushed = min(cap[e] for e in path)
            for e in path:
                cap[e] -= pushed
                cap[e ^ 1] += pushed
            flow += pushed
    seen = {source}
    q = deque([source])
    while q:
        u = q.popleft()
        for e in head[u]:
            if cap[e] > tol and to[e] not in seen:
                seen.add(to[e])
                q.append(to[e])
    return flow, seen


#: graphs with more nodes than this go to scipy's C implementation of Dinic
SCIPY_MIN_NODES = 96


def max_flow_min_cut_scipy(
    n: int, arcs: Sequence[tuple[int, int, float]], source: int, sink: int
) -> tuple[float, set[int]]:
    """The same as :func:`max_flow_min_cut` with ``scipy.sparse.csgraph.maximum_flow``.

    scipy needs int32 capacities: they are scaled so that the finite ones sum
    to at most 2^28 units (``math.inf`` becomes 2^29 + 1, more than any finite
    cut), so each arc is rounded by at most ``total * 2^-29`` and a cut's
    cost by that times its arc count (relative error ~1e-7 at worst).
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    finite_total = 0.0
    for _, _, c in arcs:
        if c < 0 or c != c:
            raise InvalidGraphError(f"arc capacity: expected a value >= 0, got {c!r}")
        if c != math.inf:
            finite_total += c
    unit = max(finite_total, 1e-300) / float(1 << 28)
    big = (1 << 29) + 1
    rows = np.fromiter((a[0] for a in arcs), dtype=np.int32, count=len(arcs))
    cols = np.fromiter((a[1] for a in arcs), dtype=np.int32, count=len(arcs))
    caps = np.fromiter((big if a[2] == math.inf else round(a[2] / unit) for a in arcs), dtype=np.int64,
                       count=len(arcs))
    cap = sp.csr_matrix((np.minimum(caps, big).astype(np.int32), (rows, cols)), shape=(n, n))
    cap.sum_duplicates()
    res = maximum_flow(cap, source, sink, method="dinic")
    residual = (cap - res.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reach = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    return float(res.flow_value) * unit, {int(i) for i in reach}


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
    index = _check(ids, edges)
    n = len(ids)
    succs: dict[str, list[str]] = {v: [] for v in ids}
    for u, w in edges:
        succs[u].append(w)
    src, snk = n, n + 1
    aux = {}  # only outputs with several consumers need the auxiliary node
    for v in ids:
        if len(succs[v]) > 1:
            aux[v] = n + 2 + len(aux)
    arcs: list[tuple[int, int, float]] = []
    for v in ids:
        i = index[v]
        # v pays f(v) on the client or s(v) on the server: subtracting min(f, s) from both
        # terminal arcs shifts every cut by the same constant, and leaves most vertices with
        # one terminal arc only (far fewer augmenting paths)
        client_cost = f[v]
        server = s[v] + (reply if v == output_id else 0.0)
        common = min(client_cost, server)
        if client_cost - common > 0:
            arcs.append((i, snk, client_cost - common))
        if server - common > 0:
            arcs.append((src, i, server - common))
        if v in aux:
            arcs.append((i, aux[v], g[v]))
            for w in succs[v]:
                arcs.append((aux[v], index[w], math.inf))
                arcs.append((index[w], i, math.inf))
        elif succs[v]:
            (w,) = succs[v]
            arcs.append((i, index[w], g[v]))
            arcs.append((index[w], i, math.inf))
    arcs.append((src, index[input_id], math.inf))
    solver = max_flow_min_cut_scipy if n + 2 + len(aux) > SCIPY_MIN_NODES else max_flow_min_cut
    _, side = solver(n + 2 + len(aux), arcs, src, snk)
    client = frozenset(v for v in ids if index[v] in side)
    return client, additive_cost(client, ids, edges, f, s, g, output_id, reply)


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
