"""Dynamic batching: a batched call's output equals the request run alone, for every zoo model
on random partitions; a batch waits at most the queue delay; calls of different partitions
never share a batch; a model whose graph hard-codes batch 1 is refused with its reason.

The oracle for every reply is the full model run alone on that request's input (a separately
built copy, same seed), and, at library level, ``ServerPart.run`` of each request alone.
"""

from __future__ import annotations

import contextlib
import random
import textwrap
import threading
import time

import grpc
import pytest
import torch

from opss import models
from opss.graph import capture
from opss.split import batch_refusal, split
from opss.v1 import opss_pb2, opss_pb2_grpc
from opss.wire import infer_requests, tensor_from_proto
from opss.server import ServerConfig, build_server

pytestmark = pytest.mark.usefixtures("one_thread")

DELAY_S = 0.15


def _graph(name: str):
    model = models.get_model(name, seed=0)
    return model, capture(model, models.example_input(name, small=True), name=name)


def _random_partition(graph, seed: int) -> set[str]:
    rng = random.Random(seed)
    picks = set(rng.sample(list(graph.ids), rng.randint(1, max(1, len(graph.ids) // 2))))
    return graph.dag.closure([*picks, graph.input_id])


def _inputs(name: str, n: int, seed: int) -> list[torch.Tensor]:
    shape = models.get_spec(name).test_input_shape
    return [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]


# --- library --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", models.names())
def test_run_batch_equals_each_request_alone(name: str) -> None:
    _, graph = _graph(name)
    assert batch_refusal(graph) is None
    for seed in (1, 2):
        s = split(graph, _random_partition(graph, seed))
        requests = [s.client.run(x) for x in _inputs(name, 3, 10 * seed)]
        batched = s.server.run_batch(requests)
        assert len(batched) == 3
        for req, out in zip(requests, batched):
            alone = s.server.run(req)
            assert out.shape == alone.shape
            torch.testing.assert_close(out, alone, msg=f"{name} partition {seed}")


class _FixedBatch(torch.nn.Module):
    """A model whose flatten hard-codes batch 1: ``x.view(1, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(self.conv(x).view(1, -1))


class _MixesSamples(torch.nn.Module):
    """Shapes keep the batch, but the output of one sample depends on the others."""

    def forward(self, x):
        return x + 0.5 * x.flip(0)


def test_batch_refusal_names_a_literal_batch_size_and_sample_mixing() -> None:
    fixed = capture(_FixedBatch().eval(), torch.randn(1, 3, 8, 8))
    why = batch_refusal(fixed)
    assert why is not None and "batch of 2" in why
    mixing = capture(_MixesSamples().eval(), torch.randn(1, 3, 4, 4))
    why = batch_refusal(mixing)
    assert why is not None and "mixes samples" in why


# --- server ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    config = ServerConfig(models=tuple(models.names()), small=True, device="cpu", max_inflight=16,
                          max_inflight_per_peer=16, max_workers=40, warmup_runs=1, max_batch=8,
                          max_queue_delay_s=DELAY_S)
    handle = build_server(config)
    yield handle
    handle.stop(0).wait()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield opss_pb2_grpc.OpssStub(channel)


def _call_all(stub, calls: list[tuple[str, str, list, list[str]]]) -> list:
    """Send every ``(model, fingerprint, tensors, client set)`` at once; the replies in order."""
    replies: list = [None] * len(calls)
    errors: list = []
    start = threading.Barrier(len(calls))

    def one(i: int) -> None:
        name, fp, tensors, members = calls[i]
        try:
            start.wait(10)
            replies[i] = stub.Infer(infer_requests(name, fp, tensors, client_set=members), timeout=60)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    return replies


@pytest.mark.parametrize("name", models.names())
def test_batched_replies_equal_each_request_run_alone(stub, name: str) -> None:
    model, graph = _graph(name)
    fp = models.fingerprint(model)
    calls, refs, groups = [], [], []
    for seed in (3, 4):  # two random partitions, three calls each, all at once
        s = split(graph, _random_partition(graph, seed))
        for x in _inputs(name, 3, 100 * seed):
            out = s.client.run(x)
            calls.append((name, fp, [(c, out[c]) for c in s.cut], sorted(s.client_set)))
            with torch.no_grad():
                refs.append(model(x))
            groups.append(frozenset(s.client_set))
    replies = _call_all(stub, calls)
    for reply, ref, group in zip(replies, refs, groups):
        torch.testing.assert_close(tensor_from_proto(reply.output), ref, msg=name)
        same = sum(g == group for g in groups)
        # never more calls in one batch than calls of its own partition
        assert 1 <= reply.timings.batch_size <= same
    # three calls of one partition within the queue delay share a batch
    assert max(r.timings.batch_size for r in replies) >= 2


@contextlib.contextmanager
def _resnet18_stub(max_batch: int, max_queue_delay_s: float):
    """A stub of a server of the small resnet18 alone, batching with these settings (room for 8 calls)."""
    config = ServerConfig(models=("resnet18",), small=True, device="cpu", max_inflight=8,
                          max_inflight_per_peer=8, max_workers=16, warmup_runs=1, max_batch=max_batch,
                          max_queue_delay_s=max_queue_delay_s)
    handle = build_server(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            yield opss_pb2_grpc.OpssStub(channel)
    finally:
        handle.stop(0).wait()


def test_different_partitions_never_share_a_batch() -> None:
    # a queue delay long enough that all six calls surely wait together, and room for all six
    with _resnet18_stub(max_batch=8, max_queue_delay_s=1.0) as stub:
        model, graph = _graph("resnet18")
        fp = models.fingerprint(model)
        calls, refs = [], []
        for i, k in enumerate((3, 9)):
            s = split(graph, set(graph.ids[:k]))
            for x in _inputs("resnet18", 3, 40 + 10 * i):
                out = s.client.run(x)
                calls.append(("resnet18", fp, [(c, out[c]) for c in s.cut], sorted(s.client_set)))
                with torch.no_grad():
                    refs.append(model(x))
        replies = _call_all(stub, calls)
    # mixing would give batches of 6; each partition's three calls form their own batch
    assert [r.timings.batch_size for r in replies] == [3] * 6
    for reply, ref in zip(replies, refs):
        torch.testing.assert_close(tensor_from_proto(reply.output), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_run_batch_on_cuda_equals_each_request_alone() -> None:
    model, _ = _graph("resnet18")
    graph = capture(model.cuda(), models.example_input("resnet18", small=True).cuda(),
                    name="resnet18")
    assert batch_refusal(graph) is None
    s = split(graph, _random_partition(graph, 5))
    requests = [s.client.run(x.cuda()) for x in _inputs("resnet18", 4, 60)]
    for req, out in zip(requests, s.server.run_batch(requests)):
        torch.testing.assert_close(out, s.server.run(req), rtol=1e-4, atol=1e-4)


def test_a_batch_waits_at_most_the_queue_delay(stub) -> None:
    model, graph = _graph("resnet18")
    fp = models.fingerprint(model)
    s = split(graph, {graph.input_id})
    x = _inputs("resnet18", 1, 7)[0]
    out = s.client.run(x)
    t0 = time.perf_counter()
    reply = stub.Infer(infer_requests("resnet18", fp, [(c, out[c]) for c in s.cut],
                                      client_set=sorted(s.client_set)), timeout=30)
    took = time.perf_counter() - t0
    t = reply.timings
    # alone, it waits the whole delay for company, and no longer
    assert t.batch_size == 1
    assert DELAY_S - 0.01 <= t.batch_wait_s <= DELAY_S + 0.1  # + a thread's wake-up on 2 busy cores
    assert t.queue_s >= t.batch_wait_s
    assert took <= DELAY_S + t.compute_s + 0.5
    with torch.no_grad():
        torch.testing.assert_close(tensor_from_proto(reply.output), model(x))


def test_a_full_batch_goes_before_the_queue_delay() -> None:
    with _resnet18_stub(max_batch=2, max_queue_delay_s=5.0) as stub:
        model, graph = _graph("resnet18")
        fp = models.fingerprint(model)
        s = split(graph, {graph.input_id})
        calls = [("resnet18", fp, [(c, s.client.run(x)[c]) for c in s.cut],
                  sorted(s.client_set)) for x in _inputs("resnet18", 2, 50)]
        t0 = time.perf_counter()
        replies = _call_all(stub, calls)
        assert time.perf_counter() - t0 < 2.0  # not the 5 s delay
        assert [r.timings.batch_size for r in replies] == [2, 2]
        assert all(r.timings.batch_wait_s < 2.0 for r in replies)


def test_a_model_that_cannot_batch_is_served_unbatched_with_its_reason(tmp_path, monkeypatch) -> None:
    (tmp_path / "fixed_batch_models.py").write_text(textwrap.dedent('''
        import torch

        class FixedBatch(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3)
                self.fc = torch.nn.Linear(4 * 6 * 6, 5)

            def forward(self, x):
                return self.fc(self.conv(x).view(1, -1))

        def make():
            return FixedBatch()
        make.input_shape = (1, 3, 8, 8)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "fixed_batch_models:make"
    config = ServerConfig(models=(name,), device="cpu", warmup_runs=1, max_batch=4,
                          max_queue_delay_s=0.5)
    handle = build_server(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = opss_pb2_grpc.OpssStub(channel)
            info = stub.ListModels(opss_pb2.ListModelsRequest()).models[0]
            assert info.max_batch == 1 and "is not batched" in info.batch_refusal
            model = models.get_model(name, seed=0)
            x = torch.randn(1, 3, 8, 8)
            reply = stub.Infer(infer_requests(name, models.fingerprint(model), [("x", x)],
                                              client_set=["x"]), timeout=30)
            assert reply.timings.batch_size == 1 and reply.timings.batch_wait_s == 0
            with torch.no_grad():
                torch.testing.assert_close(tensor_from_proto(reply.output), model(x))
    finally:
        handle.stop(0).wait()
