"""torchvision models of the zoo (``weights=None``; the seed decides the init).

Blocks use the generic rule of :mod:`opss.graph` (Inception modules,
BasicBlock/Bottleneck, InvertedResidual and Conv2dNormActivation, ...).
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from opss.models import register


@register("googlenet", test_input_shape=(1, 3, 16, 16))
def googlenet() -> nn.Module:
    """GoogLeNet (Szegedy et al., CVPR 2015), torchvision, no aux heads."""
    return tvm.googlenet(weights=None, aux_logits=False, transform_input=False, init_weights=True)


@register("resnet18", test_input_shape=(1, 3, 16, 16))
def resnet18() -> nn.Module:
    """ResNet-18 (He et al., CVPR 2016), torchvision."""
    return tvm.resnet18(weights=None)


@register("resnet50", test_input_shape=(1, 3, 16, 16))
def resnet50() -> nn.Module:
    """ResNet-50 (He et al., CVPR 2016), torchvision."""
    return tvm.resnet50(weights=None)


@register("mobilenet_v2", test_input_shape=(1, 3, 16, 16))
def mobilenet_v2() -> nn.Module:
    """MobileNetV2 (Sandler et al., CVPR 2018), torchvision."""
    return tvm.mobilenet_v2(weights=None)


@register("alexnet", test_input_shape=(1, 3, 63, 63))
def alexnet() -> nn.Module:
    """AlexNet, single-tower (torchvision's one-GPU variant)."""
    return tvm.alexnet(weights=None)
