"""Pieces shared by the 2-D ResNet encoders (``thin_resnet34``, ``mla_resnet34``).

Every block works on ``[batch, channels, freq, time]`` maps and carries the valid time lengths
along (``None`` = every row full length): padded frames are zeroed before each 3x3 convolution,
so a padded row gives the same output as the unpadded one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .pooling import conv_out_lengths, mask_time

__all__ = ["SELayer", "BasicBlock", "make_stage", "check_stages", "init_resnet_weights"]


class SELayer(nn.Module):
    """Squeeze-and-excitation over channels; the squeeze averages valid frames only."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        if lengths is None:
            y = x.mean(dim=(2, 3))
        else:
            y = mask_time(x, lengths).float().sum(dim=(2, 3)) / (lengths.float() * x.shape[2]).unsqueeze(1)
        return x * self.fc(y.to(x.dtype))[:, :, None, None]


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): conv3x3 - BN - ReLU - conv3x3 - BN - [SE] - + shortcut - ReLU.

    se_reduction: add a squeeze-and-excitation layer with this bottleneck ratio (None: no SE).
    relu_before_bn: apply ReLU *before* the first BN (conv3x3 - ReLU - BN), the order of
      voxceleb_trainer's ``SEBasicBlock``.
    The shortcut is identity, or a strided 1x1 conv + BN when the shape changes (no time mixing).
    """

    def __init__(self, inplanes: int, planes: int, stride: int, se_reduction: Optional[int] = None,
                 relu_before_bn: bool = False):
        super().__init__()
        self.stride = stride
        self.relu_before_bn = relu_before_bn
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes, se_reduction) if se_reduction is not None else None
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def out_lengths(self, lengths):
        return conv_out_lengths(lengths, 3, self.stride, 1)

    def forward(self, x, lengths):
        out_len = self.out_lengths(lengths)
        out = self.conv1(mask_time(x, lengths))
        out = self.bn1(self.relu(out)) if self.relu_before_bn else self.relu(self.bn1(out))
        out = self.bn2(self.conv2(mask_time(out, out_len)))
        if self.se is not None:
            out = self.se(out, out_len)
        residual = x if self.downsample is None else self.downsample(x)  # 1x1: no time mixing
        return self.relu(out + residual), out_len


def make_stage(inplanes: int, planes: int, n: int, stride: int, **block_kwargs) -> List[BasicBlock]:
    """``n`` basic blocks of width ``planes``; only the first one strides and changes width."""
    return [BasicBlock(inplanes if j == 0 else planes, planes, stride if j == 0 else 1, **block_kwargs)
            for j in range(n)]


def check_stages(channels: Sequence[int], layers: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Validate the four stage widths and depths; return them as tuples of ints."""
    channels, layers = tuple(int(c) for c in channels), tuple(int(n) for n in layers)
    if len(channels) != 4 or len(layers) != 4 or min(channels + layers) < 1:
        raise ValueError(f"channels and layers must be 4 positive ints, got {channels}, {layers}")
    return channels, layers


def init_resnet_weights(model: nn.Module) -> None:
    """He (fan-out) init of every Conv2d; BatchNorm weights 1, biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
