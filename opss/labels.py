"""ImageNet-1k class names, for printing top-5 predictions.

The 1000 names ship with torchvision (the ``categories`` of its ImageNet weight
metadata, a plain list in its source), so nothing is downloaded. Models whose
output is not 1000-way get ``class <index>`` names.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["imagenet_classes", "label", "topk"]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order."""
    from torchvision.models import ResNet18_Weights

    names = tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != 1000:  # pragma: no cover - a torchvision change
        raise RuntimeError(f"torchvision ImageNet categories: expected 1000 names, got {len(names)}")
    return names


def label(index: int, num_classes: int = 1000) -> str:
    """The name of class ``index`` for a ``num_classes``-way output."""
    if num_classes == 1000 and 0 <= index < 1000:
        return imagenet_classes()[index]
    return f"class {index}"


def topk(logits, k: int = 5) -> list[tuple[str, float, int]]:
    """Top-``k`` of a ``(1, C)`` or ``(C,)`` logit tensor as ``(name, probability, index)``."""
    import torch

    flat = logits.detach().float().reshape(-1)
    probs = torch.softmax(flat, dim=0)
    p, idx = probs.topk(min(k, flat.numel()))
    return [(label(int(i), flat.numel()), float(v), int(i)) for v, i in zip(p, idx)]
