"""The end-to-end latency model of a plan (pure Python, no torch).

Given the model DAG (:class:`PlanGraph`), a client set ``S`` (closed under
predecessors, holding the input), a client order ``σ`` of ``S``, the client's
per-vertex compute ``f``, the server's ``s`` and the link, the predicted
latency is the sum of three terms:

1. **client makespan** — Proposition 1 over ``σ`` with ``g(v) = c + w(v)/b``
   on the cut vertices that are uploaded (0 elsewhere), computed with
   :func:`opss.sched.makespan`. Upload ``i`` completes at ``t_i``.
   Without a pipeline (the ``po`` baseline) all client layers run first and
   the uploads follow one after another: cut ``i`` arrives at
   ``sum f + g(p_1) + ... + g(p_i)``.
2. **server** — the remaining vertices are list-scheduled on one server
   device that runs one vertex at a time: a vertex becomes ready when each
   input has arrived (a cut tensor at its upload completion time, a server
   vertex's output when it finishes); the server never idles while a vertex
   is ready and, among ready vertices, runs the one ready earliest (ties in
   topological order). This is what :class:`opss.split.ServerSession` does
   when it is fed tensors as they arrive. The reported ``server`` term is the
   time from the end of the client pipeline until the server finishes
   (``server_end - client_makespan``); ``server_compute`` is the sum of
   ``s`` over the server vertices.
3. **reply** — the model output goes back over the downlink:
   ``c + output bytes / b``. Without a measured downlink the uplink model
   is used (a symmetric link; the output of a classifier is a few KB, so
   this term is small either way). Local-only has no reply.

``total = client_makespan + server + reply``. ``hidden_upload = upload -
(client_makespan - client_compute)``: the upload time the pipeline hid
behind computation (0 without a pipeline).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from opss.errors import InvalidGraphError, PartitionError, ProfileError

__all__ = ["PlanGraph", "Prediction", "arrival_times", "cut_of", "predict", "server_finish"]


class PlanGraph:
    """The model DAG as the planner sees it: ids, edges, output bytes, input and output.

    Immutable. ``ids`` are kept in a deterministic topological order
    (Kahn's algorithm, ties by the given order). Build it from a
    :class:`opss.graph.LayerGraph` with :meth:`from_layer_graph` (duck-typed:
    ``.nodes`` with ``.id``/``.bytes``, ``.edges``, ``.input_id``,
    ``.output_id``) or from plain data.
    """

    __slots__ = ("_ids", "_index", "_edges", "_bytes", "_preds", "_succs", "input_id",
                 "output_id", "model", "granularity", "_members", "__weakref__")

    def __init__(
        self,
        ids: Iterable[str],
        edges: Iterable[tuple[str, str]],
        nbytes: Mapping[str, int],
        input_id: str,
        output_id: str,
        *,
        model: str = "",
        granularity: str = "layer",
        members: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        given = list(ids)
        pos = {v: i for i, v in enumerate(given)}
        if len(pos) != len(given):
            dup = next(v for v in given if given.count(v) > 1)
            raise InvalidGraphError(f"duplicate vertex id {dup!r}: expected unique ids")
        preds: dict[str, list[str]] = {v: [] for v in given}
        succs: dict[str, list[str]] = {v: [] for v in given}
        edge_list: list[tuple[str, str]] = []
        for u, w in edges:
            for end in (u, w):
                if end not in pos:
                    raise InvalidGraphError(f"edge ({u!r}, {w!r}) names unknown vertex {end!r}")
            if w in succs[u]:
                continue
            succs[u].append(w)
            preds[w].append(u)
            edge_list.append((u, w))
        for end, what in ((input_id, "input"), (output_id, "output")):
            if end not in pos:
                raise InvalidGraphError(f"{what} vertex {end!r}: expected one of the graph's vertices")
        if preds[input_id]:
            raise InvalidGraphError(f"input vertex {input_id!r}: expected no predecessors, got {preds[input_id]}")
        sizes: dict[str, int] = {}
        for v in given:
            if v not in nbytes:
                raise InvalidGraphError(f"vertex {v!r}: expected its output bytes, got none")
            w = nbytes[v]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise InvalidGraphError(f"vertex {v!r}: expected output bytes >= 0, got {w!r}")
            sizes[v] = int(w)
        indeg = {v: len(preds[v]) for v in given}
        heap = [pos[v] for v in given if indeg[v] == 0]
        heapq.heapify(heap)
        topo: list[str] = []
        while heap:
            v = given[heapq.heappop(heap)]
            topo.append(v)
            for w in succs[v]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    heapq.heappush(heap, pos[w])
        if len(topo) != len(given):
            stuck = next(v for v in given if indeg[v] > 0)
            raise InvalidGraphError(f"graph has a cycle through {stuck!r}: expected a DAG")
        self._ids = tuple(topo)
        self._index = MappingProxyType({v: i for i, v in enumerate(topo)})
        self._edges = tuple(edge_list)
        self._bytes = MappingProxyType(sizes)
        self._preds = MappingProxyType({v: tuple(p) for v, p in preds.items()})
        self._succs = MappingProxyType({v: tuple(s) for v, s in succs.items()})
        self.input_id = input_id
        self.output_id = output_id
        self.model = model
        self.granularity = granularity
        mem = members or {}
        self._members = MappingProxyType({v: tuple(mem.get(v, ())) for v in topo})

    @classmethod
    def from_layer_graph(cls, graph: Any) -> PlanGraph:
        """From an :class:`opss.graph.LayerGraph` (read through its public attributes only)."""
        return cls(
            [n.id for n in graph.nodes],
            [tuple(e) for e in graph.edges],
            {n.id: n.bytes for n in graph.nodes},
            graph.input_id,
            graph.output_id,
            model=str(getattr(graph, "model", "") or ""),
            granularity=str(getattr(graph, "granularity", "layer")),
            members={n.id: tuple(getattr(n, "members", ())) for n in graph.nodes},
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanGraph:
        """From the ``opss graph --json`` format plus ``input_id``/``output_id``
        (defaulting to the unique source and the unique sink)."""
        try:
            nodes = data["nodes"]
            ids = [n["id"] for n in nodes]
            nbytes = {n["id"]: n["bytes"] for n in nodes}
            members = {n["id"]: tuple(n.get("members", ())) for n in nodes}
            edges = [tuple(e) for e in data["edges"]]
        except (KeyError, TypeError) as exc:
            raise InvalidGraphError(f"graph JSON: expected nodes [{{id, bytes}}] and edges, got error {exc!r}") from None
        has_pred = {w for _, w in edges}
        has_succ = {u for u, _ in edges}
        input_id = data.get("input_id") or data.get("input") or _only([v for v in ids if v not in has_pred], "source")
        output_id = data.get("output_id") or data.get("output") or _only([v for v in ids if v not in has_succ], "sink")
        return cls(ids, edges, nbytes, input_id, output_id,
                   model=data.get("model", ""), granularity=data.get("granularity", "layer"), members=members)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "granularity": self.granularity,
            "input_id": self.input_id,
            "output_id": self.output_id,
            "nodes": [{"id": v, "bytes": self._bytes[v], "members": list(self._members[v])} for v in self._ids],
            "edges": [list(e) for e in self._edges],
        }

    @property
    def ids(self) -> tuple[str, ...]:
        """Vertex ids in topological order."""
        return self._ids

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        return self._edges

    @property
    def nbytes(self) -> Mapping[str, int]:
        return self._bytes

    @property
    def members(self) -> Mapping[str, tuple[str, ...]]:
        """The fx node names inside each vertex (empty when unknown), for costing blocks."""
        return self._members

    def index(self, v: str) -> int:
        return self._index[v]

    def preds(self, v: str) -> tuple[str, ...]:
        return self._preds[v]

    def succs(self, v: str) -> tuple[str, ...]:
        return self._succs[v]

    def is_chain(self) -> bool:
        return all(len(self._preds[v]) <= 1 and len(self._succs[v]) <= 1 for v in self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, v: object) -> bool:
        return v in self._index

    def __repr__(self) -> str:
        return (f"PlanGraph(model={self.model!r}, {len(self._ids)} vertices, {len(self._edges)} edges, "
                f"input={self.input_id!r}, output={self.output_id!r})")

    def topo_sorted(self, vertices: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(vertices, key=self._index.__getitem__))

    def check_client_set(self, client: Iterable[str]) -> frozenset[str]:
        """Validate a client set: known ids, holds the input, closed under predecessors."""
        s = frozenset(client)
        for v in s:
            if v not in self._index:
                raise PartitionError(f"client set names unknown vertex {v!r}: expected one of the graph's ids")
        if self.input_id not in s:
            raise PartitionError(f"client set: expected the input vertex {self.input_id!r} in it")
        for v in s:
            for p in self._preds[v]:
                if p not in s:
                    raise PartitionError(
                        f"client set is not closed under predecessors: {v!r} needs {p!r}, expected {p!r} in the set"
                    )
        return s


def _only(items: list[str], what: str) -> str:
    if len(items) != 1:
        raise InvalidGraphError(f"graph JSON: expected exactly one {what} vertex, got {items}")
    return items[0]


def cut_of(graph: PlanGraph, client: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(cut, uploads)`` in topological order, as :func:`opss.split.cut_points` defines the cut.

    ``cut``: client vertices whose output a server vertex needs, plus the
    output vertex when it is on the client. ``uploads``: the cut vertices
    whose output crosses the link (the output vertex on the client does not).
    """
    succs = graph._succs
    uploads = [v for v in graph._ids if v in client and any(w not in client for w in succs[v])]
    cut = set(uploads)
    if graph.output_id in client:
        cut.add(graph.output_id)
    return graph.topo_sorted(cut), tuple(uploads)


@dataclass(frozen=True)
class Prediction:
    """The predicted latency of a plan and its terms, in seconds (see the module docstring)."""

    client_compute: float
    client_makespan: float
    upload: float
    hidden_upload: float
    server: float
    server_compute: float
    reply: float
    total: float

    def to_json(self) -> dict[str, float]:
        return {
            "client_compute": self.client_compute,
            "client_makespan": self.client_makespan,
            "upload": self.upload,
            "hidden_upload": self.hidden_upload,
            "server": self.server,
            "server_compute": self.server_compute,
            "reply": self.reply,
            "total": self.total,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})

    def __repr__(self) -> str:
        return ("Prediction(" + ", ".join(f"{k}={getattr(self, k) * 1e3:.3f}ms"
                                          for k in self.__dataclass_fields__) + ")")


