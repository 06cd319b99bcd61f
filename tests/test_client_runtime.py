"""The pipelined runtime without gRPC: compute thread, send queue, sender, timeline, fallback.

Oracle: the full model's own output on the same input (``assert_close``), and the
recorded timeline (when each vertex ran and each tensor was sent).
"""

from __future__ import annotations

import pytest
import torch

from opss import models
from opss.client.runtime import Execution, InProcessTransport, Threads, run_inference
from opss.client.throttle import TokenBucket
from opss.client.timeline import Timeline, render_gantt
from opss.graph import capture
from opss.split import split

NAME = "alexnet_parallel"
# the first two layers of each tower: two cut tensors of 9408 bytes each at 63x63
CLIENT = ("x", "towers_0_stage1_2", "towers_0_stage1_3", "towers_1_stage1_2", "towers_1_stage1_3")


@pytest.fixture(scope="module")
def setup():
    model = models.get_model(NAME)
    x = models.example_input(NAME, small=True)
    graph = capture(model, x, "layer", name=NAME)
    with torch.inference_mode():
        ref = model(x)
    threads = Threads(1)
    yield model, x, graph, ref, threads
    threads.close()


def _execution(graph, client, *, overlap, order=None):
    sp = split(graph, client)
    order = tuple(order) if order is not None else tuple(v for v in graph.ids if v in sp.client_set)
    return Execution(strategy="opss" if overlap else "po", split=sp, order=order, overlap=overlap,
                     local=not sp.server.vertices, model_name=NAME)


def test_cooperative_output_equals_the_full_model_and_timeline_is_consistent(setup):
    model, x, graph, ref, threads = setup
    ex = _execution(graph, CLIENT, overlap=True)
    transport = InProcessTransport.for_model(NAME, small=True, chunk_bytes=4096)
    res = run_inference(ex, x, transport, threads=threads)
    torch.testing.assert_close(res.output, ref)
    tl = res.timeline
    assert tl.where == "cooperative" and tl.note == ""
    assert [i.name for i in tl.compute] == list(ex.order)
    assert sorted(i.name for i in tl.upload) == sorted(ex.cut)
    # every byte of each cut tensor was sent (float32 wire)
    assert {i.name: i.nbytes for i in tl.upload} == {c: graph.node(c).bytes for c in ex.cut}
    for a, b in zip(tl.compute, tl.compute[1:]):
        assert a.end <= b.start + 1e-9
    assert tl.total >= max(tl.compute_end, tl.upload_end)
    # the JSON round trip keeps everything
    assert Timeline.from_json(tl.to_json()) == tl


def test_pipelined_upload_starts_before_the_last_layer_and_po_waits(setup):
    model, x, graph, ref, threads = setup
    # tower 0 first, so its cut tensor leaves while tower 1 computes
    order = ("x", "towers_0_stage1_2", "towers_0_stage1_3", "towers_1_stage1_2", "towers_1_stage1_3")
    transport = InProcessTransport.for_model(NAME, small=True, chunk_bytes=4096)
    rate = 9408 / 0.04  # each cut tensor takes 40 ms on the shaped link
    pipe = run_inference(_execution(graph, CLIENT, overlap=True, order=order), x, transport,
                         throttle=TokenBucket(rate), threads=threads, slowdown=5.0)
    po = run_inference(_execution(graph, CLIENT, overlap=False, order=order), x, transport,
                       throttle=TokenBucket(rate), threads=threads, slowdown=5.0)
    for res in (pipe, po):
        torch.testing.assert_close(res.output, ref)
    first = min(pipe.timeline.upload, key=lambda i: i.start)
    assert first.name == "towers_0_stage1_3"
    assert first.start < pipe.timeline.compute_end, render_gantt(pipe.timeline)
    assert pipe.timeline.hidden_upload > 0
    # po: nothing leaves before the whole client part ran
    assert min(i.start for i in po.timeline.upload) >= po.timeline.compute_end - 1e-6, render_gantt(po.timeline)
    assert po.timeline.hidden_upload == 0
    # the throttle shaped each upload: at least its bytes / rate
    for iv in pipe.timeline.upload + po.timeline.upload:
        assert iv.seconds >= iv.nbytes / rate * 0.95


