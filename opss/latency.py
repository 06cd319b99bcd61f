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

from opss.dag import Dag
from opss.errors import InvalidGraphError, PartitionError, ProfileError
from opss.sched._makespan import pipeline_times, validate_order

__all__ = ["PlanGraph", "Prediction", "arrival_times", "assemble_prediction", "check_costs", "cut_of", "predict",
           "server_finish"]


class PlanGraph:
    """The model DAG as the planner sees it: ids, edges, output bytes, input and output.

    Immutable. ``ids`` are kept in a deterministic topological order
    (Kahn's algorithm, ties by the given order); the structure is an
    :class:`opss.dag.Dag` (:attr:`dag`), this class adds the bytes and the
    input and output vertices. Build it from a
    :class:`opss.graph.LayerGraph` with :meth:`from_layer_graph` (duck-typed:
    ``.nodes`` with ``.id``/``.bytes``, ``.edges``, ``.input_id``,
    ``.output_id``) or from plain data.
    """

    __slots__ = ("_dag", "_bytes", "input_id", "output_id", "model", "granularity", "_members", "__weakref__")

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
        given = Dag(ids, edges)
        for end, what in ((input_id, "input"), (output_id, "output")):
            if end not in given:
                raise InvalidGraphError(f"{what} vertex {end!r}: expected one of the graph's vertices")
        if given.preds(input_id):
            raise InvalidGraphError(
                f"input vertex {input_id!r}: expected no predecessors, got {list(given.preds(input_id))}")
        sizes: dict[str, int] = {}
        for v in given.ids:
            if v not in nbytes:
                raise InvalidGraphError(f"vertex {v!r}: expected its output bytes, got none")
            w = nbytes[v]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise InvalidGraphError(f"vertex {v!r}: expected output bytes >= 0, got {w!r}")
            sizes[v] = int(w)
        # ids in topological order: a Dag whose insertion order is already topological keeps it
        self._dag = given if given.ids == given.topo else Dag(given.topo, given.edges)
        self._bytes = MappingProxyType(sizes)
        self.input_id = input_id
        self.output_id = output_id
        self.model = model
        self.granularity = granularity
        mem = members or {}
        self._members = MappingProxyType({v: tuple(mem.get(v, ())) for v in self._dag.ids})

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
            "nodes": [{"id": v, "bytes": self._bytes[v], "members": list(self._members[v])} for v in self.ids],
            "edges": [list(e) for e in self.edges],
        }

    @property
    def dag(self) -> Dag:
        """The structure: ids (topological), edges, closures, cuts."""
        return self._dag

    @property
    def ids(self) -> tuple[str, ...]:
        """Vertex ids in topological order."""
        return self._dag.ids

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        return self._dag.edges

    @property
    def nbytes(self) -> Mapping[str, int]:
        return self._bytes

    @property
    def members(self) -> Mapping[str, tuple[str, ...]]:
        """The fx node names inside each vertex (empty when unknown), for costing blocks."""
        return self._members

    def index(self, v: str) -> int:
        """Topological position of ``v``."""
        return self._dag.position(v)

    def preds(self, v: str) -> tuple[str, ...]:
        return self._dag.preds(v)

    def succs(self, v: str) -> tuple[str, ...]:
        return self._dag.succs(v)

    def is_chain(self) -> bool:
        return self._dag.is_chain()

    def __len__(self) -> int:
        return len(self._dag)

    def __contains__(self, v: object) -> bool:
        return v in self._dag

    def __repr__(self) -> str:
        return (f"PlanGraph(model={self.model!r}, {len(self)} vertices, {len(self.edges)} edges, "
                f"input={self.input_id!r}, output={self.output_id!r})")

    def topo_sorted(self, vertices: Iterable[str]) -> tuple[str, ...]:
        return self._dag.topo_sorted(vertices)

    def check_client_set(self, client: Iterable[str]) -> frozenset[str]:
        """Validate a client set: known ids, holds the input, closed under predecessors."""
        s = frozenset(client)
        for v in s:
            if v not in self._dag:
                raise PartitionError(f"client set names unknown vertex {v!r}: expected one of the graph's ids")
        if self.input_id not in s:
            raise PartitionError(f"client set: expected the input vertex {self.input_id!r} in it")
        bad = self._dag.open_edge(s)
        if bad is not None:
            v, p = bad
            raise PartitionError(
                f"client set is not closed under predecessors: {v!r} needs {p!r}, expected {p!r} in the set"
            )
        return s


def _only(items: list[str], what: str) -> str:
    if len(items) != 1:
        raise InvalidGraphError(f"graph JSON: expected exactly one {what} vertex, got {items}")
    return items[0]


