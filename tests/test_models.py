"""The model zoo: registry, deterministic init, fingerprints, weights files,
user factories."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch.testing import assert_close

from opss import models
from opss.errors import ModelNotFoundError, ShapeMismatchError
from opss.graph import capture
from opss.split import split

EXPECTED = {
    "googlenet", "resnet18", "resnet50", "mobilenet_v2", "alexnet",
    "alexnet_parallel", "multistream", "randwire",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_names_and_specs():
    assert set(models.names()) == EXPECTED
    for name in models.names():
        spec = models.get_spec(name)
        assert spec.name == name
        assert spec.input_shape == (1, 3, 224, 224)
        assert len(spec.test_input_shape) == 4 and spec.test_input_shape[2] <= 64
        assert spec.description
        x = models.example_input(name, small=True, seed=3)
        assert tuple(x.shape) == spec.test_input_shape
        assert torch.equal(x, models.example_input(name, small=True, seed=3))


def test_unknown_model():
    with pytest.raises(ModelNotFoundError, match="unknown model 'vgg99'"):
        models.get_model("vgg99")
    with pytest.raises(ModelNotFoundError, match="cannot import module"):
        models.get_model("no_such_pkg_xyz.mod:make")


def test_eval_mode_and_deterministic_init():
    a = models.get_model("resnet18", seed=5)
    state = torch.get_rng_state()
    b = models.get_model("resnet18", seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert not a.training and not b.training
    assert models.fingerprint(a) == models.fingerprint(b)
    assert models.fingerprint(a) != models.fingerprint(models.get_model("resnet18", seed=6))


def test_fingerprint_sees_one_changed_weight():
    m = models.get_model("multistream")
    before = models.fingerprint(m)
    with torch.no_grad():
        m.object.stages[2].conv.weight[0, 0, 0, 0] += 1e-6
    assert models.fingerprint(m) != before
    assert len(before) == 64 and int(before, 16) >= 0


def test_randwire_wiring_is_independent_of_weight_seed():
    a, b = models.get_model("randwire", seed=0), models.get_model("randwire", seed=1)
    assert [s.preds for s in (a.conv3, a.conv4, a.conv5)] == [
        s.preds for s in (b.conv3, b.conv4, b.conv5)
    ]
    assert len(a.conv3.nodes) == 32
    # a WS(32, 4, .) graph has 32 * 4 / 2 edges before orienting
    assert sum(len(p) for p in a.conv3.preds) == 64


def test_weights_round_trip(tmp_path):
    src = models.get_model("resnet18", seed=1)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    loaded = models.get_model("resnet18", seed=0, weights=path)
    assert models.fingerprint(loaded) == models.fingerprint(src)
    x = models.example_input("resnet18", small=True)
    with torch.no_grad():
        assert_close(loaded(x), src(x))


def test_weights_mismatch_is_one_line(tmp_path):
    state = models.get_model("resnet18").state_dict()
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ShapeMismatchError) as info:
        models.get_model("resnet18", weights=path)
    msg = str(info.value)
    assert "missing keys [fc.bias]" in msg and "unexpected keys [extra.weight]" in msg
    assert "\n" not in msg
    state = models.get_model("resnet18").state_dict()
    state["fc.bias"] = torch.zeros(7)
    torch.save(state, path)
    with pytest.raises(ShapeMismatchError, match=r"fc.bias expected shape \(1000,\), got \(7,\)"):
        models.get_model("resnet18", weights=path)
    with pytest.raises(ModelNotFoundError, match="not found"):
        models.get_model("resnet18", weights=tmp_path / "missing.pt")


def test_user_factory_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_opss_models.py").write_text(
        textwrap.dedent(
            '''
            import torch
            from torch import nn

            class Tiny(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = nn.Conv2d(3, 4, 3, padding=1)
                    self.b = nn.Conv2d(3, 4, 1)
                    self.head = nn.Linear(4, 2)

                def forward(self, x):
                    y = torch.relu(self.a(x)) + self.b(x)
                    return self.head(y.mean((2, 3)))

            def make():
                """A tiny two-branch user model."""
                return Tiny()

            make.input_shape = (1, 3, 12, 12)
            make.test_input_shape = (1, 3, 6, 6)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "my_opss_models:make"
    spec = models.get_spec(name)
    assert spec.input_shape == (1, 3, 12, 12) and spec.test_input_shape == (1, 3, 6, 6)
    assert spec.description == "A tiny two-branch user model."
    m = models.get_model(name, seed=2)
    assert models.fingerprint(m) == models.fingerprint(models.get_model(name, seed=2))
    x = models.example_input(name)
    g = capture(m, x, "layer", name=name)
    assert g.structure() == "dag"
    sp = split(g, {"x", "relu"})
    assert sp.cut == ("x", "relu")  # the 1x1 branch still needs the input
    with torch.no_grad():
        assert_close(sp.server.run(sp.client.run(x)), m(x))
    with pytest.raises(ModelNotFoundError, match="expected a callable 'nope'"):
        models.get_model("my_opss_models:nope")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_resolution_forward(name):
    m = models.get_model(name)
    x = models.example_input(name)
    with torch.no_grad():
        y = m(x)
    assert y.shape[0] == 1 and torch.isfinite(y).all()


def test_spec_shape_and_build_model_from_a_spec():
    spec = models.get_spec("randwire")
    assert spec.shape() == spec.input_shape and spec.shape(small=True) == (1, 3, 16, 16)
    assert spec.shape(True, given=[1, 3, 8, 8]) == (1, 3, 8, 8)
    assert models.example_input("randwire", small=True).shape == spec.shape(True)
    built = models.build_model(spec, seed=4)
    assert not built.training
    assert models.fingerprint(built) == models.fingerprint(models.get_model("randwire", seed=4))
