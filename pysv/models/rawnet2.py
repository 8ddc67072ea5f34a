"""RawNet2 (Jung et al., see REFERENCES.md): raw-waveform speaker embedding extractor.

RawNet2 Table 1 (input 59049 samples at 16 kHz in training, any length at inference):

    layer norm over time (per utterance)
    Sinc(251, stride 1, 128) -> |.| -> MaxPool(3) -> BN -> LeakyReLU(0.3)            (19599, 128)
    2 x ResBlock(128): [BN, LReLU](not in the first block), Conv(3,1,128), BN, LReLU,
                       Conv(3,1,128), + identity, MaxPool(3), FMS                      (2177, 128)
    4 x ResBlock(256): same, 1x1 conv on the shortcut where the width changes         (26, 256)
    BN -> LeakyReLU(0.3) -> GRU(1024), last valid step -> FC(1024) = embedding

Filter-wise feature map scaling (FMS, RawNet2 section 3): ``s = sigmoid(FC(mean_t c))`` and
``fms`` selects eqs. (1)-(4): 'add' c+s, 'mul' c*s, 'add_mul' (c+s)*s, 'mul_add' c*s+s (default,
#11 / RawNet2), 'mul_add_sep' c*s1+s2 with two FCs (#12), 'none'. The classifier and the
"norm-10 scaling before the classifier" of the reference code belong to the trainer / loss.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from pysv.models import register
from .pooling import (MultiHeadAttentivePooling, SelfAttentivePooling, check_lengths,
                      conv_out_lengths, mask_time, masked_moments)

__all__ = ["RawNet2", "SincConv", "FMS_MODES"]

FMS_MODES = ("add", "mul", "add_mul", "mul_add", "mul_add_sep", "none")


def _to_mel(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _to_hz(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


class SincConv(nn.Module):
    """Sinc-convolution (SincNet, Ravanelli & Bengio 2018) as used by RawNet2.

    Filter ``i`` is a Hamming-windowed band-pass between the learnable cut-offs
    ``low_i = min_low_hz + |low_hz_i|`` and ``high_i = clamp(low_i + min_band_hz + |band_hz_i|,
    min_low_hz, sample_rate/2)``; ``low_hz_``/``band_hz_`` are initialised from ``out_channels + 1``
    edges equally spaced on the mel scale between 30 Hz and ``sample_rate/2 - (min_low_hz +
    min_band_hz)`` (SincNet's parametrization). Taps are scaled so the centre tap is 1 (SincNet).
    """

    def __init__(self, out_channels: int = 128, kernel_size: int = 251, sample_rate: int = 16000,
                 min_low_hz: float = 50.0, min_band_hz: float = 50.0):
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"sinc_length must be odd and >= 3 (symmetric filters), got {kernel_size}")
        self.out_channels, self.kernel_size = out_channels, kernel_size
        self.sample_rate = float(sample_rate)
        self.min_low_hz, self.min_band_hz = float(min_low_hz), float(min_band_hz)
        high = self.sample_rate / 2 - (self.min_low_hz + self.min_band_hz)
        mel = torch.linspace(_to_mel(30.0), _to_mel(high), out_channels + 1, dtype=torch.float64)
        hz = _to_hz(mel)
        self.low_hz_ = nn.Parameter(hz[:-1].float().view(-1, 1))
        self.band_hz_ = nn.Parameter(torch.diff(hz).float().view(-1, 1))
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False), persistent=False)
        # tap times in samples / sample_rate, centred on 0
        n = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        self.register_buffer("t", (n / self.sample_rate).view(1, -1), persistent=False)

    def cutoffs(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Current (low, high) cut-off frequencies in Hz, each ``[out_channels]``."""
        low = self.min_low_hz + self.low_hz_.abs()
        high = torch.clamp(low + self.min_band_hz + self.band_hz_.abs(), self.min_low_hz,
                           self.sample_rate / 2)
        return low.view(-1), high.view(-1)

    def filters(self) -> torch.Tensor:
        """``[out_channels, 1, kernel_size]`` band-pass impulse responses."""
        low, high = self.cutoffs()
        low, high = low.view(-1, 1), high.view(-1, 1)
        # ideal band-pass 2 f2 sinc(2 f2 t) - 2 f1 sinc(2 f1 t) (torch.sinc(x) = sin(pi x)/(pi x))
        bp = 2 * high * torch.sinc(2 * high * self.t) - 2 * low * torch.sinc(2 * low * self.t)
        bp = bp / (2 * (high - low)) * self.window
        return bp.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the band-pass filters and their convolution with the raw waveform stay in float32 under
        # autocast: 251-tap filters on 16-bit audio lose too much in bf16 / fp16
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.conv1d(x.float(), self.filters())


class FMS(nn.Module):
    """Filter-wise feature map scaling (RawNet2 eqs. (1)-(4)); the time average is masked."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        self.mode = mode
        self.fc = nn.Linear(channels, channels)
        self.fc_add = nn.Linear(channels, channels) if mode == "mul_add_sep" else None

    def forward(self, c: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        if lengths is None:
            y = c.mean(-1)
        else:
            y = mask_time(c, lengths).float().sum(-1) / lengths.float().unsqueeze(1)
        y = y.to(c.dtype)
        s = torch.sigmoid(self.fc(y)).unsqueeze(-1)
        if self.mode == "add":
            return c + s  # eq. (1)
        if self.mode == "mul":
            return c * s  # eq. (2)
        if self.mode == "add_mul":
            return (c + s) * s  # eq. (3)
        if self.mode == "mul_add":
            return c * s + s  # eq. (4)
        return c * s + torch.sigmoid(self.fc_add(y)).unsqueeze(-1)  # mul_add_sep (#12)


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, first: bool, fms: str, slope: float):
        super().__init__()
        self.first = first
        self.bn1 = None if first else nn.BatchNorm1d(in_ch)
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, padding=1)
        self.downsample = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.fms = FMS(out_ch, fms) if fms != "none" else None
        self.slope = slope

    def forward(self, x, lengths):
        out = x if self.first else F.leaky_relu(self.bn1(x), self.slope)
        out = self.conv1(mask_time(out, lengths))
        out = F.leaky_relu(self.bn2(out), self.slope)
        out = self.conv2(mask_time(out, lengths))
        out = out + (x if self.downsample is None else self.downsample(x))
        out = F.max_pool1d(out, 3)
        lengths = conv_out_lengths(lengths, 3, 3)
        if self.fms is not None:
            out = self.fms(out, lengths)
        return out, lengths


def _time_layer_norm(x: torch.Tensor, lengths: Optional[torch.Tensor], eps: float = 1e-6):
    """Normalize each waveform by its own mean and (unbiased) std over the valid samples."""
    mu, var = masked_moments(x, lengths, dim=-1, unbiased=True)
    sd = var.sqrt()
    return (x - mu) / (sd + eps)


@register("rawnet2")
class RawNet2(nn.Module):
    """RawNet2 on raw 16 kHz waveforms ``[batch, samples]``.

    Hyper-parameters:
      first_layer ('sinc'): 'sinc' (Sinc-conv, |.|, MaxPool 3, BN, LReLU) or 'conv' (RawNet
        baseline: Conv1d(length 3, stride 3) on pre-emphasized audio, BN, LReLU).
      sinc_length (251): sinc filter length (Table 4: 125, 195, 251, 313, 375); odd.
      conv_length (3): kernel and stride of the 'conv' first layer.
      first_filters (128): filters of the first layer.
      sample_rate (16000), min_low_hz (50), min_band_hz (50): sinc parametrization.
      layer_norm (None = auto): layer-normalize the waveform over time (auto: on for 'sinc').
      preemphasis (None = auto): pre-emphasis coefficient (auto: 0.97 for 'conv', 0 for 'sinc').
      filters ((128, 256)), blocks ((2, 4)): residual widths and counts.
      fms ('mul_add'): one of FMS_MODES.
      aggregation ('gru'): 'gru' (last valid step), 'sap' or 'mhsap' (multi-head SAP).
      heads (8): heads of 'mhsap'.
      gru_dim (1024), gru_layers (1), embed_dim (1024).
      slope (0.3): LeakyReLU negative slope.
    """

    input_kind = "waveform"

    def __init__(self, first_layer: str = "sinc", sinc_length: int = 251, conv_length: int = 3,
                 first_filters: int = 128, sample_rate: int = 16000, min_low_hz: float = 50.0,
                 min_band_hz: float = 50.0, layer_norm: Optional[bool] = None,
                 preemphasis: Optional[float] = None, filters: Sequence[int] = (128, 256),
                 blocks: Sequence[int] = (2, 4), fms: str = "mul_add", aggregation: str = "gru",
                 heads: int = 8, gru_dim: int = 1024, gru_layers: int = 1, embed_dim: int = 1024,
                 slope: float = 0.3):
        super().__init__()
        if first_layer not in ("sinc", "conv"):
            raise ValueError(f"first_layer must be 'sinc' or 'conv', got {first_layer!r}")
        if fms not in FMS_MODES:
            raise ValueError(f"fms must be one of {', '.join(FMS_MODES)}; got {fms!r}")
        if aggregation not in ("gru", "sap", "mhsap"):
            raise ValueError(f"aggregation must be 'gru', 'sap' or 'mhsap', got {aggregation!r}")
        filters, blocks = tuple(int(f) for f in filters), tuple(int(b) for b in blocks)
        if len(filters) != len(blocks) or not filters or min(filters + blocks) < 1:
            raise ValueError(f"filters and blocks must be equal-length positive ints, got {filters}, {blocks}")
        if conv_length < 1:
            raise ValueError(f"conv_length must be >= 1, got {conv_length}")
        if layer_norm is None:
            layer_norm = first_layer == "sinc"
        if preemphasis is None:
            preemphasis = 0.97 if first_layer == "conv" else 0.0
        if not 0.0 <= preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {preemphasis!r}")
        self.first_layer, self.layer_norm, self.preemphasis = first_layer, bool(layer_norm), float(preemphasis)
        self.aggregation, self.slope = aggregation, float(slope)
        self.embed_dim = int(embed_dim)
        self.feat_dim = None
        self.sample_rate = int(sample_rate)

        if first_layer == "sinc":
            self.sinc = SincConv(first_filters, sinc_length, sample_rate, min_low_hz, min_band_hz)
            self.first_conv = None
        else:
            self.sinc = None
            self.first_conv = nn.Conv1d(1, first_filters, conv_length, stride=conv_length, bias=False)
        self.first_bn = nn.BatchNorm1d(first_filters)
        res, in_ch = [], first_filters
        for i, (f, n) in enumerate(zip(filters, blocks)):
            for j in range(n):
                res.append(_ResBlock(in_ch, f, first=(i == 0 and j == 0), fms=fms, slope=slope))
                in_ch = f
        self.blocks = nn.ModuleList(res)
        self.bn_agg = nn.BatchNorm1d(in_ch)
        if aggregation == "gru":
            self.gru = nn.GRU(in_ch, gru_dim, num_layers=gru_layers, batch_first=True)
            agg_dim = gru_dim
        elif aggregation == "sap":
            self.pool = SelfAttentivePooling(in_ch)
            agg_dim = in_ch
        else:
            self.pool = MultiHeadAttentivePooling(in_ch, num_heads=heads)
            agg_dim = in_ch
        self.fc = nn.Linear(agg_dim, embed_dim)

    # ------------------------------------------------------------------------------------------
    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames reaching the aggregation layer for ``lengths`` input samples."""
        if self.first_layer == "sinc":
            lengths = conv_out_lengths(conv_out_lengths(lengths, self.sinc.kernel_size), 3, 3)
        else:
            k = self.first_conv.kernel_size[0]
            lengths = conv_out_lengths(lengths, k, k)
        for _ in self.blocks:
            lengths = conv_out_lengths(lengths, 3, 3)
        return lengths

    def min_samples(self) -> int:
        """Shortest input (samples) that leaves at least one frame for the aggregation."""
        n = 3 ** len(self.blocks)
        if self.first_layer == "sinc":
            return 3 * n + self.sinc.kernel_size - 1
        return n * self.first_conv.kernel_size[0]

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected waveforms [batch, samples], got {tuple(x.shape)}")
        B, S = x.shape
        lengths = check_lengths(lengths, B, S, x.device, what="samples")
        shortest = S if lengths is None else int(lengths.min())
        if shortest < self.min_samples():
            raise ValueError(f"RawNet2 needs at least {self.min_samples()} samples per utterance, "
                             f"got {shortest}")
        if self.layer_norm:
            x = _time_layer_norm(x, lengths)
        if self.preemphasis:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemphasis * x[:, :-1]], dim=1)
        x = mask_time(x, lengths).unsqueeze(1)  # [B, 1, S]
        if self.sinc is not None:
            x = F.max_pool1d(torch.abs(self.sinc(x)), 3)
            lengths = conv_out_lengths(conv_out_lengths(lengths, self.sinc.kernel_size), 3, 3)
        else:
            x = self.first_conv(x)
            k = self.first_conv.kernel_size[0]
            lengths = conv_out_lengths(lengths, k, k)
        x = F.leaky_relu(self.first_bn(x), self.slope)
        for blk in self.blocks:
            x, lengths = blk(x, lengths)
        x = F.leaky_relu(self.bn_agg(x), self.slope).transpose(1, 2)  # [B, T, C]
        if self.aggregation == "gru":
            if lengths is not None:
                x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, h = self.gru(x)
            x = h[-1]  # last valid step of the top layer (unsorted back to batch order)
        else:
            x = self.pool(x, lengths)
        return self.fc(x)
