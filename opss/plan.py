"""Planners: a model, two profiles and a link in; the cut, the client order and a predicted latency out.

Strategies, all on the same :class:`~opss.latency.PlanGraph`, costs and link
(the latency model is :mod:`opss.latency`):

``lo``
    local only: the whole model on the client, nothing uploaded.
``co``
    cloud only: the client uploads the input, the server runs everything.
``po``
    partition only (the seed's baseline, DADS / Zhang et al. 2020): the cut
    minimizing the latency *without* overlap, ``sum f + sum g + sum s +
    reply``, found by a minimum s-t cut (:mod:`opss.mincut`; the exhaustive
    prefix scan of Neurosurgeon on chains). Executed without overlap: every
    client layer in topological order, then the uploads one after another.
``opss``
    ``po``'s cut with the best pipelined client order (the seed's scheme):
    :func:`opss.sched.schedule` (``auto``: exact when it fits its budget)
    minimizes the client makespan. The server may start earlier on some
    tensors in the ``po`` upload order, so that order (pipelined) is also
    evaluated and the order with the least predicted *total* wins; hence
    ``opss <= po`` always. ``optimal_order`` says whether the chosen order is
    proven to minimize the client makespan.
``joint``
    cut and order together for the least pipelined latency. Candidate
    client sets: ``lo``, ``co``, ``po`` and the min-cuts with the upload
    costs scaled by ``λ`` (``λ < 1`` favours cuts whose uploads the
    pipeline can hide). Each is screened with a fast pipelined order (cut
    vertices in Johnson order, each preceded by its missing ancestors) and
    the full latency model; the best two are improved by steepest descent
    over *chain moves* (for each maximal chain of the DAG, put the cut at
    any other position along it, keeping the set closed), within an
    evaluation budget of ``clamp(12000 / n, 24, 300)`` screenings; the three
    best sets screened get the ``opss.sched`` scheduler. The ``opss`` plan is always a
    candidate, so ``joint <= opss``.

``client_slowdown`` multiplies every client time ``f`` (model a Pi-class
client from a PC profile). The core (this module, :mod:`opss.latency`,
:mod:`opss.mincut`) imports no torch; :func:`plan_model` captures the model
and loads the profiles (torch) on demand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opss.errors import OpssError, ProfileError
from opss.latency import PlanGraph, Prediction, _assemble, _check_costs, arrival_times, cut_of
from opss.link import LinkModel
from opss.mincut import MinCutProblem, best_prefix

__all__ = [
    "STRATEGIES",
    "Plan",
    "PlanGraph",
    "Prediction",
    "plan",
    "plan_all",
    "plan_for_client_set",
    "plan_model",
    "plans_to_json",
]

STRATEGIES: tuple[str, ...] = ("lo", "co", "po", "opss", "joint")

#: upload-cost scales tried by ``joint`` (1.0 is the ``po`` cut itself)
LAMBDAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)


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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OpssError(f"plan JSON: expected the keys of Plan.to_json, got error {exc!r}") from None


# ---------------------------------------------------------------------------
# costs


def _costs(profile: Any, graph: PlanGraph, what: str, scale: float = 1.0) -> dict[str, float]:
    """Seconds per vertex from a mapping or a profile table (``.costs(graph)`` / ``.medians``)."""
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
    _check_costs(graph, out, what)
    return {v: float(x) * scale for v, x in out.items()}


class _Ctx:
    """Everything one planning call shares: graph, costs, per-vertex upload times."""

    def __init__(self, graph, f, s, link, downlink, client_slowdown, method, sched_opts):
        self.graph = graph
        self.f = f
        self.s = s
        self.link = link
        self.downlink = downlink if downlink is not None else link
        self.slowdown = client_slowdown
        self.method = method
        self.sched_opts = sched_opts
        self.g_all = {v: link.g(graph.nbytes[v]) for v in graph.ids}
        self.reply = self.downlink.g(graph.nbytes[graph.output_id])
        self._anc: dict[str, int] | None = None  # ancestor bitmasks (bit i = topological position i)
        self._anc_f: dict[str, float] = {}
        self._desc: dict[str, int] | None = None
        self._chains: list[tuple[str, ...]] | None = None
        self._succ_mask: list[int] | None = None
        self._cut_problem = None

    def ancestors(self) -> dict[str, int]:
        if self._anc is None:
            graph = self.graph
            anc: dict[str, int] = {}
            for v in graph.ids:
                m = 0
                for p in graph.preds(v):
                    m |= anc[p] | (1 << graph.index(p))
                anc[v] = m
            self._anc = anc
        return self._anc

    def descendants(self) -> dict[str, int]:
        if self._desc is None:
            graph = self.graph
            desc: dict[str, int] = {}
            for v in reversed(graph.ids):
                m = 0
                for w in graph.succs(v):
                    m |= desc[w] | (1 << graph.index(w))
                desc[v] = m
            self._desc = desc
        return self._desc

    def chains(self) -> list[tuple[str, ...]]:
        """Maximal paths whose inner links are single-successor -> single-predecessor edges
        (the input vertex excluded): a cut can sit anywhere along each of them."""
        if self._chains is None:
            graph = self.graph

            def linked(u: str, w: str) -> bool:
                return graph.succs(u) == (w,) and graph.preds(w) == (u,)

            chains = []
            for v in graph.ids:
                if v == graph.input_id:
                    continue
                preds = graph.preds(v)
                if len(preds) == 1 and preds[0] != graph.input_id and linked(preds[0], v):
                    continue  # not the head of its chain
                chain = [v]
                while len(graph.succs(chain[-1])) == 1 and linked(chain[-1], graph.succs(chain[-1])[0]):
                    chain.append(graph.succs(chain[-1])[0])
                chains.append(tuple(chain))
            self._chains = chains
        return self._chains

    def screen_mask(self, m: int) -> float:
        """Predicted total of client set ``m`` (a bitmask) with :meth:`greedy_order`:
        the same latency model as :meth:`evaluate`, with the cut found by bit operations."""
        graph = self.graph
        ids = graph.ids
        if self._succ_mask is None:
            self._succ_mask = [sum(1 << graph.index(w) for w in graph.succs(v)) for v in ids]
        succ_mask = self._succ_mask
        client = self.unmask(m)
        outside = ~m
        uploads = tuple(ids[i] for i in _bits(m) if succ_mask[i] & outside)
        order = self.greedy_order(client, uploads)
        g = {v: self.g_all[v] for v in uploads}
        arrivals, end = arrival_times(order, self.f, g)
        return _assemble(graph, client, uploads, arrivals, end, self.f, self.s, g, self.downlink).total

    def mask(self, client: frozenset[str]) -> int:
        index = self.graph.index
        m = 0
        for v in client:
            m |= 1 << index(v)
        return m

    def unmask(self, m: int) -> frozenset[str]:
        ids = self.graph.ids
        return frozenset(ids[i] for i in _bits(m))

    def cut_problem(self):
        if self._cut_problem is None:
            graph = self.graph
            self._cut_problem = MinCutProblem(graph.ids, graph.edges, self.f, self.s, self.g_all,
                                              graph.input_id, graph.output_id, self.reply)
        return self._cut_problem

    def g_for(self, uploads: Iterable[str]) -> dict[str, float]:
        return {v: self.g_all[v] for v in uploads}

    def evaluate(self, client: frozenset[str], order: Sequence[str], *, pipelined: bool = True) -> Prediction:
        _, uploads = cut_of(self.graph, client)
        g = self.g_for(uploads)
        arrivals, end = arrival_times(order, self.f, g, pipelined=pipelined)
        return _assemble(self.graph, client, uploads, arrivals, end, self.f, self.s, g, self.downlink)

    def topo_order(self, client: frozenset[str]) -> tuple[str, ...]:
        return self.graph.topo_sorted(client)

    def greedy_order(self, client: frozenset[str], uploads: Sequence[str] | None = None) -> tuple[str, ...]:
        """Cut vertices in Johnson order (upload-heavy first by ascending compute, then
        compute-heavy by descending upload), each preceded by its missing ancestors."""
        if uploads is None:
            _, uploads = cut_of(self.graph, client)
        if not uploads:
            return self.topo_order(client)
        anc = self.ancestors()
        ids = self.graph.ids
        jobs = []
        for p in uploads:
            fp = self._anc_f.get(p)
            if fp is None:
                fp = self.f[p] + sum(self.f[ids[i]] for i in _bits(anc[p]))
                self._anc_f[p] = fp
            jobs.append((p, fp, self.g_all[p]))
        heavy = sorted((j for j in jobs if j[1] < j[2]), key=lambda j: (j[1], self.graph.index(j[0])))
        light = sorted((j for j in jobs if j[1] >= j[2]), key=lambda j: (-j[2], self.graph.index(j[0])))
        done = 0
        order: list[str] = []
        for p, _, _ in heavy + light:
            bit = 1 << self.graph.index(p)
            need = (anc[p] | bit) & ~done
            order.extend(ids[i] for i in _bits(need))  # ascending bit = topological order
            done |= need
        rest = [v for v in self.topo_order(client) if not (done >> self.graph.index(v)) & 1]
        return tuple(order) + tuple(rest)

    def schedule(self, client: frozenset[str]):
        from opss.sched import SchedGraph, schedule

        _, uploads = cut_of(self.graph, client)
        g = self.g_for(uploads)
        sg = SchedGraph(
            [(v, self.f[v], g.get(v, 0.0)) for v in self.topo_order(client)],
            [(u, w) for u, w in self.graph.edges if u in client and w in client],
        )
        return sg, schedule(sg, method=self.method, **self.sched_opts)


def _bits(mask: int):
    """Positions of the set bits of ``mask``, ascending."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _make_plan(ctx: _Ctx, strategy: str, client: frozenset[str], order: Sequence[str], *,
               pipelined: bool, optimal: bool, t0: float, extra: float = 0.0) -> Plan:
    cut, uploads = cut_of(ctx.graph, client)
    pred = ctx.evaluate(client, order, pipelined=pipelined)
    return Plan(
        strategy=strategy,
        client=ctx.topo_order(client),
        cut=cut,
        cut_bytes=sum(ctx.graph.nbytes[v] for v in uploads),
        order=tuple(order),
        predicted=pred,
        seconds_to_plan=time.perf_counter() - t0 + extra,
        optimal_order=optimal,
        pipelined=pipelined,
        client_slowdown=ctx.slowdown,
        link=ctx.link,
    )


