"""``opss demo`` end to end (small inputs) and what makes its statements survive a busy machine:
identical plans measured once, speedups from per-round ratios with intervals, steady profiles."""

import io
import statistics

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_small_demo_verifies_every_arm_shares_identical_plans_and_states_its_verdict():
    from opss.lab.demo import run_demo
    out = io.StringIO()
    # at 10 kbit/s every upload costs more than running the rest locally: lo, po, opss and
    # joint (and the raw arms po@raw, joint@raw) are one plan (co, which must upload, is left out)
    res = run_demo("alexnet_parallel", "0.01mbit", runs=3, client_slowdown=10.0, small=True, out=out, err=None,
                   strategies=("lo", "po", "opss", "joint"))
    text = out.getvalue()
    assert all(r["verified"] for r in res.values()), text
    assert set(res) == {"lo", "po", "opss", "joint", "po@raw", "joint@raw"}
    shared = {name: r["same_as"] for name, r in res.items() if "same_as" in r}
    assert shared == {n: "lo" for n in res if n != "lo"}, text
    table = text.split("\nstrategy ", 1)[1].splitlines()
    for name, first in shared.items():
        assert plan_key_of(res, name) == plan_key_of(res, first)
        assert res[name]["runs_s"] == res[first]["runs_s"]
        assert f"(= {first} plan, measured once)" in next(line for line in table
                                                           if line.startswith(name + " "))
    distinct = [n for n in res if n not in shared]
    assert len({plan_key_of(res, n) for n in distinct}) == len(distinct)
    # the verdict line: best of lo/co over joint, per round, recomputed here
    best = res["lo"]["runs_s"]
    ratio = statistics.median(b / j for b, j in zip(best, res["joint"]["runs_s"]))
    line = next(line for line in text.splitlines() if line.startswith("joint speedup"))
    assert f"vs the best of lo/co {ratio:.2f} [" in line, line


def plan_key_of(res, name):
    r = res[name]
    if not r["uploads"]:
        return "local"
    return (r["client_vertices"], tuple(r["cut"]), tuple(sorted(r["codecs"].items())))


def test_shared_plans_maps_each_repeat_to_its_first_arm():
    from opss.lab.harness import plan_key, shared_plans
    from opss.link import link_from_spec
    from opss.plan import STRATEGIES, plan_model

    _, plans = plan_model("alexnet", link_from_spec("3g"), STRATEGIES, client_slowdown=10.0, progress=False)
    same = shared_plans(plans)
    keys = {n: plan_key(p) for n, p in plans.items()}
    for name, first in same.items():  # brute force: the first earlier arm with an equal key
        earlier = [n for n in plans if n != name and keys[n] == keys[name]]
        assert first == earlier[0] and list(plans).index(first) < list(plans).index(name)
    for name in plans:
        if name not in same:
            assert all(keys[n] != keys[name] for n in list(plans)[:list(plans).index(name)])
    assert same  # at 3G alexnet runs locally under several strategies


def test_steady_profile_measures_again_until_a_pass_is_steady():
    from opss import models
    from opss.profile import measure_steady_profile, run_spread

    shape = tuple(models.get_spec("alexnet").test_input_shape)
    heard = []
    never = measure_steady_profile("alexnet", passes=3, max_spread=0.5, say=heard.append, repeats=3, warmup=1,
                                   input_shape=shape, progress=False)
    assert never.meta["passes"] == 3 and never.meta["steady"] is False
    assert len(heard) == 2 and all("measuring again" in h for h in heard)
    assert never.meta["spread"] == pytest.approx(run_spread(never)) and run_spread(never) >= 1.0
    heard.clear()
    once = measure_steady_profile("alexnet", passes=3, max_spread=float("inf"), say=heard.append, repeats=3,
                                  warmup=1, input_shape=shape, progress=False)
    assert once.meta["passes"] == 1 and once.meta["steady"] is True and not heard
    with pytest.raises(Exception, match="passes"):
        measure_steady_profile("alexnet", passes=0)
