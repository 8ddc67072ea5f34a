"""Prototypical, angular prototypical and GE2E losses (the in-batch baselines of MP-2021 / MP-2020,
Table 2, after [3] Chung et al. "In defence of metric learning").

Query of a class = its first occurrence in batch order; centroid = mean of the class's other
samples (:func:`pysv.losses.common.query_and_centroids`). Every class needs >= 2 samples in the
batch and the batch needs >= 2 classes; otherwise ``ValueError`` naming the class.
``last_accuracy`` = fraction of queries (GE2E: of all utterances) whose most similar centroid is
their own.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.losses import register
from .common import (
    LossBase,
    SamplingRequirements,
    class_sums,
    cosine_matrix,
    l2_normalize,
    query_and_centroids,
    scale_param,
    squared_distance_matrix,
    top1_accuracy,
)


@register("proto", aliases=("prototypical",))
class Prototypical(LossBase):
    """Softmax over negative squared Euclidean distances query -> centroids (raw embeddings)."""

    recommended_sampler = ("balanced", {"utts_per_spk": 2})  # the sampler its paper trained with
    requirements = SamplingRequirements(2, True)

    def __init__(self, embed_dim: int, num_classes=None):
        super().__init__(embed_dim, num_classes)

    def compute(self, x, labels, split):
        qc = query_and_centroids(x, split)
        logits = -squared_distance_matrix(qc.queries, qc.centroids)  # [K, K]
        target = torch.arange(logits.shape[0], device=x.device)
        return F.cross_entropy(logits, target), top1_accuracy(logits, target)


class _LearnableScale(LossBase):
    """Holds the learnable similarity scale ``w`` and offset ``b`` (logits = w * sim + b)."""

    def __init__(self, embed_dim: int, num_classes, init_w: float, init_b: float):
        super().__init__(embed_dim, num_classes)
        if not init_w > 0:
            raise ValueError(f"loss '{self.loss_name}': init_w must be > 0, got {init_w}")
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def scaled(self, sim: torch.Tensor) -> torch.Tensor:
        return scale_param(self.w.to(sim.dtype)) * sim + self.b.to(sim.dtype)


@register("angleproto", aliases=("angular_prototypical",))
class AngularPrototypical(_LearnableScale):
    """Softmax over ``w * cos(query, centroid) + b`` (Chung et al.; centroids of raw embeddings,
    as voxceleb_trainer's ``angleproto``)."""

    recommended_sampler = ("balanced", {"utts_per_spk": 2})  # the sampler its paper trained with
    requirements = SamplingRequirements(2, True)

    def __init__(self, embed_dim: int, num_classes=None, init_w: float = 10.0, init_b: float = -5.0):
        super().__init__(embed_dim, num_classes, init_w, init_b)

    def compute(self, x, labels, split):
        qc = query_and_centroids(x, split)
        logits = self.scaled(cosine_matrix(qc.queries, qc.centroids))
        target = torch.arange(logits.shape[0], device=x.device)
        return F.cross_entropy(logits, target), top1_accuracy(logits, target)


@register("ge2e")
class GE2E(_LearnableScale):
    """Generalised end-to-end loss, softmax variant (Wan et al. 2018).

    Every utterance is compared with every class centroid; its own class centroid is computed
    without the utterance itself, other centroids use all of their class's samples. Logits
    ``w * cos + b``, cross-entropy averaged over utterances.

    ``normalize`` (True): L2-normalise the embeddings before the centroids are taken (Wan et al.,
    and the seeds' code); False = centroids of the raw embeddings, as clovaai voxceleb_trainer's
    ``loss/ge2e.py``. ``min_cosine`` (None): floor of the cosine similarities before scaling
    (voxceleb_trainer clamps at 1e-6; None = no floor, Wan et al.).
    """

    recommended_sampler = ("balanced", {"utts_per_spk": 3})  # the sampler its paper trained with
    requirements = SamplingRequirements(2, True)

    def __init__(self, embed_dim: int, num_classes=None, init_w: float = 10.0, init_b: float = -5.0,
                 normalize: bool = True, min_cosine=None):
        super().__init__(embed_dim, num_classes, init_w, init_b)
        if min_cosine is not None and not -1.0 <= float(min_cosine) < 1.0:
            raise ValueError(f"loss 'ge2e': min_cosine must be null or in [-1, 1), got {min_cosine}")
        self.normalize = bool(normalize)
        self.min_cosine = None if min_cosine is None else float(min_cosine)

    def compute(self, x, labels, split):
        if self.normalize:
            x = l2_normalize(x)
        sums = class_sums(x, split)  # [K, D]
        counts = split.counts.to(x.dtype)
        centroids = sums / counts.unsqueeze(1)
        cos = cosine_matrix(x, centroids)  # [N, K]
        own = (sums[split.inverse] - x) / (counts[split.inverse] - 1).unsqueeze(1)  # [N, D]
        cos_own = (l2_normalize(x) * l2_normalize(own)).sum(dim=1)
        target = split.inverse
        cos = cos.scatter(1, target.unsqueeze(1), cos_own.unsqueeze(1))
        if self.min_cosine is not None:
            cos = cos.clamp(min=self.min_cosine)
        logits = self.scaled(cos)
        return F.cross_entropy(logits, target), top1_accuracy(logits, target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, normalize={self.normalize}, min_cosine={self.min_cosine}"
