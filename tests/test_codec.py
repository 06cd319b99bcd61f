"""Tensor codecs: exact round trips to the bit, lossy ones within their declared
bound (checked against IEEE rounding and torch's own casts), and hostile
payloads refused before anything large is allocated."""

from __future__ import annotations

import dataclasses
import math
import tracemalloc

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from opss import codec
from opss.codec import (
    CODECS,
    EXACT,
    LOSSLESS,
    LOSSY,
    CodecError,
    Encoded,
    decode,
    encode,
    max_payload_bytes,
    parse_codecs,
    relative_error,
)
from opss.errors import OpssError, WireError
from opss.samples import sample_jpeg

TENSOR_EXACT = ("raw", *LOSSLESS)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)


@st.composite
def any_bits(draw, dtype: str):
    """Arrays of ``dtype`` from arbitrary bit patterns (every NaN payload, -0.0,
    subnormals, Inf), about a third of them exact zeros (post-ReLU-like)."""
    dt = np.dtype(dtype)
    shape = draw(shapes)
    if dt == np.bool_:
        return draw(hnp.arrays(dt, shape))
    uint = np.dtype(f"u{dt.itemsize}")
    bits = draw(hnp.arrays(uint, shape, elements=st.one_of(st.just(0), st.integers(0, 2 ** (8 * dt.itemsize) - 1))))
    return bits.view(dt)


@st.composite
def float32_arrays(draw, *, finite: bool = False, max_abs: float = 1e30):
    shape = draw(shapes)
    max_abs = float(np.float32(max_abs))
    tiny = float(np.float32(1e-40))
    values = st.floats(-max_abs, max_abs, width=32, allow_nan=False, allow_infinity=False)
    if not finite:
        values = st.one_of(values, st.sampled_from([math.nan, math.inf, -math.inf]))
    elements = st.one_of(st.just(0.0), st.just(-0.0), values,
                         st.floats(-tiny, tiny, width=32, allow_subnormal=True))
    return draw(hnp.arrays(np.float32, shape, elements=elements))


def roundtrip(a: np.ndarray, name: str) -> np.ndarray:
    enc = encode(a, name)
    assert enc.codec == name and enc.shape == a.shape and enc.decoded_bytes == a.size * np.dtype(enc.dtype).itemsize
    assert len(enc.payload) <= max_payload_bytes(name, enc.dtype, enc.shape)
    out = decode(enc, expect_dtype=enc.dtype, expect_shape=a.shape)
    assert out.shape == a.shape and out.dtype == np.dtype(enc.dtype)
    assert out.flags.c_contiguous and out.flags.writeable
    return out


# ---------------------------------------------------------------------------
# exact codecs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", TENSOR_EXACT)
@pytest.mark.parametrize("dtype", codec.DTYPES)
@SETTINGS
@given(data=st.data())
def test_exact_codecs_give_back_every_bit(name, dtype, data):
    a = data.draw(any_bits(dtype))
    out = roundtrip(a, name)
    assert out.tobytes() == a.tobytes()  # NaN payloads, -0.0 and subnormals included


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_codecs_compress_post_relu_activations(name):
    # a real activation: a random-weight conv + ReLU on the Grace Hopper photo
    from opss.preprocess import image_tensor

    x = torch.from_numpy(image_tensor(sample_jpeg(), (1, 3, 64, 64)))
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    torch.manual_seed(0)
    torch.nn.init.normal_(conv.weight, std=0.3)
    with torch.no_grad():
        act = torch.relu(conv(x)).numpy()
    zero = float((act == 0).mean())
    assert 0.2 < zero < 0.8
    enc = encode(act, name)
    # the zero bitmap alone removes the zeros' bytes: wire < (1 - zero) * raw + bitmap + slack
    assert len(enc.payload) < (1 - zero) * act.nbytes + act.size / 8 + 256
    assert decode(enc).tobytes() == act.tobytes()


def test_byte_orders_and_non_contiguous_inputs_encode_their_values():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for view in (a.astype(">f4"), a.transpose(2, 0, 1), a[:, ::2]):
        for name in TENSOR_EXACT:
            np.testing.assert_array_equal(decode(encode(view, name)), np.asarray(view, np.float32))


