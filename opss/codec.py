"""Tensor codecs: what an uploaded tensor looks like on the wire (numpy, no torch).

A codec turns a C-contiguous numpy array into an :class:`Encoded` (a payload
plus what the receiver needs to rebuild the tensor) and back. The payload is
never pickled; every field is validated before anything is allocated or
decompressed, and a compressed payload never expands beyond the size its
tensor declares.

The codecs, by name (:data:`CODECS`):

``raw``
    The tensor's little-endian row-major bytes (any dtype of :data:`DTYPES`).
``zstd``, ``lz4`` (lossless, exact to the bit, NaN payloads included)
    The raw bytes, transformed and then compressed (zstd level 1, one frame
    that declares its content size; lz4 block, after a 4-byte little-endian
    content size). The transform, for dtypes wider than one byte: a bitmap of
    the elements whose bits are all zero (``np.packbits``, ``ceil(n / 8)``
    bytes), then the other elements byte-shuffled (byte 0 of every element,
    then byte 1, ...). After a ReLU a third to a half of the values are exact
    zeros; the bitmap takes them out and the shuffle puts the exponent bytes
    together, which beats compressing the raw bytes by 10-15 % at a similar
    speed (measured: ``scripts/bench_wire.py``). One-byte dtypes are
    compressed as they are. ``zstd`` is the default lossless codec
    (:data:`LOSSLESS_DEFAULT`): it compresses better, lz4 is faster.
``fp16`` / ``bf16`` (lossy, float32 tensors only)
    A cast to IEEE half (numpy, round to nearest even) or to bfloat16 (the
    upper 16 bits of the float32, rounded to nearest even on the ``uint32``
    view). Error per element ``|x - x'| <= max(2**-11 |x|, 2**-25)`` for fp16
    and ``<= max(2**-8 |x|, 2**-134)`` for bf16; NaN stays NaN (bf16 keeps it
    quiet), +-Inf stays +-Inf. A finite value that would become infinite
    (``|x| > 65504`` for fp16, ``> 3.3961e38`` for bf16) is refused with
    :class:`CodecError` rather than sent wrong: fall back to an exact codec.
``int8`` (lossy, float32 tensors only)
    Affine quantization ``q = clip(rint(x / s) + z, -128, 127)``, decoded as
    ``(q - z) * s`` in float32. The range always contains 0, so exact zeros
    stay exact. Per channel along axis 1 for tensors of 3 or more dimensions
    (NCHW, NCL: ``shape[1]`` scales and zero points), per tensor otherwise
    (measured: per channel gives a 2-3x lower median model-output error, e.g.
    resnet18 3.7e-4 vs 9.5e-4, mobilenet_v2 4.2e-4 vs 1.4e-3, on a sample photo).
    Error per element ``<= s / 2`` plus float32 rounding (``|x| * 2**-22``).
    NaN and Inf have no int8 form: a tensor with any is refused with
    :class:`CodecError`.
``fp16+zstd``, ``bf16+zstd``, ``int8+zstd``
    The lossy stage's bytes, then the ``zstd`` transform and compressor.
``uint8``, ``file`` (exact input forms of an image)
    ``uint8`` is the uint8 crop before normalization (:func:`opss.preprocess.crop`),
    ``file`` the image file's own bytes (JPEG or PNG, as a 1-D uint8 array or
    ``bytes``). They travel raw; :func:`decode` returns the uint8 array and
    the receiver finishes with :mod:`opss.preprocess` (normalize, or decode
    the image and crop and normalize).

:func:`parse_codecs` reads a ``--codecs`` value; :data:`EXACT` are the codecs
whose result is bit-identical to local inference.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from opss.errors import CodecError

__all__ = [
    "CODECS",
    "COMPRESSORS",
    "DTYPES",
    "EXACT",
    "INPUT_FORMS",
    "LOSSLESS",
    "LOSSLESS_DEFAULT",
    "LOSSY",
    "MAX_DECODED_BYTES",
    "CodecError",
    "CodecInfo",
    "Encoded",
    "decode",
    "encode",
    "max_payload_bytes",
    "parse_codecs",
    "relative_error",
]


@dataclass(frozen=True)
class CodecInfo:
    """A codec: ``exact`` when decoding gives back the very bits; ``lossy_stage``
    (``"fp16"``, ``"bf16"``, ``"int8"`` or None) and ``compressor`` (``"zstd"``,
    ``"lz4"`` or None) say what it does; ``input_form``: only for the model's
    input image (``uint8``, ``file``)."""

    name: str
    exact: bool
    lossy_stage: str | None
    compressor: str | None
    input_form: bool = False


COMPRESSORS = ("zstd", "lz4")
#: The lossless codec used where one is meant (after a lossy stage, "lossless").
LOSSLESS_DEFAULT = "zstd"
_ZSTD_LEVEL = 1

CODECS: dict[str, CodecInfo] = {
    info.name: info
    for info in (
        CodecInfo("raw", True, None, None),
        CodecInfo("zstd", True, None, "zstd"),
        CodecInfo("lz4", True, None, "lz4"),
        CodecInfo("uint8", True, None, None, input_form=True),
        CodecInfo("file", True, None, None, input_form=True),
        CodecInfo("fp16", False, "fp16", None),
        CodecInfo("bf16", False, "bf16", None),
        CodecInfo("int8", False, "int8", None),
        CodecInfo("fp16+zstd", False, "fp16", "zstd"),
        CodecInfo("bf16+zstd", False, "bf16", "zstd"),
        CodecInfo("int8+zstd", False, "int8", "zstd"),
    )
}
LOSSLESS: tuple[str, ...] = ("zstd", "lz4")
INPUT_FORMS: tuple[str, ...] = ("uint8", "file")
EXACT: tuple[str, ...] = tuple(n for n, i in CODECS.items() if i.exact)
LOSSY: tuple[str, ...] = tuple(n for n, i in CODECS.items() if not i.exact)

#: Dtypes ``raw`` and the lossless codecs carry (numpy names, little-endian).
DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
#: No tensor decodes to more than this, whatever it declares (2 GiB).
MAX_DECODED_BYTES = 1 << 31
_MAX_NDIM = 32
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_LZ4_HEADER = 4  # little-endian uint32: the content size


@dataclass(frozen=True)
class Encoded:
    """One encoded tensor. ``dtype``, ``shape`` and ``decoded_bytes`` describe
    the DECODED tensor (e.g. ``"float32"``, ``(1, 64, 56, 56)``, ``802816``);
    ``payload`` is what crosses the link. ``int8`` carries ``scale`` and
    ``zero_point`` (one each, ``axis=-1``; or one per index of ``axis`` 1)."""

    codec: str
    payload: bytes = field(repr=False)
    dtype: str
    shape: tuple[int, ...]
    decoded_bytes: int
    scale: tuple[float, ...] = field(default=(), repr=False)
    zero_point: tuple[int, ...] = field(default=(), repr=False)
    axis: int = -1

    @property
    def wire_bytes(self) -> int:
        """Payload bytes plus 4 bytes per scale and per zero point (their proto fields)."""
        return len(self.payload) + 4 * (len(self.scale) + len(self.zero_point))

    def __repr__(self) -> str:
        return (f"Encoded(codec={self.codec!r}, dtype={self.dtype!r}, shape={self.shape}, "
                f"decoded_bytes={self.decoded_bytes}, wire_bytes={self.wire_bytes}, axis={self.axis})")


# ---------------------------------------------------------------------------
# choosing codecs
# ---------------------------------------------------------------------------
def parse_codecs(text: str) -> tuple[str, ...]:
    """The codecs a ``--codecs`` value allows, in :data:`CODECS` order; ``raw`` always.

    ``"raw"``: raw only (the paper's behaviour). ``"lossless"`` (the default):
    raw, the lossless codecs and the exact input forms (:data:`EXACT`).
    ``"all"``: every codec. Or a comma list of names and ``lossless``, e.g.
    ``"int8,fp16,lossless"``. An unknown name raises :class:`CodecError`."""
    words = [w.strip() for w in str(text).split(",")]
    if not any(words):
        raise CodecError(f"--codecs: expected raw, lossless, all or a comma list of {list(CODECS)}, got {text!r}")
    chosen = {"raw"}
    for w in words:
        if w == "lossless":
            chosen.update(EXACT)
        elif w == "all":
            chosen.update(CODECS)
        elif w in CODECS:
            chosen.add(w)
        else:
            raise CodecError(
                f"--codecs: unknown codec {w!r}: expected raw, lossless, all or one of {list(CODECS)}"
            )
    return tuple(n for n in CODECS if n in chosen)


# ---------------------------------------------------------------------------
# the lossless transform + compressors
# ---------------------------------------------------------------------------
_local = threading.local()  # zstd contexts are not thread-safe: one pair per thread


def _zstd():
    import zstandard

    pair = getattr(_local, "zstd", None)
    if pair is None:
        pair = (zstandard.ZstdCompressor(level=_ZSTD_LEVEL), zstandard.ZstdDecompressor())
        _local.zstd = pair
    return pair


def _mask_bytes(n: int) -> int:
    return (n + 7) // 8


def _content_bounds(n: int, k: int) -> tuple[int, int]:
    """Least and most bytes of the transformed content of ``n`` elements of ``k`` bytes."""
    if k == 1:
        return n, n
    return _mask_bytes(n), _mask_bytes(n) + n * k


def _transform(flat: np.ndarray) -> np.ndarray | memoryview:
    """The zero bitmap + byte-shuffled non-zero elements (module docstring); ``k == 1``: the bytes."""
    k = flat.dtype.itemsize
    if k == 1:
        return memoryview(flat.view(np.uint8))
    u = flat.view(_UINT[k])
    nonzero = u != 0
    values = np.compress(nonzero, u)  # 5x faster than u[nonzero] on a random mask
    mb = _mask_bytes(u.size)
    out = np.empty(mb + values.size * k, np.uint8)
    out[:mb] = np.packbits(nonzero)
    out[mb:].reshape(k, values.size)[...] = values.view(np.uint8).reshape(values.size, k).T
    return out


def _untransform(content: bytes, n: int, k: int, what: str) -> np.ndarray:
    """The inverse of :func:`_transform`: ``n`` elements of ``k`` bytes as a uint8 array."""
    raw = np.frombuffer(content, np.uint8)
    if k == 1:
        return raw.copy()
    mb = _mask_bytes(n)
    if n % 8 and raw[mb - 1] & ((1 << (8 - n % 8)) - 1):
        raise CodecError(f"{what}: the zero bitmap's padding bits are set: expected 0, got {raw[mb - 1]:#04x}")
    nonzero = np.unpackbits(raw[:mb], count=n).view(bool)
    nnz = int(np.count_nonzero(nonzero))
    if raw.size != mb + nnz * k:
        raise CodecError(
            f"{what}: expected {mb + nnz * k} bytes of content for {nnz} non-zero elements, got {raw.size}"
        )
    planes = raw[mb:].reshape(k, nnz)
    values = np.empty((nnz, k), np.uint8)
    for j in range(k):  # column by column: 5x faster than a transposed copy
        values[:, j] = planes[j]
    out = np.zeros(n, _UINT[k])
    out[np.flatnonzero(nonzero)] = values.view(_UINT[k]).reshape(nnz)  # 4x faster than out[nonzero]
    return out.view(np.uint8)


def _compress(content, compressor: str) -> bytes:
    if compressor == "zstd":
        return _zstd()[0].compress(content)
    import lz4.block

    size = len(content) if isinstance(content, memoryview) else content.size
    return size.to_bytes(_LZ4_HEADER, "little") + lz4.block.compress(content, store_size=False)


def _decompress(payload: bytes, compressor: str, lo: int, hi: int, what: str) -> bytes:
    """Decompress ``payload`` into at most ``hi`` bytes (at least ``lo``), checking
    the size it declares BEFORE decompressing and the size it gave after."""
    if compressor == "zstd":
        import zstandard

        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError:
            raise CodecError(f"{what}: expected a zstd frame, got {len(payload)} bytes that are not one") from None
        if declared < 0:
            raise CodecError(f"{what}: expected a zstd frame that declares its content size, got none")
        if not lo <= declared <= hi:
            raise CodecError(f"{what}: expected {_range(lo, hi)} bytes of content, the frame declares {declared}")
        try:
            out = _zstd()[1].decompress(payload, max_output_size=hi, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CodecError(f"{what}: corrupt zstd frame ({_first_line(exc)})") from None
    else:
        import lz4.block

        if len(payload) < _LZ4_HEADER:
            raise CodecError(f"{what}: expected at least {_LZ4_HEADER} bytes (the content size), got {len(payload)}")
        declared = int.from_bytes(payload[:_LZ4_HEADER], "little")
        if not lo <= declared <= hi:
            raise CodecError(f"{what}: expected {_range(lo, hi)} bytes of content, the payload declares {declared}")
        try:
            out = lz4.block.decompress(memoryview(payload)[_LZ4_HEADER:], uncompressed_size=declared)
        except lz4.block.LZ4BlockError as exc:
            raise CodecError(f"{what}: corrupt lz4 block ({_first_line(exc)})") from None
    if len(out) != declared:
        raise CodecError(f"{what}: expected {declared} bytes after decompressing, got {len(out)}")
    return out


def _compress_bound(n: int, compressor: str) -> int:
    """The largest payload a compressor makes from ``n`` bytes (zstd's and lz4's
    documented bounds, plus frame headers)."""
    if compressor == "zstd":
        return n + (n >> 8) + 64 + ((128 * 1024 - n) >> 11 if n < 128 * 1024 else 0)
    return _LZ4_HEADER + n + n // 255 + 16


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo} to {hi}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------
# lossy stages
# ---------------------------------------------------------------------------
_F32_TINY = float(np.finfo(np.float32).tiny)


def _to_fp16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16)
    if x.size and _finite_absmax(x) > 65504.0:  # only then can a finite value become Inf
        _refuse_overflow(x, np.isinf(h), "fp16", 65504.0)
    return h


def _finite_absmax(x: np.ndarray) -> float:
    """The largest |x| among the finite values (fast path: no NaN/Inf at all)."""
    hi, lo = float(x.max()), float(x.min())
    if math.isfinite(hi) and math.isfinite(lo):
        return max(hi, -lo)
    finite = x[np.isfinite(x)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _to_bf16(x: np.ndarray) -> np.ndarray:
    u = x.view(np.uint32)
    # round to nearest even on the uint32 view; NaN keeps its sign and top
    # mantissa bits with the quiet bit set (a plain round could turn it into Inf)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    if x.size and _finite_absmax(x) >= 3.3961e38:
        inf = (rounded & np.uint16(0x7FFF)) == np.uint16(0x7F80)
        _refuse_overflow(x, inf, "bf16", 3.3961e38)
    return rounded


def _refuse_overflow(x: np.ndarray, became_inf: np.ndarray, codec: str, limit: float) -> None:
    bad = became_inf & np.isfinite(x)
    if bad.any():
        worst = float(np.abs(x[bad]).max())
        raise CodecError(
            f"codec {codec!r}: expected finite values within +-{limit:.5g}, got {worst:.6g} "
            f"({int(bad.sum())} value(s) would become infinite); use an exact codec"
        )


def _int8_axis(shape: tuple[int, ...]) -> int:
    """Per channel (axis 1) for tensors of 3 or more dimensions, per tensor otherwise."""
    return 1 if len(shape) >= 3 and shape[1] > 1 and math.prod(shape) > 0 else -1


def _quantize(x: np.ndarray) -> tuple[np.ndarray, tuple[float, ...], tuple[int, ...], int]:
    finite = np.isfinite(x)
    if not finite.all():
        raise CodecError(
            f"codec 'int8': expected finite values, got {int(x.size - finite.sum())} NaN/Inf; use an exact codec"
        )
    axis = _int8_axis(x.shape)
    if x.size == 0:
        return np.empty(x.shape, np.int8), (1.0,), (0,), -1
    if axis == 1:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        lo = np.minimum(x.min(axis=axes), 0).astype(np.float64)
        hi = np.maximum(x.max(axis=axes), 0).astype(np.float64)
    else:
        lo = np.array([min(float(x.min()), 0.0)])
        hi = np.array([max(float(x.max()), 0.0)])
    scale = ((hi - lo) / 255.0).astype(np.float32)
    scale = np.where(scale >= np.float32(_F32_TINY), scale, np.float32(1.0)).astype(np.float32)
    zero = np.clip(np.rint(-128.0 - lo / scale.astype(np.float64)), -128, 127).astype(np.int32)
    bshape = (1, -1) + (1,) * (x.ndim - 2) if axis == 1 else (1,) * x.ndim
    s = scale.reshape(bshape) if axis == 1 else scale[0]
    z = zero.reshape(bshape).astype(np.float32) if axis == 1 else np.float32(zero[0])
    q = np.rint(x.reshape(-1) / s if axis == -1 else x / s)  # 1-d: 0-d arithmetic would give scalars
    q += z
    np.clip(q, -128, 127, out=q)
    return q.astype(np.int8).reshape(x.shape), tuple(float(v) for v in scale), tuple(int(v) for v in zero), axis


def _dequantize(q: np.ndarray, scale: tuple[float, ...], zero: tuple[int, ...], axis: int) -> np.ndarray:
    if axis == 1:
        bshape = (1, -1) + (1,) * (q.ndim - 2)
        s = np.asarray(scale, np.float32).reshape(bshape)
        z = np.asarray(zero, np.float32).reshape(bshape)
    else:
        s, z = np.float32(scale[0]), np.float32(zero[0])
    out = q.astype(np.float32).reshape(q.shape if axis == 1 else (-1,))
    out -= z
    out *= s
    return out.reshape(q.shape)


# ---------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------
def encode(array, codec: str) -> Encoded:
    """Encode ``array`` (C-contiguous; float32 for the lossy codecs, uint8 for
    ``uint8``, a 1-D uint8 array or ``bytes`` of a JPEG/PNG file for ``file``)
    with ``codec``. Raises :class:`CodecError` on an unknown codec, a dtype
    the codec does not carry, or values it cannot represent (module docstring)."""
    info = CODECS.get(codec)
    if info is None:
        raise CodecError(f"unknown codec {codec!r}: expected one of {list(CODECS)}")
    if codec == "file":
        return _encode_file(array)
    x = np.asarray(array)
    if not x.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        x = x.copy(order="C")
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    dtype = x.dtype.name
    if dtype not in DTYPES:
        raise CodecError(f"codec {codec!r}: expected a dtype of {list(DTYPES)}, got {x.dtype}")
    shape = tuple(int(d) for d in x.shape)
    if codec == "uint8" and dtype != "uint8":
        raise CodecError(f"codec 'uint8': expected the uint8 image crop, got dtype {dtype}")
    if info.lossy_stage is not None and dtype != "float32":
        raise CodecError(f"codec {codec!r}: expected a float32 tensor, got dtype {dtype}")
    flat = x.reshape(-1)
    scale: tuple[float, ...] = ()
    zero: tuple[int, ...] = ()
    axis = -1
    if info.lossy_stage == "fp16":
        stage = _to_fp16(flat)
    elif info.lossy_stage == "bf16":
        stage = _to_bf16(flat)
    elif info.lossy_stage == "int8":
        q, scale, zero, axis = _quantize(x)
        stage = q.reshape(-1)
    else:
        stage = flat
    if info.compressor is None:
        payload = stage.tobytes()
    else:
        payload = _compress(_transform(stage), info.compressor)
    return Encoded(codec, payload, dtype, shape, x.nbytes, scale, zero, axis)


def _encode_file(data) -> Encoded:
    if isinstance(data, (bytes, bytearray, memoryview)):
        b = bytes(data)
    else:
        arr = np.asarray(data)
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise CodecError(f"codec 'file': expected the file's bytes (1-D uint8), got {arr.dtype} {arr.shape}")
        b = arr.tobytes()
    _check_image_magic(b)
    return Encoded("file", b, "uint8", (len(b),), len(b))


def _check_image_magic(b: bytes | bytearray) -> None:
    if not (b.startswith(_JPEG_MAGIC) or b.startswith(_PNG_MAGIC)):
        raise CodecError(f"codec 'file': expected a JPEG or PNG file, got {len(b)} bytes starting {b[:8]!r}")


# ---------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------
def _stage_itemsize(info: CodecInfo, dtype: str) -> int:
    return {"fp16": 2, "bf16": 2, "int8": 1}.get(info.lossy_stage, np.dtype(dtype).itemsize)


def _check_header(enc: Encoded, expect_dtype: str | None, expect_shape) -> tuple[CodecInfo, int]:
    """Everything but the payload's contents; returns the codec and the element count."""
    info = CODECS.get(enc.codec)
    if info is None:
        raise CodecError(f"unknown codec {enc.codec!r}: expected one of {list(CODECS)}")
    what = f"codec {enc.codec!r}"
    if not isinstance(enc.payload, (bytes, bytearray)):
        raise CodecError(f"{what}: expected the payload as bytes, got {type(enc.payload).__name__}")
    if enc.dtype not in DTYPES:
        raise CodecError(f"{what}: expected a dtype of {list(DTYPES)}, got {enc.dtype!r}")
    if info.lossy_stage is not None and enc.dtype != "float32":
        raise CodecError(f"{what}: expected dtype float32, got {enc.dtype!r}")
    if info.input_form and enc.dtype != "uint8":
        raise CodecError(f"{what}: expected dtype uint8, got {enc.dtype!r}")
    shape = tuple(enc.shape) if isinstance(enc.shape, (tuple, list)) else enc.shape
    if (not isinstance(shape, tuple) or len(shape) > _MAX_NDIM
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise CodecError(f"{what}: expected a shape of at most {_MAX_NDIM} non-negative ints, got {shape!r}")
    if enc.codec == "file" and len(shape) != 1:
        raise CodecError(f"{what}: expected a 1-D shape (the file's length), got {shape}")
    if expect_dtype is not None and enc.dtype != expect_dtype:
        raise CodecError(f"{what}: expected dtype {expect_dtype}, got {enc.dtype}")
    if expect_shape is not None and tuple(shape) != tuple(expect_shape):
        raise CodecError(f"{what}: expected shape {tuple(expect_shape)}, got {tuple(shape)}")
    n = math.prod(shape)
    size = n * np.dtype(enc.dtype).itemsize
    if enc.decoded_bytes != size:
        raise CodecError(f"{what}: expected decoded_bytes {size} for {enc.dtype} {tuple(shape)}, got {enc.decoded_bytes}")
    if size > MAX_DECODED_BYTES:
        raise CodecError(f"{what}: expected at most {MAX_DECODED_BYTES} decoded bytes, got {size}")
    if enc.codec == "file":
        from opss.preprocess import MAX_IMAGE_BYTES

        if size > MAX_IMAGE_BYTES:
            raise CodecError(f"{what}: expected an image file of at most {MAX_IMAGE_BYTES} bytes, got {size}")
        _check_image_magic(enc.payload)
    _check_params(enc, info, n)
    limit = max_payload_bytes(enc.codec, enc.dtype, shape)
    if info.compressor is None and len(enc.payload) != limit:
        raise CodecError(f"{what}: expected a payload of {limit} bytes for {enc.dtype} {tuple(shape)}, "
                         f"got {len(enc.payload)}")
    if len(enc.payload) > limit:
        raise CodecError(f"{what}: expected a payload of at most {limit} bytes, got {len(enc.payload)}")
    return info, n


def _check_params(enc: Encoded, info: CodecInfo, n: int) -> None:
    what = f"codec {enc.codec!r}"
    if info.lossy_stage != "int8":
        if enc.scale or enc.zero_point or enc.axis != -1:
            raise CodecError(f"{what}: expected no scale, zero point or axis, got "
                             f"{len(enc.scale)} scale(s), {len(enc.zero_point)} zero point(s), axis {enc.axis}")
        return
    if enc.axis == -1:
        want = 1
    elif enc.axis == 1 and len(enc.shape) >= 2:
        want = enc.shape[1]
    else:
        raise CodecError(f"{what}: expected axis -1 (per tensor) or 1 (per channel, 2+ dims), "
                         f"got axis {enc.axis} for shape {enc.shape}")
    if len(enc.scale) != want or len(enc.zero_point) != want:
        raise CodecError(f"{what}: expected {want} scale(s) and zero point(s) for axis {enc.axis} of "
                         f"{enc.shape}, got {len(enc.scale)} and {len(enc.zero_point)}")
    s = np.asarray(enc.scale, np.float64)
    with np.errstate(over="ignore"):
        s32 = s.astype(np.float32)
    if not (np.isfinite(s32).all() and (s32 > 0).all()):
        raise CodecError(f"{what}: expected finite float32 scales > 0, got {_first_bad(enc.scale, s32)}")
    z = enc.zero_point
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and -128 <= v <= 127 for v in z):
        raise CodecError(f"{what}: expected zero points from -128 to 127, got {_first_bad_zero(z)}")


def _first_bad(values, s32: np.ndarray) -> str:
    for v, f in zip(values, s32):
        if not (np.isfinite(f) and f > 0):
            return repr(v)
    return "?"


def _first_bad_zero(values) -> str:
    for v in values:
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and -128 <= v <= 127):
            return repr(v)
    return "?"


