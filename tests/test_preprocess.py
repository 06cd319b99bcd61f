"""The one image preprocessing (opss.preprocess) and the sample photographs (opss.samples)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from opss.errors import CodecError, ShapeMismatchError
from opss.preprocess import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MEAN,
    PREPROCESS_VERSION,
    STD,
    crop,
    decode_image,
    image_tensor,
    normalize,
)
from opss.samples import SAMPLE_NAMES, sample_images, sample_jpeg


def test_version_and_limits():
    assert PREPROCESS_VERSION == "imagenet-v1"
    assert MAX_IMAGE_BYTES == 20_000_000 and MAX_IMAGE_PIXELS == 40_000_000


def test_sample_photos_are_real_rgb_jpeg_or_png_files():
    photos = sample_images()
    assert [n for n, _ in photos] == list(SAMPLE_NAMES) and len(photos) >= 6
    assert len({data for _, data in photos}) == len(photos)
    for name, data in photos:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == ("JPEG" if name.endswith(".jpg") else "PNG")
            assert im.mode == "RGB" and min(im.size) >= 256
            px = np.asarray(im)
        # a photograph, not noise: neighbouring pixels are close far more often than not
        diff = np.abs(np.diff(px.astype(np.int16), axis=1)).mean()
        assert 0.5 < diff < 30, name
    q90, q50 = sample_jpeg(90), sample_jpeg(50)
    with Image.open(io.BytesIO(q90)) as im:
        assert im.format == "JPEG" and im.size == (512, 600)
    assert len(q50) < len(q90) and sample_jpeg() == q90


def test_decode_image_matches_pillow_on_every_sample_photo():
    for name, data in sample_images():
        got = decode_image(data)
        with Image.open(io.BytesIO(data)) as im:
            want = np.asarray(im.convert("RGB"))
        assert got.dtype == np.uint8 and got.shape == want.shape and got.shape[2] == 3
        assert np.array_equal(got, want), name


def test_crop_is_a_centred_chw_crop_of_the_short_side_resize():
    # left half black, right half white, 64 x 32: short side 32 -> 36 (32 * 256 // 224), crop 32 x 32
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, 32:] = 255
    out = crop(img, 32, 32)
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out[:, :, 0] < 128).all() and (out[:, :, -1] > 128).all()
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    solid = np.full((200, 300, 3), (255, 128, 0), np.uint8)
    assert np.array_equal(crop(solid, 224, 224), np.broadcast_to(np.array([255, 128, 0], np.uint8)[:, None, None], (3, 224, 224)))
    with pytest.raises(CodecError, match="H x W x 3 uint8"):
        crop(img.astype(np.float32), 8, 8)


def test_normalize_is_the_imagenet_formula_in_float32():
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    out = normalize(chw)
    assert out.shape == (1, 3, 5, 7) and out.dtype == np.float32
    mean = np.asarray(MEAN, np.float32)[:, None, None]
    std = np.asarray(STD, np.float32)[:, None, None]
    want = ((chw.astype(np.float32) / np.float32(255)) - mean) / std
    assert np.array_equal(out[0], want)
    exact = (chw / 255.0 - np.asarray(MEAN)[:, None, None]) / np.asarray(STD)[:, None, None]
    np.testing.assert_allclose(out[0], exact, rtol=0, atol=1e-6)
    assert np.array_equal(normalize(chw[None]), out)


def test_image_tensor_is_decode_crop_normalize():
    data = sample_jpeg()
    x = image_tensor(data, (1, 3, 224, 224))
    assert x.shape == (1, 3, 224, 224)
    assert np.array_equal(x, normalize(crop(decode_image(data), 224, 224)))
    with pytest.raises(ShapeMismatchError, match=r"\(1, 3, H, W\)"):
        image_tensor(data, (1, 64))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _solid_rgb_png(width: int, height: int) -> bytes:
    """A valid solid-black RGB PNG, compressed row by row (never the whole image in memory)."""
    comp = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0 + black pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_a_50_megapixel_png_is_refused_from_its_header_before_decoding():
    png = _solid_rgb_png(10_000, 5_000)  # 150 MB as RGB, ~150 kB on disk
    assert len(png) < 1_000_000
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (10_000, 5_000)
        im.verify()  # a well-formed PNG (chunk CRCs), not a fake header

    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match=r"expected at most 40000000 pixels, got 10000 x 5000 = 50000000"):
            decode_image(png)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # nowhere near the 150 MB a decode would take


def test_too_many_bytes_are_refused_before_opening():
    data = sample_jpeg()
    with pytest.raises(CodecError, match=f"expected at most {len(data) - 1} bytes, got {len(data)}"):
        decode_image(data, max_bytes=len(data) - 1)
    assert decode_image(data, max_bytes=len(data)).shape == (600, 512, 3)


def test_garbage_and_truncated_files_are_one_line_codec_errors():
    rng = np.random.default_rng(0)
    garbage = b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    jpeg = sample_jpeg()
    cases = {
        "garbage JPEG": garbage,
        "truncated JPEG": jpeg[: len(jpeg) // 2],
        "truncated PNG": sample_images()[1][1][:30_000],
        "not an image": b"hello, world",
        "empty": b"",
    }
    for what, data in cases.items():
        with pytest.raises(CodecError, match="image: cannot decode") as info:
            decode_image(data)
        assert "\n" not in str(info.value), what


def test_other_formats_only_when_asked():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(buf, format="BMP")
    with pytest.raises(CodecError, match="as JPEG/PNG"):
        decode_image(buf.getvalue())
    assert decode_image(buf.getvalue(), formats=None)[0, 0].tolist() == [10, 20, 30]
    grey = io.BytesIO()
    Image.new("L", (40, 30), 77).save(grey, format="PNG")
    assert decode_image(grey.getvalue())[5, 5].tolist() == [77, 77, 77]  # converted to RGB
