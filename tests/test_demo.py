"""``opss demo`` end to end (small inputs) and what makes its statements survive a busy machine:
identical plans measured once, speedups from per-round ratios with intervals, steady profiles."""

import io
import statistics

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_small_demo_verifies_every_arm_shares_identical_plans_and_states_its_verdict():
    from opss.lab.demo import run_demo
    out = io.StringIO()
    # at 10 kbit/s every upload (>= 0.5 s) costs more than the small model locally (~20 ms): lo, po, opss and
    # joint (and the raw arms po@raw, joint@raw) are one plan (co, which must upload, is left out)
    res = run_demo("alexnet_parallel", "0.01mbit", runs=3, client_slowdown=1.0, small=True, out=out, err=None,
                   strategies=("lo", "po", "opss", "joint"))
    text = out.getvalue()
    assert all(r["verified"] for r in res.values()), text
    assert set(res) == {"lo", "po", "opss", "joint", "po@raw", "joint@raw"}
    shared = {name: r["same_plan_as"] for name, r in res.items() if "same_plan_as" in r}
    # across the session and its raw variant (same server, model and input): one local plan
    assert shared == {"po": "lo", "opss": "lo", "joint": "lo", "po@raw": "lo", "joint@raw": "lo"}, text
    table = text.split("\nstrategy ", 1)[1].splitlines()
    for name, first in shared.items():
        assert plan_key_of(res, name) == plan_key_of(res, first)
        assert res[name]["runs_s"] == res[first]["runs_s"]
        assert f"(= {first} plan, measured once)" in next(line for line in table
                                                           if line.startswith(name + " "))
    distinct = [n for n in res if n not in shared]  # no two measured arms alike
    assert len({plan_key_of(res, n) for n in distinct}) == len(distinct)
    # the verdict line, recomputed here: best of lo/co over joint and po@raw over joint, one plan
    # measured once: exactly 1
    line = next(line for line in text.splitlines() if line.startswith("joint speedup"))
    assert "vs the best of lo/co 1.00x [1.00, 1.00] n.s." in line, line
    ratio = statistics.median(res["po@raw"]["runs_s"]) / statistics.median(res["joint"]["runs_s"])
    assert ratio == 1.0 and "vs the paper's po@raw 1.00x [1.00, 1.00] n.s." in line, line


def plan_key_of(res, name):
    r = res[name]
    if not r["uploads"]:
        return "local"
    return (r["client_vertices"], tuple(r["cut"]), tuple(sorted(r["codecs"].items())))


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
