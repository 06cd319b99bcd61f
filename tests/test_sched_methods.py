"""Every scheduling method against brute force, classic results and the paper's examples."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opss.errors import BudgetExceededError, InvalidGraphError
from opss.sched import (
    METHODS,
    SchedGraph,
    auto_schedule,
    beam_schedule,
    dnn_instance,
    exact_schedule,
    glue_reduce,
    johnson_order,
    lower_bound,
    makespan,
    pathwise_schedule,
    random_dag,
    random_tree,
    schedule,
    topo_schedule,
    tree_counterexample,
    tree_merge_schedule,
    tree_to_paths,
    validate_order,
)
from test_sched_oracles import all_topological_orders, brute_force_optimum, close, graphs, simulate


def _check_result(gr, res, opt):
    """A result is a valid order, its makespan is Proposition 1's, and its claims are true."""
    order = validate_order(gr, res.order)
    assert res.makespan == makespan(gr, order)
    assert close(res.makespan, simulate(gr, order))
    assert res.makespan >= opt - 1e-9 * max(1.0, opt)
    assert res.lower_bound <= res.makespan
    assert res.seconds >= 0
    if res.optimal:
        assert close(res.makespan, opt)


@settings(max_examples=150, deadline=None)
@given(graphs(max_n=8))
def test_every_method_on_random_dags_against_brute_force(gr):
    opt = brute_force_optimum(gr)
    lb = lower_bound(gr)
    assert lb <= opt + 1e-9 * max(1.0, opt)
    exact = exact_schedule(gr)
    assert exact.optimal and close(exact.makespan, opt)
    for method in METHODS:
        if method in ("tree", "pathwise") and not gr.is_tree():
            with pytest.raises(InvalidGraphError, match="needs a tree"):
                schedule(gr, method)
            continue
        _check_result(gr, schedule(gr, method), opt)
    wide = beam_schedule(gr, width=10**6)  # never prunes: the exact DP
    assert wide.optimal and close(wide.makespan, opt)
    narrow = beam_schedule(gr, width=1)
    _check_result(gr, narrow, opt)
    auto = auto_schedule(gr)
    assert auto.method == "auto" and auto.optimal and close(auto.makespan, opt)


@settings(max_examples=100, deadline=None)
@given(graphs(max_n=8, tree=True))
def test_paper_tree_methods_on_random_forests(gr):
    opt = brute_force_optimum(gr)
    for res in (tree_merge_schedule(gr), pathwise_schedule(gr), topo_schedule(gr)):
        _check_result(gr, res, opt)


@settings(max_examples=100, deadline=None)
@given(graphs(max_n=8))
def test_glue_reduction_preserves_the_optimum(gr):
    red = glue_reduce(gr)
    assert len(red.graph) <= len(gr)
    covered = [x for grp in red.members.values() for x in grp] + list(red.tail)
    assert sorted(covered) == sorted(gr.ids)  # every vertex exactly once
    orders = all_topological_orders(red.graph)
    best = min(makespan(gr, red.expand(o)) for o in orders)  # makespan() validates each expansion
    assert close(best, brute_force_optimum(gr))
    # a glued vertex has g == 0 and runs right before the vertex it was glued to
    for grp in red.members.values():
        assert all(gr.g[v] == 0 for v in grp[:-1])
    assert all(gr.g[v] == 0 for v in red.tail)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=6))
def test_johnson_is_optimal_for_independent_jobs(jobs):
    gr = SchedGraph([(f"j{k}", f, g) for k, (f, g) in enumerate(jobs)])
    best = min(makespan(gr, p) for p in itertools.permutations(gr.ids))
    order = johnson_order((f"j{k}", f, g) for k, (f, g) in enumerate(jobs))
    assert makespan(gr, order) == best
    assert close(exact_schedule(gr).makespan, best)


def test_johnson_order_rule_and_ties():
    jobs = [("a", 3, 3), ("b", 1, 5), ("c", 2, 9), ("d", 4, 1), ("e", 5, 2), ("f", 1, 7), ("g", 6, 2)]
    # S1 = {f < g}: b(1) f(1) c(2) by ascending f, ties in input order; S2 = {f >= g}: a(3) e(2) g(2) d(1)
    assert johnson_order(jobs) == ["b", "f", "c", "a", "e", "g", "d"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=12))
