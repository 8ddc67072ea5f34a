"""Triplet loss with in-batch negative mining (MP-2021 / MP-2020 Table 2: m=0.1, after [3] Chung et al.).

Per class in the batch: anchor = first occurrence, positive = second occurrence. Embeddings are
L2-normalised and ``d`` is the squared Euclidean distance; loss = mean over anchors of
``max(0, d(a,p) - d(a,n) + m)`` with the negative ``n`` mined among the candidates of the other
classes. Candidates (``negatives``):

* ``all``       -- every sample of the other classes;
* ``positives`` -- the positives (second occurrences) of the other classes only, as voxceleb_trainer's
  ``loss/triplet.py`` (``out_negative = out_positive[negidx]``), which the seeds' code ran.

Mining (``mining``):

* ``hardest``   -- rank-based, voxceleb_trainer's ``mineHardNegative``: with probability ``hard_prob``
  a negative drawn uniformly among the ``hard_rank + 1`` closest candidates, otherwise one drawn
  uniformly among all candidates. ``hard_rank=0, hard_prob=1`` (the defaults) = always the closest;
  voxceleb_trainer's defaults are ``hard_rank=10, hard_prob=0.5``.
* ``semi_hard`` -- FaceNet / ``tf.contrib.losses.triplet_semihard_loss``: the closest negative that
  is farther than the positive (``d(a,n) > d(a,p)``); if there is none, the farthest negative;
* ``random``    -- a negative drawn uniformly.

Random draws use the torch RNG of the embeddings' device (``torch.manual_seed`` makes them
reproducible), in this order: ``torch.rand(K)`` (hard or random, per anchor), ``torch.randint(0,
hard_rank + 1, (K,))`` (rank among the closest, capped at the number of candidates), then
``torch.multinomial`` over the candidates (the random pick).
"""
from __future__ import annotations

import torch

from pysv.losses import register
from .common import LossBase, SamplingRequirements, l2_normalize, second_occurrence, squared_distance_matrix

MINING = ("hardest", "semi_hard", "random")
NEGATIVES = ("all", "positives")


@register("triplet")
class Triplet(LossBase):
    recommended_sampler = ("balanced", {"utts_per_spk": 2})  # the sampler its paper trained with
    requirements = SamplingRequirements(2, True)

    def __init__(self, embed_dim: int, num_classes=None, margin: float = 0.1, mining: str = "hardest",
                 negatives: str = "all", hard_rank: int = 0, hard_prob: float = 1.0):
        super().__init__(embed_dim, num_classes)
        if mining not in MINING:
            raise ValueError(f"loss 'triplet': mining must be one of {MINING}, got {mining!r}")
        if negatives not in NEGATIVES:
            raise ValueError(f"loss 'triplet': negatives must be one of {NEGATIVES}, got {negatives!r}")
        if not margin >= 0:
            raise ValueError(f"loss 'triplet': margin must be >= 0, got {margin}")
        if isinstance(hard_rank, bool) or not isinstance(hard_rank, int) or hard_rank < 0:
            raise ValueError(f"loss 'triplet': hard_rank must be an int >= 0, got {hard_rank!r}")
        if not 0.0 <= hard_prob <= 1.0:
            raise ValueError(f"loss 'triplet': hard_prob must be in [0, 1], got {hard_prob}")
        if mining != "hardest" and (hard_rank, hard_prob) != (0, 1.0):
            raise ValueError(f"loss 'triplet': hard_rank / hard_prob apply to mining='hardest' only, "
                             f"not to mining={mining!r}")
        self.margin = float(margin)
        self.mining = mining
        self.negatives = negatives
        self.hard_rank = int(hard_rank)
        self.hard_prob = float(hard_prob)

    def compute(self, x, labels, split):
        x = l2_normalize(x)
        anchor_idx = split.first
        pos_idx = second_occurrence(split)
        anchors = x[anchor_idx]
        d_ap = (anchors - x[pos_idx]).pow(2).sum(-1)  # [K]
        pool = pos_idx if self.negatives == "positives" else torch.arange(x.shape[0], device=x.device)
        d_an = squared_distance_matrix(anchors, x[pool])  # [K, candidates]
        neg = labels[pool].unsqueeze(0) != split.classes.unsqueeze(1)  # [K, candidates]
        inf = torch.finfo(x.dtype).max
        if self.mining == "hardest":
            chosen = self._rank_mining(d_an.detach(), neg)
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

    def _rank_mining(self, d_an: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """voxceleb_trainer's rank-based hard-negative mining (see the module doc)."""
        k = d_an.shape[0]
        if self.hard_rank == 0 and self.hard_prob == 1.0:  # deterministic: no RNG draws
            return d_an.masked_fill(~neg, torch.finfo(d_an.dtype).max).argmin(dim=1)
        hard = torch.rand(k, device=d_an.device) < self.hard_prob
        rank = torch.randint(0, self.hard_rank + 1, (k,), device=d_an.device)
        rank = torch.minimum(rank, neg.sum(dim=1) - 1)
        order = d_an.masked_fill(~neg, torch.finfo(d_an.dtype).max).argsort(dim=1, stable=True)
        hard_pick = order.gather(1, rank.unsqueeze(1)).squeeze(1)
        random_pick = torch.multinomial(neg.to(d_an.dtype), 1).squeeze(1)
        return torch.where(hard, hard_pick, random_pick)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, margin={self.margin}, mining={self.mining!r}, "
                f"negatives={self.negatives!r}, hard_rank={self.hard_rank}, hard_prob={self.hard_prob}")
