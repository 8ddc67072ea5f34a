"""Thin-ResNet34 + SAP: the backbone of MP-2021 / MP-2020 (voxceleb_trainer's ``ResNetSE34L``).

Layout (input ``[B, T, 40]`` log-mel, seen as a 1-channel image ``[B, 1, freq, time]``):

    conv 7x7, 16 ch, stride (2 freq, 1 time) - BN - ReLU
    layer1  3 SE basic blocks, 16 ch,  stride 1
    layer2  4 SE basic blocks, 32 ch,  stride 2x2
    layer3  6 SE basic blocks, 64 ch,  stride 2x2
    layer4  3 SE basic blocks, 128 ch, stride 1 (``last_stride``)
    mean over frequency -> [B, T/4, 128] -> pooling (SAP | TAP | ASP | stats) -> Linear -> 512-d embedding
    (``freq_pool='flatten'``: channels x frequency bins kept, [B, T/4, 128 * 5] for 40 mel bins)

The basic block is voxceleb_trainer's ``SEBasicBlock``: conv3x3 - ReLU - BN - conv3x3 - BN - SE
(reduction 8) - + shortcut - ReLU (note the ReLU *before* the first BN, kept as in the reference).
About 1.44 M parameters (1.42 M with ``se=False``); "In defence of metric learning" reports 1.4 M.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from pysv.models import register
from .pooling import build_pooling, check_features, mask_time, masked_moments
from .resnet_blocks import check_stages, init_resnet_weights, make_stage

__all__ = ["ThinResNet34", "INPUT_NORMS", "FREQ_POOLS", "POOLINGS", "normalize_over_time"]

#: per-utterance input normalisation choices of the Thin-ResNet34 (hparam ``input_norm``)
INPUT_NORMS = ("none", "mean", "instance")
#: how the last stage's frequency axis becomes frame features (hparam ``freq_pool``)
FREQ_POOLS = ("mean", "flatten")
#: temporal pooling choices (hparam ``pooling``; names of ``pysv.models.pooling.build_pooling``)
POOLINGS = ("sap", "tap", "asp", "stats")


@register("thin_resnet34")
class ThinResNet34(nn.Module):
    """Thin-ResNet34 with SAP/TAP/ASP/statistics pooling (MP-2021 / MP-2020 backbone).

    Hyper-parameters:
      feat_dim (40): mel bins of the input.
      embed_dim (512): output embedding size (Linear after pooling).
      pooling ('sap'): 'sap' self-attentive, 'tap' temporal average, 'asp' attentive statistics,
        'stats' mean and standard deviation (wespeaker's TSTP).
      freq_pool ('mean'): how the last stage's ``[C, F/8]`` map of each frame becomes its feature
        vector: 'mean' over frequency (``C`` dims; voxceleb_trainer's ResNetSE34L, the papers'
        backbone) or 'flatten' (``C * ceil(F/8)`` dims with ``last_stride`` 1, the frequency layout
        kept; voxceleb_trainer's ResNetSE34V2 and wespeaker's ResNets).
      channels ((16, 32, 64, 128)), layers ((3, 4, 6, 3)): stage widths and depths.
      se (True): squeeze-and-excitation in every block, as voxceleb_trainer's ResNetSE34L.
      se_reduction (8): SE bottleneck ratio.
      last_stride (1): stride of layer4 (voxceleb_trainer uses 1; 2 halves time and frequency once more).
      input_norm ('instance'): per-utterance normalisation of each mel bin over the valid frames
        (padded rows excluded) before the first convolution: 'instance' = mean and variance, as
        voxceleb_trainer's ResNetSE34L (``InstanceNorm1d`` on the log-mel input, the seeds' code);
        'mean' = mean only (CMN, the lighter alternative; also gain-invariant); 'none' = raw log
        energies (only for features that are already CMVN-normalised).
    """

    input_kind = "features"
    #: 2-D convolutions: the trainer converts the weights to channels-last where train.channels_last
    #: is set (bench/channels_last.py on this CPU: fp32 1.0-1.4x per training step; bf16 no clear change)
    prefers_channels_last = True

    def __init__(self, feat_dim: int = 40, embed_dim: int = 512, pooling: str = "sap",
                 channels: Sequence[int] = (16, 32, 64, 128), layers: Sequence[int] = (3, 4, 6, 3),
                 se: bool = True, se_reduction: int = 8, last_stride: int = 1,
                 input_norm: str = "instance", freq_pool: str = "mean"):
        super().__init__()
        channels, layers = check_stages(channels, layers)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if freq_pool not in FREQ_POOLS:
            raise ValueError(f"freq_pool must be one of {', '.join(FREQ_POOLS)}, got {freq_pool!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
        if feat_dim < 8:
            raise ValueError(f"feat_dim must be >= 8, got {feat_dim}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        self.feat_dim, self.embed_dim = int(feat_dim), int(embed_dim)
        self.input_norm, self.freq_pool = input_norm, freq_pool

        self.conv1 = nn.Conv2d(1, channels[0], 7, stride=(2, 1), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, inplanes = [], channels[0]
        for c, n, stride in zip(channels, layers, (1, 2, 2, last_stride)):
            blocks += make_stage(inplanes, c, n, stride, se_reduction=se_reduction if se else None,
                                 relu_before_bn=True)  # reference order: ReLU, BN
            inplanes = c
        self.blocks = nn.ModuleList(blocks)
        # frequency bins after conv1 and layers 2-4 (each ceil(bins / stride): 'same' padding)
        out_bins = self.feat_dim
        for stride in (2, 2, 2, last_stride):
            out_bins = -(-out_bins // stride)
        self.pool = build_pooling(pooling, channels[3] * (out_bins if freq_pool == "flatten" else 1))
        self.fc = nn.Linear(self.pool.out_dim, self.embed_dim)

        init_resnet_weights(self)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames after the network (what the pooling sees) for ``lengths`` input frames."""
        for b in self.blocks:
            lengths = b.out_lengths(lengths)
        return lengths

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        lengths = check_features(x, self.feat_dim, lengths)
        if self.input_norm != "none":
            x = normalize_over_time(x, lengths, variance=self.input_norm == "instance")
        x = x.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        x = self.relu(self.bn1(self.conv1(mask_time(x, lengths))))
        for b in self.blocks:
            x, lengths = b(x, lengths)
        if self.freq_pool == "mean":
            x = x.mean(dim=2)  # collapse frequency -> [B, C, T']
        else:
            x = x.flatten(1, 2)  # [B, C * F', T'], channel-major
        x = x.transpose(1, 2)
        return self.fc(self.pool(x, lengths))


def normalize_over_time(x: torch.Tensor, lengths: Optional[torch.Tensor], variance: bool = True,
                        eps: float = 1e-5) -> torch.Tensor:
    """Each feature dim of ``[B, T, F]`` to zero mean (and, with ``variance``, unit variance) over
    the valid frames of its row, as ``InstanceNorm1d(F)`` without affine (``eps`` as torch's).
    Padded frames take no part in the statistics (they come out as garbage the encoder masks)."""
    mu, var = masked_moments(x, lengths, dim=1)
    if not variance:
        return x - mu
    return (x - mu) / torch.sqrt(var + eps)
