"""Masked Proxy (MP) and Multinomial Masked Proxy (MMP) losses (MP-2020 eqs. (4)-(13); MP-2021
eqs. (3)-(12) are the same with numbers shifted by one).

Notation (MP-2020): queries X_Q = the first occurrence of every class in the batch; ``c_L`` the
centroid of class L = mean of the class's other samples (eq. (4)); proxies ``p_k`` = rows of
``weight``; L_M = classes present in the batch (their proxies are *masked* in the query term).
Embeddings and proxies are L2-normalised; centroids are means of the normalised embeddings.
``normalize_centroids`` decides whether they are re-normalised to unit length: the paper is
silent; the authors' MMP code re-normalises (``u^T c_L`` is then the cosine between ``u`` and the
centroid), which changes classes with M >= 3 samples (with M = 2 the centroid is one unit vector
already). Default: True for ``mmp`` (the authors' code), False for ``mp`` (the literal reading,
``u^T c_L`` = the mean cosine similarity between ``u`` and the other samples of class L).
Similarity eq. (6): ``s(u, v) = alpha (u^T v - beta) = w * u^T v + b``
(``w = alpha``, ``b = -alpha beta``; paper init alpha=10, beta=0.1 -> init_w=10, init_b=-1).

Interpretation choices (also in docs/losses.md):

* eq. (5) writes the positive only in the numerator (denominator over ``L_j != L_i``). That ratio
  is not a proper loss (unbounded below, minimised by pushing the positive similarity to infinity
  rather than by separating it from the negatives). We read it as the usual softmax cross-entropy:
  the positive centroid is also in the denominator (as in angular prototypical, which MP extends).
* eq. (8) (the Mask Proxy Regulator) likewise: the denominator runs over the centroids of *all*
  classes in the batch, the proxy's own centroid included; classes outside the batch have no
  centroid, so ``L_j`` ranges over L_M. Gradients flow into both the proxies and the centroids
  (the equation as written, nothing detached).
* eq. (10) (MMP) is already a proper loss (every term is ``log(1 + sum exp) >= 0``) and is used as
  written, with the third term over the unmasked proxies ``L_{p_k} not in L_M`` (MP-2020; seed
  000 eq. (9) has the typo ``L_j != L_i, L_j in L_M`` under that sum). Its first term is a single
  ``log(1 + sum_{x_i in X_Q} exp(-s(x_i, c_{L_i})))`` over the whole batch (not averaged), which is
  what gives harder positives a larger weight (eq. (12)).
* The regulator of MMP is eq. (8) unchanged (eq. (13): "kept as its original form").
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.losses import register
from .common import (
    LossBase,
    SamplingRequirements,
    in_batch_mask,
    l2_normalize,
    log1p_sum_exp,
    query_and_centroids,
    scale_param,
    top1_accuracy,
)


class _MaskedProxyBase(LossBase):
    requirements = SamplingRequirements(2, False)  # negatives also come from unmasked proxies
    owns_class_vectors = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        init_w: float = 10.0,
        init_b: float = -1.0,
        reg_lambda: float = 0.5,
        normalize_centroids: bool = False,
    ):
        super().__init__(embed_dim, num_classes)
        self.normalize_centroids = bool(normalize_centroids)
        if not init_w > 0:
            raise ValueError(f"loss '{self.loss_name}': init_w must be > 0, got {init_w}")
        if not reg_lambda >= 0:
            raise ValueError(f"loss '{self.loss_name}': reg_lambda must be >= 0, got {reg_lambda}")
        self.reg_lambda = float(reg_lambda)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def s(self, dot: torch.Tensor) -> torch.Tensor:
        """Seed 002 eq. (6): ``alpha (u^T v - beta)`` written as ``w * u^T v + b``."""
        return scale_param(self.w.to(dot.dtype)) * dot + self.b.to(dot.dtype)

    def _similarities(self, x, split):
        x = l2_normalize(x)
        proxies = l2_normalize(self.weight.to(x.dtype))
        qc = query_and_centroids(x, split)  # MP-2020 eq. (4)
        centroids = l2_normalize(qc.centroids) if self.normalize_centroids else qc.centroids
        classes = split.classes
        s_qc = self.s(qc.queries @ centroids.t())  # [K, K]  query i vs centroid j
        s_qp = self.s(qc.queries @ proxies.t())  # [K, C]  query i vs every proxy
        s_pc = self.s(proxies[classes] @ centroids.t())  # [K, K]  masked proxy i vs centroid j
        return classes, s_qc, s_qp, s_pc

    def regulator(self, s_pc: torch.Tensor) -> torch.Tensor:
        """Mask Proxy Regulator, MP-2020 eq. (8) (own centroid in the denominator, see module doc)."""
        target = torch.arange(s_pc.shape[0], device=s_pc.device)
        return F.cross_entropy(s_pc, target)

    @staticmethod
    def query_logits(classes, s_qc, s_qp):
        """``[K, C]`` logits of each query: in-batch class columns hold the centroid similarity,
        the other columns the (unmasked) proxy similarity -- the terms of MP-2020 eq. (5)."""
        return s_qp.index_copy(1, classes, s_qc)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, reg_lambda={self.reg_lambda}, "
                f"normalize_centroids={self.normalize_centroids}")


@register("mp")
class MaskedProxy(_MaskedProxyBase):
    """MP: ``l_mp = l_1 + reg_lambda * l_2`` (MP-2020 eqs. (5), (7), (8), (9)).

    ``reg_lambda``: 0.5 in MP-2020 (Table 2), 0.3 in MP-2021 (Table 2).
    """

    recommended_sampler = ("mp_random", {"utts_choices": (2, 3)})  # the sampler its paper trained with

    def compute(self, x, labels, split):
        classes, s_qc, s_qp, s_pc = self._similarities(x, split)
        logits = self.query_logits(classes, s_qc, s_qp)
        # MP-2020 eqs. (5) + (7): softmax cross-entropy over {in-batch centroids} U {unmasked proxies}
        l1 = F.cross_entropy(logits, classes)
        loss = l1 + self.reg_lambda * self.regulator(s_pc)  # MP-2020 eq. (9)
        return loss, top1_accuracy(logits, classes)


@register("mmp")
class MultinomialMaskedProxy(_MaskedProxyBase):
    """MMP: ``l_mmp = l_1m + reg_lambda * l_2`` (MP-2020 eqs. (10), (8), (13)).

    ``reg_lambda``: 0.5 in MP-2020 (Table 2), 0.3 in MP-2021 (Table 2).
    """

    recommended_sampler = ("mp_random", {"utts_choices": (2, 3)})  # the sampler its paper trained with

    def __init__(self, embed_dim: int, num_classes: int, init_w: float = 10.0, init_b: float = -1.0,
                 reg_lambda: float = 0.5, normalize_centroids: bool = True):
        super().__init__(embed_dim, num_classes, init_w, init_b, reg_lambda, normalize_centroids)

    def compute(self, x, labels, split):
        classes, s_qc, s_qp, s_pc = self._similarities(x, split)
        k = classes.numel()
        eye = torch.eye(k, dtype=torch.bool, device=x.device)
        s_pos = s_qc.diagonal()  # s(x_i, c_{L_i})
        # MP-2020 eq. (10), term 1: log(1 + sum_{x_i in X_Q} exp(-s(x_i, c_{L_i}))), one sum over the batch
        t1 = log1p_sum_exp(-s_pos, torch.ones_like(s_pos, dtype=torch.bool), dim=0)
        # term 2: mean over queries of log(1 + sum_{L_j != L_i, L_j in L_M} exp(s(x_i, c_{L_j})))
        t2 = log1p_sum_exp(s_qc, ~eye).mean()
        # term 3: mean over queries of log(1 + sum_{L_{p_k} not in L_M} exp(s(x_i, p_k)))
        unmasked = ~in_batch_mask(classes, self.num_classes)
        t3 = log1p_sum_exp(s_qp, unmasked.unsqueeze(0).expand_as(s_qp)).mean()
        loss = t1 + t2 + t3 + self.reg_lambda * self.regulator(s_pc)  # MP-2020 eq. (13)
        logits = self.query_logits(classes, s_qc, s_qp)
        return loss, top1_accuracy(logits, classes)