# ---------------------------------------------------------------------------
# strategies


def _lo(ctx: _Ctx) -> Plan:
    t0 = time.perf_counter()
    client = frozenset(ctx.graph.ids)
    # nothing is uploaded: every order has makespan sum f, the topological one is optimal
    return _make_plan(ctx, "lo", client, ctx.topo_order(client), pipelined=True, optimal=True, t0=t0)


def _co(ctx: _Ctx) -> Plan:
    t0 = time.perf_counter()
    client = frozenset([ctx.graph.input_id])
    return _make_plan(ctx, "co", client, (ctx.graph.input_id,), pipelined=True, optimal=True, t0=t0)


def _po_client(ctx: _Ctx, scale: float = 1.0) -> frozenset[str]:
    graph = ctx.graph
    if graph.is_chain():
        g = {v: scale * ctx.g_all[v] for v in graph.ids}
        client, _ = best_prefix(graph.ids, ctx.f, ctx.s, g, ctx.reply)
    else:
        client, _ = ctx.cut_problem().solve(scale)
    return client


def _po(ctx: _Ctx) -> Plan:
    t0 = time.perf_counter()
    client = _po_client(ctx)
    # no overlap: the order only fixes the upload sequence; topological, like the seed
    return _make_plan(ctx, "po", client, ctx.topo_order(client), pipelined=False, optimal=False, t0=t0)