# ---------------------------------------------------------------------------
# lossy codecs
# ---------------------------------------------------------------------------
def _check_specials(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """NaN stays NaN, +-Inf stays +-Inf; returns the mask of finite inputs."""
    nan = np.isnan(a)
    assert np.array_equal(np.isnan(out), nan)
    inf = np.isinf(a)
    assert np.array_equal(out[inf], a[inf])
    return ~nan & ~inf


@pytest.mark.parametrize("name", ["fp16", "fp16+zstd"])
@SETTINGS
@given(a=float32_arrays(max_abs=65504.0))
def test_fp16_is_within_half_an_ulp_and_equals_torchs_cast(name, a):
    out = roundtrip(a, name)
    finite = _check_specials(a, out)
    x, y = a[finite].astype(np.float64), out[finite].astype(np.float64)
    assert np.all(np.abs(x - y) <= np.maximum(2.0**-11 * np.abs(x), 2.0**-25))
    ref = torch.from_numpy(a).half().float().numpy()  # an independent round-to-nearest-even
    assert np.array_equal(ref[finite].view(np.uint32), out[finite].view(np.uint32))


@pytest.mark.parametrize("name", ["bf16", "bf16+zstd"])
@SETTINGS
@given(a=float32_arrays(max_abs=3.38e38))
def test_bf16_is_within_half_an_ulp_and_equals_torchs_cast(name, a):
    out = roundtrip(a, name)
    finite = _check_specials(a, out)
    x, y = a[finite].astype(np.float64), out[finite].astype(np.float64)
    assert np.all(np.abs(x - y) <= np.maximum(2.0**-8 * np.abs(x), 2.0**-134))
    ref = torch.from_numpy(a).to(torch.bfloat16).float().numpy()
    assert np.array_equal(ref[finite].view(np.uint32), out[finite].view(np.uint32))


def test_bf16_keeps_every_nan_a_nan():
    # NaNs whose payload sits in the low 16 bits only: plain rounding would make them Inf
    bits = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0x7F80FFFF, 0xFFFFFFFF], np.uint32)
    out = decode(encode(bits.view(np.float32), "bf16"))
    assert np.isnan(out).all()
    assert np.array_equal(np.signbit(out), np.signbit(bits.view(np.float32)))


@pytest.mark.parametrize("name, big", [("fp16", 65520.0), ("fp16+zstd", -1e6), ("bf16", 3.4e38), ("bf16+zstd", -3.4e38)])
def test_a_finite_value_that_would_become_infinite_is_refused(name, big):
    a = np.array([1.0, big, np.inf], np.float32)
    with pytest.raises(CodecError, match="expected finite values within"):
        encode(a, name)
    ok = decode(encode(np.array([65504.0 if "fp16" in name else 3.38e38], np.float32), name))
    assert np.isfinite(ok).all()


def _int8_bound(a: np.ndarray, enc: Encoded) -> np.ndarray:
    if enc.axis == 1:
        s = np.asarray(enc.scale, np.float64).reshape((1, -1) + (1,) * (a.ndim - 2))
        s = np.broadcast_to(s, a.shape)
    else:
        s = np.full(a.shape, enc.scale[0])
    return s / 2 + s * 1e-4 + np.abs(a.astype(np.float64)) * 2.0**-22


@pytest.mark.parametrize("name", ["int8", "int8+zstd"])
@SETTINGS
@given(a=float32_arrays(finite=True, max_abs=1e6))
def test_int8_is_within_half_a_step_and_keeps_zeros_exact(name, a):
    enc = encode(a, name)
    out = roundtrip(a, name)
    assert np.all(np.abs(a.astype(np.float64) - out) <= _int8_bound(a, enc))
    assert np.all(out[a == 0] == 0)
    assert enc.axis == (1 if a.ndim >= 3 and a.shape[1] > 1 and a.size else -1)
    want = a.shape[1] if enc.axis == 1 else 1
    assert len(enc.scale) == len(enc.zero_point) == want
    assert all(s > 0 and math.isfinite(s) for s in enc.scale)
    assert all(-128 <= z <= 127 for z in enc.zero_point)


def test_int8_per_channel_follows_each_channels_range():
    # channel 0 spans +-1000, channel 1 +-0.001: one scale would flatten channel 1 to zero
    a = np.stack([np.linspace(-1000, 1000, 50), np.linspace(-1e-3, 1e-3, 50)]).astype(np.float32).reshape(1, 2, 5, 10)
    out = decode(encode(a, "int8"))
    assert np.abs(out[0, 1] - a[0, 1]).max() <= 1e-3 / 255 + 1e-9
    assert np.abs(out[0, 0] - a[0, 0]).max() <= 1000 / 255 + 1e-3


@pytest.mark.parametrize("name", ["int8", "int8+zstd"])
def test_int8_refuses_nan_and_inf(name):
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(CodecError, match="expected finite values"):
            encode(np.array([[[0.0, bad]]], np.float32), name)


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_codecs_take_float32_only(name):
    with pytest.raises(CodecError, match="expected a float32 tensor"):
        encode(np.zeros(4, np.float64), name)


@pytest.mark.parametrize("stage", ["fp16", "bf16", "int8"])
def test_compressed_lossy_codecs_decode_to_their_stage(stage):
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((1, 8, 6, 6)), 0).astype(np.float32)
    plain = decode(encode(a, stage))
    packed = decode(encode(a, f"{stage}+zstd"))
    assert plain.tobytes() == packed.tobytes()
    assert len(encode(a, f"{stage}+zstd").payload) < len(encode(a, stage).payload)