def arrival_times(
    order: Sequence[str], f: Mapping[str, float], g: Mapping[str, float], *, pipelined: bool = True
) -> tuple[dict[str, float], float]:
    """Upload completion time of every vertex with ``g > 0`` in ``order``, and the client makespan.

    Pipelined: Proposition 1. Not pipelined: all compute first, then the
    uploads in the order they appear in ``order``.
    """
    out: dict[str, float] = {}
    if pipelined:
        compute = 0.0
        t = 0.0
        for v in order:
            compute += f[v]
            gv = g.get(v, 0.0)
            t = (compute if compute > t else t) + gv
            if gv > 0:
                out[v] = t
        return out, t
    t = sum(f[v] for v in order)
    for v in order:
        gv = g.get(v, 0.0)
        if gv > 0:
            t += gv
            out[v] = t
    return out, t


def server_finish(
    graph: PlanGraph, client: frozenset[str], ready_inputs: Mapping[str, float], s: Mapping[str, float]
) -> float:
    """Finish time of the server's list schedule (module docstring, term 2).

    ``ready_inputs[v]`` is the arrival time of client vertex ``v``'s output.
    Returns 0 when every vertex is on the client.
    """
    ids = graph._ids
    preds, succs, index = graph._preds, graph._succs, graph._index
    waiting: dict[str, int] = {}
    ready_at: dict[str, float] = {}
    heap: list[tuple[float, int, str]] = []
    for v in ids:
        if v in client:
            continue
        n_server_preds = 0
        r = 0.0
        for p in preds[v]:
            if p in client:
                a = ready_inputs[p]
                if a > r:
                    r = a
            else:
                n_server_preds += 1
        ready_at[v] = r
        waiting[v] = n_server_preds
        if n_server_preds == 0:
            heap.append((r, index[v], v))
    heapq.heapify(heap)
    clock = 0.0
    done = 0
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        r, _, v = pop(heap)
        clock = (clock if clock > r else r) + s[v]
        done += 1
        for w in succs[v]:
            if w in client:
                continue
            if clock > ready_at[w]:
                ready_at[w] = clock
            k = waiting[w] - 1
            waiting[w] = k
            if k == 0:
                push(heap, (ready_at[w], index[w], w))
    if done != len(waiting):
        raise PartitionError("server part: some server vertices never become ready; expected a closed client set")
    return clock


