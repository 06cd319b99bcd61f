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

No torch, no numpy: max-flow is Dinic's algorithm in pure Python. The
network is built once per problem; :meth:`MinCutProblem.solve` cuts it with
the upload arcs scaled by ``g_scale`` (``joint`` asks for four scales after
``po``'s 1.0) and starts each solve from the flows it already found: the
capacities are affine in the scale (``a + scale * b``, ``b >= 0``), so the
interpolation of two maximum flows found at scales below and above (or one
found below, or the scaled-down flow of one found above) is a feasible flow
at the new scale, and Dinic only augments the difference. The cut read off
the final residual graph does not depend on the flow it started from (it is
the smallest minimum cut's source side), so warm starts change the time,
never the answer. Measured (``scripts/bench_plan_cold.py``): RandWire's 595
nodes, client 10x slower, 4G: 16 ms per cold cut before (about 0.3 s more
for importing scipy, whose C Dinic it used above 48 nodes), 4-6 ms cold and
1-2 ms warm-started now.
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
    net = _Network(n, arcs, [0.0] * len(arcs))
    flow, side, _ = net.max_flow(0.0, None, source, sink)
    return flow, side


class _Network:
    """A flow network whose arc ``k`` has capacity ``a[k] + scale * b[k]`` (``b >= 0``;
    ``a[k] = inf`` for an infinite arc), in residual form: arc ``k`` is residual
    arc ``2k`` (from its tail to ``to[2k]``), its reverse is ``2k + 1``; ``head[u]``
    lists the residual arcs leaving ``u``."""

    def __init__(self, n: int, arcs: Sequence[tuple[int, int, float]], scales: Sequence[float]) -> None:
        head: list[list[int]] = [[] for _ in range(n)]
        to: list[int] = []
        a: list[float] = []
        b: list[float] = []
        for (u, v, c), k in zip(arcs, scales):
            if c < 0 or c != c or k < 0 or k != k:
                raise InvalidGraphError(f"arc capacity: expected a value >= 0, got {c!r} (scale {k!r})")
            head[u].append(len(to))
            to.append(v)
            head[v].append(len(to))
            to.append(u)
            a.append(float(c))
            b.append(float(k) if c != math.inf else 0.0)
        self.n, self.head, self.to, self.a, self.b = n, head, to, a, b
        self.infinite = [c == math.inf for c in a]
        self.finite_a = math.fsum(c for c, inf in zip(a, self.infinite) if not inf)
        self.finite_b = math.fsum(b)

    def capacities(self, scale: float) -> tuple[list[float], float, float]:
        """Arc capacities at ``scale`` (infinite ones: more than all finite ones together),
        the finite total and the saturation tolerance."""
        total = self.finite_a + scale * self.finite_b
        big = 4.0 * total + 1.0
        caps = [big if inf else c + scale * k for c, k, inf in zip(self.a, self.b, self.infinite)]
        return caps, total, _EPS * max(1.0, total)

    def max_flow(self, scale: float, start: list[float] | None, source: int, sink: int
                 ) -> tuple[float, set[int], list[float]]:
        """A maximum flow at ``scale``, augmented from the feasible flow ``start`` (per arc;
        None: zero): ``(its value, the source side of the smallest minimum cut, the flow)``."""
        caps, _, tol = self.capacities(scale)
        res = [0.0] * (2 * len(caps))
        if start is None:
            res[0::2] = caps
        else:
            for k, (c, x) in enumerate(zip(caps, start)):
                res[2 * k] = c - x if c > x else 0.0
                res[2 * k + 1] = x
        head, to, n = self.head, self.to, self.n
        while True:
            level = _levels(n, head, to, res, source, sink, tol)
            if level[sink] < 0:
                break
            _blocking_flow(head, to, res, level, source, sink, tol)
        flow = [c - r if c > r else 0.0 for c, r in zip(caps, res[0::2])]
        # out of the source minus into it (an arc into the source is a reverse arc of head[source])
        value = math.fsum(flow[e >> 1] if e % 2 == 0 else -flow[e >> 1] for e in head[source])
        # the last BFS ran to exhaustion: every vertex it reached is on the source side
        return value, {v for v in range(n) if level[v] >= 0}, flow


def _levels(n: int, head: list[list[int]], to: list[int], res: list[float], source: int, sink: int,
            tol: float) -> list[int]:
    """BFS distance from ``source`` along unsaturated arcs (-1: not reached); vertices
    farther than the sink are left unlabelled (no shortest augmenting path uses them)."""
    level = [-1] * n
    level[source] = 0
    q = deque([source])
    pop, push = q.popleft, q.append
    stop = n
    while q:
        u = pop()
        lu = level[u] + 1
        if lu > stop:
            break
        for e in head[u]:
            v = to[e]
            if level[v] < 0 and res[e] > tol:
                level[v] = lu
                if v == sink:
                    stop = lu
                push(v)
    return level


def _blocking_flow(head: list[list[int]], to: list[int], res: list[float], level: list[int], source: int,
                   sink: int, tol: float) -> None:
    """Saturate every shortest source-sink path of the level graph (iterative DFS
    over the arc pointers; after each augmentation it backs up only to the tail
    of the first saturated arc; dead ends are taken out of the level graph)."""
    it = [0] * len(head)
    path: list[int] = []  # residual arcs from the source
    u = source
    depth = level[sink]
    while True:
        if u == sink:
            pushed = min(res[e] for e in path)
            cut_at = -1
            for k, e in enumerate(path):
                r = res[e] - pushed
                res[e] = r
                res[e ^ 1] += pushed
                if cut_at < 0 and r <= tol:
                    cut_at = k
            e = path[cut_at]
            del path[cut_at:]
            u = to[e ^ 1]
            continue
        adj = head[u]
        i = it[u]
        lu = level[u] + 1
        m = len(adj) if lu <= depth else 0
        while i < m:
            e = adj[i]
            if res[e] > tol and level[to[e]] == lu:
                break
            i += 1
        else:  # dead end: retreat
            it[u] = i
            if u == source:
                return
            level[u] = -1
            e = path.pop()
            u = to[e ^ 1]
            it[u] += 1
            continue
        it[u] = i
        path.append(e)
        u = to[e]


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
        # upload arcs scale with g_scale: capacity 0 + g_scale * g(u)
        self._net = _Network(self.n_nodes, [(u, w, 0.0 if is_g else c) for (u, w, c), is_g in zip(arcs, g_arc)],
                             [c if is_g else 0.0 for (_, _, c), is_g in zip(arcs, g_arc)])
        self._flows: dict[float, list[float]] = {}  # g_scale -> a maximum flow found there

    def solve(self, g_scale: float = 1.0) -> tuple[frozenset[str], float]:
        """The client set minimizing the additive cost with uploads ``g_scale * g``, and that cost."""
        if not (g_scale >= 0 and math.isfinite(g_scale)):
            raise InvalidGraphError(f"g_scale: expected a finite value >= 0, got {g_scale!r}")
        _, side, flow = self._net.max_flow(g_scale, self._warm_start(g_scale), self.src, self.snk)
        self._flows[g_scale] = flow
        client = frozenset(v for v in self.ids if self.index[v] in side)
        g = self.g if g_scale == 1.0 else {v: g_scale * x for v, x in self.g.items()}
        return client, additive_cost(client, self.ids, self.edges, self.f, self.s, g, self.output_id, self.reply)

    def _warm_start(self, scale: float) -> list[float] | None:
        """A feasible flow at ``scale`` from the maximum flows already found: the interpolation
        of the nearest ones below and above it, the nearest one below (capacities only grow
        with the scale), or the nearest one above scaled down (from the zero flow at 0)."""
        if not self._flows:
            return None
        if scale in self._flows:
            return self._flows[scale]
        below = max((k for k in self._flows if k < scale), default=None)
        above = min((k for k in self._flows if k > scale), default=None)
        if above is None:
            return self._flows[below]
        lo, f_lo = (below, self._flows[below]) if below is not None else (0.0, None)
        w = (scale - lo) / (above - lo)
        f_hi = self._flows[above]
        if f_lo is None:
            return [w * x for x in f_hi]
        return [(1.0 - w) * x + w * y for x, y in zip(f_lo, f_hi)]


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
