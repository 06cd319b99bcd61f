"""The predicted gap sweep: every strategy planned per (model, gap, bandwidth) from the experiment's profiles."""

import csv
import json

import pytest

from opss.lab.gapsweep import SWEEP_C, gap_sweep, gap_table, winner
from opss.latency import PlanGraph


def test_winner_breaks_ties_towards_the_simpler_strategy():
    assert winner({"lo": 1.0, "co": 2.0, "po": 1.0, "opss": 0.995, "joint": 0.995}) == "lo"  # within 1 %
    assert winner({"lo": 1.0, "co": 2.0, "po": 0.9, "opss": 0.9, "joint": 0.8}) == "joint"
    assert winner({"lo": 3.0, "co": 1.0, "po": 1.0, "opss": 1.0, "joint": 1.0}) == "co"


def _write(out, name="chain3"):
    """in -> a -> b -> out; bytes in 1e6, a 1e5, b 1e3, out 10; server s(a)=10 ms, s(b)=20 ms, s(out)=1 ms."""
    graph = PlanGraph(["in", "a", "b", "out"], [("in", "a"), ("a", "b"), ("b", "out")],
                      {"in": 1_000_000, "a": 100_000, "b": 1000, "out": 10}, "in", "out")
    server = {"in": 0.0, "a": 0.010, "b": 0.020, "out": 0.001}
    (out / "graphs").mkdir()
    (out / "profiles").mkdir()
    (out / "graphs" / f"{name}.json").write_text(json.dumps(graph.to_json()))
    (out / "profiles" / f"{name}.json").write_text(json.dumps({"client_f": server, "server_s": server}))
    return server


