"""The planning problem: one model graph, client and server costs, the link and the reply.

:class:`PlanningProblem` is immutable plain data plus the operations every
strategy shares (the cut of a client set, the latency model, the pipelined
orders worth trying, the scheduler, the partition-only min cut).
:class:`Plan` is a strategy's result. The strategies themselves and their
registry are in :mod:`opss.plan`; the joint cut-and-order search keeps its
own state in :mod:`opss.joint`. Pure Python, no torch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from opss.dag import bits
from opss.errors import OpssError, ProfileError
from opss.latency import PlanGraph, Prediction, arrival_times, assemble_prediction, check_costs, cut_of
from opss.link import LinkModel
from opss.mincut import MinCutProblem, best_prefix
from opss.sched import SchedGraph, johnson_order, makespan, schedule
from opss.wirecosts import WireChoice

__all__ = ["PLAN_SCHED_BUDGET", "Plan", "PlanningProblem", "costs_of"]

#: the scheduler's budget inside planning, for ``method="auto"`` when the caller sets none:
#: the exact DP gives up past this many downsets (then the beam runs) and the beam's width
#: is cut so that it examines about this many transitions. One scheduler call then stays in
#: the tens of milliseconds on a PC (``opss schedule`` keeps its larger defaults: 100 000
#: downsets, 10^6 transitions, which took 0.2-0.5 s per call on wide client sets, and a plan
#: makes up to four calls). Every zoo model's plans fit far inside it (their exact DPs visit
#: fewer than a few hundred downsets), so their orders and optimality proofs are unchanged.
PLAN_SCHED_BUDGET: Mapping[str, int] = {"max_states": 5_000, "beam_work": 50_000}


@dataclass(frozen=True)
class Plan:
    """One strategy's plan: client set, cut, client order and predicted latency.

    ``client`` and ``cut`` are in topological order; ``cut`` follows
    :func:`opss.split.cut_points` (local only: ``(output_id,)``, nothing
    uploaded); ``cut_bytes`` counts the bytes that cross the link.
    ``pipelined`` is False for ``po`` (compute all, then upload).
    """

    strategy: str
    client: tuple[str, ...]
    cut: tuple[str, ...]
    cut_bytes: int
    order: tuple[str, ...]
    predicted: Prediction
    seconds_to_plan: float
    optimal_order: bool
    pipelined: bool = True
    client_slowdown: float = 1.0
    link: LinkModel | None = field(default=None, compare=False)
    #: the codec of each uploaded tensor (empty for a plan made before codecs: all raw)
    wire: tuple[WireChoice, ...] = ()

    @property
    def wire_bytes(self) -> int:
        """Bytes that cross the link, after the codecs."""
        return sum(w.wire_bytes for w in self.wire) if self.wire else self.cut_bytes

    @property
    def codecs(self) -> dict[str, str]:
        """Codec of each uploaded tensor that is not sent raw."""
        return {w.tensor: w.codec for w in self.wire if w.codec != "raw"}

    @property
    def execution(self) -> str:
        """How the client runs it, in words: ``local only`` (nothing uploaded), ``upload only``
        (the client just sends the input), ``pipelined`` (some compute runs while a tensor
        uploads) or ``compute, then upload`` (``po``; or pipelined but with nothing left to
        overlap: the one tensor uploads after the last layer)."""
        if not self.cut_bytes:
            return "local only"
        if len(self.client) == 1:
            return "upload only"
        uploads = set(self.cut)
        if self.pipelined and any(v in uploads for v in self.order[:-1]):
            return "pipelined"
        return "compute, then upload"

    @property
    def total(self) -> float:
        """Predicted end-to-end latency (seconds)."""
        return self.predicted.total

    @property
    def client_compute(self) -> float:
        return self.predicted.client_compute

    @property
    def upload(self) -> float:
        return self.predicted.upload

    @property
    def hidden_upload(self) -> float:
        return self.predicted.hidden_upload

    @property
    def server(self) -> float:
        return self.predicted.server

    @property
    def reply(self) -> float:
        return self.predicted.reply

    def __repr__(self) -> str:
        p = self.predicted
        return (f"Plan({self.strategy}: {len(self.client)} client vertices, cut={list(self.cut)}, "
                f"{self.cut_bytes} B, total={p.total * 1e3:.3f}ms [client {p.client_compute * 1e3:.3f}, "
                f"upload {p.upload * 1e3:.3f} (hidden {p.hidden_upload * 1e3:.3f}), server {p.server * 1e3:.3f}, "
                f"reply {p.reply * 1e3:.3f}], optimal_order={self.optimal_order}, "
                f"planned in {self.seconds_to_plan * 1e3:.2f}ms)")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy,
            "client": list(self.client),
            "cut": list(self.cut),
            # the tensors that cross the link: none when the cut is the model output (local only)
            "uploads": list(self.cut) if self.cut_bytes else [],
            "cut_bytes": self.cut_bytes,
            "order": list(self.order),
            "predicted": self.predicted.to_json(),
            "seconds_to_plan": self.seconds_to_plan,
            "optimal_order": self.optimal_order,
            "pipelined": self.pipelined,
            "client_slowdown": self.client_slowdown,
            "wire": [w.to_json() for w in self.wire],
            "wire_bytes": self.wire_bytes,
        }
        if self.link is not None:
            out["link"] = self.link.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        try:
            return cls(
                strategy=str(data["strategy"]),
                client=tuple(data["client"]),
                cut=tuple(data["cut"]),
                cut_bytes=int(data["cut_bytes"]),
                order=tuple(data["order"]),
                predicted=Prediction.from_json(data["predicted"]),
                seconds_to_plan=float(data["seconds_to_plan"]),
                optimal_order=bool(data["optimal_order"]),
                pipelined=bool(data.get("pipelined", True)),
                client_slowdown=float(data.get("client_slowdown", 1.0)),
                link=LinkModel.from_json(data["link"]) if data.get("link") else None,
                wire=tuple(WireChoice(**w) for w in data.get("wire", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OpssError(f"plan JSON: expected the keys of Plan.to_json, got error {exc!r}") from None


def costs_of(profile: Any, graph: PlanGraph, what: str, scale: float = 1.0) -> dict[str, float]:
    """Seconds per vertex from a mapping or a profile table (``.costs_for(graph)``), times ``scale``.

    The one place that accepts "a profile or a plain mapping"; the input
    vertex costs 0 when the table has no entry for it.
    """
    if hasattr(profile, "costs_for"):
        table = profile.costs_for(graph)
    elif isinstance(profile, Mapping):
        table = profile
    else:
        raise ProfileError(f"{what} profile: expected a mapping id -> seconds or a Profile, got {type(profile).__name__}")
    out = {}
    for v in graph.ids:
        x = table.get(v)
        if x is None and v == graph.input_id:
            x = 0.0
        out[v] = x
    check_costs(graph, out, what)
    return {v: float(x) * scale for v, x in out.items()}


@dataclass(frozen=True, eq=False)
class PlanningProblem:
    """What every strategy plans on: the graph, client costs ``f`` (the slowdown applied),
    server costs ``s``, the uplink and downlink, and the scheduler settings.

    Build it with :meth:`build` from profiles or mappings. Derived values
    (per-vertex upload times, the reply, the min-cut network) are computed
    once on first use.
    """

    graph: PlanGraph
    f: Mapping[str, float]
    s: Mapping[str, float]
    link: LinkModel
    downlink: LinkModel
    client_slowdown: float = 1.0
    method: str = "auto"
    sched_opts: Mapping[str, Any] = field(default_factory=dict)
    #: what crosses the link: a :class:`opss.wirecosts.CodecTable` (None: raw only),
    #: the allowed codecs, the lossy error budget, and the image file's size when the
    #: input comes from one (its ``file`` form)
    codec_table: Any = None
    codecs: tuple[str, ...] = ("raw",)
    max_error: float | None = None
    image_bytes: int | None = None
    #: the image file's preprocessing seconds on the server, measured on that file (None: the table's)
    image_decode_s: float | None = None
    #: expected seconds a call waits on the server before its compute (the server's recent
    #: queue wait under load): added to the server term of every plan that offloads
    server_wait: float = 0.0

    @classmethod
    def build(cls, graph: PlanGraph | Any, client_profile: Any, server_profile: Any, link: LinkModel, *,
              client_slowdown: float = 1.0, downlink: LinkModel | None = None, method: str = "auto",
              sched_opts: Mapping[str, Any] | None = None, server_wait: float = 0.0,
              **wire: Any) -> PlanningProblem:
        """From a PlanGraph (or a LayerGraph) and two profiles (or mappings id -> seconds);
        ``wire`` holds ``codec_table``, ``codecs``, ``max_error``, ``image_bytes``, ``image_decode_s``;
        ``server_wait`` is the expected queue wait on the server (seconds)."""
        if not isinstance(graph, PlanGraph):
            graph = PlanGraph.from_layer_graph(graph)
        if not (isinstance(client_slowdown, (int, float)) and math.isfinite(client_slowdown)
                and client_slowdown > 0):
            raise OpssError(f"client_slowdown: expected a finite factor > 0, got {client_slowdown!r}")
        if not (isinstance(server_wait, (int, float)) and math.isfinite(server_wait) and server_wait >= 0):
            raise OpssError(f"server_wait: expected finite seconds >= 0, got {server_wait!r}")
        f = costs_of(client_profile, graph, "client", float(client_slowdown))
        s = costs_of(server_profile, graph, "server")
        return cls(graph, f, s, link, downlink if downlink is not None else link, float(client_slowdown),
                   method, dict(sched_opts or {}), server_wait=float(server_wait), **wire)

    # -- derived, computed once ----------------------------------------------------

    @cached_property
    def wire(self) -> dict[str, WireChoice]:
        """The codec of every vertex's output, were it cut: the allowed one with the least
        ``encode + c + wire / b + decode`` (:meth:`opss.wirecosts.CodecTable.choose`)."""
        graph, table = self.graph, self.codec_table
        if table is None or self.codecs == ("raw",):
            return {v: WireChoice(v, "raw", graph.nbytes[v], graph.nbytes[v]) for v in graph.ids}
        allowed = frozenset(self.codecs)
        return {v: table.choose(v, graph.nbytes[v], allowed, self.link, client_slowdown=self.client_slowdown,
                                max_error=self.max_error,
                                file_bytes=self.image_bytes if v == graph.input_id else None,
                                file_decode_s=self.image_decode_s if v == graph.input_id else None)
                for v in graph.ids}

    @cached_property
    def g_all(self) -> dict[str, float]:
        """Upload time of every vertex's output, were it cut: ``enc + c + wire / b``."""
        return {v: w.encode_s + self.link.g(w.wire_bytes) for v, w in self.wire.items()}

    @cached_property
    def decode(self) -> dict[str, float]:
        """Server seconds to decode each vertex's output before its readers can start."""
        return {v: w.decode_s for v, w in self.wire.items() if w.decode_s > 0}

    @cached_property
    def reply(self) -> float:
        return self.downlink.g(self.graph.nbytes[self.graph.output_id])

    @property
    def offload_cost(self) -> float:
        """Seconds every offloading plan pays once beyond its compute and uploads: the reply and
        the expected wait on the server (the min cut charges them when the output is on the
        server, which is when anything is)."""
        return self.reply + self.server_wait

    @cached_property
    def cut_problem(self) -> MinCutProblem:
        graph = self.graph
        return MinCutProblem(graph.ids, graph.edges, self.f, self.s, self.g_all,
                             graph.input_id, graph.output_id, self.offload_cost)

    @cached_property
    def _ancestor_f(self) -> dict[str, float]:
        return {}  # memo: f of a vertex and its ancestors, filled on demand

    # -- the latency model ------------------------------------------------------------

    def evaluate(self, client: frozenset[str], order: Sequence[str], *, pipelined: bool = True,
                 uploads: Sequence[str] | None = None) -> Prediction:
        """Predicted latency of ``order`` on ``client`` (validated by the caller)."""
        if uploads is None:
            uploads = self.graph.dag.cut(client)
        g = {v: self.g_all[v] for v in uploads}
        arrivals, end = arrival_times(order, self.f, g, pipelined=pipelined)
        decode = self.decode
        if decode:  # a tensor is usable on the server once decoded
            arrivals = {v: t + decode.get(v, 0.0) for v, t in arrivals.items()}
        pred = assemble_prediction(self.graph, client, uploads, arrivals, end, self.f, self.s, g, self.downlink)
        if self.server_wait and len(client) < len(self.graph):
            w = self.server_wait
            pred = dataclasses.replace(pred, server=pred.server + w, total=pred.total + w, server_wait=w)
        if not decode and self.codec_table is None:
            return pred
        return dataclasses.replace(pred, encode=sum(self.wire[v].encode_s for v in uploads),
                                   decode=sum(decode.get(v, 0.0) for v in uploads))

    # -- orders -------------------------------------------------------------------------

    def topo_order(self, client: Iterable[str]) -> tuple[str, ...]:
        return self.graph.topo_sorted(client)

    def greedy_order(self, client: frozenset[str], uploads: Sequence[str] | None = None) -> tuple[str, ...]:
        """Cut vertices in Johnson order (:func:`opss.sched.johnson_order` over each cut vertex
        with its ancestors' compute), each preceded by its missing ancestors."""
        dag = self.graph.dag
        if uploads is None:
            uploads = dag.cut(client)
        if not uploads:
            return self.topo_order(client)
        anc = dag.ancestor_masks()
        topo, pos = dag.topo, dag.positions.__getitem__
        memo = self._ancestor_f
        jobs = []
        for p in uploads:
            fp = memo.get(p)
            if fp is None:
                fp = memo[p] = self.f[p] + sum(self.f[topo[i]] for i in bits(anc[pos(p)]))
            jobs.append((p, fp, self.g_all[p]))
        done = 0
        order: list[str] = []
        for p in johnson_order(jobs):  # uploads are topological: ties keep that order
            i = pos(p)
            need = (anc[i] | (1 << i)) & ~done
            order.extend(topo[j] for j in bits(need))  # ascending bit = topological order
            done |= need
        rest = [v for v in self.topo_order(client) if not (done >> pos(v)) & 1]
        return tuple(order) + tuple(rest)

    def schedule(self, client: frozenset[str]):
        """The scheduler's result on the client graph of ``client``: ``(SchedGraph, ScheduleResult)``."""
        g = {v: self.g_all[v] for v in self.graph.dag.cut(client)}
        sg = SchedGraph.induced(self.graph.dag, client, self.f, g)
        opts = {**PLAN_SCHED_BUDGET, **self.sched_opts} if self.method == "auto" else self.sched_opts
        return sg, schedule(sg, method=self.method, **opts)

    def best_order(self, client: frozenset[str], extra_orders: Sequence[Sequence[str]] = ()):
        """The scheduler's order vs. the given ones, by predicted total; returns (order, optimal, pred)."""
        sg, res = self.schedule(client)
        best = (tuple(res.order), self.evaluate(client, res.order))
        for order in extra_orders:
            pred = self.evaluate(client, order)
            if pred.total < best[1].total - 1e-15:
                best = (tuple(order), pred)
        order, pred = best
        optimal = bool(res.optimal) and makespan(sg, order) <= res.makespan * (1 + 1e-12) + 1e-15
        return order, optimal, pred

    # -- cuts ----------------------------------------------------------------------------

    def po_client(self, scale: float = 1.0) -> frozenset[str]:
        """The client set minimizing the latency without overlap, uploads weighted by ``scale``:
        the exhaustive prefix scan on chains, a minimum s-t cut otherwise."""
        graph = self.graph
        if graph.is_chain():
            g = {v: scale * self.g_all[v] for v in graph.ids}
            client, _ = best_prefix(graph.ids, self.f, self.s, g, self.offload_cost)
        else:
            client, _ = self.cut_problem.solve(scale)
        return client

    def make_plan(self, strategy: str, client: frozenset[str], order: Sequence[str], *,
                  pipelined: bool, optimal: bool, t0: float, extra: float = 0.0) -> Plan:
        """A :class:`Plan` of ``order`` on ``client``, timed from ``t0`` (plus ``extra`` seconds)."""
        cut, uploads = cut_of(self.graph, client)
        pred = self.evaluate(client, order, pipelined=pipelined, uploads=uploads)
        return Plan(
            strategy=strategy,
            client=self.topo_order(client),
            cut=cut,
            cut_bytes=sum(self.graph.nbytes[v] for v in uploads),
            wire=tuple(self.wire[v] for v in uploads),
            order=tuple(order),
            predicted=pred,
            seconds_to_plan=time.perf_counter() - t0 + extra,
            optimal_order=optimal,
            pipelined=pipelined,
            client_slowdown=self.client_slowdown,
            link=self.link,
        )
