"""opss-server in-process on port 0: correct outputs, the right status for every bad input,
concurrency, back-pressure, cancellation, shutdown, health and auth.

The oracle for every reply is the full model's own output on the same input,
computed here on a separately built copy of the model (same seed), split by a
separately captured graph; the server never sees the client's objects.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opss import models
from opss.graph import capture
from opss.profile import graph_hash
from opss.split import split
from opss.v1 import opss_pb2, opss_pb2_grpc
from opss.wire import chunk_to_proto, encode_tensor, infer_requests, tensor_from_proto
from opss.server import ServerConfig, build_server

# Half-precision wire tolerances, as max |error| <= REL * max|reference| + FLOOR.
# float16 keeps 11 significant bits (measured error <= 0.05 % of the output's range on
# every zoo model) but flushes magnitudes below 2^-14 (its smallest normal) toward zero:
# randomly initialized mobilenet_v2 ends in ~1e-11 activations that float16 cannot hold,
# hence the absolute floor. bfloat16 keeps float32's range but 8 significant bits
# (measured <= 0.7 %).
HALF_TOL = {"float16": (1e-2, 2.0**-14), "bfloat16": (2e-2, 0.0)}

INVALID = grpc.StatusCode.INVALID_ARGUMENT


# --- helpers ----------------------------------------------------------------------------------

class Client:
    """The client side of one model, built independently of the server."""

    def __init__(self, name: str, granularity: str = "layer") -> None:
        self.name = name
        self.model = models.get_model(name, seed=0)
        self.fingerprint = models.fingerprint(self.model)
        self.shape = models.get_spec(name).test_input_shape
        # name= as the server (and opss.client) do: the zoo's block types shape the vertex ids
        self.graph = capture(self.model, models.example_input(name, small=True),
                             granularity=granularity, name=name)
        self.granularity = granularity

    def input(self, seed: int) -> torch.Tensor:
        return torch.randn(self.shape, generator=torch.Generator().manual_seed(seed))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)

    def prefix(self, k: int) -> set[str]:
        return set(self.graph.ids[:k])

    def random_partition(self, seed: int) -> set[str]:
        rng = random.Random(seed)
        ids = list(self.graph.ids)
        picks = set(rng.sample(ids, rng.randint(1, max(1, len(ids) // 2))))
        closed, stack = set(), [*picks, self.graph.input_id]
        while stack:
            v = stack.pop()
            if v not in closed:
                closed.add(v)
                stack.extend(self.graph.preds(v))
        return closed

    def cut_tensors(self, client_set, x) -> tuple[list[str], list[tuple[str, torch.Tensor]]]:
        s = split(self.graph, client_set)
        out = s.client.run(x)
        return sorted(s.client_set), [(c, out[c]) for c in s.cut]

    def requests(self, client_set, x, wire_dtype="float32", chunk_bytes=64 * 1024,
                 fingerprint=None, use_cut=False, request_id=""):
        members, tensors = self.cut_tensors(client_set, x)
        kwargs = dict(cut=[n for n, _ in tensors]) if use_cut else dict(client_set=members)
        return infer_requests(self.name, fingerprint or self.fingerprint, tensors,
                              granularity=self.granularity, wire_dtype=wire_dtype,
                              chunk_bytes=chunk_bytes, request_id=request_id, **kwargs)


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _wait(pred, timeout=10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _held(requests: list, release: threading.Event) -> Iterator:
    """Yield ``requests`` except the last, wait for ``release``, then yield the last."""
    yield from requests[:-1]
    release.wait(30)
    yield requests[-1]


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(models=tuple(models.names()), small=True, device="cpu", max_inflight=8,
                          max_workers=24, warmup_runs=1)
    handle = build_server(config)
    yield handle
    handle.stop(0).wait()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield opss_pb2_grpc.OpssStub(channel)


@pytest.fixture(scope="module")
def resnet() -> Client:
    return Client("resnet18")


def _assert_serves(stub, client: Client, seed: int = 7) -> None:
    """A correct request right after a bad one still gets the right output."""
    x = client.input(seed)
    members, tensors = client.cut_tensors(client.prefix(5), x)
    reply = stub.Infer(infer_requests(client.name, client.fingerprint, tensors, client_set=members,
                                      cut=[c for c, _ in tensors],
                                      graph_hash=graph_hash(client.graph)))
    torch.testing.assert_close(tensor_from_proto(reply.output), client.reference(x))


# --- correctness ------------------------------------------------------------------------------

def test_health_serving_and_list_models(server, stub) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "opss.v1.Opss"):
            got = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert got == health_pb2.HealthCheckResponse.SERVING
    reply = stub.ListModels(opss_pb2.ListModelsRequest())
    assert [m.name for m in reply.models] == models.names()
    for m in reply.models:
        assert m.fingerprint == models.fingerprint(models.get_model(m.name, seed=0))
        assert tuple(m.input_shape) == models.get_spec(m.name).test_input_shape
        assert m.device == "cpu" and m.input_dtype == opss_pb2.FLOAT32
    resnet = next(m for m in reply.models if m.name == "resnet18")
    assert resnet.graph_hash == graph_hash(Client("resnet18").graph)
    assert reply.max_inflight == 8


@pytest.mark.parametrize("name", models.names())
def test_reply_equals_full_model_for_several_partitions(stub, name: str) -> None:
    client = Client(name)
    n = len(client.graph.ids)
    partitions = {
        "cloud-only": {client.graph.input_id},
        "frontier": client.prefix(max(2, n // 3)),
        "local-only": set(client.graph.ids),
        "random-1": client.random_partition(1),
        "random-2": client.random_partition(2),
    }
    for label, members in partitions.items():
        x = client.input(sum(map(ord, label)))
        ref = client.reference(x)
        closed, tensors = client.cut_tensors(members, x)
        partition = (dict(cut=[c for c, _ in tensors]) if label == "random-2"
                     else dict(client_set=closed))
        for wire in ("float32", "float16", "bfloat16"):
            reply = stub.Infer(infer_requests(name, client.fingerprint, tensors, wire_dtype=wire,
                                              **partition))
            out = tensor_from_proto(reply.output)
            if wire == "float32":
                torch.testing.assert_close(out, ref, msg=f"{name} {label}")
            else:
                rel, floor = HALF_TOL[wire]
                err, bound = float((out - ref).abs().max()), rel * float(ref.abs().max()) + floor
                assert err <= bound, f"{name} {label} {wire}: error {err:.3g} > {bound:.3g}"
            t = reply.timings
            sent = sum(a.bytes for a in t.tensors)
            assert t.bytes_in == sent > 0
            assert list(reply.cut) == [a.name for a in t.tensors]
            assert 0 <= t.first_byte_s <= t.last_byte_s <= t.reply_s
            assert 0 <= t.overlap_s <= t.compute_s + 1e-9


def test_block_granularity_partition(stub) -> None:
    client = Client("googlenet", granularity="block")
    members = client.prefix(len(client.graph.ids) // 2)
    x = client.input(3)
    reply = stub.Infer(client.requests(members, x))
    torch.testing.assert_close(tensor_from_proto(reply.output), client.reference(x))


def test_compute_overlaps_a_slow_upload(stub) -> None:
    """Server layers fed by the first cut tensor run while the next is still on its way."""
    client = Client("googlenet")
    x = client.input(5)
    for k in range(3, len(client.graph.ids)):
        members, tensors = client.cut_tensors(client.prefix(k), x)
        if len(tensors) >= 2:
            ran_first = split(client.graph, members).server.session().feed(*tensors[0])
            if ran_first:
                break
    else:
        raise AssertionError("no googlenet prefix whose first cut tensor enables server layers")
    reqs = list(infer_requests("googlenet", client.fingerprint, tensors, client_set=members))

    def slow():
        for i, r in enumerate(reqs):
            if i == len(reqs) - 1:
                time.sleep(0.3)  # the last tensor arrives late
            yield r

    reply = stub.Infer(slow())
    torch.testing.assert_close(tensor_from_proto(reply.output), client.reference(x))
    t = reply.timings
    first = t.tensors[0]
    assert first.vertices_run == len(ran_first) > 0
    assert first.last_byte_s < t.last_byte_s - 0.2
    assert first.compute_start_s + first.compute_s < t.last_byte_s
    assert t.overlap_s > 0 and t.overlap_s == pytest.approx(
        sum(a.compute_s for a in t.tensors[:-1]), rel=1e-6, abs=1e-6)


def test_probe_counts_bytes(stub) -> None:
    sizes = [0, 1, 65536, 300_000]
    reply = stub.Probe(iter([opss_pb2.ProbeRequest(probe_id="p1", payload=b"x" * n) for n in sizes]))
    assert (reply.probe_id, reply.bytes_received, reply.messages) == ("p1", sum(sizes), len(sizes))
    assert reply.receive_s >= 0 and reply.last_unix_s >= reply.first_unix_s > 0


# --- bad input: right status, clear message, server keeps serving -------------------------------

def _multi_cut_partition(client: Client) -> set[str]:
    for k in range(2, len(client.graph.ids)):
        if len(split(client.graph, client.prefix(k)).cut) >= 2:
            return client.prefix(k)
    raise AssertionError("no partition with two cut tensors")


def _bad_cases(client: Client):
    x = client.input(1)
    cloud = {client.graph.input_id}
    members, tensors = client.cut_tensors(cloud, x)
    name, t = tensors[0]
    multi_members, multi = client.cut_tensors(_multi_cut_partition(client), x)
    fp = client.fingerprint

    def stream(tensors=tensors, members=members, **kw):
        return list(infer_requests(kw.pop("model", "resnet18"), kw.pop("fp", fp), tensors,
                                   client_set=members, chunk_bytes=1024, **kw))

    def with_chunk(**changes):
        reqs = stream()
        for field, value in changes.items():
            if field == "shape":
                reqs[1].chunk.ClearField("shape")
                reqs[1].chunk.shape.extend(value)
            else:
                setattr(reqs[1].chunk, field, value)
        return reqs

    good = stream()
    nonclosed = sorted(client.prefix(6) - {client.graph.ids[1]})
    yield "unknown model", stream(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"
    yield "fingerprint", stream(fp="0" * 64), grpc.StatusCode.FAILED_PRECONDITION, "fingerprint"
    yield "no fingerprint", stream(fp=""), INVALID, "expected its fingerprint"
    yield ("graph hash", stream(graph_hash="f" * 64), grpc.StatusCode.FAILED_PRECONDITION,
           "layer graphs differ")
    yield ("cut mismatch", list(infer_requests("resnet18", fp, tensors, client_set=members,
                                               cut=[client.graph.ids[1]])),
           INVALID, "cut mismatch")
    yield ("not closed", stream(members=nonclosed, tensors=[]), INVALID,
           "not closed under predecessors")
    yield "unknown vertex", stream(members=[client.graph.input_id, "zz"], tensors=[]), INVALID, "'zz'"
    yield ("cut list not a cut", list(infer_requests("resnet18", fp, [], cut=[client.graph.ids[3],
                                                                           client.graph.input_id])),
           INVALID, "not the cut of any client set")
    yield "no partition", stream(members=[], tensors=[]), INVALID, "expected a client set or a cut"
    yield "unknown cut name", stream(tensors=[("bogus", t)]), INVALID, "unknown cut tensor 'bogus'"
    yield "wrong shape", stream(tensors=[(name, t[..., :-1])]), INVALID, "expected shape"
    yield "wrong dtype", with_chunk(dtype=opss_pb2.FLOAT16), INVALID, "expected dtype float32"
    yield "wrong byte count", with_chunk(total_bytes=t.numel() * 4 + 4), INVALID, "declared"
    yield "bad dtype enum", with_chunk(dtype=42), INVALID, "bad dtype"
    yield "negative shape", with_chunk(shape=[-1, 3]), INVALID, "non-negative"
    yield "duplicate tensor", stream() + stream()[1:], INVALID, "duplicate tensor"
    yield "missing tensor", stream(members=multi_members, tensors=multi[:1]), INVALID, "missing"
    yield "out of order", [good[0], good[2], good[1], *good[3:]], INVALID, "out of order"
    yield "truncated", good[:-1], INVALID, "incomplete"
    yield "chunk first", good[1:], INVALID, "expected `open` as the first message"
    yield "empty stream", [], INVALID, "empty Infer stream"
    yield "second open", good[:1] + good, INVALID, "expected tensor chunks after `open`"
    int64_open = opss_pb2.InferRequest(open=opss_pb2.InferOpen(
        model="resnet18", fingerprint=fp, client_set=members, wire_dtype=opss_pb2.INT64))
    yield "bad wire dtype", [int64_open, *good[1:]], INVALID, "wire dtype"
    big = opss_pb2.InferRequest(chunk=opss_pb2.TensorChunk(name=name, data=b"\0" * (2 << 20)))
    yield "oversize message", [good[0], big], grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"


def test_each_bad_input_gets_its_status_and_the_server_keeps_serving(stub, resnet) -> None:
    seen = []
    for label, reqs, code, message in _bad_cases(resnet):
        got, details = _code(lambda: stub.Infer(iter(reqs), timeout=30))
        assert got == code, f"{label}: expected {code}, got {got} ({details})"
        assert message in details, f"{label}: {details!r} lacks {message!r}"
        seen.append(label)
        _assert_serves(stub, resnet)
    assert len(seen) == 24


def _raw_infer(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, channel.stream_unary("/opss.v1.Opss/Infer")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4), st.booleans())
def test_fuzzed_garbage_bytes_get_client_error_codes(server, stub, resnet, blobs, valid_open) -> None:
    messages = list(blobs)
    if valid_open:
        first = next(resnet.requests({resnet.graph.input_id}, resnet.input(0)))
        messages.insert(0, first.SerializeToString())
    channel, infer = _raw_infer(server)
    with channel:
        code, details = _code(lambda: infer(iter(messages), timeout=30))
    assert code in (INVALID, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION), (
        code, details)
    assert details


def test_correct_request_after_fuzzing(server, stub, resnet) -> None:
    assert server.servicer.inflight == 0
    _assert_serves(stub, resnet)


def test_garbage_list_models_request(server, stub, resnet) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        raw = ch.unary_unary("/opss.v1.Opss/ListModels")
        code, details = _code(lambda: raw(b"\xff\xff\xff", timeout=10))
    assert code == INVALID and "undecodable" in details
    _assert_serves(stub, resnet)


def test_client_cancel_mid_stream_frees_the_slot(server, stub, resnet) -> None:
    release = threading.Event()
    reqs = list(resnet.requests({resnet.graph.input_id}, resnet.input(0), chunk_bytes=4096))
    future = stub.Infer.future(_held(reqs, release))
    _wait(lambda: server.servicer.inflight == 1)
    future.cancel()
    _wait(lambda: server.servicer.inflight == 0)
    release.set()
    assert future.cancelled()
    _assert_serves(stub, resnet)


def test_deadline_mid_stream_frees_the_slot(server, stub, resnet) -> None:
    release = threading.Event()
    reqs = list(resnet.requests({resnet.graph.input_id}, resnet.input(0), chunk_bytes=4096))
    code, _ = _code(lambda: stub.Infer(_held(reqs, release), timeout=0.5))
    release.set()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait(lambda: server.servicer.inflight == 0)
    _assert_serves(stub, resnet)


# --- concurrency --------------------------------------------------------------------------------

def test_eight_clients_twenty_requests_each_all_correct(server, resnet) -> None:
    n_clients, n_requests = 8, 20
    partitions = [{resnet.graph.input_id}, resnet.prefix(4), resnet.random_partition(3),
                  resnet.prefix(len(resnet.graph.ids) // 2)]
    work = []
    for c in range(n_clients):
        x = resnet.input(100 + c)
        members, tensors = resnet.cut_tensors(partitions[c % len(partitions)], x)
        work.append((members, tensors, resnet.reference(x)))
    results: dict[tuple[int, int], bool] = {}
    errors: list[str] = []
    served_before = server.servicer.served

    def run(c: int) -> None:
        members, tensors, ref = work[c]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = opss_pb2_grpc.OpssStub(ch)
            for i in range(n_requests):
                try:
                    reply = stub.Infer(infer_requests("resnet18", resnet.fingerprint, tensors,
                                                      client_set=members, request_id=f"{c}-{i}"),
                                       timeout=60)
                    out = tensor_from_proto(reply.output)
                    results[(c, i)] = (reply.request_id == f"{c}-{i}"
                                       and torch.allclose(out, ref, rtol=1.3e-6, atol=1e-5))
                except grpc.RpcError as e:
                    errors.append(f"{c}-{i}: {e.code()} {e.details()}")

    threads = [threading.Thread(target=run, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == n_clients * n_requests and all(results.values())
    assert server.servicer.served - served_before >= n_clients * n_requests


# --- small dedicated servers --------------------------------------------------------------------

@pytest.fixture
def tiny():
    handles = []

    def make(**kw):
        config = ServerConfig(models=("resnet18",), small=True, device="cpu", warmup_runs=0,
                              max_workers=kw.pop("max_workers", 4), **kw)
        h = build_server(config)
        handles.append(h)
        return h

    yield make
    for h in handles:
        h.stop(0).wait()


def test_resource_exhausted_beyond_max_inflight(tiny, resnet) -> None:
    """A call finding no slot waits ``admission_wait_s``, then gets RESOURCE_EXHAUSTED with the
    retry hint in its trailing metadata."""
    h = tiny(max_inflight=1, admission_wait_s=0.2)
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch:
        stub = opss_pb2_grpc.OpssStub(ch)
        release = threading.Event()
        x = resnet.input(0)
        reqs = list(resnet.requests({resnet.graph.input_id}, x, chunk_bytes=4096))
        held = stub.Infer.future(_held(reqs, release))
        _wait(lambda: h.servicer.inflight == 1)
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(resnet.requests(resnet.prefix(3), x))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_inflight" in info.value.details()
        assert int(dict(info.value.trailing_metadata())["grpc-retry-pushback-ms"]) > 0
        code, _ = _code(lambda: stub.Probe(iter([opss_pb2.ProbeRequest(payload=b"x")])))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        torch.testing.assert_close(tensor_from_proto(held.result(timeout=30).output),
                                   resnet.reference(x))
        _assert_serves(stub, resnet)


def test_graceful_shutdown_finishes_in_flight_request(tiny, resnet) -> None:
    h = tiny(max_inflight=2)
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch:
        stub = opss_pb2_grpc.OpssStub(ch)
        release = threading.Event()
        x = resnet.input(4)
        reqs = list(resnet.requests(resnet.prefix(6), x, chunk_bytes=4096))
        held = stub.Infer.future(_held(reqs, release))
        _wait(lambda: h.servicer.inflight == 1)
        stopped = h.stop(grace=20)
        code, _ = _code(lambda: stub.Infer(resnet.requests(resnet.prefix(3), x), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
        assert not stopped.is_set()
        release.set()
        torch.testing.assert_close(tensor_from_proto(held.result(timeout=30).output),
                                   resnet.reference(x))
        assert stopped.wait(10)


def test_stalled_stream_ends_at_the_call_deadline(tiny, resnet) -> None:
    h = tiny(max_inflight=1, stream_timeout_s=0.5)
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch:
        stub = opss_pb2_grpc.OpssStub(ch)
        release = threading.Event()
        reqs = list(resnet.requests({resnet.graph.input_id}, resnet.input(0), chunk_bytes=4096))
        code, details = _code(lambda: stub.Infer(_held(reqs, release), timeout=20))
        release.set()
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "after 0.5 s" in details and "stream_timeout_s" in details
        _wait(lambda: h.servicer.inflight == 0)
        _assert_serves(stub, resnet)


def test_token_auth(tiny, resnet) -> None:
    h = tiny(max_inflight=2, token="s3cret")
    x = resnet.input(2)
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch:
        stub = opss_pb2_grpc.OpssStub(ch)
        for metadata, why in (((), "missing"), ((("authorization", "Bearer nope"),), "bad token")):
            code, details = _code(lambda: stub.Infer(
                resnet.requests({resnet.graph.input_id}, x), metadata=metadata))
            assert code == grpc.StatusCode.UNAUTHENTICATED and why in details
            code, _ = _code(lambda: stub.ListModels(opss_pb2.ListModelsRequest(), metadata=metadata))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret"),)
        reply = stub.Infer(resnet.requests({resnet.graph.input_id}, x), metadata=good)
        torch.testing.assert_close(tensor_from_proto(reply.output), resnet.reference(x))
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_unknown_model_in_config_fails_to_start() -> None:
    from opss.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="nope"):
        build_server(ServerConfig(models=("nope",), device="cpu", small=True))


def test_encode_tensor_matches_request_stream(resnet) -> None:
    """The chunks in an Infer stream are exactly encode_tensor's (one codec on both ends)."""
    x = resnet.input(0)
    reqs = list(resnet.requests({resnet.graph.input_id}, x, chunk_bytes=5000))
    expected = [chunk_to_proto(c) for c in encode_tensor(resnet.graph.input_id, x, chunk_bytes=5000)]
    assert [r.chunk for r in reqs[1:]] == expected