def cut_of(graph: PlanGraph | Any, client: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(cut, uploads)`` in topological order: the one definition of the cut, also behind
    :func:`opss.split.cut_points`. ``graph`` is a PlanGraph or a LayerGraph (``.dag``, ``.output_id``).

    ``uploads``: the client vertices whose output a server vertex needs
    (:meth:`opss.dag.Dag.cut`), the tensors that cross the link. ``cut``: the
    uploads plus the output vertex when it is on the client (it does not
    cross the link).
    """
    uploads = graph.dag.cut(client)
    if graph.output_id in client and graph.output_id not in uploads:
        return graph.dag.topo_sorted((*uploads, graph.output_id)), uploads
    return uploads, uploads


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
    #: seconds of the upload term spent encoding, and of the server term decoding (codecs)
    encode: float = 0.0
    decode: float = 0.0
    #: seconds of the server term spent waiting behind other calls (the server's reported
    #: recent queue wait; 0 for an idle server and for local-only plans)
    server_wait: float = 0.0

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
            "encode": self.encode,
            "decode": self.decode,
            "server_wait": self.server_wait,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__ if k in data})

    def __repr__(self) -> str:
        return ("Prediction(" + ", ".join(f"{k}={getattr(self, k) * 1e3:.3f}ms"
                                          for k in self.__dataclass_fields__) + ")")


def arrival_times(
    order: Sequence[str], f: Mapping[str, float], g: Mapping[str, float], *, pipelined: bool = True
) -> tuple[dict[str, float], float]:
    """Upload completion time of every vertex with ``g > 0`` in ``order``, and the client makespan.

    Pipelined: Proposition 1 (:func:`opss.sched.pipeline_times`). Not
    pipelined: all compute first, then the uploads in the order they appear
    in ``order`` — the same recurrence with all of ``f`` spent up front.
    """
    if pipelined:
        jobs = [(f[v], g.get(v, 0.0)) for v in order]
        times = pipeline_times(jobs)
    else:
        jobs = [(0.0, g.get(v, 0.0)) for v in order]
        times = pipeline_times(jobs, compute=sum(f[v] for v in order))
    out = {v: t for v, (_, gv), t in zip(order, jobs, times) if gv > 0}
    end = times[-1] if times else 0.0
    return out, end


def server_finish(
    graph: PlanGraph, client: frozenset[str], ready_inputs: Mapping[str, float], s: Mapping[str, float]
) -> float:
    """Finish time of the server's list schedule (module docstring, term 2).

    ``ready_inputs[v]`` is the arrival time of client vertex ``v``'s output.
    Returns 0 when every vertex is on the client. Works over topological positions
    (:meth:`opss.dag.Dag.adjacency`), ties broken by the smaller position.
    """
    dag = graph.dag
    topo = dag.topo
    preds, succs = dag.adjacency()
    on_client = [v in client for v in topo]
    n = len(topo)
    waiting = [0] * n
    ready_at = [0.0] * n
    heap: list[tuple[float, int]] = []
    n_server = 0
    for i in range(n):
        if on_client[i]:
            continue
        n_server += 1
        k = 0
        r = 0.0
        for p in preds[i]:
            if on_client[p]:
                a = ready_inputs[topo[p]]
                if a > r:
                    r = a
            else:
                k += 1
        ready_at[i] = r
        waiting[i] = k
        if k == 0:
            heap.append((r, i))
    heapq.heapify(heap)
    clock = 0.0
    done = 0
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        r, i = pop(heap)
        clock = (clock if clock > r else r) + s[topo[i]]
        done += 1
        for w in succs[i]:
            if on_client[w]:
                continue
            if clock > ready_at[w]:
                ready_at[w] = clock
            k = waiting[w] - 1
            waiting[w] = k
            if k == 0:
                push(heap, (ready_at[w], w))
    if done != n_server:
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
    cset = graph.check_client_set(client)
    uploads = graph.dag.cut(cset)
    check_costs(graph, f, "client")
    check_costs(graph, s, "server")
    validate_order(graph.dag.induced(cset), order)
    g = {v: link.g(graph.nbytes[v]) for v in uploads}
    arrivals, client_end = arrival_times(order, f, g, pipelined=pipelined)
    return assemble_prediction(graph, cset, uploads, arrivals, client_end, f, s, g,
                               link if downlink is None else downlink)


def assemble_prediction(graph: PlanGraph, cset: frozenset[str], uploads: Sequence[str],
                        arrivals: Mapping[str, float], client_end: float, f: Mapping[str, float],
                        s: Mapping[str, float], g: Mapping[str, float], downlink: Any) -> Prediction:
    """The :class:`Prediction` of a client set whose uploads arrive at ``arrivals`` and whose
    pipeline ends at ``client_end``: adds the server's list schedule and the reply."""
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


def check_costs(graph: PlanGraph, costs: Mapping[str, float], what: str) -> None:
    for v in graph.ids:
        x = costs.get(v)
        if x is None:
            raise ProfileError(f"{what} profile has no time for vertex {v!r}: expected one per graph vertex")
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ProfileError(f"{what} profile time of {v!r}: expected seconds >= 0, got {x!r}")
