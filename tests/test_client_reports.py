"""What the client tells the user after its runs: the verify error on the output's own scale,
local fallbacks apart from the runs that went as planned, and a profile that no longer matches
what this machine computes now.

Oracles: the full model's own output (the verify error is recomputed here), the runs' own
latencies (the medians are recomputed here), and a profile scaled by a known factor.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys

import pytest

torch = pytest.importorskip("torch")

from opss.client.cli import format_run, summarize, summary_lines  # noqa: E402
from opss.client.runtime import InProcessTransport  # noqa: E402
from opss.client.session import ClientConfig, ClientSession, compute_check, tolerance_for  # noqa: E402
from opss.profile import Profile  # noqa: E402
from opss.stats import median  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MODULE = "opss_test_bigout"
NAME = f"{MODULE}:make"
SOURCE = '''
from torch import nn


class Scale(nn.Module):
    """Outputs of the order of 1e10, like inception_v3's with random weights."""

    def forward(self, x):
        return x * 1e10


def make():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), Scale())


make.input_shape = (1, 3, 32, 32)
'''


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """The model above, importable, its profiles in a private cache."""
    folder = tmp_path_factory.mktemp("usermodel")
    (folder / f"{MODULE}.py").write_text(SOURCE, encoding="utf-8")
    old_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
    sys.path.insert(0, str(folder))
    yield NAME
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)
    if old_cache is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old_cache


def _session(name, transport=None, **kw) -> ClientSession:
    cfg = ClientConfig(model=name, progress=False, **kw)
    return ClientSession(cfg, transport=transport, out=None, err=None)


def test_verify_prints_the_error_relative_to_the_output_and_its_tolerance(user_model):
    # codecs raw: the float16 wire dtype applies to tensors sent raw (the exact codecs would be bit-exact)
    s = _session(user_model, InProcessTransport.for_model(user_model), strategy="co", link="wifi",
                 wire_dtype="float16", codecs="raw")
    try:
        x = s.resolved.example(seed=3)
        rep = s.run(x, verify=True)
        ref = s.reference(x)
    finally:
        s.close()
    assert rep.result.timeline.where == "cooperative" and rep.verify_ok
    diff = float((rep.result.output.float() - ref.float()).abs().max())
    scale = float(ref.abs().max())
    assert scale > 1e9 and diff > 1.0  # the absolute error is large, as for inception_v3
    assert rep.verify_error == pytest.approx(diff)
    assert rep.verify_rel_error == pytest.approx(diff / scale)
    assert rep.verify_tolerance == tolerance_for("float16")[1]
    assert rep.verify_rel_error < rep.verify_tolerance
    out = io.StringIO()
    format_run(rep, 1, out, timeline=False)
    line = next(ln for ln in out.getvalue().splitlines() if "verify:" in ln)
    assert f"relative error {diff / scale:.2g}" in line and "tolerance 2e-02" in line, line


def test_local_fallbacks_are_summarized_apart_from_the_runs_as_planned(user_model):
    """A paced 10x client: its fallbacks run the server's part here, unpaced (much faster)."""
    kw = dict(strategy="po", link="1gbit", client_slowdown=10.0, pace=True)
    ok = _session(user_model, InProcessTransport.for_model(user_model), **kw)
    bad = _session(user_model, InProcessTransport.for_model(user_model, fail_after=0), **kw)
    try:
        assert ok.plan.cut_bytes and ok.plan.client == bad.plan.client, "the plan must offload"
        x = ok.resolved.example(seed=1)
        reports = [ok.run(x) for _ in range(3)] + [bad.run(x) for _ in range(2)]
    finally:
        ok.close()
        bad.close()
    assert [r.result.fell_back for r in reports] == [False] * 3 + [True] * 2
    summary = summarize(reports)
    assert summary["planned_runs"] == 3 and summary["fallbacks"] == 2
    assert summary["planned_median_s"] == median(r.latency for r in reports[:3])
    assert summary["fallback_median_s"] == median(r.latency for r in reports[3:])
    assert summary["median_s"] == median(r.latency for r in reports)  # the old key keeps its meaning
    text = "\n".join(summary_lines(summary))
    assert "3 of 5 runs that ran as planned" in text and "2 local fallbacks apart" in text, text
    assert f"median {summary['planned_median_s'] * 1e3:.1f}ms" in text


def _scaled(profile: Profile, factor: float) -> Profile:
    """The same table with every time ``factor`` times larger."""
    return dataclasses.replace(profile, vertices={
        v: dataclasses.replace(st, median=st.median * factor, p10=st.p10 * factor, p90=st.p90 * factor)
        for v, st in profile.vertices.items()})


@pytest.mark.timing
@pytest.mark.parametrize(("factor", "verdict"), [(0.1, "slower"), (20.0, "faster")])
def test_a_profile_that_no_longer_matches_the_measured_compute_is_reported(user_model, factor, verdict):
    probe = _session(user_model, strategy="lo")
    try:
        true = probe.client_profile
    finally:
        probe.close()
    s = ClientSession(ClientConfig(model=user_model, strategy="lo", progress=False), out=None, err=None,
                      client_profile=_scaled(true, factor))
    try:
        x = s.resolved.example()
        reports = [s.run(x) for _ in range(5)]
        check = s.compute_check(reports)
    finally:
        s.close()
    ratio = median(r.result.timeline.client_compute / r.predicted.client_compute for r in reports)
    assert check["ratio"] == pytest.approx(ratio)
    assert check["off"], check
    assert verdict in check["message"] and "--fresh-profile" in check["message"]
    summary = summarize(reports, check)
    assert summary["client_compute"]["off"] and "note: client compute measured" in "\n".join(summary_lines(summary))
    # paced runs take their profiled time by construction: nothing to check
    assert compute_check(reports, true, paced=True) is None
