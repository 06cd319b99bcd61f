"""Codecs end to end: exact forms are bit-identical through the split runtime for every zoo model,
lossy ones stay within their bound, and hostile payloads get INVALID_ARGUMENT from a live server
that then serves a correct request."""

from __future__ import annotations

import io
import random
import struct
import zlib

import grpc
import numpy as np
import pytest
import torch

from opss import models, preprocess, samples
from opss.graph import capture
from opss.split import split
from opss.v1 import opss_pb2, opss_pb2_grpc
from opss.wire import ImageSource, Reassembler, chunk_from_proto, chunk_to_proto, infer_requests, iter_chunks

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = models.names()
PHOTO = dict(samples.sample_images())["grace_hopper.jpg"]


def photo_input(shape):
    """The sample photo at ``shape`` when the model takes images, else seeded noise; and its source."""
    if len(shape) == 4 and shape[1] == 3:
        x = torch.from_numpy(preprocess.image_tensor(PHOTO, tuple(shape)))
        crop = preprocess.crop(preprocess.decode_image(PHOTO), shape[2], shape[3])
        return x, ImageSource(PHOTO, crop, preprocess.PREPROCESS_VERSION)
    return torch.randn(shape, generator=torch.Generator().manual_seed(3)), None


def closure_partitions(graph, n, rng):
    """``n`` client sets: the input alone, and closures of random vertex samples."""
    out = [{graph.input_id}]
    for _ in range(n - 1):
        out.append(set(graph.dag.closure(rng.sample(graph.ids, rng.randint(1, 3)))))
    return out


def through_wire(sp, x, codecs, image=None):
    """Client part -> chunks in ``codecs`` -> proto and back -> Reassembler -> server part."""
    produced = sp.client.run(x)
    reasm = Reassembler(sp.server.inputs, image_inputs=(sp.graph.input_id,))
    sess = sp.server.session()
    for name in sp.cut:
        if name not in sp.server.inputs:
            continue
        for chunk in iter_chunks(name, produced[name], "float32", 8192, codecs.get(name, "raw"), image):
            done = reasm.add(chunk_from_proto(chunk_to_proto(chunk)))
            if done is not None:
                sess.feed(*done)
    reasm.finish()
    return sess.result()


@pytest.fixture(scope="module", params=ZOO)
def zoo(request):
    name = request.param
    model = models.get_model(name, seed=0)
    shape = models.get_spec(name).test_input_shape
    x, image = photo_input(shape)
    graph = capture(model, models.example_input(name, small=True), "layer", name=name)
    with torch.no_grad():
        ref = model(x)
    return graph, x, image, ref


def test_lossless_codecs_and_input_forms_are_bit_identical(zoo):
    graph, x, image, ref = zoo
    rng = random.Random(11)
    for client in closure_partitions(graph, 5, rng):
        sp = split(graph, client)
        if not sp.server.vertices:
            continue
        with torch.no_grad():
            raw = through_wire(sp, x, {})
            torch.testing.assert_close(raw, ref)  # the split runtime's oracle
            for codec in ("zstd", "lz4"):
                got = through_wire(sp, x, {c: codec for c in sp.cut})
                assert torch.equal(got, raw), f"{graph.model} {codec}: not bit-identical"
            if image is not None and graph.input_id in sp.server.inputs:
                for form in ("uint8", "file"):
                    got = through_wire(sp, x, {graph.input_id: form}, image)
                    assert torch.equal(got, raw), f"{graph.model} {form}: not bit-identical"