def max_payload_bytes(codec: str, dtype: str, shape: tuple[int, ...]) -> int:
    """The largest payload a valid encoding of a ``dtype`` ``shape`` tensor
    has (exactly its size for the uncompressed codecs; for ``file``, ``shape``
    is ``(file length,)``). A receiver may refuse longer uploads before
    buffering them."""
    info = CODECS.get(codec)
    if info is None:
        raise CodecError(f"unknown codec {codec!r}: expected one of {list(CODECS)}")
    n = math.prod(shape)
    k = _stage_itemsize(info, dtype)
    if info.compressor is None:
        return n * k
    return _compress_bound(_content_bounds(n, k)[1], info.compressor)


def decode(enc: Encoded, *, expect_dtype: str | None = None, expect_shape: tuple | None = None) -> np.ndarray:
    """The tensor ``enc`` encodes: a writable C-contiguous array of ``enc.dtype``
    and ``enc.shape`` (uint8 for ``uint8``; the file's bytes as 1-D uint8 for
    ``file``).

    Validated before anything is allocated or decompressed: the codec, the
    dtype and shape (and ``expect_dtype``/``expect_shape`` when given),
    ``decoded_bytes == prod(shape) * itemsize``, the payload length (exact
    for the uncompressed codecs, at most the compressor's bound otherwise),
    int8's scales and zero points, and the content size a compressed payload
    declares (never above what the tensor needs). Raises :class:`CodecError`."""
    info, n = _check_header(enc, expect_dtype, expect_shape)
    what = f"codec {enc.codec!r}"
    k = _stage_itemsize(info, enc.dtype)
    if info.compressor is None:
        stage = np.frombuffer(enc.payload, np.uint8).copy()
    else:
        lo, hi = _content_bounds(n, k)
        content = _decompress(enc.payload, info.compressor, lo, hi, what)
        stage = _untransform(content, n, k, what)
    shape = tuple(int(d) for d in enc.shape)
    if info.lossy_stage is None:
        if enc.dtype == "bool" and stage.size and int(stage.max()) > 1:
            raise CodecError(f"{what}: expected bool bytes 0 or 1, got {int(stage.max())}")
        return stage.view(np.dtype(enc.dtype).newbyteorder("<")).reshape(shape)
    if info.lossy_stage == "fp16":
        return stage.view("<f2").astype(np.float32).reshape(shape)
    if info.lossy_stage == "bf16":
        return (stage.view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32).reshape(shape)
    q = stage.view(np.int8).reshape(shape)
    return _dequantize(q, enc.scale, tuple(int(v) for v in enc.zero_point), enc.axis)


def relative_error(reference: np.ndarray, approx: np.ndarray) -> float:
    """``||approx - reference|| / ||reference||`` (L2 over all elements, float64):
    how far a model output computed from a decoded tensor is from the exact one.
    0 when both are all zeros, inf when only the reference is; NaN if either has NaN."""
    ref = np.asarray(reference, np.float64).reshape(-1)
    got = np.asarray(approx, np.float64).reshape(-1)
    if ref.shape != got.shape:
        raise CodecError(f"relative_error: expected outputs of the same size, got {ref.size} and {got.size}")
    num = float(np.linalg.norm(got - ref))
    den = float(np.linalg.norm(ref))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den
