"""Split oracle for every zoo model: server(client(x)) == model(x).

Small inputs (each spec's test_input_shape) by default; 224x224 runs are slow.
Partitions and orders are random but seeded; the oracle is the full model's
own output.
"""

from __future__ import annotations

import random
import weakref

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from opss import models
from opss.errors import InfeasibleOrderError, PartitionError, ShapeMismatchError
from opss.graph import capture
from opss.split import closure_check, cut_points, split

ZOO = models.names()
RANDOM_PARTITIONS = 20


pytestmark = pytest.mark.usefixtures("one_thread")


def random_topological_order(graph, vertices, rng):
    keep = set(vertices)
    indeg = {v: sum(1 for u in graph.preds(v) if u in keep) for v in vertices}
    ready = [v for v in vertices if indeg[v] == 0]
    order = []
    while ready:
        v = ready.pop(rng.randrange(len(ready)))
        order.append(v)
        for w in graph.succs(v):
            if w in keep:
                indeg[w] -= 1
                if indeg[w] == 0:
                    ready.append(w)
    assert len(order) == len(vertices)
    return order


def ancestors_closure(graph, seeds):
    seen = set(seeds) | {graph.input_id}
    stack = list(seen)
    while stack:
        for u in graph.preds(stack.pop()):
            if u not in seen:
                seen.add(u)
                stack.append(u)
    return seen


