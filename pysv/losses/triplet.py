"""Triplet loss with in-batch negative mining (seed 000/002 Table 2: m=0.1, after [3] Chung et al.).

Per class in the batch: anchor = first occurrence, positive = second occurrence (further samples
of the class only serve as negatives for the other classes). Embeddings are L2-normalised and
``d`` is the squared Euclidean distance; loss = mean over anchors of ``max(0, d(a,p) - d(a,n) + m)``
with the negative ``n`` mined among the samples of the other classes:

* ``hardest``   -- the closest negative;
* ``semi_hard`` -- FaceNet / ``tf.contrib.losses.triplet_semihard_loss``: the closest negative that
  is farther than the positive (``d(a,n) > d(a,p)``); if there is none, the farthest negative;
* ``random``    -- a negative drawn uniformly with the torch RNG (``torch.manual_seed`` makes it
  reproducible).
"""
from __future__ import annotations

import torch

from .common import LossBase, SamplingRequirements, l2_normalize, second_occurrence, squared_distance_matrix

MINING = ("hardest", "semi_hard", "random")


class Triplet(LossBase):
    loss_name = "triplet"
    requirements = SamplingRequirements(2, True)

    def __init__(self, embed_dim: int, num_classes=None, margin: float = 0.1, mining: str = "hardest"):
        super().__init__(embed_dim, num_classes)
        if mining not in MINING:
            raise ValueError(f"loss 'triplet': mining must be one of {MINING}, got {mining!r}")
        if not margin >= 0:
            raise ValueError(f"loss 'triplet': margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining

    def compute(self, x, labels, split):
        x = l2_normalize(x)
        anchor_idx = split.first
        pos_idx = second_occurrence(split)
        anchors = x[anchor_idx]
        d_ap = (anchors - x[pos_idx]).pow(2).sum(-1)  # [K]
        d_an = squared_distance_matrix(anchors, x)  # [K, N]
        neg = labels.unsqueeze(0) != split.classes.unsqueeze(1)  # [K, N]
        inf = torch.finfo(x.dtype).max
        if self.mining == "hardest":
            chosen = d_an.masked_fill(~neg, inf).argmin(dim=1)
        elif self.mining == "semi_hard":
            with torch.no_grad():
                outside = neg & (d_an > d_ap.unsqueeze(1))
                closest_outside = d_an.masked_fill(~outside, inf).argmin(dim=1)
                farthest = d_an.masked_fill(~neg, -inf).argmax(dim=1)
                chosen = torch.where(outside.any(dim=1), closest_outside, farthest)
        else:  # random, torch RNG of the embeddings' device
            chosen = torch.multinomial(neg.to(x.dtype), 1).squeeze(1)
        d_neg = d_an.gather(1, chosen.unsqueeze(1)).squeeze(1)
        loss = torch.relu(d_ap - d_neg + self.margin).mean()
        return loss, None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, mining={self.mining!r}"
