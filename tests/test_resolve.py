"""A model resolved once at the edge: the profile functions and the client session take the
object and never look the name up, build the model or capture it again."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest
import torch

from opss import graph as graph_mod
from opss import models
from opss.client.session import ClientConfig, ClientSession
from opss.errors import OpssError, ShapeMismatchError
from opss.profile import capture_model, graph_hash, load_or_build_profile

NAME = "alexnet_parallel"


@contextmanager
def calls_of(*fns):
    """Count the calls of the (real, unwrapped) functions ``fns`` in this thread, by name."""
    codes = {fn.__code__: fn.__name__ for fn in fns}
    seen = dict.fromkeys(codes.values(), 0)

    def prof(frame, event, arg):
        name = codes.get(frame.f_code) if event == "call" else None
        if name is not None:
            seen[name] += 1

    old = sys.getprofile()
    sys.setprofile(prof)
    try:
        yield seen
    finally:
        sys.setprofile(old)


@pytest.fixture(scope="module")
def rm():
    return models.resolve_model(NAME, small=True, seed=3)


def test_resolve_model_holds_what_the_name_resolves_to(rm):
    spec = models.get_spec(NAME)
    assert rm.name == NAME and rm.spec is spec and rm.input_shape == spec.test_input_shape
    assert rm.fingerprint == models.fingerprint(models.get_model(NAME, seed=3))
    assert rm.graph.granularity == "layer" and rm.graph_hash == graph_hash(rm.graph)
    assert tuple(rm.graph.node(rm.graph.input_id).shape) == rm.input_shape
    assert torch.equal(rm.example(), rm.example()) and rm.example().shape == rm.input_shape
    with torch.no_grad():
        assert torch.isfinite(rm.module(rm.example())).all()
    with calls_of(graph_mod.capture) as n:
        again = models.resolve_model(spec, input_shape=rm.input_shape, module=rm.module)
    assert n["capture"] == 1 and again.module is rm.module and again.graph_hash == rm.graph_hash


def test_capture_model_takes_the_resolved_graph_without_capturing(rm):
    with calls_of(graph_mod.capture) as n:
        assert capture_model(rm) is rm.graph
        assert capture_model(rm, "layer", rm.input_shape, module=rm.module) is rm.graph
    assert n["capture"] == 0
    block = capture_model(rm, "block")
    assert block.granularity == "block" and len(block.nodes) < len(rm.graph.nodes)
    with pytest.raises(ShapeMismatchError, match="resolved at input shape"):
        capture_model(rm, input_shape=(1, 3, 99, 99))
    with pytest.raises(OpssError, match="expected its resolved module or none"):
        capture_model(rm, module=models.get_model(NAME))


def test_profile_lookup_of_a_resolved_model_never_captures(rm, tmp_path):
    kw = dict(role="client", root=tmp_path, repeats=2, warmup=0, progress=False, stream=None)
    with calls_of(graph_mod.capture, models.get_spec) as n:
        built = load_or_build_profile(rm, **kw)
        stored = load_or_build_profile(rm, **kw)
    assert n == {"capture": 0, "get_spec": 1}  # the one lookup is measure_profile's own (it takes a name)
    assert set(built.vertices) == {v.id for v in rm.graph.nodes} and stored.vertices == built.vertices
    assert built.meta["arch_hash"] == rm.graph_hash and built.meta["input_shape"] == list(rm.input_shape)
    # the name still works, and finds the same table
    assert load_or_build_profile(NAME, input_shape=rm.input_shape, **kw).vertices == built.vertices
    with pytest.raises(OpssError, match="expected its resolved graph or none"):
        load_or_build_profile(rm, graph=capture_model(rm, "block"), **kw)


def _config(**kw) -> ClientConfig:
    return ClientConfig(model=NAME, strategy="lo", link="wifi", small=True, seed=3, progress=False, **kw)


def test_session_resolves_once_or_takes_the_resolved_model(rm):
    with calls_of(graph_mod.capture, models.get_spec) as n:
        s = ClientSession(_config(), out=None, err=None)
    s.close()
    # the zoo lookup, capture's own for the block types, measure_profile's own
    assert n == {"capture": 1, "get_spec": 3}
    assert s.graph_hash == rm.graph_hash and s.fingerprint == rm.fingerprint
    with calls_of(graph_mod.capture, models.get_spec) as n:
        t = ClientSession(_config(), resolved=rm, out=None, err=None)
    t.close()
    assert n == {"capture": 0, "get_spec": 1}  # measure_profile's own
    assert t.resolved is rm and t.graph is rm.graph and t.model is rm.module and t.input_shape == rm.input_shape
    assert t.plan.strategy == "lo" and set(t.plan_graph.ids) == {v.id for v in rm.graph.nodes}
    with pytest.raises(OpssError, match="expected the config's 'resnet18'"):
        ClientSession(ClientConfig(model="resnet18", strategy="lo", small=True), resolved=rm, out=None, err=None)
