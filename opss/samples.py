"""Real photographs that installed packages ship, for profiles, benchmarks and tests.

Codec costs (how well a cut tensor compresses, how much a lossy codec changes
the model's output) depend on what the model sees, so they are measured on
photographs, never on random noise. These come with packages OPSS already
depends on, so every machine (a Raspberry Pi included) has the same ones,
byte for byte:

- matplotlib's ``grace_hopper.jpg`` (512 x 600, JPEG; ``matplotlib.cbook.get_sample_data``);
- scikit-image's ``data`` photographs, read as the files the wheel ships
  (``astronaut.png``, ``coffee.png``, ``chelsea.png``, ``rocket.jpg``,
  ``motorcycle_left.png``), without importing scikit-image's code.

:func:`sample_images` returns each as its original file's bytes (JPEG or
PNG, as shipped); :func:`sample_jpeg` is the Grace Hopper photo as a camera
would hand it over, a whole-frame JPEG of a given quality.
"""

from __future__ import annotations

import importlib.resources
import io
from functools import cache

__all__ = ["SAMPLE_NAMES", "sample_images", "sample_jpeg"]

#: The scikit-image photographs used, in this order, after matplotlib's grace_hopper.
_SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")

#: Names of the sample images, in the order :func:`sample_images` returns them.
SAMPLE_NAMES = ("grace_hopper.jpg", *_SKIMAGE_PHOTOS)


def _grace_hopper() -> bytes:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg", asfileobj=True) as f:
        return f.read()


@cache
def _read(name: str) -> bytes:
    if name == "grace_hopper.jpg":
        return _grace_hopper()
    # the files scikit-image ships in skimage/data; importlib.resources finds
    # them inside the installed package (a zip included) without running skimage
    return (importlib.resources.files("skimage") / "data" / name).read_bytes()


def sample_images() -> list[tuple[str, bytes]]:
    """``[(name, file bytes)]`` for every sample photograph (RGB; JPEG or PNG as shipped)."""
    return [(name, _read(name)) for name in SAMPLE_NAMES]


@cache
def sample_jpeg(quality: int = 90) -> bytes:
    """The whole Grace Hopper photograph (512 x 600) re-encoded by Pillow as a
    baseline JPEG of ``quality`` (1 to 95), as a camera would give it."""
    from PIL import Image

    if not 1 <= int(quality) <= 95:
        raise ValueError(f"sample_jpeg: expected a quality from 1 to 95, got {quality!r}")
    with Image.open(io.BytesIO(_read("grace_hopper.jpg"))) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, format="JPEG", quality=int(quality))
    return out.getvalue()
