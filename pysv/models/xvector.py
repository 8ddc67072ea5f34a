"""x-vector TDNN (Snyder et al., ICASSP 2018), the baseline of SAEP.

    frame1  context [t-2, t+2]        -> 512     (Conv1d k=5)
    frame2  context {t-2, t, t+2}     -> 512     (Conv1d k=3, dilation 2)
    frame3  context {t-3, t, t+3}     -> 512     (Conv1d k=3, dilation 3)
    frame4  context {t}               -> 512
    frame5  context {t}               -> 1500
    stats pooling (mean + std)        -> 3000
    segment6 affine                   -> 512     <- the x-vector (affine output, as Kaldi)
    segment7 affine                   -> 512     (trained on, then discarded)

Every layer is affine -> ReLU -> BatchNorm (Kaldi's ``relu-batchnorm-layer``). The convolutions are
"valid" (no padding) as in Kaldi training, so the pooled frames are ``T - 14``.

``forward`` returns the segment6 affine output (the embedding) in eval mode; in training mode it
returns the segment7 output (after its ReLU + BN), which is what the classifier / loss is
trained on in Kaldi's recipe. ``embed`` and ``train_output`` give either explicitly.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn as nn

from pysv.models import register
from .pooling import StatisticsPooling, check_features, conv_out_lengths

__all__ = ["XVector"]

# (kernel, dilation) of the five frame-level layers: SAEP / Snyder 2018 Table 1
_CONTEXTS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))


class _TDNNLayer(nn.Module):
    def __init__(self, in_dim, out_dim, kernel, dilation):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.affine = nn.Conv1d(in_dim, out_dim, kernel, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x):
        return self.bn(self.relu(self.affine(x)))


@register("xvector")
class XVector(nn.Module):
    """Kaldi-style x-vector extractor.

    Hyper-parameters:
      feat_dim (30): input feature dim (30 MFCC in Kaldi's recipe; 90 with deltas in SAEP).
      hidden_dim (512): width of frame1-4 and of the segment layers.
      stats_dim (1500): width of frame5 (input of the statistics pooling).
      embed_dim (512): segment6 size = embedding size; segment7 has the same size.
      pad_input (False): if True, replicate each row's first/last valid frame 7 times (the
        TDNN context) so the pooling sees as many frames as the input, as Kaldi's
        ``nnet3-xvector-compute --pad-input=true``; if False inputs need >= 15 valid frames.
    """

    input_kind = "features"
    context = 14  # frames consumed by the valid convolutions (7 left, 7 right)

    def __init__(self, feat_dim: int = 30, hidden_dim: int = 512, stats_dim: int = 1500,
                 embed_dim: int = 512, pad_input: bool = False):
        super().__init__()
        for k, v in dict(feat_dim=feat_dim, hidden_dim=hidden_dim, stats_dim=stats_dim,
                         embed_dim=embed_dim).items():
            if int(v) != v or v < 1:
                raise ValueError(f"{k} must be a positive int, got {v!r}")
        self.feat_dim, self.embed_dim = int(feat_dim), int(embed_dim)
        self.pad_input = bool(pad_input)
        dims = [feat_dim, hidden_dim, hidden_dim, hidden_dim, hidden_dim, stats_dim]
        self.frame_layers = nn.Sequential(*[_TDNNLayer(dims[i], dims[i + 1], k, d)
                                            for i, (k, d) in enumerate(_CONTEXTS)])
        self.pool = StatisticsPooling(stats_dim)
        self.segment6 = nn.Linear(self.pool.out_dim, embed_dim)
        self.bn6 = nn.BatchNorm1d(embed_dim)
        self.segment7 = nn.Linear(embed_dim, embed_dim)
        self.bn7 = nn.BatchNorm1d(embed_dim)
        self.relu = nn.ReLU()

    # ------------------------------------------------------------------------------------------
    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.pad_input:
            return lengths
        for k, d in _CONTEXTS:
            lengths = conv_out_lengths(lengths, k, dilation=d)
        return lengths

    def post_embedding_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters used only after the embedding (segment6's ReLU-BN and segment7)."""
        for m in (self.bn6, self.segment7, self.bn7):
            yield from m.parameters()

    def _pad(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """Replicate every row's own first / last valid frame ``context/2`` times (vectorized)."""
        B, T, _ = x.shape
        half = self.context // 2
        idx = torch.arange(-half, T + half, device=x.device).unsqueeze(0).expand(B, -1)
        last = (lengths - 1 if lengths is not None
                else torch.full((B,), T - 1, device=x.device, dtype=torch.long))
        idx = torch.minimum(idx.clamp(min=0), last.unsqueeze(1))
        return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))

    def _segment6(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        lengths = check_features(x, self.feat_dim, lengths)
        B, T, _ = x.shape
        if self.pad_input:
            x = self._pad(x, lengths)  # output frame t < len_i sees exactly row i's padded context
        else:
            shortest = T if lengths is None else int(lengths.min())
            if shortest <= self.context:
                raise ValueError(f"x-vector needs at least {self.context + 1} frames per utterance "
                                 f"(got {shortest}); use pad_input=True for shorter inputs")
        h = self.frame_layers(x.transpose(1, 2))  # [B, stats_dim, T'], T' = T - 14 (+14 if padded)
        if lengths is not None and not self.pad_input:
            lengths = self.output_lengths(lengths)
        return self.segment6(self.pool(h.transpose(1, 2), lengths))

    def embed(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The x-vector: segment6 affine output ``[B, embed_dim]`` (before its ReLU)."""
        return self._segment6(x, lengths)

    def train_output(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """segment7 output (after ReLU + BN): what the classifier is trained on."""
        a = self._segment6(x, lengths)
        return self.bn7(self.relu(self.segment7(self.bn6(self.relu(a)))))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Training mode: :meth:`train_output`; eval mode: :meth:`embed` (the x-vector)."""
        return self.train_output(x, lengths) if self.training else self.embed(x, lengths)
