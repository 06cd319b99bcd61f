"""The tensor codec of the OPSS wire: raw bytes + dtype + shape, in chunks.

Tensors cross the network the way KServe v2 and Triton send them: the raw
little-endian row-major bytes of the tensor, its dtype name and its shape.
Nothing is pickled and nothing goes through ``torch.save``/``torch.load``, so a
server never runs a deserializer that can execute code on bytes from a client.

Floating-point tensors travel in a *wire dtype* chosen by the client
(``float32``, ``float16`` or ``bfloat16``; the 16-bit ones halve the upload);
other tensors (integer indices, masks) travel in their own dtype. bfloat16 has
no numpy dtype, so bytes are taken through a ``uint8`` view of the tensor and
read back with :func:`torch.frombuffer`, which handles every dtype alike.

Sending: :func:`iter_chunks` / :func:`encode_tensor` cut one tensor into
:class:`Chunk` s of ``chunk_bytes`` (64 KiB to 1 MiB). Receiving: a
:class:`Reassembler` built from what the receiver expects (``ServerPart.inputs``:
``{cut id: (shape, dtype)}``) checks every chunk *before* buffering it (known
name, not a duplicate, dtype, shape, declared byte count, chunk index and
offset, no interleaving) and hands back each tensor as soon as its last chunk
is in. The bytes are copied exactly once, into an uninitialized buffer of the
expected size, and the tensor is a zero-copy view of that buffer.

Errors: :class:`~opss.errors.ShapeMismatchError` when a tensor's dtype, shape
or byte count differs from what is expected, :class:`~opss.errors.WireError`
for everything else that is malformed. Messages say "expected X, got Y".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from opss.errors import CodecError, OpssError, ShapeMismatchError, WireError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "MIN_CHUNK_BYTES",
    "WIRE_DTYPES",
    "IMAGE_CODECS",
    "Chunk",
    "ImageSource",
    "Reassembler",
    "chunk_from_proto",
    "chunk_to_proto",
    "decode_tensor",
    "dtype_from_proto",
    "dtype_name",
    "dtype_to_proto",
    "encode_payload",
    "encode_tensor",
    "itemsize",
    "chunk_request",
    "infer_open",
    "infer_requests",
    "iter_chunks",
    "payload_bound",
    "tensor_bytes",
    "tensor_from_proto",
    "tensor_to_proto",
    "torch_dtype",
    "wire_dtype_for",
]

MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 1024 * 1024
DEFAULT_CHUNK_BYTES = 256 * 1024

#: Dtypes a client may choose for floating-point tensors on the wire.
WIRE_DTYPES = ("float32", "float16", "bfloat16")

#: Codecs that send an image input in one of its own forms (see :class:`ImageSource`).
IMAGE_CODECS = ("uint8", "file")

_TORCH = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAME = {v: k for k, v in _TORCH.items()}
# Names of the opss.v1.DType enum values, by dtype name.
_PROTO_NAME = {name: name.upper() for name in _TORCH}


def dtype_name(dtype: torch.dtype | str) -> str:
    """The wire name of a dtype: ``torch.float16`` / ``"torch.float16"`` → ``"float16"``."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _NAME:
            raise WireError(f"dtype {dtype} cannot travel on the wire: expected one of "
                            f"{sorted(_TORCH)}, got {dtype}")
        return _NAME[dtype]
    name = str(dtype).removeprefix("torch.")
    if name not in _TORCH:
        raise WireError(f"unknown dtype: expected one of {sorted(_TORCH)}, got {dtype!r}")
    return name


def torch_dtype(name: torch.dtype | str) -> torch.dtype:
    """The torch dtype of a wire dtype name."""
    return _TORCH[dtype_name(name)]


def itemsize(name: torch.dtype | str) -> int:
    """Bytes per element of a dtype."""
    return torch_dtype(name).itemsize