def test_chains_have_one_order(costs):
    ids = [f"c{k}" for k in range(len(costs))]
    gr = SchedGraph([(v, f, g) for v, (f, g) in zip(ids, costs)], list(zip(ids, ids[1:])))
    assert gr.is_chain()
    for method in METHODS:
        res = schedule(gr, method)
        assert list(res.order) == ids and res.makespan == makespan(gr, ids)
        if method in ("exact", "auto"):
            assert res.optimal


def test_counterexample_to_theorem_1():
    gr = tree_counterexample()
    tree = tree_merge_schedule(gr)
    assert tree.order == ("a", "e", "b", "c", "d") and tree.makespan == 30.0
    assert not tree.optimal  # never claimed: 30 > the proven optimum
    exact = exact_schedule(gr)
    assert exact.optimal and math.isclose(exact.makespan, 28.001)
    assert math.isclose(makespan(gr, ["a", "b", "d", "c", "e"]), 28.001)
    assert math.isclose(brute_force_optimum(gr), 28.001)
    assert exact.lower_bound <= exact.makespan


def test_tree_to_paths_duplicates_shared_prefixes():
    # r -> a -> {b, c}; r -> d: a has out-degree 2 and is duplicated (Alg. 2 lines 4-7)
    gr = SchedGraph(
        [("r", 1, 0), ("a", 2, 0), ("b", 3, 4), ("c", 1, 6), ("d", 5, 1)],
        [("r", "a"), ("a", "b"), ("a", "c"), ("r", "d")],
    )
    paths = tree_to_paths(gr)
    assert [(p.vertices, p.f, p.g) for p in paths] == [(("d",), 5, 1), (("a", "b"), 5, 4), (("a", "c"), 3, 6)]
    # Johnson over paths: S1 = {(a,c) f3<g6}; S2 = {(a,b) g4, (d) g1} by descending g; a runs once
    assert pathwise_schedule(gr).order == ("r", "a", "c", "b", "d")


def test_topo_schedule_by_hand():
    gr = SchedGraph(
        [("s", 1, 0), ("x", 2, 5), ("y", 3, 1), ("z", 1, 2), ("w", 4, 4)],
        [("s", "x"), ("s", "y"), ("x", "z"), ("y", "z"), ("s", "w")],
    )
    # peel {z, w}: z (1<2) then w (4>=4); peel {x, y}: x (2<5) then y; peel {s}
    assert topo_schedule(gr).order == ("s", "x", "y", "z", "w")


def test_tree_merge_groups_parent_with_head():
    # r's children: leaf p (f=1, g=1: computation-heavy) and q -> {u (f=1,g=5), v (f=2,g=3)}.
    # q's list: u, v (both communication-heavy, ascending f); group q with u: (1+1, 0+5) = (2, 5).
    # merge at r: (2,5) is communication-heavy, p is not, so q u first, then v (f=2 < g=3), then p.
    gr = SchedGraph(
        [("r", 1, 0), ("p", 1, 1), ("q", 1, 0), ("u", 1, 5), ("v", 2, 3)],
        [("r", "p"), ("r", "q"), ("q", "u"), ("q", "v")],
    )
    assert tree_merge_schedule(gr).order == ("r", "q", "u", "v", "p")


def test_forest_gets_a_virtual_root_that_is_not_in_the_output():
    gr = SchedGraph([("a", 1, 4), ("b", 3, 1), ("c", 1, 2)], [("b", "c")])
    for fn in (tree_merge_schedule, pathwise_schedule):
        res = fn(gr)
        assert sorted(res.order) == ["a", "b", "c"]
        validate_order(gr, res.order)


