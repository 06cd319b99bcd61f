"""``opss graph``: the report, --json and a bad model name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from opss import models
from opss.cli import main
from opss.graph import capture


pytestmark = pytest.mark.usefixtures("one_thread")


def test_graph_report_and_json(tmp_path, capsys):
    out = tmp_path / "g.json"
    rc = main(["graph", "--model", "resnet18", "--granularity", "layer", "--small",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    model = models.get_model("resnet18")
    g = capture(model, models.example_input("resnet18", small=True), "layer", name="resnet18")
    assert f"vertices: {len(g.nodes)}  edges: {len(g.edges)}  structure: dag" in text
    big = max(g.nodes, key=lambda n: n.bytes)
    small = min(g.nodes, key=lambda n: n.bytes)
    assert f"largest output: {big.bytes} bytes at {big.id}" in text
    assert f"smallest output: {small.bytes} bytes at {small.id}" in text
    assert "capture time:" in text and "client part at the small cut" in text
    assert f"fingerprint: {models.fingerprint(model)}" in text
    doc = json.loads(out.read_text())
    assert doc["model"] == "resnet18" and doc["granularity"] == "layer"
    assert [n["id"] for n in doc["nodes"]] == list(g.ids)
    assert [n["bytes"] for n in doc["nodes"]] == [n.bytes for n in g.nodes]
    assert doc["edges"] == [list(e) for e in g.edges]
    assert {"id", "op", "module", "bytes"} <= set(doc["nodes"][0])


def test_graph_block_default_with_weights(tmp_path, capsys):
    path = tmp_path / "w.pt"
    m = models.get_model("mobilenet_v2", seed=4)
    torch.save(m.state_dict(), path)
    assert main(["graph", "--model", "mobilenet_v2", "--small", "--weights", str(path)]) == 0
    text = capsys.readouterr().out
    assert "granularity: block" in text and "structure: chain" in text
    assert f"fingerprint: {models.fingerprint(m)}" in text


def test_unknown_model_is_one_line_and_nonzero():
    proc = subprocess.run(
        [sys.executable, "-m", "opss", "graph", "--model", "no_such_net"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("opss graph: error: unknown model 'no_such_net'")
