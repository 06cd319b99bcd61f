"""Planning with codecs against an independent brute force: per tensor the cheapest allowed codec,
encode on the sender (g' = enc + c + wire / b), decode before the server's readers; lossy codecs only
within the error budget; the image file form only when there is a file."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys

import pytest

from opss.link import LinkModel
from opss.plan import plan_all
from opss.wirecosts import CodecCost, CodecTable
from test_plan import downsets, random_graph, simulate

CODECS = ("raw", "zstd", "lz4", "fp16", "int8")


def random_table(graph, rng):
    costs = {}
    for v in graph.ids:
        costs[v] = {
            "zstd": CodecCost(rng.uniform(0.2, 1.1), rng.uniform(0, 0.5), rng.uniform(0, 0.5)),
            "lz4": CodecCost(rng.uniform(0.3, 1.0), rng.uniform(0, 0.2), rng.uniform(0, 0.2)),
            "fp16": CodecCost(0.5, rng.uniform(0, 0.1), rng.uniform(0, 0.1), error=rng.uniform(0, 0.02)),
            "int8": CodecCost(0.25, rng.uniform(0, 0.1), rng.uniform(0, 0.1), error=rng.uniform(0, 0.05)),
        }
    return CodecTable("random", "test", costs)


def wire_choice(table, v, nbytes, link, allowed, max_error, slowdown):
    """The cheapest codec for one tensor, written out from the table (the test's own rule)."""
    exact = {"raw", "zstd", "lz4"}
    best = ("raw", nbytes, 0.0, 0.0)
    best_t = link.c + nbytes / link.b
    for name, c in table.costs[v].items():
        if name not in allowed:
            continue
        if name not in exact and (max_error is None or c.error is None or c.error > max_error):
            continue
        wire = math.ceil(c.ratio * nbytes)
        t = c.encode_s * slowdown + link.c + wire / link.b + c.decode_s
        if t < best_t - 1e-15:
            best, best_t = (name, wire, c.encode_s * slowdown, c.decode_s), t
    return best


def brute_force(graph, f, s, link, table, allowed, max_error, slowdown=1.0):
    """Least total over every client set and every topological order, by an event simulation."""
    best = float("inf")
    choice = {v: wire_choice(table, v, graph.nbytes[v], link, allowed, max_error, slowdown) for v in graph.ids}
    for cset in downsets(graph):
        members = [v for v in graph.ids if v in cset]
        for order in itertools.permutations(members):
            if any(order.index(p) > order.index(v) for v in order for p in graph.preds(v)):
                continue
            best = min(best, simulate(graph, cset, order, f, s, link, True,
                                      upload=lambda v: (choice[v][2] + link.c + choice[v][1] / link.b, choice[v][3])))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_joint_with_codecs_is_the_brute_force_optimum(seed):
    rng = random.Random(900 + seed)
    graph, f, s = random_graph(rng.randint(3, 7), 900 + seed)
    link = LinkModel(c=rng.uniform(0, 0.5), b=rng.uniform(1, 20))
    table = random_table(graph, rng)
    max_error = rng.choice([None, 0.01, 0.03])
    wire = {"codec_table": table, "codecs": CODECS, "max_error": max_error}
    plans = plan_all(graph, f, s, link, wire=wire)
    want = brute_force(graph, f, s, link, table, CODECS, max_error)
    assert plans["joint"].total == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert plans["joint"].total <= plans["opss"].total + 1e-9 <= plans["po"].total + 2e-9
    # the codecs the plan names are the ones the rule picks, and lossy ones respect the budget
    for w in plans["joint"].wire:
        assert w.codec == wire_choice(table, w.tensor, w.bytes, link, CODECS, max_error, 1.0)[0]
        if w.codec in ("fp16", "int8"):
            assert max_error is not None and table.costs[w.tensor][w.codec].error <= max_error
    # raw only is the plan without any table
    raw = plan_all(graph, f, s, link, wire={"codec_table": table, "codecs": ("raw",)})
    bare = plan_all(graph, f, s, link)
    assert {k: p.total for k, p in raw.items()} == {k: p.total for k, p in bare.items()}
    assert all(w.codec == "raw" for p in raw.values() for w in p.wire)


def test_file_form_only_with_a_file_and_chosen_for_co_when_smaller():
    rng = random.Random(5)
    graph, f, s = random_graph(5, 5)
    nbytes = dict(graph.nbytes)
    table = random_table(graph, rng)
    costs = {v: dict(c) for v, c in table.costs.items()}
    costs[graph.input_id]["file"] = CodecCost(0.05, 0.0, 0.01)
    table = CodecTable("random", "test", costs)
    link = LinkModel(c=0.0, b=1.0)
    allowed = ("raw", "file")
    without = plan_all(graph, f, s, link, ["co"], wire={"codec_table": table, "codecs": allowed})["co"]
    assert [w.codec for w in without.wire] == ["raw"]
    small = max(1, nbytes[graph.input_id] // 10)
    co = plan_all(graph, f, s, link, ["co"],
                  wire={"codec_table": table, "codecs": allowed, "image_bytes": small})["co"]
    if nbytes[graph.input_id] > small:
        assert [(w.codec, w.wire_bytes) for w in co.wire] == [("file", small)]
        assert co.total == pytest.approx(small / link.b + 0.01 + sum(s.values()) + nbytes[graph.output_id])


def test_the_file_forms_decode_is_the_one_measured_on_the_image_sent():
    from opss.lab.harness import sample_input
    from opss.wirecosts import image_decode_seconds

    rng = random.Random(6)
    graph, f, s = random_graph(5, 5)
    costs = {v: dict(c) for v, c in random_table(graph, rng).costs.items()}
    costs[graph.input_id]["file"] = CodecCost(0.05, 0.0, 0.02)  # the sample photos' figure
    table = CodecTable("random", "test", costs)
    link = LinkModel(c=0.0, b=1.0)
    small = max(1, graph.nbytes[graph.input_id] // 10)
    wire = {"codec_table": table, "codecs": ("raw", "file"), "image_bytes": small}
    measured = image_decode_seconds(sample_input((1, 3, 224, 224))[1].data, (1, 3, 224, 224))
    assert 0 < measured < 1.0
    table_co = plan_all(graph, f, s, link, ["co"], wire=wire)["co"]
    own_co = plan_all(graph, f, s, link, ["co"], wire={**wire, "image_decode_s": measured})["co"]
    assert [(w.codec, w.decode_s) for w in own_co.wire] == [("file", measured)]
    # the decode delays the input's arrival at the server: the total moves by the difference
    assert own_co.total - table_co.total == pytest.approx(measured - 0.02)


def test_opss_plan_json_carries_the_wire_list_and_keeps_its_keys(tmp_path):
    from opss import samples

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(dict(samples.sample_images())["grace_hopper.jpg"])
    out = subprocess.run([sys.executable, "-m", "opss", "plan", "--model", "alexnet", "--link", "3g",
                          "--client-slowdown", "10", "--image", str(photo), "--json", "-"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    co = doc["strategies"]["co"]
    for key in ("client", "cut", "uploads", "cut_bytes", "order", "predicted", "seconds_to_plan"):
        assert key in co
    assert co["uploads"] == co["cut"] and co["cut_bytes"] == 3 * 224 * 224 * 4
    assert co["wire"] == [{"tensor": co["cut"][0], "codec": "file", "bytes": co["cut_bytes"],
                           "wire_bytes": photo.stat().st_size, "encode_s": 0.0,
                           "decode_s": co["wire"][0]["decode_s"]}]
    assert co["predicted"]["decode"] == co["wire"][0]["decode_s"] > 0
    raw = subprocess.run([sys.executable, "-m", "opss", "plan", "--model", "alexnet", "--link", "3g",
                          "--codecs", "raw", "--json", "-"], capture_output=True, text=True, timeout=600)
    assert raw.returncode == 0, raw.stderr
    raw_co = json.loads(raw.stdout)["strategies"]["co"]
    assert raw_co["wire"][0]["codec"] == "raw" and raw_co["wire"][0]["wire_bytes"] == raw_co["cut_bytes"]
    assert co["predicted"]["total"] < raw_co["predicted"]["total"] / 5
