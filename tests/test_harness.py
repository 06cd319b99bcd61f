"""The shared measuring loop: identical plans are run once and their runs shared."""

import pytest

from client.runtime import InProcessTransport
from opss.client.session import ClientConfig, ClientSession
from opss.lab.harness import measure_strategies, same_plan_groups
from opss.plan import STRATEGIES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def session_3g():
    """resnet18 (small input) over a 3G uplink: lo, po, opss and joint all run everything locally."""
    cfg = ClientConfig(model="resnet18", small=True, strategy="lo", also_plan=STRATEGIES[1:], link="3g",
                       progress=False)
    s = ClientSession(cfg, transport=InProcessTransport.for_model("resnet18", small=True), out=None, err=None)
    yield s
    s.close()


def test_identical_plans_are_grouped_by_client_set_order_cut_and_codecs(session_3g):
    plans = session_3g.plans
    groups = same_plan_groups({name: (session_3g, name) for name in STRATEGIES})
    for name in STRATEGIES:
        first = next(o for o in STRATEGIES if (set(plans[o].client), plans[o].order, plans[o].cut, plans[o].codecs)
                     == (set(plans[name].client), plans[name].order, plans[name].cut, plans[name].codecs)
                     and (not plans[name].cut_bytes or plans[o].pipelined == plans[name].pipelined
                          or (len(plans[o].cut) == 1 and plans[o].order[-1] == plans[o].cut[0])))
        assert groups[name] == first, (name, groups)
    assert groups["co"] == "co" and groups["lo"] == "lo"
    assert plans["po"].cut_bytes == 0 and groups["po"] == "lo", "at 3G the small resnet18 should run locally"


def test_shared_arms_get_the_first_arms_runs_and_are_not_run_again(session_3g):
    seen = []
    res = measure_strategies(session_3g, STRATEGIES, 2, share_identical=True,
                             on_run=lambda name, rep: seen.append((name, rep)))
    groups = same_plan_groups({name: (session_3g, name) for name in STRATEGIES})
    # each strategy hears every run, but only one distinct report per group and round exists
    assert sorted(n for n, _ in seen) == sorted(list(STRATEGIES) * 2)
    assert len({id(rep) for _, rep in seen}) == 2 * len(set(groups.values()))
    for name in STRATEGIES:
        reps = [rep for n, rep in seen if n == name]
        first = [rep for n, rep in seen if n == groups[name]]
        assert all(a is b for a, b in zip(reps, first))
        assert res[name]["runs_s"] == res[groups[name]]["runs_s"] and res[name]["verified"]
        assert res[name].get("same_plan_as", name) == groups[name]
    # without sharing every arm runs on its own
    seen.clear()
    apart = measure_strategies(session_3g, STRATEGIES, 1, on_run=lambda name, rep: seen.append(rep))
    assert len({id(rep) for rep in seen}) == len(STRATEGIES) and "same_plan_as" not in apart["po"]


def test_overlap_separates_plans_only_when_client_work_follows_an_upload():
    import dataclasses
    from types import SimpleNamespace

    from opss.latency import PlanGraph
    from opss.link import LinkModel
    from opss.plan import plan_all

    # in -> a -> b -> out: a's 100 B are cheap to send, b is slow on the client: po cuts after a
    g = PlanGraph(["in", "a", "b", "out"], [("in", "a"), ("a", "b"), ("b", "out")],
                  {"in": 1000, "a": 100, "b": 500, "out": 10}, "in", "out")
    plans = plan_all(g, {"in": 0, "a": 1, "b": 2, "out": 1}, {"in": 0, "a": 0.2, "b": 0.2, "out": 0.1},
                     LinkModel(0.0, 1000.0))
    po, opss = plans["po"], plans["opss"]
    assert po.cut == ("a",) and po.order == opss.order == ("in", "a") and not po.pipelined and opss.pipelined
    sess = SimpleNamespace(plans=plans)
    # one upload after the client's last vertex: overlap or not, the same run
    assert same_plan_groups({"po": (sess, "po"), "opss": (sess, "opss")}) == {"po": "po", "opss": "po"}
    # the same client set and order, but an upload (in) before client work (a): overlap matters
    two = {"po": dataclasses.replace(po, cut=("in", "a")), "opss": dataclasses.replace(opss, cut=("in", "a"))}
    sess2 = SimpleNamespace(plans=two)
    assert same_plan_groups({"po": (sess2, "po"), "opss": (sess2, "opss")}) == {"po": "po", "opss": "opss"}
    # another session never shares, even with the same plans
    other = SimpleNamespace(plans=plans)
    assert same_plan_groups({"po": (sess, "po"), "po@x": (other, "po")})["po@x"] == "po@x"
