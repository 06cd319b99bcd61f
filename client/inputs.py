"""The client's input: an image file loaded ImageNet-style, or the model's example input."""

from __future__ import annotations

from pathlib import Path

from opss.errors import CodecError, OpssError, ShapeMismatchError
from opss.preprocess import MEAN, STD, crop, decode_image, image_hw, normalize

__all__ = ["MEAN", "STD", "load_image", "load_image_input"]


def load_image(path: str | Path, shape: tuple[int, ...]):
    """Load ``path`` as a ``shape`` (N=1, C=3, H, W) float tensor, ImageNet-normalised.

    :mod:`opss.preprocess` (version ``imagenet-v1``), the same code a server
    runs on an uploaded image: resize the short side to ``H * 256 / 224``,
    centre-crop ``H x W``, scale to [0, 1], subtract the ImageNet mean and
    divide by its std (torchvision's ``ImageClassification`` preset). Any
    format Pillow reads, of any size Pillow accepts. Raises OpssError with one
    line when the file is missing or not an image.
    """
    import torch

    try:
        h, w = image_hw(shape)
    except ShapeMismatchError as exc:
        raise ShapeMismatchError(f"--image: {exc}") from None
    p = Path(path)
    if not p.is_file():
        raise OpssError(f"--image {path}: no such file")
    try:
        data = p.read_bytes()
        image = decode_image(data, max_bytes=None, max_pixels=None, formats=None)
    except (OSError, CodecError) as exc:
        cause = exc.__cause__ if isinstance(exc, CodecError) and exc.__cause__ is not None else exc
        raise OpssError(f"--image {path}: cannot read it as an image ({type(cause).__name__})") from None
    return torch.from_numpy(normalize(crop(image, h, w)))


def load_image_input(path: str | Path, shape: tuple[int, ...]):
    """``(tensor, image source)`` of the photo at ``path``: the tensor of :func:`load_image`
    and the forms it may travel in instead (:class:`opss.wire.ImageSource`: the file's own
    bytes and the uint8 crop before normalization, by the same preprocessing)."""
    import numpy as np
    import torch

    from opss.preprocess import PREPROCESS_VERSION
    from opss.wire import ImageSource

    x = load_image(path, shape)
    data = Path(path).read_bytes()
    h, w = image_hw(shape)
    chw = crop(decode_image(data, max_bytes=None, max_pixels=None, formats=None), h, w)
    if not torch.equal(torch.from_numpy(normalize(np.ascontiguousarray(chw))), x):
        raise OpssError(f"--image {path}: its crop does not reproduce the tensor (preprocessing is not deterministic)")
    return x, ImageSource(data, chw, PREPROCESS_VERSION)
