"""Load-aware plans: the server reports each model's recent queue wait and compute (ListModels
and every reply); the planner adds the expected wait to the server term of every offloading
plan; a client re-plans when the wait moves, here against a real server whose compute is
slowed by its ``inject_delay_s`` option and loaded by other clients.

Oracles: the planner without the wait (the wait is added exactly once, local plans are
untouched), the min cut's own choice, the server's injected delay, and the plan's cut.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from opss import models
from opss.client.session import ClientConfig, ClientSession
from opss.graph import capture
from opss.latency import PlanGraph
from opss.link import link_from_spec
from opss.plan import STRATEGIES, plan_all, plans_to_json
from opss.split import split
from opss.v1 import opss_pb2, opss_pb2_grpc
from opss.wire import infer_requests
from opss.server import ServerConfig, build_server

pytestmark = pytest.mark.usefixtures("one_thread")


def _chain_costs():
    """A 4-vertex chain whose offloading plans win on an idle server (client 10 ms a layer, server
    1 ms, 1 kB tensors over 1 Gbit/s)."""
    ids = ["x", "a", "b", "out"]
    graph = PlanGraph(ids, [("x", "a"), ("a", "b"), ("b", "out")], {v: 1000 for v in ids}, "x", "out")
    client = {"x": 0.0, "a": 0.01, "b": 0.01, "out": 0.01}
    server = {"x": 0.0, "a": 0.001, "b": 0.001, "out": 0.001}
    return graph, client, server, link_from_spec("1gbit")


def test_the_wait_is_added_once_to_offloading_plans_and_can_make_local_win() -> None:
    graph, client, server, link = _chain_costs()
    idle = plan_all(graph, client, server, link, STRATEGIES)
    assert idle["opss"].cut_bytes > 0  # offloading wins on an idle server
    for wait in (0.002, 0.05):
        loaded = plan_all(graph, client, server, link, ["co", "lo"], server_wait=wait)
        co, co0 = loaded["co"].predicted, idle["co"].predicted
        assert co.server_wait == wait
        assert co.total == pytest.approx(co0.total + wait)
        assert co.server == pytest.approx(co0.server + wait)
        assert loaded["lo"].predicted == idle["lo"].predicted  # nothing waits for a local plan
    heavy = plan_all(graph, client, server, link, STRATEGIES, server_wait=0.05)
    for name in ("po", "opss", "joint"):  # 30 ms locally beats 3 ms + a 50 ms wait
        assert heavy[name].cut_bytes == 0, name
    doc = plans_to_json("chain", link, heavy, server_wait=0.05)
    assert doc["strategies"]["co"]["predicted"]["server_wait"] == 0.05
    assert doc["strategies"]["lo"]["predicted"]["server_wait"] == 0.0


@pytest.fixture()
def slow_server():
    handle = build_server(ServerConfig(models=("resnet18",), small=True, device="cpu", warmup_runs=0,
                                       inject_delay_s=0.1, load_window_s=1.5, max_inflight=8,
                                       max_inflight_per_peer=8, admission_wait_s=10.0))
    yield handle
    handle.stop(0).wait(5)


class _Load:
    """Other clients keeping the server busy: ``n`` threads sending cloud-only calls."""

    def __init__(self, port: int, n: int) -> None:
        model = models.get_model("resnet18", seed=0)
        graph = capture(model, models.example_input("resnet18", small=True), name="resnet18")
        s = split(graph, {graph.input_id})
        x = models.example_input("resnet18", small=True, seed=3)
        self.requests = list(infer_requests("resnet18", models.fingerprint(model),
                                            [(c, s.client.run(x)[c]) for c in s.cut],
                                            client_set=[graph.input_id]))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = opss_pb2_grpc.OpssStub(self.channel)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.stub.Infer(iter(self.requests), timeout=30)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.channel.close()


def test_the_server_reports_recent_wait_and_compute(slow_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{slow_server.port}") as ch:
        stub = opss_pb2_grpc.OpssStub(ch)
        idle = stub.ListModels(opss_pb2.ListModelsRequest()).models[0].load
        assert (idle.calls, idle.queue_s, idle.compute_s) == (0, 0.0, 0.0)
        assert idle.window_s == 1.5
        load = _Load(slow_server.port, 3)
        try:
            time.sleep(1.0)
            busy = stub.ListModels(opss_pb2.ListModelsRequest()).models[0].load
        finally:
            load.close()
        assert busy.calls >= 3
        assert busy.compute_s >= 0.1  # the injected delay is compute
        # three clients, one compute slot, 0.1 s calls: each waits for about the two others
        assert busy.queue_s >= 0.08
        time.sleep(1.6)  # the window passes
        assert stub.ListModels(opss_pb2.ListModelsRequest()).models[0].load.calls == 0


def test_a_client_replans_local_under_load_and_back_when_it_goes(slow_server) -> None:
    cfg = ClientConfig(model="resnet18", server=f"127.0.0.1:{slow_server.port}", small=True,
                       progress=False, strategy="opss", link="1gbit")
    ids = capture(models.get_model("resnet18", seed=0), models.example_input("resnet18", small=True),
                  name="resnet18").ids
    # given profiles, so the plans do not depend on this machine's load: 64 ms locally, about
    # 3 ms offloaded to an idle server (what the injected delay and the queue then change)
    s = ClientSession(cfg, out=None, err=None, client_profile={v: 0.002 for v in ids},
                      server_profile={v: 0.0001 for v in ids})
    x = models.example_input("resnet18", small=True, seed=1)
    try:
        assert s.plan.cut_bytes > 0, s.describe_plan()  # an idle server: offload
        assert s.server_wait == 0.0
        notes: list[str] = []
        load = _Load(slow_server.port, 3)
        try:
            deadline = time.monotonic() + 20
            while not s.execution.local and time.monotonic() < deadline:
                notes += s.run(x).notes
            assert s.execution.local, notes
            assert s.server_wait > 0.05, notes
            assert any("server wait" in n and "re-planned (new cut" in n for n in notes), notes
            assert "keeps this plan local" in s.describe_plan(), s.describe_plan()
            assert s.plan.to_json()["predicted"]["server_wait"] == 0.0
        finally:
            load.close()
        deadline = time.monotonic() + 20  # the window (1.5 s) and a ListModels refresh (2 s)
        notes = []
        while s.execution.local and time.monotonic() < deadline:
            notes += s.run(x).notes
            time.sleep(0.05)
        assert not s.execution.local, notes
        assert any("(ListModels)" in n for n in notes), notes
        rep = s.run(x)
        assert rep.result.timeline.where == "cooperative", rep.result.timeline.note
    finally:
        s.close()
