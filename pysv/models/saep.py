"""SAEP: self-attention encoding and pooling (SAEP, see REFERENCES.md).

    input  [B, T, d_m=90]  (30 MFCC + deltas + double deltas, CMVN)
    N = 2 identical blocks, each (post-LN, residual around each sub-layer):
        single-head scaled dot-product self-attention   SAEP eqs. (1)-(3)
            Q = X W_Q, K = X W_K (d_m x d_k), V = X W_V (d_m x d_v), O = softmax(QK^T/sqrt(d_k)) V,
            then W_O (d_v x d_m) back to the model width for the residual
        position-wise FFN  max(0, h W_1 + b_1) W_2 + b_2  (d_m -> d_ff -> d_m)   SAEP eq. (4)
    self-attention pooling  C = softmax(w_c H^T) H,  w_c in R^{d_m}              SAEP eq. (5)
    dense1 90 -> ReLU -> dense2 400 -> ReLU (= embedding) -> dense3 400 -> ReLU -> classifier

Dropout 0.1 inside the encoder (on each sub-layer output before the residual add) and 0.2
elsewhere (pooled vector, after dense1 and dense2). The embedding is taken after the
non-linearity of dense2, the second layer before the softmax (SAEP section 2.3).

``forward`` returns the embedding (dense2 after ReLU) in eval mode and dense3's output (after ReLU)
in training mode, the input of the softmax layer; ``embed`` / ``train_output`` give either one.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.models import register
from .pooling import MultiHeadAttentivePooling, check_features, lengths_to_mask

__all__ = ["SAEP"]


class _EncoderBlock(nn.Module):
    def __init__(self, d_model: int, d_k: int, d_v: int, d_ff: int, dropout: float):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_k)
        self.w_k = nn.Linear(d_model, d_k)
        self.w_v = nn.Linear(d_model, d_v)
        self.w_o = nn.Linear(d_v, d_model)
        self.ln1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(inplace=True),
                                 nn.Linear(d_ff, d_model))
        self.ln2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        q, k, v = (w(x).unsqueeze(1) for w in (self.w_q, self.w_k, self.w_v))  # one head
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).squeeze(1)  # eq. (3)
        x = self.ln1(x + self.drop(self.w_o(o)))
        return self.ln2(x + self.drop(self.ffn(x)))  # eq. (4)


def _sinusoidal(T: int, d: int, device, dtype) -> torch.Tensor:
    pos = torch.arange(T, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: d // 2])
    return pe.to(dtype)


@register("saep")
class SAEP(nn.Module):
    """Self-attention encoder + self-attention pooling.

    Hyper-parameters:
      feat_dim (90): model width d_m = input dim (MFCC 30 + deltas).
      num_blocks (2): N encoder blocks.
      d_k (512): query/key size; d_v (None = d_k): value size. Paper: 512, 128, 64.
      d_ff (2048): FFN inner size. Paper: 2048, 1024.
      dense_dim (90): first dense layer; embed_dim (400): second and third dense layers.
      encoder_dropout (0.1), dropout (0.2).
      pos_encoding ('none'): the paper mentions none; 'sinusoidal' adds Vaswani et al.'s encoding.
    """

    input_kind = "features"

    def __init__(self, feat_dim: int = 90, num_blocks: int = 2, d_k: int = 512,
                 d_v: Optional[int] = None, d_ff: int = 2048, dense_dim: int = 90,
                 embed_dim: int = 400, encoder_dropout: float = 0.1, dropout: float = 0.2,
                 pos_encoding: str = "none"):
        super().__init__()
        d_v = d_k if d_v is None else d_v
        for k, v in dict(feat_dim=feat_dim, num_blocks=num_blocks, d_k=d_k, d_v=d_v, d_ff=d_ff,
                         dense_dim=dense_dim, embed_dim=embed_dim).items():
            if int(v) != v or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        for k, v in dict(encoder_dropout=encoder_dropout, dropout=dropout).items():
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{k} must be in [0, 1), got {v!r}")
        if pos_encoding not in ("none", "sinusoidal"):
            raise ValueError(f"pos_encoding must be 'none' or 'sinusoidal', got {pos_encoding!r}")
        self.feat_dim, self.embed_dim = int(feat_dim), int(embed_dim)
        self.pos_encoding = pos_encoding
        self.blocks = nn.ModuleList(_EncoderBlock(feat_dim, d_k, d_v, d_ff, encoder_dropout)
                                    for _ in range(num_blocks))
        self.pool = MultiHeadAttentivePooling(feat_dim, num_heads=1, scale=False)  # eq. (5)
        self.dense1 = nn.Linear(feat_dim, dense_dim)
        self.dense2 = nn.Linear(dense_dim, embed_dim)
        self.dense3 = nn.Linear(embed_dim, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU()

    def post_embedding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used only after the embedding (dense3)."""
        return self.dense3.parameters()

    def _embedding(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        lengths = check_features(x, self.feat_dim, lengths)
        B, T, _ = x.shape
        attn_mask = None
        if lengths is not None:  # key padding mask: True = may attend
            attn_mask = lengths_to_mask(lengths, T)[:, None, None, :]
        if self.pos_encoding == "sinusoidal":
            x = x + _sinusoidal(T, self.feat_dim, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, attn_mask)
        c = self.drop(self.pool(x, lengths))
        h = self.drop(self.relu(self.dense1(c)))
        return self.relu(self.dense2(h))

    def embed(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Speaker embedding: dense2 after its ReLU, ``[B, embed_dim]``."""
        return self._embedding(x, lengths)

    def train_output(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """dense3 after its ReLU: the input of the softmax layer during training."""
        return self.relu(self.dense3(self.drop(self._embedding(x, lengths))))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Training mode: :meth:`train_output`; eval mode: :meth:`embed`."""
        return self.train_output(x, lengths) if self.training else self.embed(x, lengths)
