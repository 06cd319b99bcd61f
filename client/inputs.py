"""The client's input: an image file loaded ImageNet-style, or the model's example input."""

from __future__ import annotations

from pathlib import Path

from opss.errors import OpssError, ShapeMismatchError

__all__ = ["load_image"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def load_image(path: str | Path, shape: tuple[int, ...]):
    """Load ``path`` with PIL as a ``shape`` (N=1, C=3, H, W) float tensor, ImageNet-normalised.

    Resize the short side to ``H * 256 / 224``, centre-crop ``H x W``, scale to
    [0, 1], subtract the ImageNet mean and divide by its std (torchvision's
    ``ImageClassification`` preset). Raises OpssError with one line when the
    file is missing or not an image.
    """
    import torch
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 4 or shape[0] != 1 or shape[1] != 3:
        raise ShapeMismatchError(f"--image: expected a model taking (1, 3, H, W) images, got input shape {tuple(shape)}")
    p = Path(path)
    if not p.is_file():
        raise OpssError(f"--image {path}: no such file")
    try:
        with Image.open(p) as im:
            im = im.convert("RGB")
            h, w = int(shape[2]), int(shape[3])
            short = max(h, w) * 256 // 224
            iw, ih = im.size
            scale = short / min(iw, ih)
            im = im.resize((max(w, round(iw * scale)), max(h, round(ih * scale))), Image.BILINEAR)
            iw, ih = im.size
            left, top = (iw - w) // 2, (ih - h) // 2
            im = im.crop((left, top, left + w, top + h))
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise OpssError(f"--image {path}: cannot read it as an image ({type(exc).__name__})") from None
    x = data.reshape(h, w, 3).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()