def random_partitions(graph, n, rng):
    """n valid client sets: prefixes of random topological orders and the
    ancestor closures of random vertex samples, alternating."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            order = random_topological_order(graph, graph.ids, rng)
            out.append(set(order[: rng.randrange(1, len(order) + 1)]))
        else:
            k = rng.randrange(1, 4)
            out.append(ancestors_closure(graph, rng.sample(graph.ids, k)))
    return out


def drive(sp, x, order, arrival_rng=None):
    """Run the client in ``order`` and feed the server each cut tensor as soon
    as it is produced (or, with ``arrival_rng``, in a shuffled arrival order).
    Returns the server result and the order the server ran its vertices in."""
    sess = sp.server.session()
    produced = []
    for step in sp.client.steps(x, order):
        for name, t in step.cut_outputs.items():
            produced.append((name, t))
            if arrival_rng is None:
                sess.feed(name, t)
    if arrival_rng is not None:
        arrival_rng.shuffle(produced)
        for name, t in produced:
            sess.feed(name, t)
    assert sess.done
    return sess.result(), sess.ran


@pytest.fixture(scope="module", params=ZOO)
def zoo_case(request):
    name = request.param
    model = models.get_model(name, seed=0)
    x = models.example_input(name, small=True, seed=1)
    with torch.no_grad():
        ref = model(x)
    layer = capture(model, x, "layer", name=name)
    block = capture(model, x, "block", name=name)
    return name, x, ref, layer, block


def test_local_and_cloud_only(zoo_case):
    name, x, ref, layer, block = zoo_case
    for graph in (layer, block):
        local = split(graph, graph.ids)
        assert local.cut == (graph.output_id,)
        assert local.server.vertices == ()
        assert local.upload_bytes == 0
        assert_close(local.server.run(local.client.run(x)), ref)
        cloud = split(graph, [graph.input_id])
        assert cloud.cut == (graph.input_id,)
        assert cloud.client.vertices == (graph.input_id,)
        assert cloud.upload_bytes == x.numel() * x.element_size()
        assert_close(cloud.server.run(cloud.client.run(x)), ref)


def test_block_frontier_cuts(zoo_case):
    """Every cut between consecutive blocks of a chain-like block graph (a
    sample of 8 for long chains); for DAG-shaped block graphs, the ancestor
    closure of each of 8 sampled blocks."""
    name, x, ref, layer, block = zoo_case
    rng = random.Random(7)
    ids = block.ids
    if block.structure() == "chain":
        cuts = [set(ids[: i + 1]) for i in range(len(ids))]
    else:
        cuts = [ancestors_closure(block, [b]) for b in (block.blocks() or ids)]
    if len(cuts) > 8:
        cuts = rng.sample(cuts, 8)
    for s in cuts:
        sp = split(block, s)
        assert_close(sp.server.run(sp.client.run(x)), ref, msg=f"{name} cut {sp.cut}")


@pytest.mark.parametrize("granularity", ["layer", "block"])
def test_random_partitions_random_orders(zoo_case, granularity):
    name, x, ref, layer, block = zoo_case
    graph = layer if granularity == "layer" else block
    rng = random.Random(f"{name}-{granularity}")
    parts = random_partitions(graph, RANDOM_PARTITIONS, rng)
    for i, s in enumerate(parts):
        sp = split(graph, s)
        order = random_topological_order(graph, sp.client.vertices, rng)
        arrival = random.Random(i) if i % 3 == 2 else None
        out, ran = drive(sp, x, order, arrival)
        assert_close(out, ref, msg=f"{name} partition {i} cut {sp.cut}")
        assert sorted(ran) == sorted(sp.server.vertices)
        # the server never runs a vertex before its inputs exist
        pos = {v: k for k, v in enumerate(ran)}
        for v in ran:
            for u in graph.preds(v):
                assert u in sp.client_set or pos[u] < pos[v]


def test_server_runs_early_vertices_incrementally():
    """With two cut tensors, feeding the first runs what depends on it alone."""
    name = "multistream"
    model = models.get_model(name)
    x = models.example_input(name, small=True)
    graph = capture(model, x, "block", name=name)
    human_crop = "crop"
    s = {graph.input_id, human_crop, "crop_1"}
    sp = split(graph, s)
    assert sp.cut == ("x", "crop", "crop_1")
    cut = sp.client.run(x)
    sess = sp.server.session()
    ran = sess.feed("crop", cut["crop"])
    assert "human.stages.0" in ran and "human.stages.3" in ran
    assert not any(v.startswith("object") or v.startswith("pairwise") for v in ran)
    assert not sess.done
    with pytest.raises(PartitionError, match="waiting for cut tensor"):
        sess.result()
    sess.feed("crop_1", cut["crop_1"])
    sess.feed("x", cut["x"])
    with torch.no_grad():
        assert_close(sess.result(), model(x))


# ---------------------------------------------------------------------------
# cut points, closure, names
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet():
    model = models.get_model("resnet18")
    x = models.example_input("resnet18", small=True)
    return model, x, capture(model, x, "layer", name="resnet18"), capture(
        model, x, "block", name="resnet18"
    )


def test_resnet_frontier_sends_skip_input(resnet):
    model, x, layer, block = resnet
    g = block.expand(["layer1.0"])
    inside = g.vertices_in_module("layer1.0")
    assert inside == ("layer1_0_relu", "layer1_0_bn2", "layer1_0_relu_1")
    # the client stops inside the first residual block, before the add
    s = {"x", "relu", "maxpool", "layer1_0_relu", "layer1_0_bn2"}
    assert cut_points(g, s) == ("maxpool", "layer1_0_bn2")  # maxpool = the skip tensor
    sp = split(g, s)
    assert set(sp.server.inputs) == {"maxpool", "layer1_0_bn2"}
    assert sp.server.inputs["maxpool"] == (tuple(g.node("maxpool").shape), "float32")
    with torch.no_grad():
        assert_close(sp.server.run(sp.client.run(x)), model(x))
    # the same cut in the layer graph
    assert cut_points(layer, s) == ("maxpool", "layer1_0_bn2")


def test_client_set_by_module_name(resnet):
    model, x, layer, block = resnet
    sp = split(layer, ["x", "relu", "maxpool", "layer1.0"])
    assert sp.client_set == {"x", "relu", "maxpool", "layer1_0_relu", "layer1_0_bn2",
                             "layer1_0_relu_1"}
    assert sp.cut == ("layer1_0_relu_1",)
    # a whole stage by its Sequential's name
    sp = split(block, ["x", "relu", "maxpool", "layer1"])
    assert sp.cut == ("layer1.1",)
    with torch.no_grad():
        assert_close(sp.server.run(sp.client.run(x)), model(x))


def test_closure_errors(resnet):
    _, x, layer, _ = resnet
    with pytest.raises(PartitionError, match=r"'layer1_0_relu' needs 'maxpool'"):
        closure_check(layer, {"x", "relu", "layer1_0_relu"})
    with pytest.raises(PartitionError, match=r"'layer1_0_relu' needs 'maxpool'"):
        split(layer, {"x", "relu", "layer1_0_relu"})
    with pytest.raises(PartitionError, match="must contain the input vertex 'x'"):
        split(layer, {"relu"})
    with pytest.raises(PartitionError, match="'no_such_layer'"):
        split(layer, {"x", "no_such_layer"})


def test_invalid_order_and_bad_tensors(resnet):
    _, x, layer, _ = resnet
    sp = split(layer, {"x", "relu", "maxpool", "layer1_0_relu"})
    with pytest.raises(InfeasibleOrderError):
        list(sp.client.steps(x, ["x", "maxpool", "relu", "layer1_0_relu"]))
    with pytest.raises(InfeasibleOrderError):
        list(sp.client.steps(x, ["x", "relu", "maxpool"]))  # missing a vertex
    # the input vertex may be left out of the order: it runs first
    assert list(sp.client.run(x, ["relu", "maxpool", "layer1_0_relu"])) == list(sp.cut)
    sess = sp.server.session()
    with pytest.raises(PartitionError, match="unknown cut tensor 'relu'"):
        sess.feed("relu", torch.zeros(1))
    name = sp.cut[0]
    with pytest.raises(ShapeMismatchError, match="expected shape"):
        sess.feed(name, torch.zeros(2, 2))
    with pytest.raises(PartitionError, match="missing cut tensor"):
        sp.server.run({})


# ---------------------------------------------------------------------------
# intermediates are freed once nothing still to run reads them
# ---------------------------------------------------------------------------
class LinearOutputs:
    """Weak references to every output of the Linear layers inside a captured
    GraphModule (forward hooks), to count which are still alive."""

    def __init__(self, gm):
        self.refs = []
        self._hooks = [
            m.register_forward_hook(self._hook) for m in gm.modules() if isinstance(m, nn.Linear)
        ]

    def _hook(self, module, args, out):
        self.refs.append(weakref.ref(out))

    def live(self, held=()):
        """Linear outputs still alive, not counting those whose storage a tensor
        in ``held`` shares (a held view keeps its base alive)."""
        kept = {h.untyped_storage().data_ptr() for h in held}
        alive = (r() for r in self.refs)
        return sum(1 for t in alive if t is not None and t.untyped_storage().data_ptr() not in kept)

    def close(self):
        for h in self._hooks:
            h.remove()


def test_chain_client_and_server_hold_a_bounded_number_of_intermediates():
    """A chain of 32 Linear layers: without release every output stays alive to
    the end of the part (32 of them); with it, about one at a time."""
    torch.manual_seed(0)
    depth = 32
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(depth)]).eval()
    x = torch.randn(1, 16)
    with torch.no_grad():
        ref = model(x)
    g = capture(model, x, "layer", name="chain32")
    assert g.structure() == "chain" and len(g.ids) == depth + 1
    rec = LinearOutputs(g.gm)
    try:
        local = split(g, g.ids)
        for _ in range(2):  # reference counts start afresh on every run
            rec.refs.clear()
            peak, last = 0, None
            for step in local.client.steps(x):
                last = step.cut_outputs.get(g.output_id, last)
                peak = max(peak, rec.live())
            assert len(rec.refs) == depth
            assert peak <= 2, f"expected at most 2 live intermediates, got {peak}"
            assert rec.live(held=[last]) == 0  # only the output survives, owned by the caller
            assert_close(last, ref)

        # a mid cut: the client keeps its cut tensor, the server frees what it was fed
        mid = split(g, g.ids[: depth // 2])
        rec.refs.clear()
        sent = mid.client.run(x)
        assert rec.live(held=list(sent.values())) == 0
        sess = mid.server.session()
        (name,) = sent
        sess.feed(name, sent[name])
        assert len(rec.refs) == depth
        assert rec.live(held=[sess.result(), *sent.values()]) == 0
        assert_close(sess.result(), ref)
    finally:
        rec.close()


class TwoBranches(nn.Module):
    """A stem read by two chains joined at the end, with ``x.size(0)`` (a
    non-tensor value that every vertex reading it recomputes) in several
    vertices."""

    def __init__(self, depth=5, width=8):
        super().__init__()
        self.stem = nn.Linear(width, width)
        self.left = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.right = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        n = x.size(0)
        a = self.stem(x.view(n, -1))
        left = a
        for m in self.left:
            left = m(left)
        right = a
        for m in self.right:
            right = m(right).view(n, -1)
        return self.head((left + right).view(n, -1))


def test_branches_free_values_after_last_reader_in_any_order():
    """Random partitions, random client orders, random arrival orders: the
    output matches the model, every value survives until its last reader (or
    the result would be wrong / a KeyError), and at no step more than the stem
    output and one tensor per branch are alive besides the cut tensors."""
    torch.manual_seed(0)
    model = TwoBranches().eval()
    x = torch.randn(2, 8)
    with torch.no_grad():
        ref = model(x)
    g = capture(model, x, "layer", name="two_branches")
    assert len([v for v in g.ids if "size" in g.node(v).members]) > 1  # recomputed in several
    rec = LinearOutputs(g.gm)
    rng = random.Random(5)
    try:
        sets = [set(g.ids), {g.input_id}, *random_partitions(g, 16, rng)]
        for i, s in enumerate(sets):
            sp = split(g, s)
            rec.refs.clear()
            order = random_topological_order(g, sp.client.vertices, rng)
            produced = []
            for step in sp.client.steps(x, order):
                produced.extend(step.cut_outputs.items())
                held = [t for _, t in produced]
                assert rec.live(held) <= 3, f"partition {i}: client holds too many intermediates"
            rng.shuffle(produced)
            sess = sp.server.session()
            for name, t in produced:
                sess.feed(name, t)
                held = [t for _, t in produced]
                assert rec.live(held) <= 3, f"partition {i}: server holds too many intermediates"
            out = sess.result()
            assert_close(out, ref, msg=f"partition {i} cut {sp.cut}")
            assert rec.live([out, *(t for _, t in produced)]) == 0
    finally:
        rec.close()


# ---------------------------------------------------------------------------
# in-place hazard
# ---------------------------------------------------------------------------
class InplaceHazard(nn.Module):
    """a = conv(x) feeds two branches; one branch applies an in-place ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.conv(x)
        b = a * 2  # eager order: computed before act mutates a
        c = self.act(a)
        return b + c