def test_list_models_reports_measured_server_profile(tiny, resnet, tmp_path) -> None:
    from opss.server.profiling import profile_source

    h = tiny(max_inflight=1, profile_fn=profile_source("build", root=tmp_path, repeats=2))
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch:
        (info,) = opss_pb2_grpc.OpssStub(ch).ListModels(opss_pb2.ListModelsRequest()).models
    assert set(info.server_time_s) == set(resnet.graph.ids)
    assert all(t >= 0 for t in info.server_time_s.values())
    assert sum(info.server_time_s.values()) > 0
    assert info.profile_granularity == opss_pb2.LAYER
    assert list(tmp_path.rglob("resnet18.*.json")), "the measured profile was stored"


def test_tls_server_accepts_a_trusting_client(tiny, resnet, tmp_path) -> None:
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    h = tiny(max_inflight=1, tls_cert=str(cert), tls_key=str(key), host="localhost")
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    x = resnet.input(6)
    with grpc.secure_channel(f"localhost:{h.port}", creds) as ch:
        reply = opss_pb2_grpc.OpssStub(ch).Infer(resnet.requests({resnet.graph.input_id}, x))
    torch.testing.assert_close(tensor_from_proto(reply.output), resnet.reference(x))
    with grpc.insecure_channel(f"localhost:{h.port}") as ch:  # plaintext is refused
        code, _ = _code(lambda: opss_pb2_grpc.OpssStub(ch).ListModels(
            opss_pb2.ListModelsRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


SLOW_MODEL = '''
import time
import torch
from torch import nn


def factory():
    time.sleep({delay})
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())


factory.input_shape = (1, 3, 8, 8)
'''


def test_health_not_serving_and_unavailable_until_models_are_loaded(tmp_path, monkeypatch) -> None:
    import socket

    (tmp_path / "opss_slow_model.py").write_text(SLOW_MODEL.format(delay=2.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ServerConfig(models=("opss_slow_model:factory",), device="cpu", port=port,
                          warmup_runs=0, max_workers=4, max_inflight=2)
    built: list = []
    starter = threading.Thread(target=lambda: built.append(build_server(config)))
    starter.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            status = None
            end = time.monotonic() + 20
            while status is None and time.monotonic() < end:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.02)  # not bound yet
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            code, details = _code(lambda: opss_pb2_grpc.OpssStub(ch).ListModels(
                opss_pb2.ListModelsRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE and "loading" in details
            starter.join(30)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        starter.join(30)
        for h in built:
            h.stop(0).wait()