# ---------------------------------------------------------------------------
# input forms
# ---------------------------------------------------------------------------
def test_uint8_and_file_forms_round_trip():
    crop = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    assert decode(encode(crop, "uint8"), expect_dtype="uint8").tobytes() == crop.tobytes()
    with pytest.raises(CodecError, match="uint8 image crop"):
        encode(crop.astype(np.float32), "uint8")
    jpeg = sample_jpeg()
    enc = encode(jpeg, "file")
    assert enc.shape == (len(jpeg),) and enc.dtype == "uint8"
    assert decode(enc).tobytes() == jpeg
    assert decode(encode(np.frombuffer(jpeg, np.uint8), "file")).tobytes() == jpeg
    with pytest.raises(CodecError, match="expected a JPEG or PNG file"):
        encode(b"GIF89a....", "file")
    with pytest.raises(CodecError, match="expected a JPEG or PNG file"):
        decode(dataclasses.replace(enc, payload=b"\x00" * len(jpeg)))


# ---------------------------------------------------------------------------
# hostile encodings
# ---------------------------------------------------------------------------
def _good(name: str = "zstd") -> Encoded:
    a = np.maximum(np.random.default_rng(1).standard_normal((1, 4, 8, 8)), 0).astype(np.float32)
    return encode(a, name)


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("raw", {"codec": "gzip"}, "unknown codec 'gzip'"),
        ("raw", {"payload": b"\x00" * 1023}, "expected a payload of 1024 bytes"),
        ("raw", {"decoded_bytes": 2048}, "expected decoded_bytes 1024"),
        ("raw", {"dtype": "complex64"}, "expected a dtype of"),
        ("raw", {"dtype": "float64"}, "expected decoded_bytes 2048"),
        ("raw", {"shape": (1, 4, 8, -8)}, "non-negative ints"),
        ("raw", {"shape": (1, 4, 8, 8.0)}, "non-negative ints"),
        ("raw", {"scale": (1.0,), "zero_point": (0,)}, "expected no scale"),
        ("raw", {"payload": "text"}, "payload as bytes"),
        ("raw", {"dtype": "bool", "decoded_bytes": 256, "payload": b"\x02" * 256}, "bool bytes 0 or 1"),
        ("fp16", {"payload": b"\x00" * 256}, "expected a payload of 512 bytes"),
        ("fp16", {"dtype": "float16", "decoded_bytes": 512}, "expected dtype float32"),
        ("int8", {"payload": b"\x00" * 255}, "expected a payload of 256 bytes"),
        ("int8", {"scale": (1.0,) * 3}, "expected 4 scale"),
        ("int8", {"axis": -1}, "expected 1 scale"),
        ("int8", {"axis": 2}, "expected axis -1"),
        ("int8", {"scale": (0.0, 1.0, 1.0, 1.0)}, "finite float32 scales > 0"),
        ("int8", {"scale": (-1.0, 1.0, 1.0, 1.0)}, "finite float32 scales > 0"),
        ("int8", {"scale": (math.nan, 1.0, 1.0, 1.0)}, "finite float32 scales > 0"),
        ("int8", {"scale": (1e39, 1.0, 1.0, 1.0)}, "finite float32 scales > 0"),
        ("int8", {"zero_point": (0, 0, 128, 0)}, "zero points from -128 to 127"),
        ("zstd", {"payload": b"not zstd at all"}, "expected a zstd frame"),
        ("zstd", {"payload": b"\x00" * 70000}, "expected a payload of at most"),
        ("lz4", {"payload": b"\x01"}, "expected at least 4 bytes"),
        ("file", {"shape": (2, 3)}, "expected a 1-D shape"),
    ],
)
def test_malformed_encodings_are_one_line_codec_errors(name, change, message):
    enc = encode(sample_jpeg(), "file") if name == "file" else _good(name)
    with pytest.raises(CodecError, match=message) as info:
        decode(dataclasses.replace(enc, **change))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, WireError) and isinstance(info.value, OpssError)


def test_expectations_are_checked():
    enc = _good("raw")
    with pytest.raises(CodecError, match=r"expected shape \(1, 4, 8, 9\), got \(1, 4, 8, 8\)"):
        decode(enc, expect_shape=(1, 4, 8, 9))
    with pytest.raises(CodecError, match="expected dtype float16, got float32"):
        decode(enc, expect_dtype="float16")


def test_a_declared_size_beyond_the_cap_is_refused_without_allocating():
    huge = (1 << 20, 1 << 20)  # 4 TiB of float32
    enc = Encoded("zstd", b"\x28\xb5\x2f\xfd", "float32", huge, 4 << 40)
    with pytest.raises(CodecError, match="decoded bytes"):
        decode(enc)


