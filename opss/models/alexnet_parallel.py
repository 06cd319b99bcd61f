"""Two-tower AlexNet, as in the original paper.

Source: A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification
with Deep Convolutional Neural Networks", NIPS 2012, Section 3.2 and Figure 2.
The network is split over two GPUs ("towers"); each holds half of the kernels
of every layer. "The GPUs communicate only in certain layers": the kernels of
the third convolutional layer take all kernel maps of layer two (both towers),
the fourth and fifth take only the maps of their own tower, and the
fully-connected layers are connected to all neurons of the previous layer.
Per tower: conv1 48 kernels 11x11 stride 4, conv2 128 5x5, conv3 192 3x3,
conv4 192 3x3, conv5 128 3x3; fc6 and fc7 2048 each; fc8 1000 over both.
ReLU after every layer, response normalization (k=2, n=5, alpha=1e-4,
beta=0.75) after conv1 and conv2, overlapping max pooling (3, stride 2) after
the normalizations and conv5, dropout 0.5 before fc6 and fc7 (identity in eval).
As in torchvision's AlexNet, an adaptive average pool to 6x6 before fc6 lets
smaller inputs run (the identity at 224x224).

This is the paper's (Duan and Wu) path-independent example (their Fig. 3): a
client part ending before conv3 is two independent paths from the input.
Blocks: each tower's stages (``towers.0.stage1`` ... ``towers.1.fc7``).
"""

from __future__ import annotations

import torch
from torch import nn

from opss.models import register


class Stage(nn.Sequential):
    """One stage of one tower (a block at ``granularity="block"``)."""


class Tower(nn.Module):
    """Holds one tower's stages; the parent module wires the towers together."""

    def __init__(self) -> None:
        super().__init__()
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.stage1 = Stage(
            nn.Conv2d(3, 48, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn),
            nn.MaxPool2d(3, 2),
        )
        self.stage2 = Stage(
            nn.Conv2d(48, 128, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn),
            nn.MaxPool2d(3, 2),
        )
        self.stage3 = Stage(nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(inplace=True))
        self.stage4 = Stage(nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(inplace=True))
        self.stage5 = Stage(
            nn.Conv2d(192, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.AdaptiveAvgPool2d((6, 6)),
            nn.Flatten(1),
        )
        self.fc6 = Stage(nn.Dropout(0.5), nn.Linear(2 * 128 * 6 * 6, 2048), nn.ReLU(inplace=True))
        self.fc7 = Stage(nn.Dropout(0.5), nn.Linear(2 * 2048, 2048), nn.ReLU(inplace=True))


class AlexNetParallel(nn.Module):
    """Krizhevsky et al. (NIPS 2012) two-tower AlexNet."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.towers = nn.ModuleList([Tower(), Tower()])
        self.fc8 = nn.Linear(2 * 2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.towers
        ya, yb = a.stage2(a.stage1(x)), b.stage2(b.stage1(x))
        both = torch.cat([ya, yb], 1)  # conv3 sees both towers
        ya, yb = a.stage5(a.stage4(a.stage3(both))), b.stage5(b.stage4(b.stage3(both)))
        both = torch.cat([ya, yb], 1)  # fc6 sees both towers
        both = torch.cat([a.fc6(both), b.fc6(both)], 1)
        both = torch.cat([a.fc7(both), b.fc7(both)], 1)
        return self.fc8(both)


@register("alexnet_parallel", test_input_shape=(1, 3, 63, 63), block_types=(Stage,))
def alexnet_parallel() -> nn.Module:
    """Two-tower AlexNet (Krizhevsky et al., NIPS 2012): towers meet at conv3 and the FCs."""
    return AlexNetParallel()
