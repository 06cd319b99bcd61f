"""SchedGraph validation and JSON, makespan (Proposition 1) and validate_order."""

import math

import pytest
from hypothesis import given, settings

from opss.errors import InfeasibleOrderError, InvalidGraphError
from opss.sched import SchedGraph, SchedNode, completion_times, makespan, validate_order
from test_sched_oracles import all_topological_orders, graphs, simulate


def test_accessors_and_insertion_order():
    gr = SchedGraph([("b", 1, 0), SchedNode("a", 2.5, 3)], [("b", "a")])
    assert gr.ids == ("b", "a")
    assert gr.f["a"] == 2.5 and gr.g["a"] == 3.0
    assert gr.preds("a") == ("b",) and gr.succs("b") == ("a",) and gr.succs("a") == ()
    assert gr.is_tree() and gr.is_chain()
    assert gr.topological_order() == ("b", "a")
    assert gr.sources() == ("b",) and gr.sinks() == ("a",)


@pytest.mark.parametrize(
    "nodes, edges, words",
    [
        ([("a", 1, 0), ("b", 1, 0), ("c", 1, 0)], [("a", "b"), ("b", "c"), ("c", "b")], ["cycle", "'b'", "'c'"]),
        ([("a", 1, 0)], [("a", "a")], ["cycle", "'a'"]),
        ([("a", 1, 0)], [("a", "zz")], ["unknown node", "'zz'"]),
        ([("a", 1, 0), ("a", 2, 0)], [], ["duplicate", "'a'"]),
        ([("a", -1, 0)], [], ["'a'", "f", "-1"]),
        ([("a", 1, -0.5)], [], ["'a'", "g", "-0.5"]),
        ([("a", math.nan, 0)], [], ["'a'", "nan"]),
        ([("a", 1, math.inf)], [], ["'a'", "inf"]),
        ([("a", True, 0)], [], ["'a'", "bool"]),
        ([("a", "1", 0)], [], ["'a'", "str"]),
        ([("", 1, 0)], [], ["id"]),
        ([(3, 1, 0)], [], ["id", "3"]),
    ],
)
def test_invalid_graphs_name_the_culprit(nodes, edges, words):
    with pytest.raises(InvalidGraphError) as err:
        SchedGraph(nodes, edges)
    for w in words:
        assert w in str(err.value)


def test_cycle_message_lists_a_real_cycle():
    edges = [("s", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "t")]
    with pytest.raises(InvalidGraphError) as err:
        SchedGraph([(v, 1, 0) for v in "sabct"], edges)
    cycle = [x.strip("' ") for x in str(err.value).split(":", 1)[1].split(";")[0].split("->")]
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert all((u, v) in edges for u, v in zip(cycle, cycle[1:]))


def test_duplicate_edges_are_deduplicated():
    gr = SchedGraph([("a", 1, 0), ("b", 1, 1)], [("a", "b"), ("a", "b")])
    assert gr.edges == (("a", "b"),) and gr.preds("b") == ("a",)


def test_immutable_and_json_roundtrip():
    gr = SchedGraph([("a", 1, 0), ("b", 2, 3), ("c", 0.5, 1)], [("a", "b"), ("a", "c")])
    with pytest.raises(AttributeError):
        gr._ids = ()
    assert SchedGraph.from_json(gr.to_json()) == gr
    assert gr.to_json()["edges"] == [["a", "b"], ["a", "c"]]


@pytest.mark.parametrize(
    "data, word",
    [
        ([], "object"),
        ({"edges": []}, "nodes"),
        ({"nodes": {}}, "list"),
        ({"nodes": [{"id": "a", "f": 1}]}, "nodes[0]"),
        ({"nodes": [{"id": "a", "f": 1, "g": 0, "x": 1}]}, "x"),
        ({"nodes": [{"id": "a", "f": 1, "g": 0}], "edges": [["a"]]}, "edges[0]"),
        ({"nodes": [], "extra": 1}, "extra"),
    ],
)
def test_from_json_rejects_malformed(data, word):
    with pytest.raises(InvalidGraphError) as err:
        SchedGraph.from_json(data)
    assert word in str(err.value)


def test_is_tree_and_is_chain():
    diamond = SchedGraph([(v, 1, 0) for v in "abcd"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert not diamond.is_tree() and not diamond.is_chain()
    forest = SchedGraph([(v, 1, 0) for v in "abc"], [("a", "b")])
    assert forest.is_tree() and not forest.is_chain()


def test_makespan_by_hand():
    # f: a=2 b=1 c=3; g: a=0 b=4 c=1.  t1 = 2, t2 = max(3, 2) + 4 = 7, t3 = max(6, 7) + 1 = 8
    gr = SchedGraph([("a", 2, 0), ("b", 1, 4), ("c", 3, 1)], [("a", "b"), ("a", "c")])
    assert completion_times(gr, ["a", "b", "c"]) == [2.0, 7.0, 8.0]
    assert makespan(gr, ["a", "b", "c"]) == 8.0
    assert makespan(gr, ["a", "c", "b"]) == 10.0  # t = 2, 6, max(6, 6) + 4
    assert makespan(SchedGraph([]), []) == 0.0


@settings(max_examples=80, deadline=None)
@given(graphs(max_n=7))
def test_makespan_matches_event_simulation(gr):
    for order in all_topological_orders(gr)[:50]:
        assert math.isclose(makespan(gr, order), simulate(gr, order), rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize(
    "order, word",
    [
        (["b", "a", "c"], "predecessor 'a'"),
        (["a", "b"], "missing"),
        (["a", "b", "c", "c"], "twice"),
        (["a", "b", "zz"], "'zz'"),
    ],
)
def test_validate_order_names_the_node(order, word):
    gr = SchedGraph([("a", 1, 0), ("b", 1, 1), ("c", 1, 1)], [("a", "b"), ("a", "c")])
    with pytest.raises(InfeasibleOrderError) as err:
        validate_order(gr, order)
    assert word in str(err.value)
    with pytest.raises(InfeasibleOrderError):
        makespan(gr, order)


def test_package_docstring_example_runs():
    import doctest

    import opss.sched

    assert doctest.testmod(opss.sched).failed == 0


from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["id", "f", "g", "nodes", "edges", "x"]), inner, max_size=4),
    max_leaves=20,
)
_node = st.fixed_dictionaries({"id": st.text(max_size=2) | st.integers(0, 3), "f": _json, "g": _json})
_instance = st.fixed_dictionaries(
    {"nodes": st.lists(_node, max_size=4)},
    optional={"edges": st.lists(st.lists(st.text(max_size=2) | _json, min_size=0, max_size=3), max_size=4)},
)


@settings(max_examples=300, deadline=None)
@given(_json | _instance)
def test_from_json_raises_only_invalid_graph_error(data):
    """Whatever JSON an outside tool sends, the CLI sees a graph or one InvalidGraphError."""
    try:
        gr = SchedGraph.from_json(data)
    except InvalidGraphError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert SchedGraph.from_json(gr.to_json()) == gr


def test_huge_integer_time_is_rejected():
    with pytest.raises(InvalidGraphError, match="finite"):
        SchedGraph.from_json({"nodes": [{"id": "a", "f": 10**400, "g": 0}]})
