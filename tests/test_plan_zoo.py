"""Planners on every zoo model with the committed profiles: the strategy ordering holds and
every prediction is what the latency model recomputes for the plan's client set and order."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from opss import models  # noqa: E402
from opss.cli import main  # noqa: E402
from opss.latency import PlanGraph, predict  # noqa: E402
from opss.link import PRESETS, link_from_spec  # noqa: E402
from opss.plan import STRATEGIES, plan_all  # noqa: E402
from opss.profile import capture_model, load_or_build_profile  # noqa: E402

EPS = 1e-12


@pytest.fixture(scope="module", params=models.names())
def zoo(request):
    name = request.param
    lg = capture_model(name, "layer")
    prof = load_or_build_profile(name, role="client", graph=lg, build_missing=False)
    graph = PlanGraph.from_layer_graph(lg)
    return name, graph, prof.costs_for(graph)


@pytest.mark.parametrize("slowdown", [1.0, 4.0])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_joint_le_opss_le_po_on_every_zoo_model(zoo, preset, slowdown):
    name, graph, f = zoo
    link = link_from_spec(preset, rtt="2ms")
    plans = plan_all(graph, f, f, link, STRATEGIES, client_slowdown=slowdown)
    t = {k: p.total for k, p in plans.items()}
    assert t["joint"] <= t["opss"] * (1 + EPS), (name, preset, t)
    assert t["opss"] <= t["po"] * (1 + EPS), (name, preset, t)
    assert t["po"] <= min(t["lo"], t["co"]) * (1 + EPS), (name, preset, t)
    fc = {v: x * slowdown for v, x in f.items()}
    for p in plans.values():
        again = predict(graph, p.client, p.order, fc, f, link, pipelined=p.pipelined)
        assert again.total == pytest.approx(p.total, rel=1e-9)
    # local only is the whole model on the client, cloud only uploads the input
    assert plans["lo"].total == pytest.approx(sum(fc.values()))
    assert plans["co"].cut == (graph.input_id,) and plans["co"].cut_bytes == graph.nbytes[graph.input_id]


def test_cli_plan_json_document(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = main(["plan", "--model", "alexnet_parallel", "--link", "4g", "--rtt", "5ms", "--client-slowdown", "4",
               "--json", str(out), "--no-build"])
    assert rc == 0
    text = capsys.readouterr().out
    for k in STRATEGIES:
        assert f"\n{k} " in text
    doc = json.loads(out.read_text())
    assert doc["model"] == "alexnet_parallel"
    assert doc["link"]["c"] == pytest.approx(0.005) and doc["link"]["b"] == pytest.approx(5.85e6 / 8)
    assert set(doc["strategies"]) == set(STRATEGIES)
    for entry in doc["strategies"].values():
        for key in ("client", "cut", "cut_bytes", "order", "predicted", "seconds_to_plan"):
            assert key in entry
        for key in ("client_compute", "upload", "hidden_upload", "server", "total"):
            assert key in entry["predicted"]
        assert sorted(entry["order"]) == sorted(entry["client"])
        # uploads: the cut tensors that cross the link, their bytes summed in cut_bytes
        assert set(entry["uploads"]) <= set(entry["cut"]) and bool(entry["uploads"]) == bool(entry["cut_bytes"])
    assert doc["strategies"]["lo"]["uploads"] == []
    assert doc["strategies"]["co"]["uploads"] == doc["strategies"]["co"]["cut"] == [doc["strategies"]["co"]["order"][0]]
    assert doc["client_slowdown"] == 4.0


def test_cli_plan_errors(capsys, tmp_path):
    assert main(["plan", "--model", "alexnet", "--link", "5furlongs"]) == 2
    assert "rate" in capsys.readouterr().err
    assert main(["plan", "--model", "nope", "--link", "4g"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["plan", "--model", "alexnet", "--link", "4g", "--no-build", "--profiles-dir", str(tmp_path)]) == 2
    assert "no profile" in capsys.readouterr().err


def _block_downsets(graph):
    out = []
    ids = graph.ids

    def rec(i, cur):
        if i == len(ids):
            out.append(cur)
            return
        v = ids[i]
        if v != graph.input_id:
            rec(i + 1, cur)
        if all(p in cur for p in graph.preds(v)):
            rec(i + 1, cur | {v})

    rec(0, frozenset())
    return [c for c in out if graph.input_id in c]


@pytest.mark.parametrize("name, preset, slowdown", [
    ("multistream", "wifi", 4.0), ("multistream", "4g", 10.0),
    ("alexnet_parallel", "wifi", 10.0), ("alexnet_parallel", "4g", 4.0),
])
def test_joint_matches_brute_force_over_block_partitions(name, preset, slowdown):
    """The oracle: every client set of the block graph, each with its best order (exact), against joint."""
    from opss.plan import plan_for_client_set

    bg = PlanGraph.from_layer_graph(capture_model(name, "block"))
    prof = load_or_build_profile(name, role="client", build_missing=False)
    f = prof.costs_for(bg)
    link = link_from_spec(preset)
    plans = plan_all(bg, f, f, link, STRATEGIES, client_slowdown=slowdown)
    sets = _block_downsets(bg)
    assert len(sets) > 10
    brute = min(plan_for_client_set(bg, c, f, f, link, client_slowdown=slowdown, method="exact").total
                for c in sets)
    assert plans["joint"].total >= brute * (1 - 1e-9)
    # joint is a search, not a proof: within 2 % of the best partition on these instances
    assert plans["joint"].total <= brute * 1.02, (plans["joint"].total, brute, plans["opss"].total)


def test_cli_plan_json_to_stdout_is_pure_json(capsys):
    assert main(["plan", "--model", "alexnet", "--link", "wifi", "--strategy", "po", "--json", "-", "--no-build"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert list(doc["strategies"]) == ["po"]
    assert "strategy" in out.err  # the table went to stderr