def _best_order(ctx: _Ctx, client: frozenset[str], extra_orders: Sequence[Sequence[str]] = ()):
    """The scheduler's order vs. the given ones, by predicted total; returns (order, optimal, pred)."""
    from opss.sched import makespan

    sg, res = ctx.schedule(client)
    best = (tuple(res.order), ctx.evaluate(client, res.order))
    for order in extra_orders:
        pred = ctx.evaluate(client, order)
        if pred.total < best[1].total - 1e-15:
            best = (tuple(order), pred)
    order, pred = best
    optimal = bool(res.optimal) and makespan(sg, order) <= res.makespan * (1 + 1e-12) + 1e-15
    return order, optimal, pred


def _opss(ctx: _Ctx, po: Plan | None = None) -> Plan:
    t0 = time.perf_counter()
    if po is None:
        po = _po(ctx)
    client = frozenset(po.client)
    order, optimal, _ = _best_order(ctx, client, [po.order])
    return _make_plan(ctx, "opss", client, order, pipelined=True, optimal=optimal, t0=t0,
                      extra=po.seconds_to_plan)


def _chain_moves(ctx: _Ctx, cur: int):
    """Neighbours of a client set (a bitmask): for every chain, every other cut position.

    Keeping the prefix ``C[:j]`` of chain ``C`` on the client adds the prefix and its
    ancestors and sends ``C[j:]`` and all their descendants to the server; the result is
    again closed under predecessors. Moving a whole chain at once lets the search cross
    the worse intermediate states that one-vertex moves get stuck on (e.g. giving one
    stream of a multi-stream model to the server). Before those, for every cut tensor,
    the move that pulls all its server consumers onto the client (the tensor then no
    longer crosses the link). Chains that touch the current cut come first (the search
    has a budget). Yields bitmasks.
    """
    anc, desc = ctx.ancestors(), ctx.descendants()
    graph = ctx.graph
    index = graph.index

    def on(v: str) -> bool:
        return bool((cur >> index(v)) & 1)

    def near(chain: tuple[str, ...]) -> bool:
        head, tail = chain[0], chain[-1]
        if on(head) != on(tail):
            return True  # the cut runs through the chain
        if on(tail):
            return any(not on(w) for w in graph.succs(tail))
        return all(on(p) for p in graph.preds(head))

    seen = {cur}
    # absorb an upload: pull every server consumer of a cut tensor onto the client (with its
    # ancestors), so that tensor no longer crosses the link (e.g. the input feeding two streams)
    for u in graph.ids:
        if not on(u):
            continue
        outside = [w for w in graph.succs(u) if not on(w)]
        if not outside:
            continue
        m = cur
        for w in outside:
            m |= (1 << index(w)) | anc[w]
        if m not in seen:
            seen.add(m)
            yield m
    chains = ctx.chains()
    for chain in [c for c in chains if near(c)] + [c for c in chains if not near(c)]:
        bits = [1 << index(v) for v in chain]
        for j in range(len(chain) + 1):
            m = cur
            for v, b in zip(chain[:j], bits[:j]):
                m |= b | anc[v]
            for v, b in zip(chain[j:], bits[j:]):
                m &= ~(b | desc[v])
            if m not in seen:
                seen.add(m)
                yield m