def test_sweep_rows_match_hand_computed_lo_and_co(tmp_path):
    server = _write(tmp_path)
    rows = gap_sweep(tmp_path, ["chain3", "missing"], [1, 100], gaps=(5, 50))
    assert [(r["gap"], r["mbps"]) for r in rows] == [(5, 1), (5, 100), (50, 1), (50, 100)]
    for r in rows:
        b = r["mbps"] * 1e6 / 8
        assert r["lo_s"] == pytest.approx(r["gap"] * sum(server.values()))  # all on a client gap x slower
        co = (SWEEP_C + 1_000_000 / b) + sum(server.values()) + (SWEEP_C + 10 / b)  # input up, all served, reply
        assert r["co_s"] == pytest.approx(co)
        lat = {s: r[f"{s}_s"] for s in ("lo", "co", "po", "opss", "joint")}
        assert r["winner"] == winner(lat) and r["joint_s"] <= r["opss_s"] + 1e-12 <= r["po_s"] + 2e-12
    slow = next(r for r in rows if r["gap"] == 50 and r["mbps"] == 100)
    assert slow["winner"] != "lo" and slow["offloads"]  # a 50x slower client on 100 Mbit/s offloads
    assert next(r for r in rows if r["gap"] == 5 and r["mbps"] == 1)["winner"] == "lo"
    # gap 5 at 100 Mbit/s: cut after a = 5 x 10 ms + (2 ms + 1e5 B / 12.5 MB/s) + 21 ms + (2 ms + 10 B / 12.5 MB/s)
    # beats lo (155 ms), co (115 ms) and the cut after b (>= 150 ms)
    fast = next(r for r in rows if r["gap"] == 5 and r["mbps"] == 100)
    assert fast["po_s"] == pytest.approx(0.050 + 0.002 + 0.008 + 0.021 + 0.002 + 10 / 12.5e6)
    assert fast["winner"] == "po" and fast["offloads"]
    with (tmp_path / "gap_sweep.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert (tmp_path / "experiment_gap_sweep.png").stat().st_size > 0
    table = gap_table(rows)
    assert "| chain3 | 5x | from 100 | never | 1.00x | 1.00x | lo -> po |" in table, table
    assert "| chain3 | 50x | from 1 |" in table, table


def test_with_the_recorded_wire_co_sends_the_file_and_codec_times_go_to_server_speed(tmp_path):
    """An experiment's wire/MODEL.json adds every strategy planned with its codecs: at 1 Mbit/s co
    sends the 800 kB image file instead of the 1 MB tensor, its decode (measured at the server's
    speed by the driver) in the server term; zstd's measured times, taken on a client 2x slower
    than the server, are halved before the sweep's gap is applied."""
    from opss.wirecosts import CodecCost, CodecTable

    server = _write(tmp_path)
    client = {v: 2 * t for v, t in server.items()}  # the experiment's client: 2x slower
    (tmp_path / "profiles" / "chain3.json").write_text(json.dumps({"client_f": client, "server_s": server}))
    table = CodecTable("chain3", "cpu-test", {"in": {"file": CodecCost(0.02, 0.0, 0.5)},
                                              "a": {"zstd": CodecCost(0.5, 0.0004, 0.002)}})
    (tmp_path / "wire").mkdir()
    (tmp_path / "wire" / "chain3.json").write_text(json.dumps({
        "codecs": ["raw", "zstd", "file"], "max_error": None, "image_bytes": 800_000, "image_decode_s": 0.003,
        "image": "photo.jpg", "codec_table": table.to_json()}))
    rows = gap_sweep(tmp_path, ["chain3"], [1, 100], gaps=(5,))
    slow, fast = rows
    b = 1e6 / 8
    assert slow["co_codecs_s"] == pytest.approx(SWEEP_C + 800_000 / b + 0.003 + sum(server.values()) + SWEEP_C + 10 / b)
    assert slow["co_s"] == pytest.approx(SWEEP_C + 1_000_000 / b + sum(server.values()) + SWEEP_C + 10 / b)
    assert slow["joint_codecs_vs_po"] == pytest.approx(slow["po_s"] / slow["joint_codecs_s"])
    # at 100 Mbit/s the cut after a with zstd: 5 x 10 ms + encode 5 x 0.2 ms (0.4 ms halved) + half of
    # 1e5 B + decode 1 ms (2 ms halved): 81 ms, beating raw (83 ms) and the file (102 ms); unhalved
    # times would tie with raw
    b = 100e6 / 8
    po_zstd = 0.050 + 0.001 + SWEEP_C + 50_000 / b + 0.001 + 0.021 + SWEEP_C + 10 / b
    assert fast["po_s"] == pytest.approx(0.083 + 10 / b)
    assert fast["po_codecs_s"] == pytest.approx(po_zstd) and po_zstd < fast["po_s"] - 0.0015
    table_md = gap_table(rows)
    head, _, row = table_md.splitlines()
    assert "with codecs" in head and row.count("|") == head.count("|") == 11
    assert row.endswith("| from 100 | 1.02x at 100 | lo -> po |"), row  # 83 / 81 ms


def test_models_with_and_without_a_recorded_wire_share_one_csv(tmp_path):
    """A raw-only model (no wire/ file) first and a model with codecs after: one CSV with every
    column, the raw model's codec cells empty, its table row marked '-'."""
    from opss.wirecosts import CodecCost, CodecTable

    _write(tmp_path, "plain")
    server = {"in": 0.0, "a": 0.010, "b": 0.020, "out": 0.001}
    graph = json.loads((tmp_path / "graphs" / "plain.json").read_text())
    (tmp_path / "graphs" / "coded.json").write_text(json.dumps(graph))
    (tmp_path / "profiles" / "coded.json").write_text(json.dumps({"client_f": server, "server_s": server}))
    (tmp_path / "wire").mkdir()
    table = CodecTable("coded", "cpu-test", {"in": {"file": CodecCost(0.02, 0.0, 0.5)}})
    (tmp_path / "wire" / "coded.json").write_text(json.dumps({
        "codecs": ["raw", "file"], "image_bytes": 20_000, "image_decode_s": 0.003, "codec_table": table.to_json()}))
    rows = gap_sweep(tmp_path, ["plain", "coded"], [1], gaps=(5,))
    assert "co_codecs_s" not in rows[0] and rows[1]["co_codecs_s"] < rows[1]["co_s"]
    with (tmp_path / "gap_sweep.csv").open() as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["co_codecs_s"] == "" and float(got[1]["co_codecs_s"]) == pytest.approx(rows[1]["co_codecs_s"])
    assert gap_table(rows).splitlines()[2].endswith("| - | - | - |")