@pytest.fixture(scope="module")
def gigabyte_of_zeros_zstd() -> bytes:
    """A zstd frame declaring (and holding) 1 GiB of zeros, ~32 kB; made by a
    streaming compressor from one 1 MiB buffer, so nothing holds 1 GiB."""
    c = zstandard.ZstdCompressor(level=1).compressobj(size=1 << 30)
    chunk = bytes(1 << 20)
    parts = [c.compress(chunk) for _ in range(1024)]
    parts.append(c.flush())
    return b"".join(parts)


def _peak_during(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", ["zstd", "fp16+zstd", "int8+zstd"])
def test_a_decompression_bomb_is_refused_before_it_expands(name, gigabyte_of_zeros_zstd):
    bomb = gigabyte_of_zeros_zstd
    assert len(bomb) < 100_000 and zstandard.frame_content_size(bomb) == 1 << 30
    shape = (1, 64, 56, 56)  # 784 KiB as float32: the payload's length alone does not give the bomb away
    enc = dataclasses.replace(encode(np.zeros(shape, np.float32), name), payload=bomb)

    def attempt():
        with pytest.raises(CodecError, match="the frame declares 1073741824"):
            decode(enc, expect_shape=shape, expect_dtype="float32")

    assert _peak_during(attempt) < 4 << 20  # nothing near 1 GiB (nor the tensor's own bytes ×100)


def test_zstd_frames_without_a_size_or_with_extra_data_are_refused():
    a = np.zeros((1, 4, 8, 8), np.float32)
    content = codec._transform(a.reshape(-1))
    unsized = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(content)
    base = encode(a, "zstd")
    with pytest.raises(CodecError, match="declares its content size"):
        decode(dataclasses.replace(base, payload=unsized))
    with pytest.raises(CodecError, match="corrupt zstd frame"):
        decode(dataclasses.replace(base, payload=base.payload + b"\x00\x01"))


def test_lz4_bomb_and_corrupt_blocks_are_refused():
    base = encode(np.zeros((1, 4, 8, 8), np.float32), "lz4")
    bomb = (1 << 30).to_bytes(4, "little") + base.payload[4:]
    with pytest.raises(CodecError, match="the payload declares 1073741824"):
        decode(dataclasses.replace(base, payload=bomb))
    junk = base.payload[:4] + b"\xff" * (len(base.payload) - 4)
    with pytest.raises(CodecError, match="corrupt lz4 block|bytes after decompressing"):
        decode(dataclasses.replace(base, payload=junk))


def test_transformed_content_that_disagrees_with_its_bitmap_is_refused():
    a = np.arange(1, 17, dtype=np.float32)  # 16 non-zero elements: bitmap 0xffff + 64 bytes
    c = zstandard.ZstdCompressor(level=1)
    base = encode(a, "zstd")
    short = bytes([0xFF, 0xFF]) + bytes(60)  # 15 values' bytes for 16 bits set
    with pytest.raises(CodecError, match="expected 66 bytes of content for 16 non-zero"):
        decode(dataclasses.replace(base, payload=c.compress(short)))
    b = np.arange(1, 11, dtype=np.float32)  # 10 elements: 6 padding bits in the 2nd bitmap byte
    padded = bytes([0xFF, 0xC1]) + bytes(40)
    with pytest.raises(CodecError, match="padding bits"):
        decode(dataclasses.replace(encode(b, "zstd"), payload=c.compress(padded)))


# ---------------------------------------------------------------------------
# choosing codecs
# ---------------------------------------------------------------------------
def test_parse_codecs():
    assert parse_codecs("raw") == ("raw",)
    assert parse_codecs("lossless") == EXACT == ("raw", "zstd", "lz4", "uint8", "file")
    assert parse_codecs("all") == tuple(CODECS)
    assert parse_codecs("int8, fp16,lossless") == ("raw", "zstd", "lz4", "uint8", "file", "fp16", "int8")
    assert parse_codecs("int8") == ("raw", "int8")
    for bad in ("int9", "raw,", ""):
        with pytest.raises(CodecError, match="--codecs"):
            parse_codecs(bad)
    assert all(CODECS[n].exact for n in EXACT) and not any(CODECS[n].exact for n in LOSSY)
    assert set(EXACT) | set(LOSSY) == set(CODECS)


def test_relative_error():
    y = np.array([3.0, 4.0])
    assert relative_error(y, y) == 0.0
    assert relative_error(y, np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert relative_error(np.zeros(2), np.zeros(2)) == 0.0
    assert relative_error(np.zeros(2), y) == math.inf
    assert math.isnan(relative_error(y, np.array([math.nan, 0.0])))