def wire_dtype_for(dtype: torch.dtype | str, wire_dtype: str) -> str:
    """The dtype a tensor of ``dtype`` travels in when the request's wire dtype is ``wire_dtype``.

    Floating-point tensors travel in the wire dtype, all others in their own.
    """
    if wire_dtype not in WIRE_DTYPES:
        raise WireError(f"bad wire dtype: expected one of {list(WIRE_DTYPES)}, got {wire_dtype!r}")
    name = dtype_name(dtype)
    return wire_dtype if torch_dtype(name).is_floating_point else name


def payload_bound(codec: str, decoded_bytes: int) -> int:
    """The most payload bytes a tensor of ``decoded_bytes`` may declare in ``codec``.

    An image file may be larger than its tensor, up to
    :data:`opss.preprocess.MAX_IMAGE_BYTES`; every other codec at most the
    decoded size plus the compressor's worst-case framing (incompressible data
    stored, never expanded).
    """
    if codec == "file":
        from opss.preprocess import MAX_IMAGE_BYTES

        return MAX_IMAGE_BYTES
    return decoded_bytes + decoded_bytes // 128 + 1024


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _nbytes(shape: Sequence[int], dtype: str) -> int:
    return math.prod(shape) * itemsize(dtype)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A read-only view of the raw row-major bytes of a CPU tensor (copies only if not contiguous)."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).toreadonly()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of one tensor on the wire (mirrors ``opss.v1.TensorChunk``).

    ``shape`` is in elements per dimension, ``total_bytes``/``offset`` in bytes,
    ``index`` counts chunks from 0, ``data`` holds bytes ``[offset, offset + len(data))``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    total_bytes: int
    index: int
    offset: int
    data: bytes
    codec: str = "raw"
    decoded_bytes: int = 0
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quant_axis: int = 0

    def __repr__(self) -> str:
        codec = "" if self.codec == "raw" else f" {self.codec}->{self.decoded_bytes}"
        return (f"Chunk({self.name!r}, {self.dtype}, shape={self.shape}, "
                f"#{self.index} @{self.offset}+{len(self.data)}/{self.total_bytes}{codec})")

    def codec_fields(self) -> tuple:
        """What must not change between the chunks of one tensor, beside dtype, shape and size."""
        return (self.codec, self.decoded_bytes, self.scale, self.zero_point, self.quant_axis)


@dataclass(frozen=True)
class ImageSource:
    """The forms an image input can travel in besides its tensor: the image file's own
    bytes (``data``, JPEG or PNG) and the uint8 crop before normalization (``crop``,
    a C x H x W uint8 numpy array), both made by :mod:`opss.preprocess` (``version``)."""

    data: bytes
    crop: np.ndarray
    version: str


def iter_chunks(name: str, tensor: torch.Tensor, wire_dtype: str = "float32",
                chunk_bytes: int = DEFAULT_CHUNK_BYTES, codec: str = "raw",
                image: ImageSource | None = None) -> Iterator[Chunk]:
    """Yield the chunks of ``tensor`` as cut tensor ``name``, converted to the wire dtype
    or encoded with ``codec``.

    Raw: floating-point tensors are cast to ``wire_dtype``; others keep their
    dtype. Any other codec (:mod:`opss.codec`) encodes the tensor first (all of
    it, before the first chunk: the caller times that as the encoding); the
    image forms ``"uint8"`` and ``"file"`` send ``image``'s crop or file bytes.
    ``chunk_bytes`` must be between 1 byte and 1 MiB (64 KiB to 1 MiB recommended).
    Every chunk owns a copy of its bytes, so the tensor may change afterwards.
    """
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise WireError(f"bad chunk size: expected 1 to {MAX_CHUNK_BYTES} bytes, got {chunk_bytes}")
    if codec not in ("raw", ""):
        try:
            enc = encode_payload(tensor, codec, image)
        except CodecError:  # a lossy codec refuses values it cannot carry (fp16 overflow, NaN in int8)
            enc = None
        if enc is not None and (len(enc.payload) < enc.decoded_bytes or codec == "file"):
            yield from _encoded_chunks(name, enc, chunk_bytes)
            return
        # the codec refused or did not shrink this tensor (data unlike the samples it was
        # planned on): raw is exact and never larger, so send that
    dtype = wire_dtype_for(tensor.dtype, wire_dtype)
    t = tensor.detach()
    if t.dtype != _TORCH[dtype]:
        t = t.to(_TORCH[dtype])
    shape = tuple(t.shape)
    raw = tensor_bytes(t)
    total = raw.nbytes
    if total == 0:
        yield Chunk(name, dtype, shape, 0, 0, 0, b"")
        return
    for index, offset in enumerate(range(0, total, chunk_bytes)):
        yield Chunk(name, dtype, shape, total, index, offset,
                    raw[offset:offset + chunk_bytes].tobytes())


