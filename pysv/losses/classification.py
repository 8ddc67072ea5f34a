"""Classification losses: softmax, AM-softmax (CosFace), AAM-softmax (ArcFace).

All keep the class vectors in ``weight`` ``[num_classes, D]``; ``last_accuracy`` is the top-1
accuracy of the batch (for the margin losses measured on the margin-free cosine logits, i.e. the
decision a nearest-class-vector classifier would take).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.losses import register
from .common import EPS, LossBase, SamplingRequirements, cosine_matrix, top1_accuracy


@register("softmax")
class Softmax(LossBase):
    """Linear layer with bias + cross-entropy (SAEP SAEP / x-vector softmax)."""

    requirements = SamplingRequirements(1, False)
    owns_class_vectors = True

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__(embed_dim, num_classes)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        self.bias = nn.Parameter(torch.empty(num_classes))
        # same initialisation as torch.nn.Linear
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(embed_dim)
        nn.init.uniform_(self.bias, -bound, bound)

    def compute(self, x, labels, split):
        logits = F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))
        return F.cross_entropy(logits, labels), top1_accuracy(logits, labels)


class _MarginSoftmax(LossBase):
    requirements = SamplingRequirements(1, False)
    owns_class_vectors = True

    def __init__(self, embed_dim: int, num_classes: int, scale: float, margin: float):
        super().__init__(embed_dim, num_classes)
        if not scale > 0:
            raise ValueError(f"loss '{self.loss_name}': scale must be > 0, got {scale}")
        if not margin >= 0:
            raise ValueError(f"loss '{self.loss_name}': margin must be >= 0, got {margin}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)

    def set_margin(self, margin: float) -> None:
        """Change the margin during training (a margin schedule, ``train.margin_ramp``)."""
        self.margin = float(margin)

    def target_logit(self, cos_t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, x, labels, split):
        cos = cosine_matrix(x, self.weight.to(x.dtype))  # [N, C]
        cos_t = cos.gather(1, labels.unsqueeze(1)).squeeze(1)
        logits = cos.scatter(1, labels.unsqueeze(1), self.target_logit(cos_t).unsqueeze(1)) * self.scale
        return F.cross_entropy(logits, labels), top1_accuracy(cos, labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}"


@register("amsoftmax", aliases=("cosface", "am_softmax"))
class AMSoftmax(_MarginSoftmax):
    """Additive margin softmax / CosFace: target logit ``s * (cos(theta) - m)``.

    Paper settings: s=30, m=0.4 (SAEP); CosFace s=30, m=0.2 (MP-2020 Table 2).
    """


    def __init__(self, embed_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.4):
        super().__init__(embed_dim, num_classes, scale, margin)

    def target_logit(self, cos_t):
        return cos_t - self.margin


@register("aamsoftmax", aliases=("arcface", "aam_softmax"))
class AAMSoftmax(_MarginSoftmax):
    """Additive angular margin softmax / ArcFace: target logit ``s * cos(theta + m)``.

    When ``theta + m > pi`` (cos(theta+m) would stop being monotonic in theta) the target logit
    falls back to ``cos(theta) - sin(pi - m) * m`` (insightface's ``th``/``mm`` trick); with
    ``easy_margin`` the margin is applied only where ``cos(theta) > 0``.
    Paper setting: s=30, m=0.2 (MP-2020 Table 2).
    """


    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.2,
        easy_margin: bool = False,
    ):
        super().__init__(embed_dim, num_classes, scale, margin)
        if not margin < math.pi / 2:
            raise ValueError(f"loss 'aamsoftmax': margin (radians) must be < pi/2, got {margin}")
        self.easy_margin = bool(easy_margin)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        super().set_margin(margin)
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)  # theta + m > pi  <=>  cos(theta) < th
        self.mm = math.sin(math.pi - margin) * margin

    def target_logit(self, cos_t):
        # clamp keeps the gradient finite (and zero) at |cos| == 1
        sin_t = torch.sqrt((1.0 - cos_t * cos_t).clamp(min=EPS))
        phi = cos_t * self.cos_m - sin_t * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cos_t > 0, phi, cos_t)
        return torch.where(cos_t > self.th, phi, cos_t - self.mm)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, easy_margin={self.easy_margin}"
