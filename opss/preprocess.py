"""The one image preprocessing of OPSS, named and versioned (numpy + Pillow, no torch).

The client's local reference and the server's result must agree bit for bit,
whether the client sends the normalized float tensor, the uint8 crop (codec
``uint8``) or the image file itself (codec ``file``). So both sides run these
functions, and nothing else, on the same bytes:

``decode_image``  JPEG/PNG bytes -> H x W x 3 uint8 RGB (Pillow), bounded in
                  bytes and pixels before anything is decoded;
``crop``          resize the short side to ``max(h, w) * 256 // 224`` (Pillow
                  BILINEAR), centre-crop ``h x w`` -> 3 x h x w uint8 (CHW);
``normalize``     ``(x / 255 - mean) / std`` in float32 with the ImageNet mean
                  and std, in that order -> float32 (1, 3, h, w);
``image_tensor``  the three in a row.

This is torchvision's ``ImageClassification`` preset as ``opss-client
--image`` has always computed it (:func:`opss.client.inputs.load_image` is now
these functions). :data:`PREPROCESS_VERSION` names it; a change to any result
bit needs a new version. Results depend on Pillow's resampling code, so both
sides should run the Pillow version of ``constraints.txt``.

The server passes :data:`MAX_IMAGE_BYTES` and :data:`MAX_IMAGE_PIXELS`; a file
over either, or one Pillow cannot decode (garbage, truncated), raises
:class:`~opss.errors.CodecError` with one line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from opss.errors import CodecError, ShapeMismatchError

__all__ = [
    "IMAGE_FORMATS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MEAN",
    "PREPROCESS_VERSION",
    "STD",
    "crop",
    "decode_image",
    "image_hw",
    "image_tensor",
    "normalize",
]

PREPROCESS_VERSION = "imagenet-v1"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: What a server decodes at most: 20 MB of file, 40 megapixels (120 MB as RGB).
MAX_IMAGE_BYTES = 20_000_000
MAX_IMAGE_PIXELS = 40_000_000
#: The file formats an image may come in over the wire.
IMAGE_FORMATS = ("JPEG", "PNG")

_MEAN32 = np.asarray(MEAN, np.float32).reshape(3, 1, 1)
_STD32 = np.asarray(STD, np.float32).reshape(3, 1, 1)


def decode_image(
    data: bytes,
    *,
    max_bytes: int | None = MAX_IMAGE_BYTES,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    formats: Sequence[str] | None = IMAGE_FORMATS,
) -> np.ndarray:
    """The image in ``data`` as an H x W x 3 uint8 RGB array (Pillow's ``convert("RGB")``).

    Refused with :class:`CodecError`, before decoding: more than ``max_bytes``
    bytes; a header declaring more than ``max_pixels`` pixels (Pillow opens
    lazily, so only the header has been read); a format not in ``formats``
    (None: any Pillow reads). Then a file Pillow cannot decode (not an image,
    truncated, corrupt) is a CodecError too. None for a limit: no limit of
    ours (Pillow's own decompression-bomb limit still holds)."""
    from PIL import Image

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"image: expected the file's bytes, got {type(data).__name__}")
    size = len(data)
    if max_bytes is not None and size > max_bytes:
        raise CodecError(f"image: expected at most {max_bytes} bytes, got {size}")
    try:
        with Image.open(io.BytesIO(data), formats=None if formats is None else list(formats)) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise CodecError(f"image: expected at most {max_pixels} pixels, got {w} x {h} = {w * h}")
            rgb = im.convert("RGB")  # decodes (im.load()) here
    except CodecError:
        raise
    except Exception as exc:  # Pillow's plugins raise many kinds; a bad file must not crash a server
        raise CodecError(
            f"image: cannot decode {size} bytes as {'/'.join(formats) if formats else 'an image'} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    return np.asarray(rgb, dtype=np.uint8).reshape(h, w, 3).copy()


def image_hw(shape: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of a model input shape ``(1, 3, H, W)``; ShapeMismatchError otherwise."""
    s = tuple(int(d) for d in shape)
    if len(s) != 4 or s[0] != 1 or s[1] != 3 or s[2] < 1 or s[3] < 1:
        raise ShapeMismatchError(f"expected a model taking (1, 3, H, W) images, got input shape {s}")
    return s[2], s[3]


def crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the short side of ``image`` (H x W x 3 uint8) to
    ``max(height, width) * 256 // 224`` with Pillow BILINEAR (never below the
    crop), centre-crop ``height x width``; returns 3 x height x width uint8 (CHW)."""
    from PIL import Image

    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise CodecError(f"crop: expected an H x W x 3 uint8 image, got {a.dtype} {a.shape}")
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise CodecError(f"crop: expected a crop of at least 1 x 1, got {h} x {w}")
    im = Image.fromarray(np.ascontiguousarray(a), "RGB")
    short = max(h, w) * 256 // 224
    iw, ih = im.size
    scale = short / min(iw, ih)
    im = im.resize((max(w, round(iw * scale)), max(h, round(ih * scale))), Image.Resampling.BILINEAR)
    iw, ih = im.size
    left, top = (iw - w) // 2, (ih - h) // 2
    im = im.crop((left, top, left + w, top + h))
    hwc = np.asarray(im, dtype=np.uint8).reshape(h, w, 3)
    return np.ascontiguousarray(hwc.transpose(2, 0, 1))


def normalize(chw: np.ndarray) -> np.ndarray:
    """``(x / 255 - mean) / std`` of a uint8 crop (3 x H x W or 1 x 3 x H x W),
    each step in float32, as float32 (1, 3, H, W)."""
    a = np.asarray(chw)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[0] != 3:
        raise CodecError(f"normalize: expected a 3 x H x W uint8 crop, got {a.dtype} {np.asarray(chw).shape}")
    x = a.astype(np.float32)
    x /= np.float32(255.0)
    x -= _MEAN32
    x /= _STD32
    return x[np.newaxis]


def image_tensor(
    data: bytes,
    shape: Sequence[int],
    *,
    max_bytes: int | None = MAX_IMAGE_BYTES,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    formats: Sequence[str] | None = IMAGE_FORMATS,
) -> np.ndarray:
    """``normalize(crop(decode_image(data), H, W))`` for a model input ``shape`` (1, 3, H, W)."""
    h, w = image_hw(shape)
    img = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, formats=formats)
    return normalize(crop(img, h, w))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"
