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
- each vertex ``u`` with successors gets an auxiliary node ``a_u``:
  ``u -> a_u`` with capacity ``g(u)`` and ``a_u -> w`` infinite for every
  successor ``w``, so ``u``'s output is charged once however many server
  vertices consume it;
- ``w -> u`` infinite for every edge ``(u, w)``: no client vertex may follow a
  server vertex (the client set stays closed under predecessors);
- ``SRC -> input`` infinite: the input is on the client.

For chains, :func:`best_prefix` is the exhaustive scan over prefixes of
Neurosurgeon (Kang et al. ASPLOS 2017); it must agree with the min-cut.

Pure Python, no torch: max-flow is Dinic's algorithm on float capacities.
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
    """
    head: list[list[int]] = [[] for _ in range(n)]
    to: list[int] = []
    cap: list[float] = []
    finite_total = sum(c for _, _, c in arcs if math.isfinite(c))
    big = 4.0 * finite_total + 1.0
    for u, v, c in arcs:
        if c < 0 or c != c:
            raise InvalidGraphError(f"arc {u}->{v}: expected a capacity >= 0, got {c!r}")
        c = big if math.isinf(c) else float(c)
        head[u].append(len(to))
        to.append(v)
        cap.append(c)
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
            for e in head[u]:
                if cap[e] > tol and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    q.append(to[e])
        if level[sink] < 0:
            break
        it = [0] * n

        def push(u: int, pushed: float) -> float:
            if u == sink:
                return pushed
            adj = head[u]
            while it[u] < len(adj):
                e = adj[it[u]]
                v = to[e]
                if cap[e] > tol and level[v] == level[u] + 1:
                    got = push(v, min(pushed, cap[e]))
                    if got > 0:
                        cap[e] -= got
                        cap[e ^ 1] += got
                        return got
                it[u] += 1
            return 0.0

        while True:
            got = push(source, math.inf)
            if got <= 0:
                break
            flow += got
    seen = {source}
    q = deque([source])
    while q:
        u = q.popleft()
        for e in head[u]:
            if cap[e] > tol and to[e] not in seen:
                seen.add(to[e])
                q.append(to[e])
    return flow, seen


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
    aux = {}
    for v in ids:
        if succs[v]:
            aux[v] = n + 2 + len(aux)
    arcs: list[tuple[int, int, float]] = []
    for v in ids:
        i = index[v]
        if f[v] > 0:
            arcs.append((i, snk, f[v]))
        server = s[v] + (reply if v == output_id else 0.0)
        if server > 0:
            arcs.append((src, i, server))
        if v in aux:
            arcs.append((i, aux[v], g[v]))
            for w in succs[v]:
                arcs.append((aux[v], index[w], math.inf))
                arcs.append((index[w], i, math.inf))
    arcs.append((src, index[input_id], math.inf))
    _, side = max_flow_min_cut(n + 2 + len(aux), arcs, src, snk)
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