def _hazard_run(clear):
    torch.manual_seed(0)
    model = InplaceHazard().eval()
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        ref = model(x)
    g = capture(model, x, "layer", name="hazard", clear_inplace_ops=clear)
    assert g.ids == ("x", "conv", "mul", "act", "add")
    # client: conv, then act; conv's output goes to the server (mul needs it)
    sp = split(g, {"x", "conv", "act"})
    assert sp.cut == ("conv", "act")
    sent = {}
    snapshots = {}
    for step in sp.client.steps(x, ["x", "conv", "act"]):
        for k, t in step.cut_outputs.items():
            sent[k] = t
            snapshots[k] = t.clone()
    client_kept = torch.equal(sent["conv"], snapshots["conv"])
    client_ok = torch.allclose(sp.server.run(snapshots), ref)
    # server: receives conv's output and runs act itself
    sp2 = split(g, {"x", "conv"})
    received = sp2.client.run(x)
    before = received["conv"].clone()
    sp2.server.run(received)
    server_kept = torch.equal(received["conv"], before)
    return client_kept, client_ok, server_kept


def test_inplace_hazard_reproduced_without_the_fix():
    client_kept, client_ok, server_kept = _hazard_run(clear=False)
    assert not client_kept  # the tensor handed out was mutated afterwards
    assert not server_kept  # the server mutated the tensor it was given
    assert client_ok  # (the snapshot itself was right: the corruption is the aliasing)


