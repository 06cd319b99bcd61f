"""opss-client against a real in-process opss-server over loopback gRPC (small inputs).

Oracles: the local full model's output on the same input (``--verify`` semantics),
the recorded timeline, and the planner's own prediction for the same cut.
"""

from __future__ import annotations

import re
import statistics
import threading
import time

import pytest
import torch

from opss import models
from opss.client.runtime import Execution, run_inference
from opss.client.session import ClientConfig, ClientSession, tolerance_for
from opss.client.throttle import TokenBucket
from opss.client.timeline import render_gantt
from opss.server.app import build_server
from opss.server.config import ServerConfig

ALL = tuple(models.names())


@pytest.fixture(scope="module")
def server():
    handle = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=ALL, small=True,
                                       warmup_runs=0, max_inflight=4, max_workers=8))
    yield handle
    handle.stop(0).wait(5)


def _session(server, name, **kw) -> ClientSession:
    cfg = ClientConfig(model=name, server=f"127.0.0.1:{server.port}", small=True, progress=False, **kw)
    return ClientSession(cfg, out=None, err=None)


def _half_set(graph) -> frozenset:
    """The first half of the topological order, closed under predecessors: a real mid-graph cut."""
    ids = graph.ids
    keep = set(ids[: max(2, len(ids) // 2)])
    for v in ids:  # topological: predecessors come first
        if v in keep:
            keep.update(graph.preds(v))
    return frozenset(keep)


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_and_a_mid_cut_verify_over_grpc(server, name):
    # a fast link makes the planners cut inside the model where it pays
    s = _session(server, name, strategy="opss", also_plan=("lo", "co", "po", "joint"), link="1gbit")
    try:
        x = models.example_input(name, small=True, seed=1)
        for strategy in ("lo", "co", "po", "opss", "joint"):
            s.use(strategy)
            rep = s.run(x, verify=True)
            tl = rep.result.timeline
            assert tl.where != "fallback", f"{name}/{strategy}: {tl.note}"
            assert rep.verify_ok, f"{name}/{strategy}: max diff {rep.verify_error}"
            assert (tl.where == "local") == (not s.plans[strategy].cut_bytes)
        # an explicit mid-graph cut, float32 and float16 on the wire
        sp = s.split_for(_half_set(s.graph))
        assert sp.server.vertices, "the mid cut must leave work for the server"
        ex = Execution("given", sp, tuple(v for v in s.graph.ids if v in sp.client_set), True, False,
                       model_name=name, fingerprint=s.fingerprint)
        ref = s.reference(x)
        for wire in ("float32", "float16"):
            res = run_inference(ex, x, s.transport, wire_dtype=wire, threads=s.threads)
            assert res.timeline.where == "cooperative", res.timeline.note
            rtol, atol = tolerance_for(wire)
            torch.testing.assert_close(res.output, ref, rtol=rtol, atol=atol * max(1.0, float(ref.abs().max())))
            assert res.timeline.upload_bytes == sum(
                s.graph.node(c).bytes // (2 if wire == "float16" else 1) for c in sp.cut)
    finally:
        s.close()


@pytest.mark.timing
def test_probe_fits_the_throttled_link(server):
    rate = 2e6 / 8  # 2 Mbit/s
    # a longer probe budget gives the fit more transfers, so one delayed by a busy CI machine moves it less
    s = _session(server, "googlenet", strategy="co", link="auto", throttle=rate, probe_budget_s=0.6)
    try:
        assert s.link.n_samples >= 3
        assert abs(s.link.b - rate) / rate < 0.1, s.link
    finally:
        s.close()


# alexnet_parallel at 63x63: the first two layers of each tower on the client, two
# cut tensors of 9408 bytes; the towers are independent, so tower 0's tensor can
# upload while tower 1 computes.
PIPE_CLIENT = ("x", "towers_0_stage1_2", "towers_0_stage1_3", "towers_1_stage1_2", "towers_1_stage1_3")


@pytest.mark.timing
def test_pipelining_is_real_and_beats_po_on_the_same_cut(server):
    from opss.latency import predict
    from opss.link import LinkModel
    from opss.plan import plan_for_client_set

    slowdown = 40.0
    s = _session(server, "alexnet_parallel", strategy="po", link="wifi", client_slowdown=slowdown)
    try:
        x = models.example_input("alexnet_parallel", small=True)
        sp = s.split_for(PIPE_CLIENT)
        f = s.client_profile.costs_for(s.plan_graph)
        tower = slowdown * (f["towers_1_stage1_2"] + f["towers_1_stage1_3"])
        rate = 9408 / max(tower, 0.01)  # uploading one tensor takes as long as computing one tower
        link = LinkModel(c=0.0, b=rate)
        plan = plan_for_client_set(s.plan_graph, PIPE_CLIENT, s.client_profile, s.server_profile, link,
                                   client_slowdown=slowdown)
        topo = tuple(v for v in s.graph.ids if v in sp.client_set)
        po_pred = predict(s.plan_graph, PIPE_CLIENT, topo, {v: t * slowdown for v, t in f.items()},
                          s.client_profile.costs_for(s.plan_graph), link, pipelined=False)
        assert plan.predicted.total < 0.85 * po_pred.total, (plan, po_pred)  # a clear predicted gain

        opss_ex = Execution("opss", sp, plan.order, True, False, model_name="alexnet_parallel",
                            fingerprint=s.fingerprint)
        po_ex = Execution("po", sp, topo, False, False, model_name="alexnet_parallel", fingerprint=s.fingerprint)
        ref = s.reference(x)
        lat = {"opss": [], "po": []}
        # paced (each client vertex takes exactly its slowed-down profile time), so a busy
        # machine cannot stretch one arm's compute more than the other's
        pace = {v: slowdown * f[v] for v in sp.client_set}
        for _ in range(5):
            for key, ex in (("opss", opss_ex), ("po", po_ex)):
                res = run_inference(ex, x, s.transport, throttle=TokenBucket(rate), threads=s.threads,
                                    pace=pace)
                assert res.timeline.where == "cooperative", res.timeline.note
                torch.testing.assert_close(res.output, ref)
                lat[key].append(res.latency)
                if key == "opss":
                    tl = res.timeline
                    first = min(i.start for i in tl.upload)
                    assert first < tl.compute[-1].end, render_gantt(tl)
                else:
                    assert min(i.start for i in res.timeline.upload) >= res.timeline.compute_end - 1e-6
        assert statistics.median(lat["opss"]) < statistics.median(lat["po"]), lat
    finally:
        s.close()


def test_deadline_exceeded_finishes_locally(server):
    # co uploads 3 kB at 3 kB/s: a second on the wire, far past a 0.2 s deadline
    s = _session(server, "googlenet", strategy="co", link="24kbit", throttle=3000.0, timeout=0.2)
    try:
        x = models.example_input("googlenet", small=True)
        rep = s.run(x, verify=True)
        assert rep.result.fell_back
        assert "deadline" in rep.result.timeline.note
        assert rep.verify_ok
        assert len(rep.notes) == 1 and "\n" not in rep.notes[0]
    finally:
        s.close()


def test_server_stopped_mid_run_then_restarted_on_the_same_port():
    first = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=("googlenet",), small=True,
                                      warmup_runs=0, max_inflight=2, max_workers=4))
    port = first.port
    cfg = ClientConfig(model="googlenet", server=f"127.0.0.1:{port}", strategy="co", link="240kbit",
                       throttle=30_000.0, small=True, progress=False, backoff_initial_s=0.2, timeout=10.0)
    s = ClientSession(cfg, out=None, err=None)
    second = None
    try:
        x = models.example_input("googlenet", small=True)
        assert s.run(x).result.timeline.where == "cooperative"
        # the 3 kB input takes ~100 ms on the shaped link: stop the server in the middle
        killer = threading.Timer(0.03, lambda: first.stop(0))
        killer.start()
        rep = s.run(x, verify=True)
        killer.join()
        assert rep.result.fell_back, render_gantt(rep.result.timeline)
        assert rep.verify_ok
        assert rep.notes and "fell back to local" in rep.notes[0] and "\n" not in rep.notes[0]
        # while backing off, runs stay local and say why
        rep = s.run(x)
        assert rep.result.fell_back and "back-off" in rep.result.timeline.note
        second = build_server(ServerConfig(host="127.0.0.1", port=port, device="cpu", models=("googlenet",),
                                           small=True, warmup_runs=0, max_inflight=2, max_workers=4))
        deadline = time.monotonic() + 15
        where = None
        while time.monotonic() < deadline:
            time.sleep(max(0.05, s.backoff.waiting()))
            rep = s.run(x, verify=True)
            assert rep.verify_ok
            where = rep.result.timeline.where
            if where == "cooperative":
                break
        assert where == "cooperative", "the restarted server was never used again"
    finally:
        s.close()
        first.stop(0).wait(5)
        if second is not None:
            second.stop(0).wait(5)


@pytest.mark.timing
def test_bandwidth_drift_replans_between_runs(server):
    # co on alexnet_parallel uploads its 47.6 kB input; probe at 4 Mbit/s, then the link
    # halves: the estimator sees it from the real transfers and the session re-plans
    s = _session(server, "alexnet_parallel", strategy="co", link="auto", throttle=4e6 / 8, probe_budget_s=0.5)
    try:
        assert abs(s.link.b - 4e6 / 8) / (4e6 / 8) < 0.1
        s.throttle = TokenBucket(2e6 / 8)
        x = models.example_input("alexnet_parallel", small=True)
        notes = []
        for _ in range(4):
            rep = s.run(x)
            assert rep.result.timeline.where == "cooperative"
            notes += [n for n in rep.notes if n.startswith("link drifted")]
        assert len(notes) == 1, notes
        m = re.match(r"link drifted ([0-9.]+) -> ([0-9.]+) Mbps: re-planned", notes[0])
        assert m and abs(float(m.group(1)) - 4.0) < 0.4 and abs(float(m.group(2)) - 2.0) < 0.2, notes[0]
        assert abs(s.link.b - 2e6 / 8) / (2e6 / 8) < 0.1
        assert s.estimator.baseline == s.link
    finally:
        s.close()


def test_fingerprint_mismatch_is_a_clear_error(server):
    from opss.errors import FingerprintMismatchError

    with pytest.raises(FingerprintMismatchError, match="fingerprint .* expected"):
        _session(server, "googlenet", strategy="co", link="wifi", seed=1)


def test_token_is_sent_and_a_wrong_one_is_a_clear_error(tmp_path):
    from opss.errors import OpssError

    handle = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=("googlenet",), small=True,
                                       warmup_runs=0, max_inflight=2, max_workers=4, token="s3cret"))
    try:
        good = _session(handle, "googlenet", strategy="co", link="wifi", token="s3cret")
        try:
            rep = good.run(models.example_input("googlenet", small=True), verify=True)
            assert rep.result.timeline.where == "cooperative" and rep.verify_ok
        finally:
            good.close()
        with pytest.raises(OpssError, match="rejected our credentials"):
            _session(handle, "googlenet", strategy="co", link="wifi", token="wrong")
    finally:
        handle.stop(0).wait(5)


def test_the_grpc_call_opens_with_the_cut_and_the_server_checks_it(server):
    """Production opens with wire.infer_open: the cut travels, so a wrong one is refused."""
    from opss.client.grpc_transport import GrpcTransport
    from opss.client.runtime import CallFailed, CallHeader

    model = models.get_model("resnet18", seed=0)
    x = models.example_input("resnet18", small=True, seed=2)
    transport = GrpcTransport(f"127.0.0.1:{server.port}")
    try:
        for cut, ok in ((("x",), True), (("conv1",), False)):
            call = transport.open(CallHeader(request_id=f"cut-{ok}", model="resnet18",
                                             fingerprint=models.fingerprint(model), client_set=("x",), cut=cut,
                                             wire_dtype="float32"), timeout=60)
            if ok:
                for chunk in call.chunks("x", x):
                    call.push(chunk)
                torch.testing.assert_close(call.finish().output, model(x))
            else:  # refused as soon as the header is read: at a later push or at the finish
                with pytest.raises(CallFailed, match="cut mismatch"):
                    for chunk in call.chunks("x", x):
                        call.push(chunk)
                    call.finish()
    finally:
        transport.close()