def _joint(ctx: _Ctx, opss_plan: Plan | None = None, *, keep: int = 3, starts_n: int = 4,
           max_evals: int | None = None) -> Plan:
    graph = ctx.graph
    if opss_plan is None:
        opss_plan = _opss(ctx)
    base_time = opss_plan.seconds_to_plan  # joint's time includes the po and opss work it builds on
    t0 = time.perf_counter()

    screened: dict[int, float] = {}  # client-set bitmask -> screened total

    def screen(m: int) -> float:
        got = screened.get(m)
        if got is None:
            got = screened[m] = ctx.screen_mask(m)
        return got

    seeds = {frozenset(graph.ids), frozenset([graph.input_id]), frozenset(opss_plan.client)}
    for lam in LAMBDAS:
        seeds.add(_po_client(ctx, lam))
    seed_masks = {ctx.mask(c) for c in seeds}
    for m in seed_masks:
        screen(m)
    # local search from the best two seeds: steepest descent over chain moves, within an
    # evaluation budget that shrinks with the graph (planning stays in tens of milliseconds)
    if max_evals is None:
        max_evals = max(24, min(300, 12000 // max(1, len(graph))))
    starts = sorted(seed_masks, key=lambda m: (screened[m], m.bit_count()))[:starts_n]
    evals = 0
    for start in starts:
        cur, cur_cost = start, screened[start]
        while evals < max_evals:
            best_move, best_cost = None, cur_cost
            for cand in _chain_moves(ctx, cur):
                if cand not in screened:
                    if evals >= max_evals:
                        break
                    evals += 1
                cost = screen(cand)
                if cost < best_cost - 1e-12:
                    best_move, best_cost = cand, cost
            if best_move is None:
                break
            cur, cur_cost = best_move, best_cost
    finalists = sorted(screened, key=lambda m: (screened[m], m.bit_count()))[:keep]
    best = opss_plan
    opss_mask = ctx.mask(frozenset(opss_plan.client))
    for m in finalists:
        if m == opss_mask:
            continue
        client = ctx.unmask(m)
        order, optimal, pred = _best_order(ctx, client, [ctx.greedy_order(client), ctx.topo_order(client)])
        if pred.total < best.total - 1e-12:
            best = _make_plan(ctx, "joint", client, order, pipelined=True, optimal=optimal, t0=t0)
    elapsed = time.perf_counter() - t0 + base_time
    return Plan(
        strategy="joint", client=best.client, cut=best.cut, cut_bytes=best.cut_bytes, order=best.order,
        predicted=best.predicted, seconds_to_plan=elapsed, optimal_order=best.optimal_order,
        pipelined=True, client_slowdown=ctx.slowdown, link=ctx.link,
    )


# ---------------------------------------------------------------------------
# entry points


def _context(graph, client_profile, server_profile, link, client_slowdown, downlink, method, sched_opts) -> _Ctx:
    if not isinstance(graph, PlanGraph):
        graph = PlanGraph.from_layer_graph(graph)
    if not (isinstance(client_slowdown, (int, float)) and math.isfinite(client_slowdown) and client_slowdown > 0):
        raise OpssError(f"client_slowdown: expected a finite factor > 0, got {client_slowdown!r}")
    f = _costs(client_profile, graph, "client", float(client_slowdown))
    s = _costs(server_profile, graph, "server")
    return _Ctx(graph, f, s, link, downlink, float(client_slowdown), method, dict(sched_opts))


def plan_all(
    graph: PlanGraph | Any,
    client_profile: Mapping[str, float] | Any,
    server_profile: Mapping[str, float] | Any,
    link: LinkModel,
    strategies: Iterable[str] = STRATEGIES,
    *,
    client_slowdown: float = 1.0,
    downlink: LinkModel | None = None,
    method: str = "auto",
    **sched_opts: Any,
) -> dict[str, Plan]:
    """Plan several strategies on the same graph and costs; returns ``{strategy: Plan}``.

    ``graph`` is a :class:`PlanGraph` or a LayerGraph; the profiles map vertex
    ids to seconds (or are :class:`opss.profile.Profile` tables); ``link`` is
    the uplink; ``downlink`` defaults to it. ``method`` and ``sched_opts`` go
    to :func:`opss.sched.schedule`. Each plan's ``seconds_to_plan`` includes
    the work it depends on (``opss`` includes ``po``; ``joint`` includes both).
    """
    wanted = list(dict.fromkeys(strategies))
    for name in wanted:
        if name not in STRATEGIES:
            raise OpssError(f"strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    ctx = _context(graph, client_profile, server_profile, link, client_slowdown, downlink, method, sched_opts)
    out: dict[str, Plan] = {}
    po = opss_plan = None
    for name in wanted:
        if name == "lo":
            out[name] = _lo(ctx)
        elif name == "co":
            out[name] = _co(ctx)
        else:
            if po is None:
                po = _po(ctx)
            if name == "po":
                out[name] = po
                continue
            if opss_plan is None:
                opss_plan = _opss(ctx, po)
            out[name] = opss_plan if name == "opss" else _joint(ctx, opss_plan)
    return out


def plan(
    graph: PlanGraph | Any,
    client_profile: Mapping[str, float] | Any,
    server_profile: Mapping[str, float] | Any,
    link: LinkModel,
    strategy: str = "opss",
    *,
    client_slowdown: float = 1.0,
    downlink: LinkModel | None = None,
    method: str = "auto",
    **sched_opts: Any,
) -> Plan:
    """Plan one strategy (``lo``, ``co``, ``po``, ``opss`` or ``joint``); see :func:`plan_all`."""
    return plan_all(graph, client_profile, server_profile, link, [strategy], client_slowdown=client_slowdown,
                    downlink=downlink, method=method, **sched_opts)[strategy]


def plan_for_client_set(
    graph: PlanGraph | Any,
    client: Iterable[str],
    client_profile: Mapping[str, float] | Any,
    server_profile: Mapping[str, float] | Any,
    link: LinkModel,
    *,
    client_slowdown: float = 1.0,
    downlink: LinkModel | None = None,
    method: str = "auto",
    **sched_opts: Any,
) -> Plan:
    """The best pipelined order for a given client set (strategy ``"given"``)."""
    t0 = time.perf_counter()
    ctx = _context(graph, client_profile, server_profile, link, client_slowdown, downlink, method, sched_opts)
    cset = ctx.graph.check_client_set(client)
    order, optimal, _ = _best_order(ctx, cset, [ctx.topo_order(cset)])
    return _make_plan(ctx, "given", cset, order, pipelined=True, optimal=optimal, t0=t0)


def plans_to_json(model: str, link: LinkModel, plans: Mapping[str, Plan], **extra: Any) -> dict[str, Any]:
    """The ``opss plan --json`` document: ``{"model", "link": {"c", "b"}, "strategies": {...}}``."""
    doc: dict[str, Any] = {"model": model, "link": {"c": link.c, "b": link.b}}
    doc.update(extra)
    doc["strategies"] = {name: p.to_json() for name, p in plans.items()}
    return doc


def plan_model(
    model: str,
    link: LinkModel,
    strategies: Iterable[str] | str = STRATEGIES,
    *,
    granularity: str = "layer",
    client_profile: Any = None,
    server_profile: Any = None,
    client_slowdown: float = 1.0,
    downlink: LinkModel | None = None,
    method: str = "auto",
    build_missing: bool = True,
    progress: bool = True,
    layer_graph: Any = None,
    profiles_root: Any = None,
    **sched_opts: Any,
) -> tuple[PlanGraph, dict[str, Plan]]:
    """Capture a zoo (or ``package.module:factory``) model, look up its profiles and plan.

    ``client_profile``/``server_profile`` default to this machine's client
    and server roles (:func:`opss.profile.load_or_build_profile`; built on
    the spot with a progress bar when missing and ``build_missing``).
    ``layer_graph`` reuses an existing layer-granularity capture.
    Returns the planner's graph and ``{strategy: Plan}``. Imports torch.
    """
    from opss.profile import capture_model, load_or_build_profile

    if isinstance(strategies, str):
        strategies = STRATEGIES if strategies == "all" else [strategies]
    if layer_graph is None:
        layer_graph = capture_model(model, "layer")
    lg = layer_graph if granularity == "layer" else capture_model(model, granularity)
    graph = PlanGraph.from_layer_graph(lg)
    kw = dict(build_missing=build_missing, progress=progress, graph=layer_graph, root=profiles_root)
    if client_profile is None:
        client_profile = load_or_build_profile(model, role="client", **kw)
    if server_profile is None:
        server_profile = load_or_build_profile(model, role="server", **kw)
    plans = plan_all(graph, client_profile, server_profile, link, strategies, client_slowdown=client_slowdown,
                     downlink=downlink, method=method, **sched_opts)
    return graph, plans

