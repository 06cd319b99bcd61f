"""Planners on tiny hand-made graphs (costs in comments) and on random DAGs against brute force.

No torch here: the planning core is pure Python.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys

import pytest

from opss.errors import InvalidGraphError, OpssError, PartitionError, ProfileError
from opss.latency import PlanGraph, cut_of, predict
from opss.link import LinkModel
from opss.mincut import additive_cost, best_prefix, min_cut_partition
from opss.plan import STRATEGIES, Plan, plan, plan_all, plan_for_client_set, plans_to_json

UNIT = LinkModel(c=0.0, b=1.0)  # 1 byte/s: g(v) = bytes(v) seconds


# ---------------------------------------------------------------------------
# hand-made graphs


def chain():
    """in -> a -> b -> out.

    bytes: in 1000, a 100, b 500, out 10
    """
    g = PlanGraph(["in", "a", "b", "out"], [("in", "a"), ("a", "b"), ("b", "out")],
                  {"in": 1000, "a": 100, "b": 500, "out": 10}, "in", "out")
    f = {"in": 0, "a": 1, "b": 2, "out": 1}  # client seconds
    s = {"in": 0, "a": 0.2, "b": 0.2, "out": 0.1}  # server seconds
    return g, f, s


def test_chain_plans_exactly():
    # link: 1000 B/s, so g(in)=1, g(a)=0.1, g(b)=0.5, reply g(out)=0.01
    g, f, s = chain()
    link = LinkModel(0.0, 1000.0)
    plans = plan_all(g, f, s, link)
    # additive costs of the prefixes: {in} 1+0.5+0.01=1.51, {in,a} 1+0.1+0.3+0.01=1.41,
    # {in,a,b} 3+0.5+0.1+0.01=3.61, all 4 -> po cuts after a
    assert plans["po"].client == ("in", "a") and plans["po"].cut == ("a",)
    assert plans["po"].total == pytest.approx(1.41)
    assert plans["po"].cut_bytes == 100
    # one upload on a chain: nothing to overlap, opss and joint equal po
    assert plans["opss"].total == pytest.approx(1.41)
    assert plans["joint"].total == pytest.approx(1.41)
    assert plans["lo"].total == pytest.approx(4.0) and plans["lo"].cut == ("out",) and plans["lo"].cut_bytes == 0
    assert plans["co"].total == pytest.approx(1.51) and plans["co"].cut == ("in",) and plans["co"].cut_bytes == 1000
    assert plans["lo"].predicted.reply == 0 and plans["lo"].predicted.upload == 0


def diamond():
    """in -> a -> out, in -> b -> b2 -> out (b2 shrinks b's output).

    bytes (upload seconds on UNIT): in 100, a 8, b 6, b2 1, out 0
    client f: a 4, b 1, b2 6, out 100 (a weak client must not run out)
    server s: a 0.1, b 0.1, b2 0.1, out 1
    """
    g = PlanGraph(
        ["in", "a", "b", "b2", "out"],
        [("in", "a"), ("in", "b"), ("b", "b2"), ("a", "out"), ("b2", "out")],
        {"in": 100, "a": 8, "b": 6, "b2": 1, "out": 0},
        "in", "out",
    )
    f = {"in": 0, "a": 4, "b": 1, "b2": 6, "out": 100}
    s = {"in": 0, "a": 0.1, "b": 0.1, "b2": 0.1, "out": 1}
    return g, f, s


def test_diamond_plans_exactly():
    g, f, s = diamond()
    plans = plan_all(g, f, s, UNIT)
    # po: additive {in,a,b} = f 5 + g 8+6 + s(b2,out) 1.1 = 20.1 beats {in,a,b,b2} = 11 + 8+1 + 1 = 21,
    # lo = 111, co = 100 + 1.3 = 101.3. No overlap: compute 5, a arrives 13, b 19, b2 19-19.1, out -20.1
    po = plans["po"]
    assert po.client == ("in", "a", "b") and po.cut == ("a", "b") and po.cut_bytes == 14
    assert po.total == pytest.approx(20.1)
    assert po.predicted.hidden_upload == 0 and po.predicted.client_makespan == pytest.approx(19)
    assert not po.pipelined
    # opss: same cut; order in,b,a: b done 1 uploads 1-7, a done 5 uploads 7-15; server b2 7-7.1, out 15-16
    op = plans["opss"]
    assert op.client == po.client and op.order == ("in", "b", "a")
    assert op.total == pytest.approx(16) and op.optimal_order
    assert op.predicted.client_makespan == pytest.approx(15)
    assert op.predicted.hidden_upload == pytest.approx(14 - (15 - 5))
    assert op.predicted.server == pytest.approx(1)
    # joint: run b2 too, hidden behind a's upload: in,a,b,b2: a up 4-12, b2 done 11 up 12-13, out 13-14
    jt = plans["joint"]
    assert jt.client == ("in", "a", "b", "b2") and jt.cut == ("a", "b2") and jt.cut_bytes == 9
    assert jt.total == pytest.approx(14)
    assert jt.predicted.hidden_upload == pytest.approx(9 - (13 - 11))
    assert plans["lo"].total == pytest.approx(111)
    assert plans["co"].total == pytest.approx(101.3)
    # the joint optimum is the brute-force optimum over every client set and order
    assert jt.total == pytest.approx(_brute_force_pipelined(g, f, s, UNIT))


def test_plan_single_strategy_and_client_slowdown():
    g, f, s = diamond()
    one = plan(g, f, s, UNIT, "opss")
    assert one.strategy == "opss" and one.total == pytest.approx(16)
    # a 2x slower client: lo doubles, the server terms do not change
    slow = plan_all(g, f, s, UNIT, ["lo", "co"], client_slowdown=2.0)
    assert slow["lo"].total == pytest.approx(222) and slow["lo"].client_slowdown == 2.0
    assert slow["co"].total == pytest.approx(101.3)
    with pytest.raises(OpssError, match="client_slowdown"):
        plan(g, f, s, UNIT, "lo", client_slowdown=0)
    with pytest.raises(OpssError, match="strategy"):
        plan(g, f, s, UNIT, "fastest")


def test_plan_json_round_trip_and_document():
    g, f, s = diamond()
    plans = plan_all(g, f, s, UNIT)
    for p in plans.values():
        back = Plan.from_json(json.loads(json.dumps(p.to_json())))
        assert back == p
    doc = plans_to_json("diamond", UNIT, plans)
    assert doc["link"] == {"c": 0.0, "b": 1.0}
    assert set(doc["strategies"]) == set(STRATEGIES)
    for entry in doc["strategies"].values():
        assert {"client", "cut", "cut_bytes", "order", "predicted", "seconds_to_plan"} <= set(entry)
        assert {"client_compute", "upload", "hidden_upload", "server", "total"} <= set(entry["predicted"])
    assert "total=" in repr(plans["joint"])


def test_missing_profile_entries_and_bad_client_sets_raise():
    g, f, s = diamond()
    bad = dict(f)
    del bad["b2"]
    with pytest.raises(ProfileError, match="b2"):
        plan(g, bad, s, UNIT)
    with pytest.raises(ProfileError, match="seconds"):
        plan(g, f, {**s, "a": -1.0}, UNIT)
    with pytest.raises(PartitionError, match="'b'"):
        plan_for_client_set(g, ["in", "b2"], f, s, UNIT)
    with pytest.raises(PartitionError, match="input"):
        plan_for_client_set(g, ["a"], f, s, UNIT)
    given = plan_for_client_set(g, ["in", "a", "b", "b2"], f, s, UNIT)
    assert given.total == pytest.approx(14)


def test_plan_graph_validation():
    with pytest.raises(InvalidGraphError, match="cycle"):
        PlanGraph(["x", "y", "z"], [("x", "y"), ("y", "z"), ("z", "y")], {"x": 1, "y": 1, "z": 1}, "x", "z")
    with pytest.raises(InvalidGraphError, match="unknown"):
        PlanGraph(["x"], [("x", "q")], {"x": 1}, "x", "x")
    with pytest.raises(InvalidGraphError, match="bytes"):
        PlanGraph(["x", "y"], [("x", "y")], {"x": 1}, "x", "y")
    g, _, _ = diamond()
    assert PlanGraph.from_json(json.loads(json.dumps(g.to_json()))).edges == g.edges


def test_importing_the_planning_core_imports_no_torch():
    code = "import sys, opss.plan, opss.latency, opss.mincut; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------
# random DAGs against brute force


def random_graph(n, seed):
    """A random DAG with one input (vertex 0) and one output (the last vertex)."""
    rng = random.Random(seed)
    ids = [f"v{i}" for i in range(n)]
    edges = set()
    for j in range(1, n):
        edges.add((ids[rng.randrange(0, j)], ids[j]))  # every vertex reachable from the input
        for i in range(j):
            if rng.random() < 0.25:
                edges.add((ids[i], ids[j]))
    for i in range(n - 1):
        if not any(u == ids[i] for u, _ in edges):
            edges.add((ids[i], ids[n - 1]))  # every vertex reaches the output
    nbytes = {v: rng.randint(0, 50) for v in ids}
    f = {v: 0.0 if v == ids[0] else rng.uniform(0, 10) for v in ids}
    s = {v: 0.0 if v == ids[0] else rng.uniform(0, 3) for v in ids}
    return PlanGraph(ids, sorted(edges), nbytes, ids[0], ids[-1]), f, s


def downsets(graph):
    """Every client set: closed under predecessors and holding the input."""
    rest = [v for v in graph.ids if v != graph.input_id]
    for r in range(len(rest) + 1):
        for combo in itertools.combinations(rest, r):
            cset = frozenset((graph.input_id, *combo))
            if all(p in cset for v in cset for p in graph.preds(v)):
                yield cset


def topo_orders(graph, cset):
    order = []

    def rec(done):
        if len(order) == len(cset):
            yield tuple(order)
            return
        for v in graph.ids:
            if v in cset and v not in done and all(p in done for p in graph.preds(v)):
                order.append(v)
                done.add(v)
                yield from rec(done)
                done.discard(v)
                order.pop()

    yield from rec(set())


def _brute_force_pipelined(graph, f, s, link):
    best = float("inf")
    for cset in downsets(graph):
        for order in topo_orders(graph, cset):
            best = min(best, predict(graph, cset, order, f, s, link).total)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_min_cut_equals_brute_force_over_downsets(seed):
    rng = random.Random(seed)
    graph, f, s = random_graph(rng.randint(2, 9), seed)
    link = LinkModel(c=rng.uniform(0, 2), b=rng.uniform(2, 20))
    g = {v: link.g(graph.nbytes[v]) for v in graph.ids}
    reply = link.g(graph.nbytes[graph.output_id])
    best = min(additive_cost(c, graph.ids, graph.edges, f, s, g, graph.output_id, reply) for c in downsets(graph))
    client, cost = min_cut_partition(graph.ids, graph.edges, f, s, g, graph.input_id, graph.output_id, reply)
    assert cost == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert graph.check_client_set(client) == client  # a valid client set


def _scipy_max_flow(problem, g_scale):
    """The max-flow value of ``problem``'s network at ``g_scale`` by scipy's C Dinic (the oracle):
    it takes int32 capacities, so they are scaled to units of 2^-28 of the finite total (each arc
    rounds by at most half a unit) and the infinite ones to 2^29 + 1, more than all of them."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import maximum_flow

    caps = [c * g_scale if is_g else c for (_, _, c), is_g in zip(problem.arcs, problem.g_arc)]
    finite = sum(c for c in caps if c != float("inf"))
    unit = max(finite, 1e-300) / 2.0**28
    ints = np.array([2**29 + 1 if c == float("inf") else round(c / unit) for c in caps], dtype=np.int32)
    rows = np.array([u for u, _, _ in problem.arcs])
    cols = np.array([w for _, w, _ in problem.arcs])
    m = sp.csr_matrix((ints, (rows, cols)), shape=(problem.n_nodes, problem.n_nodes))
    m.sum_duplicates()
    return maximum_flow(m, problem.src, problem.snk, method="dinic").flow_value * unit


@pytest.mark.parametrize("seed", range(6))
def test_python_max_flow_matches_scipy_on_large_dags_at_every_scale_and_warm_start(seed):
    """The pure-Python Dinic (warm-started from earlier scales, in a random order) gives cuts
    whose cost is the max-flow value scipy computes, equal to a cold solve on a fresh problem."""
    from opss.mincut import MinCutProblem

    rng = random.Random(900 + seed)
    graph, f, s = random_graph(rng.randint(100, 160), 900 + seed)
    link = LinkModel(c=rng.uniform(0, 0.5), b=rng.uniform(2, 40))
    g = {v: link.g(graph.nbytes[v]) for v in graph.ids}
    reply = link.g(graph.nbytes[graph.output_id])
    args = (graph.ids, graph.edges, f, s, g, graph.input_id, graph.output_id, reply)
    warm = MinCutProblem(*args)
    scales = [1.0, 0.0, 0.25, 0.5, 0.75, 1.5, 0.6]
    rng.shuffle(scales)
    for scale in scales:
        client, cost = warm.solve(scale)
        cold_client, cold_cost = MinCutProblem(*args).solve(scale)
        graph.check_client_set(client)
        gs = {v: scale * x for v, x in g.items()}
        assert cost == pytest.approx(additive_cost(client, graph.ids, graph.edges, f, s, gs, graph.output_id, reply))
        # min cut = max flow, plus the constant min(f, s) the network subtracted from every vertex
        shift = sum(min(f[v], s[v] + (reply if v == graph.output_id else 0.0)) for v in graph.ids)
        assert cost == pytest.approx(_scipy_max_flow(warm, scale) + shift, rel=1e-5)
        assert client == cold_client and cost == pytest.approx(cold_cost, rel=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_chain_prefix_scan_equals_min_cut(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 12)
    ids = [f"c{i}" for i in range(n)]
    f = {v: rng.uniform(0, 5) for v in ids}
    s = {v: rng.uniform(0, 1) for v in ids}
    g = {v: rng.uniform(0, 8) for v in ids}
    edges = list(zip(ids, ids[1:]))
    reply = rng.uniform(0, 1)
    _, prefix_cost = best_prefix(ids, f, s, g, reply)
    _, cut_cost = min_cut_partition(ids, edges, f, s, g, ids[0], ids[-1], reply)
    assert prefix_cost == pytest.approx(cut_cost)


@pytest.mark.parametrize("seed", range(25))
def test_strategy_ordering_on_random_dags(seed):
    rng = random.Random(100 + seed)
    graph, f, s = random_graph(rng.randint(2, 7), 100 + seed)
    link = LinkModel(c=rng.uniform(0, 1), b=rng.uniform(2, 20))
    plans = plan_all(graph, f, s, link, method="exact")
    eps = 1e-9
    assert plans["joint"].total <= plans["opss"].total + eps
    assert plans["opss"].total <= plans["po"].total + eps
    assert plans["po"].total <= min(plans["lo"].total, plans["co"].total) + eps
    # every plan's prediction is what the latency model says for its client set and order
    for p in plans.values():
        again = predict(graph, p.client, p.order, f, s, link, pipelined=p.pipelined)
        assert again.total == pytest.approx(p.total)
        assert p.cut == cut_of(graph, frozenset(p.client))[0]
    # joint finds the optimum over every client set and order (brute force) on these small DAGs
    brute = _brute_force_pipelined(graph, f, s, link)
    assert brute - eps <= plans["joint"].total <= brute * (1 + 1e-9) + eps


# ---------------------------------------------------------------------------
# the latency model, recomputed independently


def simulate(graph, client, order, f, s, link, pipelined, upload=None):
    """An event simulation written separately from opss.latency: a compute unit, a FIFO link
    and a server that picks the earliest-ready vertex (ties by topological position).
    ``upload(v)`` -> ``(seconds on the sender, seconds until the server can use it after)``
    (default: ``c + bytes / b`` and nothing after)."""
    pos = {v: i for i, v in enumerate(graph.ids)}
    uploads = [v for v in order if any(w not in client for w in graph.succs(v))]
    if upload is None:
        def upload(v):
            return link.c + graph.nbytes[v] / link.b, 0.0
    # client compute
    done_at, clock = {}, 0.0
    for v in order:
        clock += f[v]
        done_at[v] = clock
    # link: FIFO in production order; without a pipeline it starts after all compute
    link_free = 0.0 if pipelined else clock
    arrive = {}
    for v in uploads:
        start = max(done_at[v], link_free)
        send, after = upload(v)
        link_free = start + send
        arrive[v] = link_free + after
    client_end = max(clock, link_free)
    server = [v for v in graph.ids if v not in client]
    if not server:
        return client_end
    finished, t = {}, 0.0
    while len(finished) < len(server):
        ready = []
        for v in server:
            if v in finished or any(p not in client and p not in finished for p in graph.preds(v)):
                continue
            r = max([arrive[p] if p in client else finished[p] for p in graph.preds(v)] or [0.0])
            ready.append((r, pos[v], v))
        r, _, v = min(ready)
        t = max(t, r) + s[v]
        finished[v] = t
    return max(t, client_end) + link.c + graph.nbytes[graph.output_id] / link.b


@pytest.mark.parametrize("seed", range(30))
def test_latency_model_matches_an_independent_simulation(seed):
    rng = random.Random(500 + seed)
    graph, f, s = random_graph(rng.randint(2, 10), 500 + seed)
    link = LinkModel(c=rng.uniform(0, 1), b=rng.uniform(1, 30))
    csets = list(downsets(graph))
    cset = rng.choice(csets)
    order = rng.choice(list(itertools.islice(topo_orders(graph, cset), 50)))
    for pipelined in (True, False):
        got = predict(graph, cset, order, f, s, link, pipelined=pipelined)
        assert got.total == pytest.approx(simulate(graph, cset, order, f, s, link, pipelined))
        assert got.total == pytest.approx(got.client_makespan + got.server + got.reply)
        assert got.client_compute == pytest.approx(sum(f[v] for v in cset))
        if not pipelined:
            assert got.hidden_upload == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_joint_screening_uses_the_latency_model(seed):
    """joint screens candidate client sets with a bitmask shortcut; it must equal predict()."""
    from opss.joint import JointSearch
    from opss.problem import PlanningProblem

    rng = random.Random(700 + seed)
    graph, f, s = random_graph(rng.randint(3, 9), 700 + seed)
    link = LinkModel(c=rng.uniform(0, 1), b=rng.uniform(1, 30))
    problem = PlanningProblem.build(graph, f, s, link)
    search = JointSearch(problem)
    for cset in downsets(graph):
        order = problem.greedy_order(cset)
        want = predict(graph, cset, order, f, s, link).total
        mask = graph.dag.mask(cset)
        assert search.screen(mask) == pytest.approx(want)
        assert frozenset(graph.dag.unmask(mask)) == cset
