"""A multi-stream network after HO-RCNN.

Source: Y.-W. Chao, Y. Liu, X. Liu, H. Zeng, J. Deng, "Learning to Detect
Human-Object Interactions", WACV 2018 (HO-RCNN), Section 4 and Figure 3: a
human stream and an object stream each run a CNN on their own region of the
image, a pairwise stream runs on a coarse view of the whole scene, and the
final score is the *sum* of the streams' class scores.

Here the regions are fixed fractions of the one input (no detector):
``human`` = the left 5/8 of the image, ``object`` = the right 5/8, ``pairwise`` =
the whole image at half resolution. Each stream is four conv stages
(conv 3x3 - BN - ReLU - max pool 2) with 32, 64, 128, 256 channels, global
average pooling and a linear classifier; the three score vectors are summed.
The views are single fx nodes (:func:`crop` is ``torch.fx.wrap``-ed), so every
vertex outputs one tensor. The client part of any partition that keeps the
final sums on the server is a tree rooted at the input (the paper's Fig. 6
tree example). Blocks: the conv stages.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from opss.models import register


def crop(x: torch.Tensor, left: float, right: float) -> torch.Tensor:
    """Columns ``[left, right)`` (fractions of the width) and all rows of ``x``."""
    w = x.shape[-1]
    return x[..., int(round(left * w)) : int(round(right * w))]


torch.fx.wrap("crop")


class ConvStage(nn.Module):
    """conv 3x3 - BN - ReLU - max pool 2 (a block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.bn(self.conv(x)), inplace=True))


class Stream(nn.Module):
    """One stream: conv stages, global pooling, class scores."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        chans = (3, *widths)
        self.stages = nn.Sequential(*(ConvStage(a, b) for a, b in zip(chans, chans[1:])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(x)), 1))


class MultiStream(nn.Module):
    """HO-RCNN-style three-stream network (Chao et al., WACV 2018), score fusion by sum."""

    def __init__(self, num_classes: int = 600) -> None:
        super().__init__()
        self.human = Stream(num_classes)
        self.object = Stream(num_classes)
        self.pairwise = Stream(num_classes)
        self.downsample = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.human(crop(x, 0.0, 0.625))
        o = self.object(crop(x, 0.375, 1.0))
        p = self.pairwise(self.downsample(x))
        return h + o + p


@register("multistream", test_input_shape=(1, 3, 32, 32), block_types=(ConvStage,))
def multistream() -> nn.Module:
    """Three-stream HO-RCNN-style network (Chao et al., WACV 2018), 600 HICO classes."""
    return MultiStream()