def test_local_only_never_opens_a_call(setup):
    model, x, graph, ref, threads = setup

    class Refusing:
        def open(self, header, timeout):  # pragma: no cover - must not be called
            raise AssertionError("lo opened a call")

    res = run_inference(_execution(graph, graph.ids, overlap=True), x, Refusing(), threads=threads)
    torch.testing.assert_close(res.output, ref)
    assert res.timeline.where == "local" and res.timeline.upload == ()
    assert len(res.timeline.compute) == len(graph.ids)


@pytest.mark.parametrize("fail_after", [0, 2])
def test_call_failing_mid_upload_finishes_locally(setup, fail_after):
    model, x, graph, ref, threads = setup
    transport = InProcessTransport.for_model(NAME, small=True, chunk_bytes=4096, fail_after=fail_after)
    res = run_inference(_execution(graph, CLIENT, overlap=True), x, transport, threads=threads)
    assert res.fell_back
    assert res.timeline.note == "server closed the call mid-upload"
    torch.testing.assert_close(res.output, ref)
    assert "!" in render_gantt(res.timeline)


def test_skip_reason_runs_locally_without_touching_the_transport(setup):
    model, x, graph, ref, threads = setup
    transport = InProcessTransport.for_model(NAME, small=True)
    res = run_inference(_execution(graph, CLIENT, overlap=True), x, transport, threads=threads,
                        skip_reason="server in back-off")
    assert transport.calls == 0
    assert res.fell_back and res.timeline.note == "server in back-off"
    torch.testing.assert_close(res.output, ref)


def test_float16_wire_halves_the_bytes_and_stays_close(setup):
    model, x, graph, ref, threads = setup
    transport = InProcessTransport.for_model(NAME, small=True)
    res = run_inference(_execution(graph, CLIENT, overlap=True), x, transport, threads=threads,
                        wire_dtype="float16")
    assert {i.name: i.nbytes for i in res.timeline.upload} == {c: graph.node(c).bytes // 2 for c in CLIENT[2::2]}
    scale = float(ref.abs().max())
    torch.testing.assert_close(res.output, ref, rtol=2e-2, atol=2e-2 * max(1.0, scale))


def test_gantt_shows_every_upload_and_the_total(setup):
    model, x, graph, ref, threads = setup
    transport = InProcessTransport.for_model(NAME, small=True)
    res = run_inference(_execution(graph, CLIENT, overlap=True), x, transport, threads=threads)
    text = render_gantt(res.timeline, width=40)
    lines = text.splitlines()
    assert any(line.startswith("up towers_0_stage1") for line in lines)
    assert f"{res.timeline.total * 1e3:.1f}ms" in lines[0]
    bars = [line for line in lines if "|" in line]
    assert all(len(line.split("|")[1]) == 40 for line in bars[1:])


def test_paced_emulation_gives_each_vertex_its_emulated_time(setup):
    model, x, graph, ref, threads = setup
    ex = _execution(graph, CLIENT, overlap=True)
    pace = {v: 0.02 for v in CLIENT}  # an emulated client taking 20 ms per vertex
    transport = InProcessTransport.for_model(NAME, small=True)
    res = run_inference(ex, x, transport, threads=threads, pace=pace)
    torch.testing.assert_close(res.output, ref)
    tl = res.timeline
    start = tl.compute[0].start
    for i, iv in enumerate(tl.compute):  # vertex i ends no earlier than the emulated clock says
        assert iv.end - start >= 0.02 * (i + 1) - 1e-3, iv
    # the ideal clock absorbs sleep overshoot: the whole part takes ~5 x 20 ms, not 5 x (20 ms + overshoot)
    assert tl.compute_end - tl.compute[0].start == pytest.approx(0.1, abs=0.01)
