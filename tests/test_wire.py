"""The tensor codec: exact round trips and a precise error for every malformed chunk stream."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opss.errors import ShapeMismatchError, WireError
from opss.wire import (
    MAX_CHUNK_BYTES,
    Chunk,
    Reassembler,
    chunk_from_proto,
    chunk_to_proto,
    decode_tensor,
    dtype_from_proto,
    encode_tensor,
    chunk_request,
    infer_open,
    infer_requests,
    iter_chunks,
    tensor_from_proto,
    tensor_to_proto,
    wire_dtype_for,
)


def _feed(reassembler: Reassembler, chunks, through_proto: bool = True) -> dict[str, torch.Tensor]:
    out = {}
    for c in chunks:
        if through_proto:
            c = chunk_from_proto(chunk_to_proto(c))
        done = reassembler.add(c)
        if done is not None:
            out[done[0]] = done[1]
    reassembler.finish()
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32,
                                   torch.uint8, torch.int8, torch.bool])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 64 * 1024, MAX_CHUNK_BYTES])
def test_round_trip_exact_in_own_dtype(dtype: torch.dtype, chunk_bytes: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 5, 7, generator=g) * 50).to(dtype)
    wire = "float32"
    chunks = encode_tensor("v", x, wire, chunk_bytes)
    expected_dtype = wire_dtype_for(dtype, wire)
    assert all(len(c.data) <= chunk_bytes for c in chunks)
    assert sum(len(c.data) for c in chunks) == x.numel() * torch.empty(0, dtype=getattr(
        torch, expected_dtype)).element_size()
    got = _feed(Reassembler({"v": (x.shape, dtype)}, wire), chunks)["v"]
    assert got.dtype == dtype
    assert torch.equal(got, x)


@pytest.mark.parametrize("wire,tol", [("float16", 1e-3), ("bfloat16", 8e-3)])
def test_half_wire_dtypes_within_relative_rounding(wire: str, tol: float) -> None:
    x = torch.randn(1, 16, 9, 9, generator=torch.Generator().manual_seed(1))
    chunks = encode_tensor("a", x, wire, 100)
    assert {c.dtype for c in chunks} == {wire}
    assert chunks[0].total_bytes == x.numel() * 2
    got = _feed(Reassembler({"a": (tuple(x.shape), "float32")}, wire), chunks)["a"]
    assert got.dtype == torch.float32
    # half-precision rounding: relative error at most 2^-11 (fp16) / 2^-8 (bf16)
    torch.testing.assert_close(got, x, rtol=tol, atol=1e-6)
    oracle = x.to(getattr(torch, wire)).to(torch.float32)
    assert torch.equal(got, oracle)


def test_non_contiguous_and_scalar_and_empty_tensors() -> None:
    x = torch.arange(12.0).reshape(3, 4).t()
    s = torch.tensor(3.5)
    e = torch.empty(0, 5)
    expected = {"x": ((4, 3), "float32"), "s": ((), "float32"), "e": ((0, 5), "float32")}
    chunks = encode_tensor("x", x, chunk_bytes=5) + encode_tensor("s", s) + encode_tensor("e", e)
    got = _feed(Reassembler(expected), chunks)
    assert torch.equal(got["x"], x) and torch.equal(got["s"], s) and got["e"].shape == (0, 5)


def test_encoded_chunks_do_not_alias_the_tensor() -> None:
    x = torch.ones(1000)
    chunks = encode_tensor("x", x)
    x.fill_(7.0)
    got = _feed(Reassembler({"x": ((1000,), "float32")}), chunks)["x"]
    assert torch.equal(got, torch.ones(1000))


def test_received_tensor_owns_writable_memory() -> None:
    x = torch.randn(64)
    got = _feed(Reassembler({"x": ((64,), "float32")}), encode_tensor("x", x, chunk_bytes=100))["x"]
    got.add_(1.0)  # must not raise (writable buffer) and must not touch x
    torch.testing.assert_close(got, x + 1.0)


def test_whole_tensor_messages_round_trip() -> None:
    for t in [torch.randn(1, 1000), torch.randn(2, 3).to(torch.bfloat16), torch.arange(4)]:
        back = tensor_from_proto(tensor_to_proto(t))
        assert back.dtype == t.dtype and torch.equal(back, t)


def test_decode_checks_byte_count() -> None:
    with pytest.raises(ShapeMismatchError, match="expected 24 bytes, got 20"):
        decode_tensor("float32", (2, 3), b"\0" * 20)
    with pytest.raises(WireError, match="unknown dtype"):
        decode_tensor("complex64", (1,), b"\0" * 8)


def test_bad_wire_and_proto_dtypes() -> None:
    with pytest.raises(WireError, match="bad wire dtype"):
        Reassembler({}, wire_dtype="int8")
    with pytest.raises(WireError, match="bad wire dtype"):
        encode_tensor("x", torch.ones(2), "float64")
    with pytest.raises(WireError, match="DTYPE_UNSPECIFIED"):
        dtype_from_proto(0)
    with pytest.raises(WireError, match="got 99"):
        dtype_from_proto(99)


# --- one precise error per malformation ----------------------------------------------------------

X = torch.arange(40, dtype=torch.float32).reshape(2, 20)
EXPECTED = {"a": ((2, 20), "float32"), "b": ((3,), "float32")}


def _chunks(name="a", t=X, chunk_bytes=64):
    return encode_tensor(name, t, "float32", chunk_bytes)


def _apply(chunks):
    r = Reassembler(EXPECTED, max_chunk_bytes=128)
    for c in chunks:
        r.add(c)
    r.finish()


@pytest.mark.parametrize("mutate,error,message", [
    (lambda cs: [dataclasses.replace(cs[0], name="zz")] + cs[1:], WireError, "unknown cut tensor 'zz'"),
    (lambda cs: [dataclasses.replace(c, dtype="float16") for c in cs], ShapeMismatchError,
     "expected dtype float32 on the wire, got float16"),
    (lambda cs: [dataclasses.replace(c, shape=(20, 2)) for c in cs], ShapeMismatchError,
     r"expected shape \[2, 20\], got \[20, 2\]"),
    (lambda cs: [dataclasses.replace(c, total_bytes=10**12) for c in cs], ShapeMismatchError,
     "expected 160 bytes, got 1000000000000 declared"),
    (lambda cs: [cs[1], cs[0]] + cs[2:], WireError, r"expected its first chunk"),
    (lambda cs: [cs[0], cs[2], cs[1]], WireError, "chunks out of order"),
    (lambda cs: [cs[0], cs[0]] + cs[1:], WireError, "chunks out of order"),
    (lambda cs: cs[:-1], WireError, r"'a' incomplete: expected 160 bytes, got 128"),
    (lambda cs: cs + _chunks("a"), WireError, "duplicate tensor 'a'"),
    (lambda cs: cs[:1] + _chunks("b", torch.ones(3)) + cs[1:], WireError,
     r"'a' incomplete: expected its chunk #1 at offset 64 of 160 bytes, got a chunk of 'b'"),
    (lambda cs: [cs[0], dataclasses.replace(cs[1], data=b"")] + cs[2:], WireError, "is empty"),
    (lambda cs: [cs[0], dataclasses.replace(cs[1], data=b"\0" * 100)] + cs[2:], WireError,
     "overruns the tensor: expected at most 96 more bytes, got 100"),
    (lambda cs: [dataclasses.replace(cs[0], data=b"\0" * 129)], WireError,
     "too large: expected at most 128 bytes, got 129"),
    (lambda cs: cs[:1] + [dataclasses.replace(c, shape=(40,)) for c in cs[1:]], WireError,
     "changed mid-stream"),
    (lambda cs: cs, WireError, r"never got \['b'\]"),
])
def test_each_malformation_gets_its_error(mutate, error, message) -> None:
    with pytest.raises(error, match=message):
        _apply(mutate(_chunks()))


def test_oversize_declaration_rejected_before_allocating() -> None:
    # A declared terabyte must fail on the first chunk, without a terabyte buffer.
    r = Reassembler({"a": ((2, 20), "float32")})
    huge = Chunk("a", "float32", (2, 20), 10**12, 0, 0, b"\0" * 16)
    with pytest.raises(ShapeMismatchError):
        r.add(huge)
    assert r.in_progress is None and r.bytes_received == 0


def test_valid_stream_after_error_in_a_fresh_reassembler() -> None:
    good = _chunks() + _chunks("b", torch.ones(3))
    got = _feed(Reassembler(EXPECTED), good, through_proto=False)
    assert torch.equal(got["a"], X) and torch.equal(got["b"], torch.ones(3))


# --- fuzz: random chunk streams never escape the two error types ---------------------------------

@st.composite
def _garbage_streams(draw):
    base = _chunks() + _chunks("b", torch.ones(3), 5)
    ops = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, len(base) - 1),
                                  st.binary(max_size=200), st.integers(-5, 400)), max_size=6))
    stream = list(base)
    for op, i, blob, n in ops:
        if not stream:
            break
        i %= len(stream)
        c = stream[i]
        if op == 0:
            stream[i] = dataclasses.replace(c, data=blob)
        elif op == 1:
            stream[i] = dataclasses.replace(c, offset=max(n, 0))
        elif op == 2:
            stream[i] = dataclasses.replace(c, index=max(n, 0))
        elif op == 3:
            stream[i] = dataclasses.replace(c, total_bytes=max(n, 0))
        elif op == 4:
            stream[i] = dataclasses.replace(c, shape=tuple(abs(n) % 7 for _ in range(abs(n) % 4)))
        elif op == 5:
            del stream[i]
        else:
            stream.insert(i, stream[(i * 7 + n) % len(stream)])
    return base, stream


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_garbage_streams())
def test_fuzzed_streams_raise_only_wire_errors(pair) -> None:
    base, stream = pair
    r = Reassembler(EXPECTED)
    try:
        out = _feed(r, stream, through_proto=False)
    except (WireError, ShapeMismatchError):
        return
    # accepted: then the content must be exactly the tensors that were encoded
    assert set(out) == {"a", "b"}
    assert out["a"].shape == X.shape and out["b"].shape == (3,)
    if stream == base:
        assert torch.equal(out["a"], X)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_proto_bytes_never_crash(blob: bytes) -> None:
    from google.protobuf.message import DecodeError

    from opss.v1 import opss_pb2

    try:
        msg = opss_pb2.TensorChunk.FromString(blob)
    except DecodeError:
        return
    r = Reassembler(EXPECTED)
    try:
        r.add(chunk_from_proto(msg))
    except (WireError, ShapeMismatchError):
        pass
    assert r.bytes_received <= 160


def test_iter_chunks_is_lazy_and_sized() -> None:
    it = iter_chunks("a", torch.zeros(1000), chunk_bytes=1024)
    first = next(it)
    assert (first.index, first.offset, len(first.data), first.total_bytes) == (0, 0, 1024, 4000)
    rest = list(it)
    assert [c.offset for c in rest] == [1024, 2048, 3072] and len(rest[-1].data) == 4000 - 3072


def test_infer_requests_is_the_open_then_the_chunk_requests_the_runtime_sends() -> None:
    """One builder: the request stream of tests and scripts is the runtime's open and chunk messages."""
    a, b = torch.arange(6.0).reshape(2, 3), torch.ones(700)
    kw = dict(client_set=["x", "a", "b"], cut=["a", "b"], request_id="r1", granularity="block",
              wire_dtype="float16", graph_hash="h")
    stream = list(infer_requests("m", "fp", [("a", a), ("b", b)], chunk_bytes=512, **kw))
    expected = [infer_open("m", "fp", **kw)]
    expected += [chunk_request(c) for name, t in (("a", a), ("b", b)) for c in iter_chunks(name, t, "float16", 512)]
    assert stream == expected
    op = stream[0].open
    assert (list(op.client_set), list(op.cut), op.request_id, op.graph_hash) == (["x", "a", "b"], ["a", "b"], "r1", "h")
    assert [m.chunk.name for m in stream[1:]] == ["a", "b", "b", "b"]


@pytest.mark.parametrize("kw, message", [({"granularity": "op"}, "granularity"), ({"wire_dtype": "int8"}, "wire dtype")])
def test_infer_open_refuses_a_bad_granularity_or_wire_dtype(kw, message) -> None:
    with pytest.raises(WireError, match=message):
        infer_open("m", "fp", **kw)