def test_inplace_hazard_fixed():
    assert _hazard_run(clear=True) == (True, True, True)


def test_inplace_cleared_on_copy_only():
    model = InplaceHazard().eval()
    capture(model, torch.randn(1, 3, 4, 4))
    assert model.act.inplace is True  # the user's model is untouched


# ---------------------------------------------------------------------------
# full resolution (slow)
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_full_resolution_split_oracle(name):
    model = models.get_model(name)
    x = models.example_input(name, small=False)
    with torch.no_grad():
        ref = model(x)
    rng = random.Random(3)
    for granularity in ("layer", "block"):
        graph = capture(model, x, granularity, name=name)
        sets = [set(graph.ids), {graph.input_id}, *random_partitions(graph, 6, rng)]
        for s in sets:
            sp = split(graph, s)
            order = random_topological_order(graph, sp.client.vertices, rng)
            out, _ = drive(sp, x, order)
            assert_close(out, ref)


def test_partitioned_inception_is_a_tree():
    """The paper's Figs. 1-2: GoogLeNet with the cut inside one Inception
    module (expanded into its layers) leaves a tree on the client whose
    cut-points are its leaves."""
    model = models.get_model("googlenet")
    x = models.example_input("googlenet", small=True)
    g = capture(model, x, "block", name="googlenet").expand(["inception4a"])
    inside = g.vertices_in_module("inception4a")
    assert inside[-1] == "cat_2" and len(inside) == 8
    front = set(g.ids[: g.ids.index("maxpool3") + 1])
    s = front | {"relu_15", "relu_16", "relu_17", "relu_18", "inception4a_branch4_0"}
    assert g.structure(s) == "tree"
    sp = split(g, s)
    assert sp.cut == ("relu_15", "relu_17", "relu_18", "inception4a_branch4_0")
    assert all(not [w for w in g.succs(c) if w in s] for c in sp.cut)  # leaves
    with torch.no_grad():
        assert_close(sp.server.run(sp.client.run(x)), model(x))


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_server_part_on_gpu_takes_cpu_tensors():
    name = "resnet18"
    model = models.get_model(name)
    x = models.example_input(name, small=True)
    cpu = capture(model, x, "layer", name=name)
    gpu = capture(model.cuda(), x.cuda(), "layer", name=name)
    s = {"x", "relu", "maxpool", "layer1_0_relu"}
    sent = split(cpu, s).client.run(x)
    sp = split(gpu, s)
    assert sp.server.device.type == "cuda"
    out = sp.server.run(sent)
    with torch.no_grad():
        assert_close(out.cpu(), model.cpu()(x), rtol=1e-3, atol=1e-3)
