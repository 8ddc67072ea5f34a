"""Proxy-based losses: Proxy-NCA and Proxy-Anchor (MP-2021 eqs. (1)-(2), MP-2020 eqs. (2)-(3)).

One learnable proxy per class in ``weight`` ``[num_classes, D]``. Embeddings and proxies are
L2-normalised inside ``forward`` (so both losses are invariant to rescaling the embeddings).
Negatives come from the proxies, so a batch with one sample of one class is valid.
``last_accuracy`` = fraction of samples whose nearest proxy is their own class's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pysv.losses import register
from .common import EPS, LossBase, SamplingRequirements, cosine_matrix, log1p_sum_exp, top1_accuracy


@register("proxy_nca", aliases=("proxynca",))
class ProxyNCA(LossBase):
    """Proxy-NCA (Movshovitz-Attias et al. 2017), MP-2020 eq. (2)::

        L = -1/N sum_i log( exp(-d(x_i, p_{y_i})) / sum_{k != y_i} exp(-d(x_i, p_k)) )

    with ``d`` the Euclidean distance between the unit-norm embedding ``x_i`` and the proxy
    ``p_k`` normalised to norm ``scale``. Reading of eq. (2): its denominator index ``j = 1..N,
    j != i`` runs over the *proxies of the other classes* (as in the original Proxy-NCA, the own
    proxy is excluded); the ``N`` there is a typo for the number of classes.

    hparams: ``scale`` (1): norm of the proxies (1 = the literal equation; 3 = ``scaling_p`` of the
    Proxy-NCA code the seeds trained with, dichotomies/proxy-nca, embeddings kept at norm 1);
    ``squared`` (False): squared Euclidean distance (the original Proxy-NCA paper and that code)
    instead of the seeds' plain distance; ``label_smoothing`` (None): None = the literal equation
    (own proxy excluded from the denominator); a number ``eps`` in [0, 1) = that code's form,
    cross-entropy of ``softmax(-d)`` over *all* proxies against smoothed targets ``1 - eps`` (own
    class) and ``eps / (C - 1)`` (every other class). The seeds' code form: ``scale=3,
    squared=True, label_smoothing=0.1``.
    """

    requirements = SamplingRequirements(1, False)
    owns_class_vectors = True

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 1.0, squared: bool = False,
                 label_smoothing=None):
        super().__init__(embed_dim, num_classes)
        if not scale > 0:
            raise ValueError(f"loss 'proxy_nca': scale must be > 0, got {scale}")
        if label_smoothing is not None and not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"loss 'proxy_nca': label_smoothing must be null or in [0, 1), got {label_smoothing}")
        self.scale = float(scale)
        self.squared = bool(squared)
        self.label_smoothing = None if label_smoothing is None else float(label_smoothing)
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim))

    def compute(self, x, labels, split):
        cos = cosine_matrix(x, self.weight.to(x.dtype))  # [N, C]
        s = self.scale
        d2 = 1.0 + s * s - 2.0 * s * cos  # ||x - s p||^2 for unit x, p
        dist = d2.clamp(min=0.0) if self.squared else d2.clamp(min=EPS).sqrt()
        logits = -dist
        if self.label_smoothing is None:  # MP-2020 eq. (2): own proxy only in the numerator
            pos = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
            own = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)
            neg_lse = torch.logsumexp(logits.masked_fill(own, float("-inf")), dim=1)
            loss = (neg_lse - pos).mean()
        else:  # the seeds' code: softmax over all proxies, smoothed one-hot targets
            eps = self.label_smoothing
            target = torch.full_like(logits, eps / (self.num_classes - 1))
            target.scatter_(1, labels.unsqueeze(1), 1.0 - eps)
            loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        return loss, top1_accuracy(logits, labels)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, scale={self.scale}, squared={self.squared}, "
                f"label_smoothing={self.label_smoothing}")


@register("proxy_anchor", aliases=("proxyanchor",))
class ProxyAnchor(LossBase):
    """Proxy-Anchor (Kim et al. 2020), MP-2020 eq. (3) / MP-2021 eq. (2)::

        L = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-a (s(x,p) - d)))
          + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( a (s(x,p) + d)))

    ``s`` cosine similarity, ``a = scale``, ``d = margin`` (paper: scale=50, margin=0.15). P+ are the
    proxies of the classes present in the batch; the negative term is averaged over *all* proxies
    (MP-2021 eq. (2) and the original paper; MP-2020 eq. (3) writes ``|P_-|``, a typo).
    """

    requirements = SamplingRequirements(1, False)
    owns_class_vectors = True

    def __init__(self, embed_dim: int, num_classes: int, scale: float = 50.0, margin: float = 0.15):
        super().__init__(embed_dim, num_classes)
        if not scale > 0:
            raise ValueError(f"loss 'proxy_anchor': scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")  # as the reference implementation

    def compute(self, x, labels, split):
        cos = cosine_matrix(x, self.weight.to(x.dtype))  # [N, C]
        pos_mask = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), True)
        pos_z = -self.scale * (cos - self.margin)
        neg_z = self.scale * (cos + self.margin)
        pos_term = log1p_sum_exp(pos_z.t(), pos_mask.t()).sum() / split.classes.numel()
        neg_term = log1p_sum_exp(neg_z.t(), ~pos_mask.t()).sum() / self.num_classes
        return pos_term + neg_term, top1_accuracy(cos, labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}"
