"""Temporal pooling layers shared by every encoder, plus the length/mask helpers they use.

Every layer maps a frame sequence ``x`` of shape ``[batch, frames, dim]`` (``GlobalAveragePooling``:
``[batch, channels, freq, frames]``) to one vector per row and accepts an optional ``lengths``
tensor (valid frames per row). Padded frames (index >= length) never contribute: averages divide
by the valid count and attention scores of padded frames are set to ``-inf`` before the softmax,
so a padded row pools exactly like the same row without padding. Everything is vectorized over the
batch (no per-utterance Python loops). Statistics and softmaxes are computed in float32 so the
layers are safe under CUDA autocast (fp16/bf16).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

__all__ = [
    "check_lengths",
    "lengths_to_mask",
    "conv_out_lengths",
    "mask_time",
    "TemporalAveragePooling",
    "GlobalAveragePooling",
    "SelfAttentivePooling",
    "AttentiveStatisticsPooling",
    "StatisticsPooling",
    "MultiHeadAttentivePooling",
    "build_pooling",
    "check_features",
    "POOLING_NAMES",
]


# ----------------------------------------------------------------------------------------------
# length / mask helpers
# ----------------------------------------------------------------------------------------------
def check_lengths(lengths: Optional[torch.Tensor], batch: int, max_len: int,
                  device: torch.device, what: str = "frames") -> Optional[torch.Tensor]:
    """Validate a ``lengths`` tensor and return it as int64 on ``device`` (``None`` passes through).

    Returns ``None`` too when every row is full length, so callers skip masking work entirely.
    """
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths must be a 1-D tensor with one entry per row ({batch}), "
                         f"got shape {tuple(lengths.shape)}")
    if lengths.is_floating_point():
        if not torch.equal(lengths, lengths.round()):
            raise ValueError("lengths must hold whole numbers of " + what)
    lengths = lengths.to(device=device, dtype=torch.long)
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > max_len:
        raise ValueError(f"lengths must lie in [1, {max_len}] {what} (the padded input length), "
                         f"got min {lo} max {hi}")
    if lo == max_len:
        return None
    return lengths


def check_features(x: torch.Tensor, feat_dim: int, lengths: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Validate an encoder's ``[batch, frames, feat_dim]`` input and its ``lengths``
    (returned as :func:`check_lengths` does)."""
    if x.dim() != 3 or x.shape[2] != feat_dim:
        raise ValueError(f"expected features [batch, frames, {feat_dim}], got {tuple(x.shape)}")
    return check_lengths(lengths, x.shape[0], x.shape[1], x.device)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[batch]`` lengths -> bool ``[batch, max_len]`` mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def conv_out_lengths(lengths: Optional[torch.Tensor], kernel_size: int, stride: int = 1,
                     padding: int = 0, dilation: int = 1) -> Optional[torch.Tensor]:
    """Valid output length of a convolution / pooling along time (PyTorch's floor formula)."""
    if lengths is None:
        return None
    return torch.div(lengths + 2 * padding - dilation * (kernel_size - 1) - 1, stride,
                     rounding_mode="floor") + 1