def test_tree_methods_reject_non_trees():
    gr = SchedGraph([(v, 1, 1) for v in "abc"], [("a", "c"), ("b", "c")])
    for fn in (tree_merge_schedule, pathwise_schedule, tree_to_paths):
        with pytest.raises(InvalidGraphError, match=r"needs a tree: node 'c' has 2 predecessors"):
            fn(gr)


def test_budget_exceeded_raises_and_auto_falls_back():
    gr = SchedGraph([(f"v{k}", 1 + k % 3, 2 + k % 5) for k in range(20)])  # 2^20 downsets
    with pytest.raises(BudgetExceededError, match="more than 1000 states"):
        exact_schedule(gr, max_states=1000)
    res = auto_schedule(gr, max_states=1000)
    validate_order(gr, res.order)
    # independent jobs: Johnson is optimal, the bound (a) is tight, so auto can prove it
    assert res.optimal and res.makespan == makespan(gr, johnson_order((v, gr.f[v], gr.g[v]) for v in gr.ids))


def test_exact_on_generated_suites_matches_brute_force():
    for seed in range(6):
        for gr in (random_tree(7, seed), random_dag(7, seed)):
            assert close(exact_schedule(gr).makespan, brute_force_optimum(gr))


def test_exact_on_dnn_shaped_graphs_is_proven_and_beats_heuristics():
    for seed in range(10):
        layers, blocks = dnn_instance(seed), dnn_instance(seed, granularity="block")
        assert blocks.is_tree() and math.isclose(layers.total_f(), blocks.total_f())
        for gr in (layers, blocks):
            exact = exact_schedule(gr)
            assert exact.optimal
            for method in ("tree", "pathwise", "topo", "beam"):
                if method in ("tree", "pathwise") and not gr.is_tree():
                    continue
                assert schedule(gr, method).makespan >= exact.makespan - 1e-12
        # a module without a cut is a block: the optimum is the same at both granularities
        assert math.isclose(exact_schedule(layers).makespan, exact_schedule(blocks).makespan)


def test_unknown_method_and_empty_graph():
    with pytest.raises(ValueError, match="unknown method"):
        schedule(SchedGraph([]), "magic")
    for method in METHODS:
        res = schedule(SchedGraph([]), method)
        assert res.order == () and res.makespan == 0.0


@settings(max_examples=80, deadline=None)
@given(graphs(max_n=8))
def test_downset_count_lower_bound_is_a_lower_bound(gr):
    from opss.sched import downset_count_lower_bound

    ids = gr.ids
    count = 0
    for bits in range(1 << len(ids)):
        members = {v for k, v in enumerate(ids) if bits >> k & 1}
        count += all(set(gr.preds(v)) <= members for v in members)
    assert downset_count_lower_bound(gr, cap=10**9) <= count
    assert downset_count_lower_bound(gr, cap=1) <= 2


def test_exact_fails_fast_when_the_layers_alone_exceed_the_budget():
    wide = SchedGraph([(f"v{k}", 1, 2) for k in range(200)])  # 2^200 downsets
    with pytest.raises(BudgetExceededError, match="more than 100000 states"):
        exact_schedule(wide)


def test_beam_on_large_graphs_unpruned_is_exact_and_pruned_is_valid():
    # two independent chains of 35 uploading vertices: 70 vertices survive the glue
    # reduction (the large-graph beam path) but there are only 36^2 downsets.
    a = [(f"a{k}", 1 + k % 3, 1 + k % 4) for k in range(35)]
    b = [(f"b{k}", 2 + k % 2, 1 + k % 5) for k in range(35)]
    edges = [(f"a{k}", f"a{k + 1}") for k in range(34)] + [(f"b{k}", f"b{k + 1}") for k in range(34)]
    gr = SchedGraph(a + b, edges)
    assert len(glue_reduce(gr).graph) == 70
    exact = exact_schedule(gr)
    wide = beam_schedule(gr, width=10**6)
    assert wide.optimal and wide.makespan == exact.makespan
    for gr in (gr, random_dag(300, seed=5, window=20), random_tree(300, seed=5)):
        res = beam_schedule(gr, width=3)
        validate_order(gr, res.order)
        assert res.makespan == makespan(gr, res.order) >= res.lower_bound