def predict(
    graph: PlanGraph,
    client: Iterable[str],
    order: Sequence[str],
    f: Mapping[str, float],
    s: Mapping[str, float],
    link: Any,
    *,
    pipelined: bool = True,
    downlink: Any = None,
) -> Prediction:
    """The predicted latency of running ``order`` on the client and the rest on the server.

    ``f``/``s`` map vertex ids to seconds (the client slowdown already
    applied to ``f``); ``link``/``downlink`` are :class:`opss.link.LinkModel`
    (anything with ``g(nbytes)``). Validates the client set and the order.
    """
    from opss.sched import SchedGraph, makespan

    cset = graph.check_client_set(client)
    _, uploads = cut_of(graph, cset)
    _check_costs(graph, f, "client")
    _check_costs(graph, s, "server")
    g = {v: link.g(graph.nbytes[v]) for v in uploads}
    sg = SchedGraph(
        [(v, f[v], g.get(v, 0.0)) for v in graph.topo_sorted(cset)],
        [(u, w) for u, w in graph.edges if u in cset and w in cset],
    )
    arrivals, client_end = arrival_times(order, f, g, pipelined=pipelined)
    if pipelined:
        client_end = makespan(sg, order)  # the one implementation of Proposition 1 (also validates)
    else:
        makespan(sg, order)  # validates the order
    return _assemble(graph, cset, uploads, arrivals, client_end, f, s, g, link if downlink is None else downlink)


