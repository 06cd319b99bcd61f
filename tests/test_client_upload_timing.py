"""Upload intervals end when the server got the last byte, not when gRPC took the chunks.

On a real link gRPC's flow-control windows and the TCP send buffer accept a
whole small tensor at once, so the sender's push ends long before the bytes
crossed the link. The runtime reconciles each upload interval with the
server's per-tensor arrival times, and the session feeds the link estimator
each tensor's time on the (serial) link.

Oracles: hand-computed ends and occupancies; a transport whose server reports
arrivals a known lag after the push; a real in-process gRPC server; and, as
root, a real veth link shaped by ``tc`` to a known rate (bytes * 8 / rate).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from opss import models
from opss.client.runtime import (
    Execution,
    InProcessTransport,
    Reply,
    Threads,
    reconcile_uploads,
    run_inference,
)
from opss.client.session import ClientConfig, ClientSession, link_samples
from opss.client.timeline import Interval, Timeline, render_gantt
from opss.graph import capture
from opss.link import LinkEstimator, LinkModel
from opss.split import split

# ---------------------------------------------------------------------------- unit: hand-computed


def _pushed() -> list[Interval]:
    # what the sender recorded: each push took ~10 ms (gRPC's buffers took the bytes at once)
    return [
        Interval("upload", "a", 0.000, 0.010, 50_000),
        Interval("upload", "b", 0.020, 0.030, 30_000),
        Interval("upload", "tiny", 0.200, 0.2005, 1_000),
        Interval("upload", "unreported", 0.500, 0.600, 8_000),
    ]


ARRIVALS = {  # seconds after the server got the open message
    "a": {"first_byte": 0.050, "last_byte": 0.199, "bytes": 50_000.0},
    "b": {"first_byte": 0.200, "last_byte": 0.319, "bytes": 30_000.0},
    "tiny": {"first_byte": 0.3290, "last_byte": 0.3295, "bytes": 1_000.0},
}
T_OPEN = 0.001


def test_reconciled_ends_are_the_server_arrivals_and_push_ends_are_kept():
    got = reconcile_uploads(_pushed(), ARRIVALS, T_OPEN, latest=1.0)
    assert [iv.name for iv in got] == ["a", "b", "tiny", "unreported"]
    assert [iv.end for iv in got] == pytest.approx([0.200, 0.320, 0.3305, 0.600])
    assert [iv.start for iv in got] == [iv.start for iv in _pushed()]  # starts stay the push starts
    assert [iv.pushed_end for iv in got] == [0.010, 0.030, 0.2005, None]  # no arrival: unchanged
    assert got[3] == _pushed()[3]


def test_reconcile_keeps_a_later_push_end_and_never_passes_the_reply():
    ups = [Interval("upload", "a", 0.0, 0.500, 9000), Interval("upload", "b", 0.5, 0.6, 9000)]
    got = reconcile_uploads(ups, {"a": {"last_byte": 0.3}, "b": {"last_byte": 5.0}}, 0.0, latest=0.9)
    assert got[0].end == 0.500 and got[0].pushed_end == 0.500  # paced sender: the push was the arrival
    assert got[1].end == 0.9  # the reply was in hand at 0.9: no byte arrived later
    assert reconcile_uploads(ups, None, 0.0) == tuple(ups)
    assert reconcile_uploads(ups, {}, 0.0) == tuple(ups)


def test_link_occupancy_terms_gantt_and_json_follow_the_reconciled_intervals():
    tl = Timeline(strategy="opss", compute=(Interval("compute", "v", 0.0, 0.25),),
                  upload=reconcile_uploads(_pushed(), ARRIVALS, T_OPEN, latest=1.0),
                  sent_at=0.6, reply_at=0.7, total=0.7, where="cooperative")
    on = tl.link_intervals()
    # serial link: tensor i is on it from max(start_i, end_{i-1}) to end_i
    assert [iv.start for iv in on] == pytest.approx([0.0, 0.200, 0.320, 0.500])
    assert [iv.end for iv in on] == pytest.approx([0.200, 0.320, 0.3305, 0.600])
    assert tl.upload_time == pytest.approx(0.200 + 0.120 + 0.0105 + 0.100)
    assert tl.hidden_upload == pytest.approx(0.200 + 0.050)  # compute ends at 0.25
    assert tl.upload_end == pytest.approx(0.600)
    assert tl.terms()["upload"] == pytest.approx(tl.upload_time)
    # the estimator's samples: occupancy + c, tensors under 4096 bytes skipped
    samples = link_samples(tl, c=0.004)
    assert [w for w, _ in samples] == [50_000, 30_000, 8_000]
    assert [t for _, t in samples] == pytest.approx([0.204, 0.124, 0.104])
    back = Timeline.from_json(tl.to_json())
    assert back == tl and back.to_json()["terms"] == tl.to_json()["terms"]
    text = render_gantt(tl, width=50)
    row_b = next(line for line in text.splitlines() if line.startswith("up b"))
    bar = row_b.split("|")[1]
    assert "." in bar and "=" in bar and bar.index(".") < bar.index("=")  # queued behind a, then on the link
    assert "120.0ms" in row_b and ". queued" in text


def test_estimator_fed_with_occupancy_recovers_the_link_rate_not_the_push_rate():
    # two 40 kB tensors pushed within 10 ms, arriving 160 ms apart: a 250 kB/s link
    ups = (Interval("upload", "a", 0.0, 0.005, 40_000), Interval("upload", "b", 0.005, 0.010, 40_000))
    arrivals = {"a": {"last_byte": 0.160}, "b": {"last_byte": 0.320}}
    est = LinkEstimator(LinkModel(c=0.004, b=1e6), window=8, min_samples=2)
    for _ in range(2):
        tl = Timeline(strategy="co", compute=(), upload=reconcile_uploads(ups, arrivals, 0.0, latest=1.0),
                      where="cooperative", total=0.4)
        est.extend(link_samples(tl, c=est.baseline.c))
    assert est.model.b == pytest.approx(40_000 / 0.160)
    pushed = Timeline(strategy="co", compute=(), upload=ups, total=0.4)
    assert [t for _, t in link_samples(pushed)] == pytest.approx([0.005, 0.005])  # the bug: 8 MB/s


# ---------------------------------------------------------------------------- the runtime's wiring

NAME = "alexnet_parallel"
CLIENT = ("x", "towers_0_stage1_2", "towers_0_stage1_3", "towers_1_stage1_2", "towers_1_stage1_3")
LAG = 0.05


class _LaggingTransport(InProcessTransport):
    """An in-process server that reports each tensor as arriving LAG seconds after its last push.

    Like a server behind a slow link: the reply's arrival times (seconds after
    its own open) are later than the client's push ends; the reply comes once
    the last byte "arrived".
    """

    def open(self, header, timeout):
        call = super().open(header, timeout)
        opened = time.perf_counter()
        inner_push, inner_finish = call.push, call.finish
        arrivals = {}

        def push(chunk):
            inner_push(chunk)
            arrivals[chunk.message.name] = {"last_byte": time.perf_counter() + LAG - opened}

        def finish():
            reply = inner_finish()
            time.sleep(LAG)
            return Reply(output=reply.output, server={**reply.server, "arrivals": arrivals})

        call.push, call.finish = push, finish
        return call


@pytest.mark.timing
def test_run_inference_moves_each_upload_end_to_the_reported_arrival():
    model = models.get_model(NAME)
    x = models.example_input(NAME, small=True)
    graph = capture(model, x, "layer", name=NAME)
    sp = split(graph, CLIENT)
    ex = Execution(strategy="opss", split=sp, order=tuple(v for v in graph.ids if v in sp.client_set),
                   overlap=True, local=False, model_name=NAME)
    with Threads(1) as threads:
        plain = run_inference(ex, x, InProcessTransport.for_model(NAME, small=True), threads=threads)
        res = run_inference(ex, x, _LaggingTransport.for_model(NAME, small=True), threads=threads)
    assert all(iv.pushed_end is None for iv in plain.timeline.upload)  # no arrivals: as before
    tl = res.timeline
    assert tl.where == "cooperative" and sorted(iv.name for iv in tl.upload) == sorted(sp.cut)
    with torch.inference_mode():
        torch.testing.assert_close(res.output, model(x))
    for iv in tl.upload:
        # t_open is taken just before open(): the end is at most that much earlier than push + LAG
        assert iv.pushed_end is not None
        assert iv.pushed_end + LAG - 0.005 <= iv.end <= iv.pushed_end + LAG + 1e-9, iv
    assert tl.upload_end <= tl.total
    assert tl.after_upload == pytest.approx(tl.total - max(tl.upload_end, tl.compute_end))


# ---------------------------------------------------------------------------- real gRPC, loopback


@pytest.fixture(scope="module")
def grpc_server():
    from opss.server.app import build_server
    from opss.server.config import ServerConfig

    handle = build_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", models=("alexnet",), small=True,
                                       warmup_runs=0, max_inflight=4, max_workers=8))
    yield handle
    handle.stop(0).wait(5)


@pytest.mark.timing
def test_grpc_reply_carries_arrivals_and_paced_uploads_measure_the_bucket_rate(grpc_server):
    rate = 500_000.0  # bytes/s: the sender's token bucket paces the pushes
    cfg = ClientConfig(model="alexnet", server=f"127.0.0.1:{grpc_server.port}", strategy="co", link="auto",
                       throttle=rate, small=True, progress=False)
    s = ClientSession(cfg, out=None, err=None)
    try:
        x = models.example_input("alexnet", small=True, seed=1)
        reps = [s.run(x) for _ in range(3)]
        estimate = s.estimator.model
    finally:
        s.close()
    for rep in reps:
        tl = rep.result.timeline
        assert tl.where == "cooperative"
        assert set(tl.server["arrivals"]) == set(s.plan.cut)
        (up,) = tl.upload
        assert tl.server["arrivals"][up.name]["bytes"] == up.nbytes
        assert up.pushed_end is not None and up.pushed_end <= up.end <= tl.total
        # paced: the bucket released the last chunk when a link of `rate` would have finished it
        assert up.seconds == pytest.approx(up.nbytes / rate, rel=0.2)
    assert estimate.b == pytest.approx(rate, rel=0.25)


# ---------------------------------------------------------------------------- root: a real shaped link

SHAPED_BPS = 2e6
PORT = 50091


def _wait_listening(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line.rstrip())
        if "listening on" in line:
            return
    raise AssertionError(f"opss-server did not start in the namespace: {' | '.join(seen[-5:])}")


@pytest.mark.root
def test_shaped_veth_upload_ends_at_arrival_and_the_estimator_sees_the_shaped_rate():
    from opss.lab.testbed import Testbed, TestbedConfig, leftovers

    model = "alexnet"  # its small input (47.6 kB) fits in gRPC's first flow-control window
    prefix = f"opssu{os.getpid() % 1000}"
    with Testbed(TestbedConfig(rate_bps=SHAPED_BPS, subnet="10.77.7.0/30", shaper="tc", prefix=prefix)) as tb:
        # One segment per packet, as on a real narrow link: with GSO the veth hands HTB 64 kB
        # super-packets, which HTB lets through at once and pays for by holding the *next*
        # packet back, so a tensor under 64 kB would "arrive" instantly.
        subprocess.run(["ip", "link", "set", "dev", tb.client_if, "gso_max_segs", "1"], check=True)
        server = tb.spawn_server([sys.executable, "-m", "opss.server", "--host", tb.server_ip, "--port", str(PORT),
                                  "--models", model, "--small", "--profile", "off", "--device", "cpu",
                                  "--log-level", "WARNING"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_listening(server)
        cfg = ClientConfig(model=model, server=f"{tb.server_ip}:{PORT}", strategy="co", link="auto", small=True,
                           progress=False, threads=1)
        s = ClientSession(cfg, out=None, err=None)
        try:
            probed = s.link
            x = models.example_input(model, small=True, seed=0)
            reps = [s.run(x) for _ in range(5)]
            estimate = s.estimator.model
            link_after = s.link
        finally:
            s.close()
    assert leftovers(prefix) == []
    for rep in reps:
        tl = rep.result.timeline
        assert tl.where == "cooperative", tl.note
        (up,) = tl.upload
        expected = up.nbytes * 8 / SHAPED_BPS
        # the push ended long before the bytes crossed the link (the bug's premise) ...
        assert up.pushed_end - up.start < 0.5 * expected, render_gantt(tl)
        # ... the reconciled interval is the transfer over the shaped link
        assert abs(up.seconds - expected) / expected < 0.2, (up, expected, render_gantt(tl))
    assert abs(estimate.b * 8 - SHAPED_BPS) / SHAPED_BPS < 0.25, (estimate, probed)
    assert link_after is probed
    assert not [n for rep in reps for n in rep.notes if "drifted" in n], [rep.notes for rep in reps]