@pytest.mark.parametrize("codec, bound", [("fp16", 2e-3), ("bf16", 1.6e-2), ("int8", 0.02)])
def test_lossy_codecs_stay_within_their_bound_on_a_cut_tensor(codec, bound):
    model = models.get_model("resnet18", seed=0)
    shape = models.get_spec("resnet18").test_input_shape
    x, _ = photo_input(shape)
    graph = capture(model, models.example_input("resnet18", small=True), "layer", name="resnet18")
    sp = split(graph, graph.dag.closure([graph.ids[len(graph.ids) // 2]]))
    produced = sp.client.run(x)
    for name in sp.server.inputs:
        t = produced[name]
        chunks = list(iter_chunks(name, t, "float32", 8192, codec))
        reasm = Reassembler({name: sp.server.inputs[name]})
        done = None
        for c in chunks:
            done = reasm.add(c) or done
        got = done[1]
        scale = float(t.abs().max()) or 1.0
        assert float((got - t).abs().max()) <= bound * scale, codec
        assert sum(len(c.data) for c in chunks) < t.numel() * 4


# --- hostile payloads against a live server ----------------------------------------------------

@pytest.fixture(scope="module")
def server():
    from opss.server import ServerConfig, build_server

    handle = build_server(ServerConfig(models=("resnet18",), small=True, device="cpu", max_inflight=4,
                                       max_workers=8, warmup_runs=0))
    yield handle
    handle.stop(0).wait()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield opss_pb2_grpc.OpssStub(channel)


@pytest.fixture(scope="module")
def client():
    model = models.get_model("resnet18", seed=0)
    shape = models.get_spec("resnet18").test_input_shape
    graph = capture(model, models.example_input("resnet18", small=True), "layer", name="resnet18")
    return model, graph, shape, models.fingerprint(model)


def _open_and_chunk(client, codec, data, *, decoded=None, name=None, preprocess_name=None):
    """An Infer stream sending the input (co) as one ``codec`` payload ``data``, as declared."""
    model, graph, shape, fp = client
    nbytes = int(np.prod(shape)) * 4
    reqs = list(infer_requests("resnet18", fp, [], client_set=[graph.input_id]))
    reqs[0].open.preprocess = preprocess.PREPROCESS_VERSION if preprocess_name is None else preprocess_name
    chunk = opss_pb2.TensorChunk(name=name or graph.input_id, dtype=opss_pb2.FLOAT32, shape=list(shape),
                                 total_bytes=len(data), index=0, offset=0, data=data, codec=codec,
                                 decoded_bytes=nbytes if decoded is None else decoded)
    reqs.append(opss_pb2.InferRequest(chunk=chunk))
    return reqs


def _png_header(width, height) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (its one IDAT is tiny)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _zstd_bomb(decoded: int) -> bytes:
    """A zstd frame of far more zeros than ``decoded`` bytes, built without allocating them."""
    import zstandard

    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        block = b"\0" * (1 << 20)
        for _ in range(256):  # 256 MiB of zeros
            w.write(block)
    assert out.tell() < 64 * 1024 and 256 << 20 > decoded
    return out.getvalue()


def _serves(stub, client):
    model, graph, shape, fp = client
    x, image = photo_input(shape)
    reqs = infer_requests("resnet18", fp, [(graph.input_id, x)], client_set=[graph.input_id],
                          codecs={graph.input_id: "file"}, image=image)
    reply = stub.Infer(reqs, timeout=30)
    with torch.no_grad():
        ref = model(x)
    out = torch.frombuffer(bytearray(reply.output.data), dtype=torch.float32).view(tuple(reply.output.shape))
    assert torch.equal(out, ref)


def test_hostile_payloads_get_invalid_argument_and_the_server_keeps_serving(stub, client):
    model, graph, shape, fp = client
    nbytes = int(np.prod(shape)) * 4
    x, _ = photo_input(shape)
    from opss import codec as cd

    good = cd.encode(x.numpy(), "zstd").payload
    cases = [
        ("truncated zstd", _open_and_chunk(client, "zstd", good[: len(good) // 2]), ""),
        ("wrong declared size", _open_and_chunk(client, "zstd", good, decoded=nbytes + 4), "decoded_bytes"),
        ("decompression bomb", _open_and_chunk(client, "zstd", _zstd_bomb(nbytes)), ""),
        ("50-megapixel png", _open_and_chunk(client, "file", _png_header(8000, 6250)), ""),
        ("garbage jpeg", _open_and_chunk(client, "file", b"\xff\xd8\xff" + bytes(range(256)) * 8), ""),
        ("file not for this tensor", _open_and_chunk(client, "file", PHOTO, name=graph.input_id,
                                                     preprocess_name=""), "image form"),
        ("unknown codec", _open_and_chunk(client, "zip", good), "unknown codec"),
        ("oversized payload", _open_and_chunk(client, "zstd", b"\0" * (2 * nbytes)), "at most"),
    ]
    for label, reqs, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.Infer(iter(reqs), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, info.value.details())
        assert message in info.value.details(), (label, info.value.details())
        _serves(stub, client)


def test_unknown_preprocessing_is_failed_precondition(stub, client):
    reqs = _open_and_chunk(client, "file", PHOTO, preprocess_name="imagenet-v0")
    with pytest.raises(grpc.RpcError) as info:
        stub.Infer(iter(reqs), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "preprocessing" in info.value.details()