def _assemble(graph, cset, uploads, arrivals, client_end, f, s, g, downlink) -> Prediction:
    compute = sum(f[v] for v in cset)
    upload = sum(g[v] for v in uploads)
    if len(cset) == len(graph):
        server_end, server_compute, reply = client_end, 0.0, 0.0
    else:
        server_end = max(server_finish(graph, cset, arrivals, s), client_end)
        server_compute = sum(s[v] for v in graph.ids if v not in cset)
        reply = downlink.g(graph.nbytes[graph.output_id]) if graph.output_id not in cset else 0.0
    hidden = upload - (client_end - compute)
    if abs(hidden) < 1e-12:
        hidden = 0.0
    return Prediction(
        client_compute=compute,
        client_makespan=client_end,
        upload=upload,
        hidden_upload=hidden,
        server=server_end - client_end,
        server_compute=server_compute,
        reply=reply,
        total=server_end + reply,
    )


def _check_costs(graph: PlanGraph, costs: Mapping[str, float], what: str) -> None:
    for v in graph.ids:
        x = costs.get(v)
        if x is None:
            raise ProfileError(f"{what} profile has no time for vertex {v!r}: expected one per graph vertex")
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ProfileError(f"{what} profile time of {v!r}: expected seconds >= 0, got {x!r}")