def encode_payload(tensor: torch.Tensor, codec: str, image: ImageSource | None = None):
    """``tensor`` as an :class:`opss.codec.Encoded` of ``codec`` (the image forms from ``image``)."""
    from opss import codec as codecs

    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    shape, dtype = tuple(t.shape), dtype_name(t.dtype)
    decoded = _nbytes(shape, dtype)
    if codec in IMAGE_CODECS:
        if image is None:
            raise WireError(f"codec {codec!r} sends an image form: expected the image, got a tensor alone")
        payload = image.data if codec == "file" else np.ascontiguousarray(image.crop, np.uint8).tobytes()
        return codecs.Encoded(codec, bytes(payload), dtype, shape, decoded)
    return codecs.encode(t.contiguous().numpy(), codec)


def _encoded_chunks(name: str, enc, chunk_bytes: int) -> Iterator[Chunk]:
    payload = memoryview(enc.payload)
    total = payload.nbytes
    extra = (enc.codec, enc.decoded_bytes, tuple(enc.scale), tuple(enc.zero_point), max(enc.axis, 0))
    if total == 0:
        yield Chunk(name, enc.dtype, tuple(enc.shape), 0, 0, 0, b"", *extra)
        return
    for index, offset in enumerate(range(0, total, chunk_bytes)):
        yield Chunk(name, enc.dtype, tuple(enc.shape), total, index, offset,
                    payload[offset:offset + chunk_bytes].tobytes(), *extra)