def mask_time(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero the padded frames of ``x`` whose time axis is the LAST one (``[B, ..., T]``).

    Encoders call this on the input of every time-mixing convolution, so a padded row sees the
    same zeros beyond its end as the unpadded row sees from the convolution's own zero padding.
    """
    if lengths is None:
        return x
    m = lengths_to_mask(lengths.to(x.device), x.shape[-1])
    return x * m.view((x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)).to(x.dtype)


def masked_moments(x: torch.Tensor, lengths: Optional[torch.Tensor], dim: int, unbiased: bool = False):
    """Mean and variance of ``x`` over its time axis ``dim`` (kept, for broadcasting), counting only
    the first ``lengths[b]`` steps of each row ``b``; ``unbiased`` divides by ``n - 1``."""
    if lengths is None:
        return x.mean(dim, keepdim=True), x.var(dim, unbiased=unbiased, keepdim=True)
    dim = dim % x.dim()
    shape = [x.shape[0]] + [x.shape[d] if d == dim else 1 for d in range(1, x.dim())]
    m = lengths_to_mask(lengths, x.shape[dim]).view(shape).to(x.dtype)
    n = lengths.to(x.dtype).view([x.shape[0]] + [1] * (x.dim() - 1))
    mu = (x * m).sum(dim, keepdim=True) / n
    var = ((x - mu).pow(2) * m).sum(dim, keepdim=True) / ((n - 1).clamp(min=1) if unbiased else n)
    return mu, var


def _mask_for(x: torch.Tensor, lengths: Optional[torch.Tensor], time_dim: int = 1):
    if lengths is None:
        return None
    T = x.shape[time_dim]
    if lengths.numel() != x.shape[0]:
        raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {x.shape[0]}")
    return lengths_to_mask(lengths.to(x.device), T)


def _masked_softmax(scores: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over dim 1 (time) of float32 ``scores`` [B, T, ...]; masked frames get weight 0."""
    scores = scores.float()
    if mask is not None:
        m = mask.view(mask.shape + (1,) * (scores.dim() - 2))
        scores = scores.masked_fill(~m, float("-inf"))
    return torch.softmax(scores, dim=1)


def _wsum(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_t w[b, t] x[b, t, :]`` as one batched matrix product in float32 (no [B, T, D]
    temporaries; autocast off so fp16 inputs are summed in float32). ``w``: [B, T]."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.bmm(w.float().unsqueeze(1), x.float()).squeeze(1)


def _weighted_mean_std(x: torch.Tensor, w: torch.Tensor, var_floor: float):
    """Weighted mean and std over time with weights ``w`` [B, T] summing to one (float32).

    Two-pass variance E_w[(x - mean)^2] (not E[x^2] - mean^2, whose cancellation makes the std of
    a near-constant channel ~sqrt(float eps) of noise that depends on the batch), floored.
    """
    mu = _wsum(x, w)
    d = x.float() - mu.unsqueeze(1)
    return mu, _wsum(d * d, w).clamp(min=var_floor).sqrt()


def _uniform_weights(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, T] float32 weights 1/length on valid frames, 0 on padding."""
    B, T = x.shape[0], x.shape[1]
    if lengths is None:
        return torch.full((B, T), 1.0 / T, device=x.device, dtype=torch.float32)
    mask = _mask_for(x, lengths).float()
    return mask / lengths.to(x.device).float().unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# pooling layers
# ----------------------------------------------------------------------------------------------
class TemporalAveragePooling(nn.Module):
    """TAP: mean over valid frames. ``[B, T, D] -> [B, D]``."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if lengths is None:
            return x.mean(1)
        return _wsum(x, _uniform_weights(x, lengths)).to(x.dtype)


class GlobalAveragePooling(nn.Module):
    """GAP: mean over frequency and valid frames of a 2-D feature map. ``[B, C, F, T] -> [B, C]``."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if lengths is None:
            return x.mean(dim=(2, 3))
        mask = _mask_for(x, lengths, time_dim=3).to(x.dtype)  # [B, T]
        s = (x * mask[:, None, None, :]).sum(dim=(2, 3)).float()
        return (s / (lengths.to(x.device).float() * x.shape[2]).unsqueeze(1)).to(x.dtype)


class SelfAttentivePooling(nn.Module):
    """SAP (Cai et al. 2018; MLA-SAP eqs. (2)-(3)).

    ``h_t = tanh(W x_t + b)``, ``w_t = softmax_t(h_t . u)``; output ``sum_t w_t x_t``
    (``value='input'``, voxceleb_trainer's SAP used by MP-2021 / MP-2020) or ``sum_t w_t h_t``
    (``value='hidden'``, MLA-SAP eq. (3)).
    """

    def __init__(self, in_dim: int, hidden_dim: Optional[int] = None, value: str = "input"):
        super().__init__()
        if value not in ("input", "hidden"):
            raise ValueError(f"value must be 'input' or 'hidden', got {value!r}")
        hidden_dim = hidden_dim or in_dim
        self.in_dim = in_dim
        self.value = value
        self.out_dim = in_dim if value == "input" else hidden_dim
        self.linear = nn.Linear(in_dim, hidden_dim)
        self.context = nn.Parameter(torch.empty(hidden_dim, 1))  # u
        nn.init.xavier_normal_(self.context)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = torch.tanh(self.linear(x))
        w = _masked_softmax((h @ self.context).squeeze(-1), _mask_for(x, lengths))
        v = x if self.value == "input" else h
        return _wsum(v, w).to(v.dtype)


class AttentiveStatisticsPooling(nn.Module):
    """ASP (Okabe et al. 2018): attention weights as in SAP, then weighted mean and std.

    ``[B, T, D] -> [B, 2D]``.
    """

    def __init__(self, in_dim: int, hidden_dim: Optional[int] = None, var_floor: float = 1e-5):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.var_floor = var_floor
        self.linear = nn.Linear(in_dim, hidden_dim)
        self.context = nn.Parameter(torch.empty(hidden_dim, 1))
        nn.init.xavier_normal_(self.context)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = torch.tanh(self.linear(x))
        w = _masked_softmax((h @ self.context).squeeze(-1), _mask_for(x, lengths))
        mu, sd = _weighted_mean_std(x, w, self.var_floor)
        return torch.cat([mu, sd], dim=1).to(x.dtype)


class StatisticsPooling(nn.Module):
    """x-vector statistics pooling (Snyder et al. 2018): mean and standard deviation over valid frames.

    Population (biased) variance floored at ``var_floor`` as Kaldi's StatisticsPoolingComponent.
    ``[B, T, D] -> [B, 2D]``.
    """

    def __init__(self, in_dim: int, var_floor: float = 1e-10):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.var_floor = var_floor

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        mu, sd = _weighted_mean_std(x, _uniform_weights(x, lengths), self.var_floor)
        return torch.cat([mu, sd], dim=1).to(x.dtype)


class MultiHeadAttentivePooling(nn.Module):
    """Self multi-head attentive pooling (India et al. 2019), also SAEP's pooling (SAEP eq. (5)).

    The ``D`` channels are split into ``H`` heads of ``D/H``; head ``j`` has a learned query
    ``u_j``; ``w_tj = softmax_t(x_tj . u_j / sqrt(D/H))`` and the output concatenates
    ``sum_t w_tj x_tj``: ``[B, T, D] -> [B, D]``. With ``num_heads=1, scale=False`` this is
    exactly SAEP's ``C = softmax(w_c H^T) H`` (``D`` parameters, no hidden layer).
    """

    def __init__(self, in_dim: int, num_heads: int = 1, scale: bool = True):
        super().__init__()
        if num_heads < 1 or in_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the input dim ({in_dim})")
        self.in_dim = self.out_dim = in_dim
        self.num_heads = num_heads
        self.head_dim = in_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale else 1.0
        self.query = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.normal_(self.query, std=1.0 / math.sqrt(self.head_dim))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, D = x.shape
        H, dh = self.num_heads, self.head_dim
        # block-diagonal [D, H] matrix of the head queries: one GEMM, no reshuffled copy of x
        q = torch.block_diag(*self.query.unsqueeze(-1).unbind(0)) if H > 1 else self.query.view(D, 1)
        scores = (x @ q.to(x.dtype)) * self.scale  # [B, T, H]
        w = _masked_softmax(scores, _mask_for(x, lengths))  # [B, T, H]
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = torch.bmm(w.transpose(1, 2), x.float())  # [B, H, D]: every head's weights on all dims
        if H > 1:  # keep head j's weights on head j's dims only
            out = out.view(B, H, H, dh).diagonal(dim1=1, dim2=2).transpose(1, 2)
        return out.reshape(B, D).to(x.dtype)


POOLING_NAMES = ("tap", "gap", "sap", "asp", "stats", "mhap")


def build_pooling(name: str, in_dim: int, **kwargs) -> nn.Module:
    """Pooling layer by short name: tap, gap, sap, asp, stats, mhap."""
    table = {
        "tap": TemporalAveragePooling,
        "gap": GlobalAveragePooling,
        "sap": SelfAttentivePooling,
        "asp": AttentiveStatisticsPooling,
        "stats": StatisticsPooling,
        "mhap": MultiHeadAttentivePooling,
    }
    if name not in table:
        raise ValueError(f"unknown pooling {name!r}; choose one of {', '.join(POOLING_NAMES)}")
    return table[name](in_dim, **kwargs)
