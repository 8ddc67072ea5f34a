"""Scaled ResNet-34 with self-attentive multi-layer aggregation, feature recalibration and deep
length normalization (MLA-SAP, see REFERENCES.md).

    input [B, T, 64] log-mel  ->  [B, 1, 64 freq, T]
    conv1  3x3, 32 ch, stride 1, BN, ReLU      D   x L      -> pool1 (P1, 32)
    res1   3 basic blocks, 32 ch               D   x L      -> pool2 (P2, 32)
    res2   4 basic blocks, 64 ch, stride 2     D/2 x L/2    -> pool3 (P3, 64)
    res3   6 basic blocks, 128 ch, stride 2    D/4 x L/4    -> pool4 (P4, 128)
    res4   3 basic blocks, 256 ch, stride 2    D/8 x L/8    -> pool5 (P5, 256)
    V = P1 ++ P2 ++ P3 ++ P4 ++ P5 (512)                                  MLA-SAP eq. (1)
    FR:  V' = sigmoid(W2 leaky_relu(W1 V)) * V,  W1: 512 -> 512/r, r = 8   MLA-SAP eq. (4)
    DLN: SE = alpha V' / ||V'||_2, alpha learnable, initialised to 10     MLA-SAP eq. (5)

Each pool_i (MLA-SAP) averages the map over frequency, then applies SAP: ``h_n = tanh(W y_n + b)``,
``w_n = softmax(h_n . u)``, ``P_i = sum_n w_n h_n`` (MLA-SAP eqs. (2)-(3): the hidden ``h`` is
summed), followed by batch normalization and dropout.

``encoding`` selects a row of MLA-SAP Table 3 (plus Table 1's baseline):
  'gap'            GAP of res4 only                         256-d
  'sap'            SAP of res4 only                         256-d
  'mla_gap'        GAP of conv1 and every stage, concatenated (Table 1 baseline)   512-d
  'mla_sap'        MLA with SAP                             512-d
  'mla_sap_fr'     + feature recalibration                  512-d
  'mla_sap_fr_dln' + deep length normalization (default)    512-d, the proposed system
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.models import register
from .pooling import GlobalAveragePooling, SelfAttentivePooling, check_features, mask_time
from .resnet_blocks import check_stages, init_resnet_weights, make_stage

__all__ = ["MLAResNet34", "ENCODINGS"]

ENCODINGS = ("gap", "sap", "mla_gap", "mla_sap", "mla_sap_fr", "mla_sap_fr_dln")


class _SAPBranch(nn.Module):
    """Frequency average -> SAP -> (BN, dropout) for one aggregation point."""

    def __init__(self, channels: int, value: str, bn_dropout: Optional[float]):
        super().__init__()
        self.sap = SelfAttentivePooling(channels, value=value)
        self.bn = nn.BatchNorm1d(channels) if bn_dropout is not None else None
        self.drop = nn.Dropout(bn_dropout) if bn_dropout is not None else None

    def forward(self, x, lengths):
        p = self.sap(x.mean(dim=2).transpose(1, 2), lengths)
        if self.bn is not None:
            p = self.drop(self.bn(p))
        return p


class _GAPBranch(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.gap = GlobalAveragePooling(channels)

    def forward(self, x, lengths):
        return self.gap(x, lengths)


class FeatureRecalibration(nn.Module):
    """MLA-SAP eq. (4): V' = sigmoid(W2 delta(W1 V)) * V with leaky ReLU delta."""

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // reduction)
        self.fc2 = nn.Linear(dim // reduction, dim)

    def forward(self, v):
        return v * torch.sigmoid(self.fc2(F.leaky_relu(self.fc1(v))))


class DeepLengthNorm(nn.Module):
    """MLA-SAP eq. (5): alpha * v / ||v||_2 with learnable alpha."""

    def __init__(self, init_alpha: float = 10.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init_alpha)))

    def forward(self, v):
        return self.alpha * F.normalize(v.float(), dim=1).to(v.dtype)


@register("mla_resnet34")
class MLAResNet34(nn.Module):
    """Scaled ResNet-34 with (self-attentive) multi-layer aggregation.

    Hyper-parameters:
      feat_dim (64): log-mel bins.
      encoding ('mla_sap_fr_dln'): one of ENCODINGS (see module doc).
      channels ((32, 64, 128, 256)), layers ((3, 4, 6, 3)).
      sap_value ('hidden'): SAP sums the tanh hidden h_n (MLA-SAP eq. (3)); 'input' sums y_n.
      mla_dropout (0.2): dropout on each P_i of MLA-SAP (rate not given in the paper).
      fr_reduction (8): r of the feature recalibration bottleneck.
      dln_alpha (10.0): initial DLN scale.
    """

    input_kind = "features"
    #: 2-D convolutions: the trainer converts the weights to channels-last where train.channels_last
    #: is set (bench/channels_last.py on this CPU: fp32 1.0-1.4x per training step; bf16 no clear change)
    prefers_channels_last = True

    def __init__(self, feat_dim: int = 64, encoding: str = "mla_sap_fr_dln",
                 channels: Sequence[int] = (32, 64, 128, 256), layers: Sequence[int] = (3, 4, 6, 3),
                 sap_value: str = "hidden", mla_dropout: float = 0.2, fr_reduction: int = 8,
                 dln_alpha: float = 10.0):
        super().__init__()
        channels, layers = check_stages(channels, layers)
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
        if sap_value not in ("hidden", "input"):
            raise ValueError(f"sap_value must be 'hidden' or 'input', got {sap_value!r}")
        if not 0.0 <= mla_dropout < 1.0:
            raise ValueError(f"mla_dropout must be in [0, 1), got {mla_dropout!r}")
        if feat_dim < 8:
            raise ValueError(f"feat_dim must be >= 8, got {feat_dim}")
        self.feat_dim = int(feat_dim)
        self.encoding = encoding

        self.conv1 = nn.Conv2d(1, channels[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.stages = nn.ModuleList()
        inplanes = channels[0]
        for c, n, stride in zip(channels, layers, (1, 2, 2, 2)):
            self.stages.append(nn.ModuleList(make_stage(inplanes, c, n, stride)))
            inplanes = c

        mla = encoding.startswith("mla")
        points = [channels[0]] + list(channels) if mla else [channels[3]]
        if encoding in ("gap", "mla_gap"):
            self.branches = nn.ModuleList(_GAPBranch(c) for c in points)
        else:
            self.branches = nn.ModuleList(_SAPBranch(c, sap_value, mla_dropout if mla else None)
                                          for c in points)
        self.embed_dim = sum(points)
        self.fr = (FeatureRecalibration(self.embed_dim, fr_reduction)
                   if encoding in ("mla_sap_fr", "mla_sap_fr_dln") else None)
        self.dln = DeepLengthNorm(dln_alpha) if encoding == "mla_sap_fr_dln" else None

        init_resnet_weights(self)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            for b in stage:
                lengths = b.out_lengths(lengths)
        return lengths

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        lengths = check_features(x, self.feat_dim, lengths)
        x = x.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        x = self.relu(self.bn1(self.conv1(mask_time(x, lengths))))
        mla = len(self.branches) > 1
        pooled = [self.branches[0](x, lengths)] if mla else []
        for stage in self.stages:
            for b in stage:
                x, lengths = b(x, lengths)
            if mla:
                pooled.append(self.branches[len(pooled)](x, lengths))
        v = torch.cat(pooled, dim=1) if mla else self.branches[0](x, lengths)
        if self.fr is not None:
            v = self.fr(v)
        if self.dln is not None:
            v = self.dln(v)
        return v