def encode_tensor(name: str, tensor: torch.Tensor, wire_dtype: str = "float32",
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[Chunk]:
    """All chunks of ``tensor`` (see :func:`iter_chunks`)."""
    return list(iter_chunks(name, tensor, wire_dtype, chunk_bytes))


def decode_tensor(dtype: str, shape: Sequence[int], data: bytes | bytearray | memoryview) -> torch.Tensor:
    """A tensor from a whole tensor's raw bytes; checks the byte count.

    The result owns its memory (one copy of ``data`` into a writable buffer).
    """
    name = dtype_name(dtype)
    shape = _shape(shape)
    if any(d < 0 for d in shape):
        raise ShapeMismatchError(f"bad shape: expected non-negative dimensions, got {list(shape)}")
    expected = _nbytes(shape, name)
    if len(data) != expected:
        raise ShapeMismatchError(f"tensor of shape {list(shape)} and dtype {name}: expected "
                                 f"{expected} bytes, got {len(data)}")
    return _from_buffer(bytearray(data), name, shape)


def _from_buffer(buf: bytearray, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    if len(buf) == 0:
        return torch.empty(shape, dtype=_TORCH[dtype])
    return torch.frombuffer(buf, dtype=_TORCH[dtype]).view(shape)


class Reassembler:
    """Rebuilds the cut tensors of one request from their chunks, validating everything.

    ``expected`` maps each cut id to ``(shape, dtype)`` — exactly
    ``ServerPart.inputs``. ``wire_dtype`` is the request's choice for
    floating-point tensors. Tensors may come in any order, but the chunks of
    one tensor must be consecutive (index 0, 1, …; offsets contiguous) and not
    interleaved with another tensor's. A tensor's full buffer (its expected
    size, never more) is allocated only after its first chunk passed every
    check, so memory per request is bounded by the expected tensor sizes.

    :meth:`add` returns ``(name, tensor)`` when a tensor is complete (cast to
    its expected dtype), else ``None``; :meth:`finish` raises unless every
    expected tensor arrived whole.
    """

    def __init__(self, expected: Mapping[str, tuple[Sequence[int], torch.dtype | str]],
                 wire_dtype: str = "float32", max_chunk_bytes: int = MAX_CHUNK_BYTES, *,
                 image_inputs: Sequence[str] = ()) -> None:
        if wire_dtype not in WIRE_DTYPES:
            raise WireError(f"bad wire dtype: expected one of {list(WIRE_DTYPES)}, got {wire_dtype!r}")
        self._image_inputs = frozenset(image_inputs)
        #: seconds spent decoding each codec-encoded tensor, by name
        self.decode_seconds: dict[str, float] = {}
        self._expected = {str(k): (_shape(shape), dtype_name(dtype))
                          for k, (shape, dtype) in expected.items()}
        self._wire = {k: wire_dtype_for(dt, wire_dtype) for k, (_, dt) in self._expected.items()}
        self._max_chunk = max_chunk_bytes
        self._done: list[str] = []
        self._done_set: set[str] = set()
        self._current: Chunk | None = None  # first chunk of the tensor being filled
        self._buf: torch.Tensor | None = None  # uint8, the tensor's bytes
        self._bytes: np.ndarray | None = None  # numpy view of _buf, for memcpy from chunks
        self._filled = 0
        self._next_index = 0
        self.bytes_received = 0

    @property
    def received(self) -> tuple[str, ...]:
        """Names of the complete tensors, in arrival order."""
        return tuple(self._done)

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of the expected tensors not complete yet."""
        return tuple(k for k in self._expected if k not in self._done_set)

    @property
    def in_progress(self) -> str | None:
        """Name of the tensor whose chunks are arriving, if any."""
        return None if self._current is None else self._current.name

    def add(self, chunk: Chunk) -> tuple[str, torch.Tensor] | None:
        """Take one chunk; return ``(name, tensor)`` if it completed a tensor."""
        name = chunk.name
        if self._current is not None and name != self._current.name:
            raise WireError(f"tensor {self._current.name!r} incomplete: expected its chunk "
                            f"#{self._next_index} at offset {self._filled} of "
                            f"{self._current.total_bytes} bytes, got a chunk of {name!r}")
        if self._current is None:
            self._start(chunk)
        else:
            self._continue(chunk)
        n = len(chunk.data)
        if n:
            self._bytes[self._filled:self._filled + n] = np.frombuffer(chunk.data, np.uint8)
        self._filled += n
        self._next_index += 1
        self.bytes_received += n
        if self._filled < self._current.total_bytes:
            return None
        return self._complete()

    def _start(self, chunk: Chunk) -> None:
        name = chunk.name
        if name not in self._expected:
            raise WireError(f"unknown cut tensor {name!r}: expected one of {sorted(self._expected)}")
        if name in self._done_set:
            raise WireError(f"duplicate tensor {name!r}: it already arrived complete")
        shape, _ = self._expected[name]
        if chunk.codec not in ("raw", ""):
            self._check_codec(chunk)
        else:
            self._check_raw(chunk, shape, self._wire[name])
        nbytes = chunk.total_bytes
        if chunk.index != 0 or chunk.offset != 0:
            raise WireError(f"tensor {name!r}: chunks out of order: expected its first chunk "
                            f"(#0 at offset 0), got chunk #{chunk.index} at offset {chunk.offset}")
        self._check_size(chunk, nbytes, 0)
        self._current = chunk
        # uninitialized (no memset): every byte is written by a validated chunk before use
        self._buf = torch.empty(nbytes, dtype=torch.uint8)
        self._bytes = self._buf.numpy()
        self._filled = 0
        self._next_index = 0

    @staticmethod
    def _check_raw(chunk: Chunk, shape: tuple[int, ...], wire: str) -> None:
        name = chunk.name
        if chunk.dtype != wire:
            raise ShapeMismatchError(f"tensor {name!r}: expected dtype {wire} on the wire, "
                                     f"got {chunk.dtype}")
        if _shape(chunk.shape) != shape:
            raise ShapeMismatchError(f"tensor {name!r}: expected shape {list(shape)}, "
                                     f"got {list(chunk.shape)}")
        nbytes = _nbytes(shape, wire)
        if chunk.total_bytes != nbytes:
            raise ShapeMismatchError(f"tensor {name!r} of shape {list(shape)} in {wire}: expected "
                                     f"{nbytes} bytes, got {chunk.total_bytes} declared")

    def _check_codec(self, chunk: Chunk) -> None:
        """Validate an encoded tensor's first chunk (known codec, decoded size, payload bound)."""
        from opss.codec import CODECS

        name = chunk.name
        shape, dtype = self._expected[name]
        if chunk.codec not in CODECS:
            raise WireError(f"tensor {name!r}: unknown codec {chunk.codec!r}: expected one of {sorted(CODECS)}")
        if chunk.codec in IMAGE_CODECS and name not in self._image_inputs:
            raise WireError(f"tensor {name!r}: codec {chunk.codec!r} is an image form, expected only for "
                            f"the model's image input {sorted(self._image_inputs)}")
        if chunk.dtype != dtype or _shape(chunk.shape) != shape:
            raise ShapeMismatchError(f"tensor {name!r} ({chunk.codec}): expected the decoded tensor "
                                     f"{dtype} {list(shape)}, got {chunk.dtype} {list(chunk.shape)}")
        decoded = _nbytes(shape, dtype)
        if chunk.decoded_bytes != decoded:
            raise ShapeMismatchError(f"tensor {name!r} ({chunk.codec}): expected decoded_bytes {decoded}, "
                                     f"got {chunk.decoded_bytes} declared")
        bound = payload_bound(chunk.codec, decoded)
        if chunk.total_bytes > bound:
            raise WireError(f"tensor {name!r} ({chunk.codec}): expected at most {bound} payload bytes "
                            f"for {decoded} decoded, got {chunk.total_bytes} declared")

    def _continue(self, chunk: Chunk) -> None:
        first = self._current
        if (chunk.dtype, _shape(chunk.shape), chunk.total_bytes, chunk.codec_fields()) != (
                first.dtype, first.shape, first.total_bytes, first.codec_fields()):
            raise WireError(f"tensor {chunk.name!r} changed mid-stream: expected dtype {first.dtype}, "
                            f"shape {list(first.shape)}, {first.total_bytes} bytes, got "
                            f"{chunk.dtype}, {list(chunk.shape)}, {chunk.total_bytes} bytes")
        if chunk.index != self._next_index or chunk.offset != self._filled:
            raise WireError(f"tensor {chunk.name!r}: chunks out of order: expected chunk "
                            f"#{self._next_index} at offset {self._filled}, got "
                            f"#{chunk.index} at offset {chunk.offset}")
        self._check_size(chunk, first.total_bytes, self._filled)

    def _check_size(self, chunk: Chunk, total: int, filled: int) -> None:
        n = len(chunk.data)
        if n > self._max_chunk:
            raise WireError(f"tensor {chunk.name!r}: chunk #{chunk.index} too large: expected at "
                            f"most {self._max_chunk} bytes, got {n}")
        if n == 0 and total > 0:
            raise WireError(f"tensor {chunk.name!r}: chunk #{chunk.index} is empty: expected 1 to "
                            f"{min(self._max_chunk, total - filled)} bytes")
        if n > total - filled:
            raise WireError(f"tensor {chunk.name!r}: chunk #{chunk.index} overruns the tensor: "
                            f"expected at most {total - filled} more bytes, got {n}")

    def _complete(self) -> tuple[str, torch.Tensor]:
        first = self._current
        shape, dtype = self._expected[first.name]
        if first.codec not in ("raw", ""):
            start = time.perf_counter()
            tensor = self._decode(first, shape, dtype)
            self.decode_seconds[first.name] = time.perf_counter() - start
        elif self._buf.numel() == 0:
            tensor = torch.empty(shape, dtype=_TORCH[first.dtype])
        else:
            tensor = self._buf.view(_TORCH[first.dtype]).view(shape)
        if tensor.dtype != _TORCH[dtype]:
            tensor = tensor.to(_TORCH[dtype])
        self._done.append(first.name)
        self._done_set.add(first.name)
        self._current, self._buf, self._bytes = None, None, None
        self._filled = self._next_index = 0
        return first.name, tensor

    def _decode(self, first: Chunk, shape: tuple[int, ...], dtype: str) -> torch.Tensor:
        """The decoded tensor of a complete codec payload (WireError on any inconsistency)."""
        from opss import codec as codecs
        from opss import preprocess

        payload = self._bytes.tobytes() if self._bytes is not None else b""
        try:
            if first.codec == "file":
                array = preprocess.image_tensor(payload, shape)
            elif first.codec == "uint8":
                c, h, w = shape[1:] if len(shape) == 4 else (0, 0, 0)
                if len(payload) != c * h * w:
                    raise WireError(f"tensor {first.name!r} (uint8): expected {c * h * w} bytes of a "
                                    f"{c}x{h}x{w} crop, got {len(payload)}")
                array = preprocess.normalize(np.frombuffer(payload, np.uint8).reshape(c, h, w))
            else:
                enc = codecs.Encoded(first.codec, payload, first.dtype, tuple(first.shape), first.decoded_bytes,
                                     tuple(first.scale), tuple(first.zero_point),
                                     first.quant_axis if len(first.scale) > 1 else -1)
                array = codecs.decode(enc, expect_dtype=dtype, expect_shape=shape)
        except OpssError as exc:
            if isinstance(exc, WireError):
                raise
            raise WireError(f"tensor {first.name!r} ({first.codec}): {exc}") from None
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tuple(tensor.shape) != shape:
            raise ShapeMismatchError(f"tensor {first.name!r} ({first.codec}): expected shape {list(shape)} "
                                     f"decoded, got {list(tensor.shape)}")
        return tensor

    def finish(self) -> None:
        """Raise :class:`WireError` unless every expected tensor arrived complete."""
        if self._current is not None:
            raise WireError(f"tensor {self._current.name!r} incomplete: expected "
                            f"{self._current.total_bytes} bytes, got {self._filled}")
        if self.missing:
            raise WireError(f"missing tensors: expected {sorted(self._expected)}, "
                            f"never got {list(self.missing)}")


# --- opss.v1 messages ------------------------------------------------------------------------

def _pb2():
    from opss.v1 import opss_pb2

    return opss_pb2


def dtype_to_proto(dtype: torch.dtype | str) -> int:
    """The ``opss.v1.DType`` enum value of a dtype."""
    return _pb2().DType.Value(_PROTO_NAME[dtype_name(dtype)])


def dtype_from_proto(value: int) -> str:
    """The dtype name of an ``opss.v1.DType`` enum value (WireError if unknown/unspecified)."""
    pb = _pb2()
    try:
        enum_name = pb.DType.Name(value)
    except ValueError:
        enum_name = None
    name = None if enum_name is None else enum_name.lower()
    if name not in _TORCH:
        valid = sorted(_PROTO_NAME.values())
        raise WireError(f"bad dtype: expected one of {valid}, got {enum_name or value}")
    return name


def chunk_to_proto(chunk: Chunk):
    """An ``opss.v1.TensorChunk`` from a :class:`Chunk`."""
    codec = {} if chunk.codec in ("raw", "") else dict(
        codec=chunk.codec, decoded_bytes=chunk.decoded_bytes, scale=chunk.scale,
        zero_point=chunk.zero_point, quant_axis=chunk.quant_axis)
    return _pb2().TensorChunk(name=chunk.name, dtype=dtype_to_proto(chunk.dtype), shape=chunk.shape,
                              total_bytes=chunk.total_bytes, index=chunk.index, offset=chunk.offset,
                              data=chunk.data, **codec)


def chunk_from_proto(msg) -> Chunk:
    """A :class:`Chunk` from an ``opss.v1.TensorChunk`` (WireError on a bad dtype or shape)."""
    shape = tuple(msg.shape)
    if any(d < 0 for d in shape):
        raise ShapeMismatchError(f"tensor {msg.name!r}: expected non-negative dimensions, "
                                 f"got shape {list(shape)}")
    return Chunk(msg.name, dtype_from_proto(msg.dtype), shape, msg.total_bytes, msg.index,
                 msg.offset, msg.data, msg.codec or "raw", msg.decoded_bytes, tuple(msg.scale),
                 tuple(msg.zero_point), msg.quant_axis)


def tensor_to_proto(tensor: torch.Tensor):
    """An ``opss.v1.Tensor`` holding the whole tensor in its own dtype."""
    return _pb2().Tensor(dtype=dtype_to_proto(tensor.dtype), shape=tuple(tensor.shape),
                         data=tensor_bytes(tensor).tobytes())


def tensor_from_proto(msg) -> torch.Tensor:
    """The tensor in an ``opss.v1.Tensor`` (checks its byte count)."""
    return decode_tensor(dtype_from_proto(msg.dtype), tuple(msg.shape), msg.data)


def infer_open(model: str, fingerprint: str, *, client_set: Sequence[str] = (), cut: Sequence[str] = (),
               request_id: str = "", granularity: str = "layer", wire_dtype: str = "float32",
               graph_hash: str = "", preprocess: str = ""):
    """The ``opss.v1.InferRequest`` that opens an Infer call (its ``InferOpen``).

    ``client_set`` and ``cut`` name the partition (the server checks the cut it
    derives from the client set against ``cut`` when both are set);
    ``graph_hash`` (``opss.profile.graph_hash`` of the client's graph) lets the
    server refuse a partition named on a differently captured graph.
    """
    pb = _pb2()
    if wire_dtype not in WIRE_DTYPES:
        raise WireError(f"bad wire dtype: expected one of {list(WIRE_DTYPES)}, got {wire_dtype!r}")
    gran = {"layer": pb.LAYER, "block": pb.BLOCK}.get(granularity)
    if gran is None:
        raise WireError(f"granularity: expected 'layer' or 'block', got {granularity!r}")
    return pb.InferRequest(open=pb.InferOpen(
        request_id=request_id, model=model, fingerprint=fingerprint, client_set=list(client_set),
        cut=list(cut), granularity=gran, wire_dtype=dtype_to_proto(wire_dtype),
        graph_hash=graph_hash, preprocess=preprocess))


def chunk_request(chunk: Chunk):
    """The ``opss.v1.InferRequest`` carrying one chunk of a cut tensor."""
    return _pb2().InferRequest(chunk=chunk_to_proto(chunk))


def infer_requests(model: str, fingerprint: str, tensors, *, client_set: Sequence[str] = (),
                   cut: Sequence[str] = (), request_id: str = "", granularity: str = "layer",
                   wire_dtype: str = "float32", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                   graph_hash: str = "", codecs: Mapping[str, str] | None = None,
                   image: ImageSource | None = None):
    """The ``opss.v1.InferRequest`` stream of one inference: :func:`infer_open`, then every chunk.

    ``tensors`` is an iterable of ``(cut id, tensor)`` consumed lazily, so a
    generator fed by a compute thread streams each tensor as soon as it exists.
    The client runtime sends the same messages (:func:`infer_open`,
    :func:`chunk_request` of :func:`iter_chunks`), encoding them on its sender
    thread so that it can pace and time every chunk.
    """
    codecs = dict(codecs or {})
    yield infer_open(model, fingerprint, client_set=client_set, cut=cut, request_id=request_id,
                     granularity=granularity, wire_dtype=wire_dtype, graph_hash=graph_hash,
                     preprocess=image.version if image is not None else "")
    for name, tensor in tensors:
        for chunk in iter_chunks(name, tensor, wire_dtype, chunk_bytes, codecs.get(name, "raw"), image):
            yield chunk_request(chunk)
