"""Profile tables: measuring, storing, lookup policy, block aggregation, the CLI."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from opss.cli import main  # noqa: E402
from opss.errors import ProfileError  # noqa: E402
from opss.latency import PlanGraph  # noqa: E402
from opss.profile import (  # noqa: E402
    Profile,
    capture_model,
    device_tag,
    graph_hash,
    load_or_build_profile,
    load_profile,
    measure_profile,
    profile_path,
)

MODEL = "resnet18"


@pytest.fixture(scope="module")
def small():
    from opss import models

    shape = tuple(models.get_spec(MODEL).test_input_shape)
    lg = capture_model(MODEL, "layer", shape)
    prof = measure_profile(MODEL, threads=1, repeats=15, warmup=2, input_shape=shape, progress=False, graph=lg)
    return shape, lg, prof


@pytest.mark.timing
def test_profile_covers_every_vertex_with_sane_stats(small):
    shape, lg, prof = small
    assert set(prof.vertices) == {n.id for n in lg.nodes}
    for n in lg.nodes:
        st = prof.vertices[n.id]
        assert 0 <= st.p10 <= st.median <= st.p90
        assert st.bytes == n.bytes and st.members == n.members
    meta = prof.meta
    assert meta["threads"] == 1 and meta["input_shape"] == list(shape)
    assert meta["torch"] == torch.__version__ and meta["granularity"] == "layer"
    assert meta["arch_hash"] == graph_hash(lg)
    assert prof.device_tag == device_tag("cpu", 1)
    # the oracle: the model's own eager forward, timed here independently of the profiler
    # (loose bounds: this test shares 2 cores with other work; bench_profile measures it properly)
    import statistics
    import time

    from opss import models

    model = models.get_model(MODEL)
    x = torch.randn(shape)
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the profile was measured
    with torch.inference_mode():
        for i in range(18):
            t0 = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    ratio = prof.total(calibrated=False) / statistics.median(times)
    assert 0.5 < ratio < 2.0, ratio
    assert prof.load_scale >= 0.5


def test_profile_json_round_trip(small, tmp_path):
    _, _, prof = small
    path = prof.save(tmp_path / "x.json")
    back = load_profile(path)
    assert back.vertices == prof.vertices and dict(back.meta) == dict(prof.meta)
    assert back.fx_medians == prof.fx_medians
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError, match="unreadable"):
        load_profile(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="format"):
        Profile.from_json({"format": 99})


def test_block_costs_are_sums_of_member_layers(small):
    shape, lg, prof = small
    from opss import models
    from opss.graph import capture

    x = torch.randn(shape)
    block = capture(models.get_model(MODEL), x, "block", name=MODEL)
    assert len(block.nodes) < len(lg.nodes)
    bg = PlanGraph.from_layer_graph(block)
    costs = prof.costs_for(bg)
    # independent oracle: each block's time is the sum of the fx medians of its members
    assert block.blocks()
    for n in block.nodes:
        if n.op == "block":
            want = math.fsum(prof.fx_medians[m] for m in n.members) * prof.fx_load_scale
        else:  # a layer outside every block: the same vertex as in the layer graph
            assert prof.vertices[n.id].members == n.members
            want = prof.vertices[n.id].median * prof.load_scale
        assert costs[n.id] == pytest.approx(want)
    # the layer graph takes the vertex medians directly (times the load scale unless raw)
    pg = PlanGraph.from_layer_graph(lg)
    assert prof.costs_for(pg, calibrated=False) == prof.medians
    assert prof.costs_for(pg) == pytest.approx({v: m * prof.load_scale for v, m in prof.medians.items()})
    bogus = PlanGraph(["x", "nope"], [("x", "nope")], {"x": 1, "nope": 1}, "x", "nope",
                      members={"nope": ("not_a_node",)})
    with pytest.raises(ProfileError, match="nope"):
        prof.costs_for(bogus)


def test_lookup_builds_then_loads_then_reports_mismatch(small, tmp_path, capsys):
    shape, lg, _ = small
    kw = dict(role="client", root=tmp_path, input_shape=shape, repeats=2, warmup=0, progress=False, graph=lg)
    first = load_or_build_profile(MODEL, **kw)
    err = capsys.readouterr().err
    assert "no profile" in err and "measuring it now" in err
    path = profile_path(MODEL, first.device_tag, tmp_path, shape)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    again = load_or_build_profile(MODEL, **kw)
    assert again.vertices == first.vertices and path.stat().st_mtime_ns == mtime
    assert capsys.readouterr().err == ""
    # only the environment differs: warn and use it
    data = json.loads(path.read_text())
    data["meta"]["torch"] = "0.0.1"
    path.write_text(json.dumps(data))
    used = load_or_build_profile(MODEL, **kw)
    assert used.meta["torch"] == "0.0.1"
    assert "different environment" in capsys.readouterr().err
    # the architecture differs: refuse, and say how to rebuild
    data["meta"]["arch_hash"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="--force"):
        load_or_build_profile(MODEL, **kw)
    rebuilt = load_or_build_profile(MODEL, force=True, **kw)
    assert rebuilt.meta["arch_hash"] == graph_hash(lg) and rebuilt.meta["torch"] == torch.__version__
    assert "rebuilding" in capsys.readouterr().err
    with pytest.raises(ProfileError, match="no profile"):
        load_or_build_profile(MODEL, **{**kw, "root": tmp_path / "empty"}, build_missing=False)


def test_device_tags_are_stable_and_sanitized():
    tag = device_tag("cpu", 2)
    assert tag.startswith("cpu-") and tag.endswith("-2t") and tag == device_tag("cpu", 2)
    assert all(c.isalnum() or c == "-" for c in tag)
    assert device_tag("cuda", gpu_name="NVIDIA H200 (TM)") == "cuda-nvidia-h200"
    with pytest.raises(ProfileError):
        device_tag("tpu", 1)
    with pytest.raises(ProfileError):
        device_tag("cpu", 0)


def test_measure_rejects_bad_arguments():
    with pytest.raises(ProfileError, match="method"):
        measure_profile(MODEL, method="stopwatch")
    with pytest.raises(ProfileError, match="repeats"):
        measure_profile(MODEL, repeats=0)


def test_cli_profile_builds_and_then_keeps(tmp_path, capsys):
    argv = ["profile", "--model", "alexnet", "--profiles-dir", str(tmp_path), "--repeats", "2", "--warmup", "0",
            "--quiet"]
    n = len(capture_model("alexnet").nodes)
    assert main(argv) == 0
    out = capsys.readouterr()
    assert f"alexnet: {n} vertices" in out.out and "measuring it now" in out.err
    assert main(argv) == 0
    out = capsys.readouterr()
    assert f"alexnet: {n} vertices" in out.out and "measuring" not in out.err
    assert main(["profile", "--model", "no_such_model", "--profiles-dir", str(tmp_path)]) == 2
    assert "no_such_model" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["profile", "--model", "alexnet", "--device", "cuda", "--profiles-dir", str(tmp_path)]) == 2
        assert "expected a CUDA device" in capsys.readouterr().err


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_profile_uses_the_same_code(tmp_path):
    from opss import models

    shape = tuple(models.get_spec(MODEL).test_input_shape)
    prof = load_or_build_profile(MODEL, role="server", root=tmp_path, input_shape=shape, repeats=3, warmup=1,
                                 progress=False)
    assert prof.device_tag.startswith("cuda-") and prof.meta["device"] == "cuda"
    lg = capture_model(MODEL, "layer", shape)
    assert set(prof.vertices) == {n.id for n in lg.nodes}
    assert all(st.median >= 0 for st in prof.vertices.values())


def test_a_user_models_profile_goes_to_the_users_cache_not_the_repository(tmp_path, monkeypatch, capsys):
    """``opss profile`` of a ``package.module:factory`` model writes under $XDG_CACHE_HOME/opss/profiles
    and leaves the checkout's profiles/ exactly as it was; a zoo model still reads the committed table."""
    import sys
    from pathlib import Path

    from opss.profile import default_profiles_root

    repo_profiles = Path(__file__).resolve().parent.parent / "profiles"
    before = sorted(p.relative_to(repo_profiles) for p in repo_profiles.rglob("*"))
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "cachemodels.py").write_text(
        "import torch.nn as nn\n\ndef make():\n    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())\n\n"
        "make.input_shape = (1, 3, 12, 12)\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["profile", "--model", "cachemodels:make", "--repeats", "2", "--warmup", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    written = list((tmp_path / "cache" / "opss" / "profiles").rglob("*.json"))
    assert [p.name for p in written] == ["cachemodels_make.json"], written
    assert str(written[0]) in err
    assert sorted(p.relative_to(repo_profiles) for p in repo_profiles.rglob("*")) == before
    assert default_profiles_root("googlenet") == repo_profiles
    assert default_profiles_root("cachemodels:make") == tmp_path / "cache" / "opss" / "profiles"
    # and the lookup finds it there again (no second measurement)
    assert main(["profile", "--model", "cachemodels:make", "--quiet"]) == 0
    assert "measuring" not in capsys.readouterr().err


def test_a_zoo_model_profiled_at_another_shape_never_takes_the_real_profiles_place(tmp_path):
    """A --small server with --profile build stored its 16x16 resnet18 profile as resnet18.json, and the
    real 224x224 server then refused that file and reported no server times at all."""
    from opss.profile import profile_path

    real = profile_path("resnet18", "cpu-x-1t", tmp_path, (1, 3, 224, 224))
    small = profile_path("resnet18", "cpu-x-1t", tmp_path, (1, 3, 16, 16))
    assert real == profile_path("resnet18", "cpu-x-1t", tmp_path) == tmp_path / "cpu-x-1t" / "resnet18.json"
    assert small == tmp_path / "cpu-x-1t" / "resnet18.1x3x16x16.json"
    assert profile_path("mypkg.nets:Net", "t", tmp_path, (1, 3, 16, 16)).name == "mypkg.nets_Net.json"


def test_a_zoo_model_at_another_shape_is_kept_out_of_the_checkout(tmp_path, monkeypatch):
    """Without a root, the zoo's own shape goes to the checkout's committed tables and any other
    shape (the tests' --small runs) to the user's cache, so a test run leaves no untracked profile."""
    from opss.profile import default_profiles_root, profile_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert profile_path("resnet18", "cpu-x-1t", None, (1, 3, 224, 224)) == \
        default_profiles_root("resnet18") / "cpu-x-1t" / "resnet18.json"
    assert profile_path("resnet18", "cpu-x-1t", None, (1, 3, 16, 16)) == \
        tmp_path / "opss" / "profiles" / "cpu-x-1t" / "resnet18.1x3x16x16.json"
