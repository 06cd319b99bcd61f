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
client from a PC profile). The planning problem is :class:`opss.problem.PlanningProblem`,
the joint search :mod:`opss.joint`; the strategies are registered here, in
:data:`REGISTRY`, and :data:`STRATEGIES` (their names, in registry order) is
the one list every caller uses. The core (this module, :mod:`opss.problem`,
:mod:`opss.joint`, :mod:`opss.latency`, :mod:`opss.mincut`) imports no torch;
:func:`plan_model` captures the model and loads the profiles (torch) on demand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opss.errors import OpssError
from opss.joint import LAMBDAS, joint_plan
from opss.latency import PlanGraph, Prediction
from opss.link import LinkModel
from opss.problem import Plan, PlanningProblem

__all__ = [
    "LAMBDAS",
    "REGISTRY",
    "STRATEGIES",
    "Plan",
    "PlanGraph",
    "PlanningProblem",
    "Prediction",
    "Strategy",
    "plan",
    "plan_all",
    "plan_for_client_set",
    "plan_model",
    "plans_to_json",
    "prepare",
    "run_strategies",
]


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: ``run(problem, plans of its needs) -> Plan``."""

    name: str
    summary: str
    run: Callable[[PlanningProblem, Mapping[str, Plan]], Plan]
    needs: tuple[str, ...] = ()


#: every strategy, by name, in the order they are listed everywhere
REGISTRY: dict[str, Strategy] = {}


def _register(name: str, summary: str, needs: tuple[str, ...] = ()):
    def add(run: Callable[[PlanningProblem, Mapping[str, Plan]], Plan]):
        REGISTRY[name] = Strategy(name, summary, run, needs)
        return run
    return add


@_register("lo", "local only: the whole model on the client")
def _lo(problem: PlanningProblem, _needs: Mapping[str, Plan]) -> Plan:
    t0 = time.perf_counter()
    client = frozenset(problem.graph.ids)
    # nothing is uploaded: every order has makespan sum f, the topological one is optimal
    return problem.make_plan("lo", client, problem.topo_order(client), pipelined=True, optimal=True, t0=t0)


@_register("co", "cloud only: upload the input, the server runs everything")
def _co(problem: PlanningProblem, _needs: Mapping[str, Plan]) -> Plan:
    t0 = time.perf_counter()
    client = frozenset([problem.graph.input_id])
    return problem.make_plan("co", client, (problem.graph.input_id,), pipelined=True, optimal=True, t0=t0)


@_register("po", "partition only (DADS min cut), compute then upload")
def _po(problem: PlanningProblem, _needs: Mapping[str, Plan]) -> Plan:
    t0 = time.perf_counter()
    client = problem.po_client()
    # no overlap: the order only fixes the upload sequence; topological, like the seed
    return problem.make_plan("po", client, problem.topo_order(client), pipelined=False, optimal=False, t0=t0)


@_register("opss", "po's cut, the best pipelined client order", needs=("po",))
def _opss(problem: PlanningProblem, needs: Mapping[str, Plan]) -> Plan:
    po = needs["po"]
    t0 = time.perf_counter()
    client = frozenset(po.client)
    order, optimal, _ = problem.best_order(client, [po.order])
    return problem.make_plan("opss", client, order, pipelined=True, optimal=optimal, t0=t0,
                             extra=po.seconds_to_plan)


@_register("joint", "cut and order together for the least pipelined latency", needs=("opss",))
def _joint(problem: PlanningProblem, needs: Mapping[str, Plan]) -> Plan:
    return joint_plan(problem, needs["opss"])


#: the strategy names, in registry order: the one list the CLI, client, lab and benchmarks use
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)


def _checked(strategies: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(strategies))
    for name in wanted:
        if name not in REGISTRY:
            raise OpssError(f"strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
    return wanted


def run_strategies(problem: PlanningProblem, strategies: Iterable[str] = STRATEGIES) -> dict[str, Plan]:
    """Plan each strategy on ``problem`` (each dependency once); returns ``{strategy: Plan}``."""
    wanted = _checked(strategies)
    done: dict[str, Plan] = {}

    def get(name: str) -> Plan:
        if name not in done:
            entry = REGISTRY[name]
            done[name] = entry.run(problem, {d: get(d) for d in entry.needs})
        return done[name]

    return {name: get(name) for name in wanted}


def prepare(graph: PlanGraph) -> PlanGraph:
    """Compute once what every plan of ``graph`` reads and no link or cost changes: the DAG's
    ancestor, descendant and successor bitmasks and its adjacency by position (cached on
    ``graph.dag``).

    Part of a command's one-time start-up, like capturing the model: ``opss plan`` calls it
    before planning and reports its time apart, so each strategy's ``seconds_to_plan`` is the
    planning's own from the first call. Returns ``graph``.
    """
    dag = graph.dag
    dag.ancestor_masks()
    dag.descendant_masks()
    dag.adjacency()
    dag.cut_mask(0)  # builds the successor bitmasks
    return graph


# ---------------------------------------------------------------------------
# entry points


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
    wire: Mapping[str, Any] | None = None,
    server_wait: float = 0.0,
    **sched_opts: Any,
) -> dict[str, Plan]:
    """Plan several strategies on the same graph and costs; returns ``{strategy: Plan}``.

    ``graph`` is a :class:`PlanGraph` or a LayerGraph; the profiles map vertex
    ids to seconds (or are :class:`opss.profile.Profile` tables); ``link`` is
    the uplink; ``downlink`` defaults to it. ``method`` and ``sched_opts`` go
    to :func:`opss.sched.schedule`. Each plan's ``seconds_to_plan`` includes
    the work it depends on (``opss`` includes ``po``; ``joint`` includes both).
    ``wire`` chooses what crosses the link (:class:`PlanningProblem`'s
    ``codec_table``, ``codecs``, ``max_error``, ``image_bytes``; default raw).
    ``server_wait`` (seconds) is the expected queue wait on a loaded server, added to the
    server term of every plan that offloads.
    """
    wanted = _checked(strategies)
    problem = PlanningProblem.build(graph, client_profile, server_profile, link, client_slowdown=client_slowdown,
                                    downlink=downlink, method=method, sched_opts=sched_opts,
                                    server_wait=server_wait, **(wire or {}))
    return run_strategies(problem, wanted)


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
    wire: Mapping[str, Any] | None = None,
    **sched_opts: Any,
) -> Plan:
    """Plan one strategy (``lo``, ``co``, ``po``, ``opss`` or ``joint``); see :func:`plan_all`."""
    return plan_all(graph, client_profile, server_profile, link, [strategy], client_slowdown=client_slowdown,
                    downlink=downlink, method=method, wire=wire, **sched_opts)[strategy]


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
    wire: Mapping[str, Any] | None = None,
    **sched_opts: Any,
) -> Plan:
    """The best pipelined order for a given client set (strategy ``"given"``)."""
    t0 = time.perf_counter()
    problem = PlanningProblem.build(graph, client_profile, server_profile, link, client_slowdown=client_slowdown,
                                    downlink=downlink, method=method, sched_opts=sched_opts, **(wire or {}))
    cset = problem.graph.check_client_set(client)
    order, optimal, _ = problem.best_order(cset, [problem.topo_order(cset)])
    return problem.make_plan("given", cset, order, pipelined=True, optimal=optimal, t0=t0)


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
    wire: Mapping[str, Any] | None = None,
    startup: dict[str, float] | None = None,
    server_wait: float = 0.0,
    **sched_opts: Any,
) -> tuple[PlanGraph, dict[str, Plan]]:
    """Capture a zoo (or ``package.module:factory``) model, look up its profiles and plan.

    ``client_profile``/``server_profile`` default to this machine's client
    and server roles (:func:`opss.profile.load_or_build_profile`; built on
    the spot with a progress bar when missing and ``build_missing``).
    ``layer_graph`` reuses an existing layer-granularity capture. ``startup``, when given,
    receives the seconds of the one-time work before planning: ``capture_s`` (a capture at
    another granularity), ``profiles_s`` and ``prepare_s`` (the planner's graph and
    :func:`prepare`); each plan's ``seconds_to_plan`` excludes them.
    Returns the planner's graph and ``{strategy: Plan}``. Imports torch.
    """
    from opss.profile import capture_model, load_or_build_profile

    if isinstance(strategies, str):
        strategies = STRATEGIES if strategies == "all" else [strategies]
    times = startup if startup is not None else {}
    t = time.perf_counter()
    if layer_graph is None:
        layer_graph = capture_model(model, "layer")
    lg = layer_graph if granularity == "layer" else capture_model(model, granularity)
    times["capture_s"] = times.get("capture_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    kw = dict(build_missing=build_missing, progress=progress, graph=layer_graph, root=profiles_root)
    if client_profile is None:
        client_profile = load_or_build_profile(model, role="client", **kw)
    if server_profile is None:
        server_profile = load_or_build_profile(model, role="server", **kw)
    times["profiles_s"] = times.get("profiles_s", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    graph = prepare(PlanGraph.from_layer_graph(lg))
    times["prepare_s"] = time.perf_counter() - t
    plans = plan_all(graph, client_profile, server_profile, link, strategies, client_slowdown=client_slowdown,
                     downlink=downlink, method=method, wire=wire, server_wait=server_wait, **sched_opts)
    return graph, plans

