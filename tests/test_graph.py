"""Capture: vertices, edges, real output sizes, fusion, blocks and expansion."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from opss import models
from opss.errors import CaptureError, PartitionError
from opss.graph import capture


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet18():
    model = models.get_model("resnet18")
    x = models.example_input("resnet18", small=True)
    return model, x


def test_bytes_are_real_outputs(resnet18):
    """Every call_module vertex's shape and bytes equal those of the tensor the
    module really returned in an eager forward pass (forward hooks)."""
    model, x = resnet18
    seen = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: seen.__setitem__(name, out.clone())
        )
        for name, m in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for granularity in ("layer", "block"):
        g = capture(model, x, granularity, name="resnet18")
        checked = 0
        for node in g.nodes:
            if node.op == "call_module" and node.module in seen:
                t = seen[node.module]
                assert node.shape == tuple(t.shape)
                assert node.bytes == t.numel() * t.element_size()
                assert node.dtype == "float32"
                checked += 1
            if node.op == "block":
                t = seen[node.id]
                assert node.bytes == t.numel() * t.element_size(), node.id
                checked += 1
        assert checked >= 5
    assert g.node("x").bytes == x.numel() * x.element_size()


def test_parameters_are_not_vertices(resnet18):
    model, x = resnet18
    g = capture(model, x, "layer", name="resnet18", fuse=False)
    live = [n for n in g.gm.graph.nodes if n.op not in ("output", "get_attr")]
    assert len(g.nodes) == len(live)  # unfused: one vertex per live fx node
    assert all(n.members == (n.id,) for n in g.nodes)


def test_fusion_keeps_last_member_as_id(resnet18):
    model, x = resnet18
    fused = capture(model, x, "layer", name="resnet18")
    plain = capture(model, x, "layer", name="resnet18", fuse=False)
    assert len(fused.nodes) < len(plain.nodes)
    stem = fused.node("relu")
    assert stem.members == ("conv1", "bn1", "relu")  # conv -> bn -> relu
    members = [m for n in fused.nodes for m in n.members]
    assert sorted(members) == sorted(plain.ids)  # a partition of the fx nodes
    for n in fused.nodes:
        assert n.members[-1] == n.id
        assert n.bytes == plain.node(n.id).bytes
    # pooling changes the size: not fused
    assert fused.node("maxpool").members == ("maxpool",)


def test_get_attr_and_parameter_math_are_constants():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.5, -1.0]))
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            w = torch.sigmoid(self.w)  # input-independent: a constant, not a vertex
            y = self.conv(x)
            return y * w[0] + x * w[1]

    g = capture(Scaled().eval(), torch.randn(1, 3, 4, 4), "layer", name="scaled")
    assert g.ids == ("x", "mul", "mul_1", "add")
    assert g.node("mul").members == ("conv", "mul")  # scaling by a constant fuses
    assert g.edges == (("x", "mul"), ("x", "mul_1"), ("mul", "add"), ("mul_1", "add"))


def test_resnet_block_graph(resnet18):
    model, x = resnet18
    g = capture(model, x, "block", name="resnet18")
    assert g.blocks() == tuple(f"layer{i}.{j}" for i in range(1, 5) for j in range(2))
    assert g.structure() == "chain"
    assert g.input_id == "x" and g.output_id == "fc"
    b = g.node("layer2.0")
    assert b.op == "block" and b.target == "torchvision.models.resnet.BasicBlock"
    assert "layer2_0_downsample_0" in b.members


@pytest.mark.parametrize("name", models.names())
def test_expanding_every_block_gives_the_layer_graph(name):
    model = models.get_model(name)
    x = models.example_input(name, small=True)
    block = capture(model, x, "block", name=name)
    layer = capture(model, x, "layer", name=name)
    full = block.expand(block.blocks())
    assert full.ids == layer.ids
    assert full.edges == layer.edges
    assert [n.bytes for n in full.nodes] == [n.bytes for n in layer.nodes]
    # vertices are in topological order and edges name known vertices
    pos = {v: i for i, v in enumerate(layer.ids)}
    assert all(pos[u] < pos[v] for u, v in layer.edges)
    assert layer.node(layer.output_id).shape == tuple(model(x).shape)
    # fusion looks at op types only: the same ids at another resolution
    _, c, h, w = x.shape
    bigger = capture(model, torch.randn(1, c, 2 * h + 1, 2 * w + 1), "layer", name=name)
    assert bigger.ids == layer.ids and bigger.edges == layer.edges


def test_expand_one_block(resnet18):
    model, x = resnet18
    g = capture(model, x, "block", name="resnet18")
    e = g.expand(["layer2.0"])
    assert "layer2.0" not in e and "layer1.0" in e
    assert set(e.vertices_in_module("layer2.0")) == {
        "layer2_0_relu", "layer2_0_bn2", "layer2_0_downsample_1", "layer2_0_relu_1"
    }
    assert e.preds("layer2_0_relu_1") == ("layer2_0_bn2", "layer2_0_downsample_1")
    assert e.structure() == "dag"  # the residual join
    with pytest.raises(PartitionError, match="expected a block"):
        g.expand(["fc"])


def test_structures():
    cases = {}
    for name in ("alexnet", "alexnet_parallel", "multistream", "randwire", "googlenet"):
        m = models.get_model(name)
        x = models.example_input(name, small=True)
        cases[name] = capture(m, x, "block", name=name)
    assert cases["alexnet"].structure() == "chain"
    assert cases["googlenet"].structure() == "chain"  # Inception modules as vertices
    assert cases["randwire"].structure() == "dag"
    # two-tower AlexNet before conv3: two independent paths from the input
    ap = cases["alexnet_parallel"]
    s = {"x", "towers.0.stage1", "towers.0.stage2", "towers.1.stage1", "towers.1.stage2"}
    assert ap.structure(s) == "tree"
    assert ap.succs("x") == ("towers.0.stage1", "towers.1.stage1")
    assert ap.preds("towers.0.stage3") == ("cat",) and ap.preds("cat") == (
        "towers.0.stage2", "towers.1.stage2"
    )
    # multistream: everything before the score sum is a tree rooted at the input
    ms = cases["multistream"]
    assert ms.structure() == "dag"
    before_sum = [v for v in ms.ids if not v.startswith("add")]
    assert ms.structure(before_sum) == "tree"
    # randwire: some client parts are general DAGs
    rw = cases["randwire"]
    assert rw.structure([v for v in rw.ids if v.startswith(("x", "conv2", "conv3"))]) == "dag"


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return x * 2
        return x


def test_untraceable_model_names_model_and_construct():
    with pytest.raises(CaptureError) as info:
        capture(Branchy(), torch.randn(1, 3, 4, 4), name="branchy")
    msg = str(info.value)
    assert "'branchy'" in msg
    assert "if x.sum() > 0:" in msg and "test_graph.py" in msg


def test_bad_granularity_and_multiple_inputs():
    with pytest.raises(CaptureError, match="granularity"):
        capture(nn.ReLU(), torch.randn(2), "neuron")

    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(CaptureError, match="exactly one tensor input"):
        capture(Two(), torch.randn(2))


def test_to_json_matches_graph(resnet18):
    model, x = resnet18
    g = capture(model, x, "block", name="resnet18")
    doc = g.to_json()
    assert doc["model"] == "resnet18" and doc["granularity"] == "block"
    assert [n["id"] for n in doc["nodes"]] == list(g.ids)
    assert all({"id", "op", "module", "bytes"} <= set(n) for n in doc["nodes"])
    assert [tuple(e) for e in doc["edges"]] == list(g.edges)


class ChunkAndSize(nn.Module):
    """Non-tensor values inside the graph: the tuple of torch.chunk and x.size(0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        a, b = torch.chunk(x, 2, dim=1)
        y = torch.relu(self.conv(torch.cat([b, a], 1)) + x)
        y = y[:, :, :2, :2]
        return self.fc(y.reshape(y.size(0), -1))


def test_non_tensor_values_are_recomputed_not_cut():
    from opss.split import split

    torch.manual_seed(0)
    model = ChunkAndSize().eval()
    x = torch.randn(1, 4, 5, 5)
    g = capture(model, x, "layer", name="chunky")
    assert g.ids == ("x", "getitem", "getitem_1", "cat", "conv", "relu", "reshape", "fc")
    # both halves recompute the (cheap, view-only) chunk; size(0) lives with reshape
    assert g.node("getitem").members == ("chunk", "getitem")
    assert g.node("getitem_1").members == ("chunk", "getitem_1")
    assert g.node("reshape").members == ("getitem_2", "size", "reshape")
    assert all(n.dtype == "float32" for n in g.nodes)  # every vertex outputs a tensor
    with torch.no_grad():
        ref = model(x)
    for k in range(1, len(g.ids) + 1):
        sp = split(g, g.ids[:k])
        assert_close(sp.server.run(sp.client.run(x)), ref)


def test_runtime_failure_names_the_fx_node():
    with pytest.raises(CaptureError, match=r"failing construct: fx node 'fc' \(call_module fc\)"):
        capture(ChunkAndSize(), torch.randn(1, 4, 1, 1), name="chunky")
