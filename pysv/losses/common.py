"""Pieces shared by every loss in :mod:`pysv.losses`.

* :class:`LossBase` -- input validation (shape, label range, non-finite values), per-loss batch
  requirements (samples per class, number of classes), float32 computation under AMP and the
  ``last_accuracy`` attribute the trainer reports.
* cosine matrices, L2 normalisation, stable ``log(1 + sum exp)``.
* query selection and centroids for prototype-style losses: the query of a class is its **first
  occurrence in batch order**; the centroid is the mean of the class's other samples.
* masking of the classes present in a batch (masked-proxy losses).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-12
# Floor of the learnable similarity scale w (as voxceleb_trainer's torch.clamp(self.w, 1e-6)):
# a negative w would turn "similar" into "dissimilar".
MIN_W = 1e-6


class SamplingRequirements(NamedTuple):
    """What a loss needs from a batch (see :func:`pysv.losses.sampling_requirements`)."""

    min_per_class: int
    """Every class present in a batch must have at least this many samples."""
    needs_multiple_classes: bool
    """The batch must contain at least two distinct classes (negatives come from the batch)."""


# --------------------------------------------------------------------------------------------
# small numerical helpers
# --------------------------------------------------------------------------------------------
def l2_normalize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Rows scaled to unit L2 norm (a zero row stays zero instead of becoming NaN)."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` cosine similarities between the rows of ``a`` and ``b``."""
    return l2_normalize(a) @ l2_normalize(b).t()


def squared_distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[len(a), len(b)]`` squared Euclidean distances ``||a_i - b_j||^2`` (exact, no expansion
    trick, so it is never slightly negative and its gradient is exact)."""
    diff = a.unsqueeze(1) - b.unsqueeze(0)
    return (diff * diff).sum(-1)


def log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(1 + sum_{mask} exp(z))`` along ``dim``, stable; an empty mask gives exactly 0 and a
    zero (not NaN) gradient."""
    z = z.masked_fill(~mask, float("-inf"))
    zero = torch.zeros_like(z.narrow(dim, 0, 1))
    return torch.logsumexp(torch.cat([zero, z], dim=dim), dim=dim)


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max is ``target`` (a detached float tensor)."""
    return (logits.detach().argmax(dim=-1) == target).float().mean()


def scale_param(w: torch.Tensor) -> torch.Tensor:
    """Learnable similarity scale, floored at :data:`MIN_W`."""
    return torch.clamp(w, min=MIN_W)


# --------------------------------------------------------------------------------------------
# batch structure
# --------------------------------------------------------------------------------------------
class ClassSplit(NamedTuple):
    """Classes of a batch, sorted by label id."""

    classes: torch.Tensor  # [K] distinct labels (sorted)
    inverse: torch.Tensor  # [N] position of each sample's label in ``classes``
    counts: torch.Tensor  # [K] samples per class
    first: torch.Tensor  # [K] batch index of each class's first occurrence (its query)


def class_split(labels: torch.Tensor) -> ClassSplit:
    """Distinct classes, counts and first occurrence (the query) of each class."""
    classes, inverse, counts = torch.unique(labels, sorted=True, return_inverse=True, return_counts=True)
    n = labels.numel()
    pos = torch.arange(n, device=labels.device)
    first = torch.full((classes.numel(),), n, dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(0, inverse, pos, reduce="amin", include_self=True)
    return ClassSplit(classes, inverse, counts, first)


def second_occurrence(split: ClassSplit) -> torch.Tensor:
    """Batch index of each class's second occurrence (needs >= 2 samples per class)."""
    n = split.inverse.numel()
    pos = torch.arange(n, device=split.inverse.device)
    not_first = torch.ones(n, dtype=torch.bool, device=pos.device)
    not_first[split.first] = False
    masked = torch.where(not_first, pos, torch.full_like(pos, n))
    second = torch.full_like(split.first, n)
    return second.scatter_reduce(0, split.inverse, masked, reduce="amin", include_self=True)


class QueryCentroids(NamedTuple):
    split: ClassSplit
    queries: torch.Tensor  # [K, D] the first occurrence of each class
    centroids: torch.Tensor  # [K, D] mean of the class's other samples


def query_and_centroids(x: torch.Tensor, split: ClassSplit) -> QueryCentroids:
    """Queries (first occurrence) and centroids without the query (MP-2020 eq. (4)).

    ``split.counts`` must be >= 2 everywhere (checked by :class:`LossBase`).
    """
    k = split.classes.numel()
    sums = x.new_zeros(k, x.shape[1]).index_add(0, split.inverse, x)
    queries = x[split.first]
    centroids = (sums - queries) / (split.counts - 1).to(x.dtype).unsqueeze(1)
    return QueryCentroids(split, queries, centroids)


def class_sums(x: torch.Tensor, split: ClassSplit) -> torch.Tensor:
    """``[K, D]`` sum of the samples of each class."""
    return x.new_zeros(split.classes.numel(), x.shape[1]).index_add(0, split.inverse, x)


def in_batch_mask(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes]`` bool, True for the classes present in the batch (the masked proxies)."""
    mask = torch.zeros(num_classes, dtype=torch.bool, device=classes.device)
    mask[classes] = True
    return mask


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _short_list(values, limit: int = 10) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        text += f", ... ({len(values)} in all)"
    return text


def validate_inputs(
    embeddings: torch.Tensor,
    labels,
    embed_dim: int,
    num_classes: Optional[int],
    name: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Check shapes, dtypes, label range and finiteness; return ``(embeddings, labels)`` with labels
    as int64 on the embeddings' device."""
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"loss '{name}': embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"loss '{name}': embeddings must be [N, D], got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"loss '{name}': embeddings must be floating point, got {embeddings.dtype}")
    n, d = embeddings.shape
    if d != embed_dim:
        raise ValueError(f"loss '{name}': embeddings have dimension {d}, the loss was built for embed_dim={embed_dim}")
    if n == 0:
        raise ValueError(f"loss '{name}': empty batch")
    labels = torch.as_tensor(labels, device=embeddings.device)
    if labels.dim() != 1 or labels.numel() != n:
        raise ValueError(f"loss '{name}': labels must be [N] with N={n}, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"loss '{name}': labels must be integer class ids, got {labels.dtype}")
    labels = labels.long()
    if num_classes is not None:
        bad = (labels < 0) | (labels >= num_classes)
        if bool(bad.any()):
            vals = sorted(set(labels[bad].tolist()))
            raise ValueError(
                f"loss '{name}': labels outside [0, {num_classes}): {_short_list(vals)} "
                f"(num_classes={num_classes}; is the speaker-to-id map the one the loss was built for?)"
            )
    finite = torch.isfinite(embeddings)
    if not bool(finite.all()):
        rows = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"loss '{name}': embeddings contain NaN or Inf in batch rows [{_short_list(rows)}]; the encoder "
            "output diverged (learning rate too high, fp16 overflow, or a bad input)"
        )
    return embeddings, labels


class LossBase(nn.Module):
    """Base class: validates inputs, checks the batch against :attr:`requirements`, runs
    :meth:`compute` in float32 (or float64) with autocast disabled, stores ``last_accuracy``."""

    #: the registered name (set by ``@pysv.losses.register``), used in messages
    loss_name: str = "base"
    requirements: SamplingRequirements = SamplingRequirements(1, False)
    #: ``(kind, kwargs)`` of the :mod:`pysv.data.samplers` sampler the loss's paper trained with
    recommended_sampler: Tuple[str, dict] = ("shuffle", {})
    #: the loss owns one vector per class (``weight``) and needs ``num_classes``
    owns_class_vectors: bool = False

    def __init__(self, embed_dim: int, num_classes: Optional[int]):
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"loss '{self.loss_name}': embed_dim must be a positive int, got {embed_dim!r}")
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"loss '{self.loss_name}': num_classes must be a positive int, got {num_classes!r}")
        if self.owns_class_vectors and (num_classes is None or num_classes < 2):
            raise ValueError(f"loss '{self.loss_name}' needs num_classes >= 2, got {num_classes!r}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        #: top-1 accuracy of the last forward (classification losses: over the whole batch; query-
        #: based losses: classification of the queries), or None where the loss defines none.
        self.last_accuracy: Optional[torch.Tensor] = None

    # subclasses implement compute(x, labels, split) -> (loss, accuracy or None)
    def compute(self, x: torch.Tensor, labels: torch.Tensor, split: ClassSplit):  # pragma: no cover
        raise NotImplementedError

    def check_batch(self, labels: torch.Tensor) -> ClassSplit:
        split = class_split(labels)
        req = self.requirements
        if req.min_per_class > 1:
            short = split.counts < req.min_per_class
            if bool(short.any()):
                bad = split.classes[short].tolist()
                what = f"class {bad[0]} has" if len(bad) == 1 else f"classes {_short_list(bad)} have"
                raise ValueError(
                    f"loss '{self.loss_name}': {what} fewer than {req.min_per_class} samples in the batch; "
                    f"this loss needs >= {req.min_per_class} samples of every class it sees "
                    "(use the 'balanced' or 'mp_random' sampler)"
                )
        if req.needs_multiple_classes and split.classes.numel() < 2:
            raise ValueError(
                f"loss '{self.loss_name}': the batch holds a single class ({split.classes[0].item()}); "
                "this loss takes its negatives from other classes in the batch and needs >= 2 classes"
            )
        return split

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, y = validate_inputs(embeddings, labels, self.embed_dim, self.num_classes, self.loss_name)
        split = self.check_batch(y)
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            loss, acc = self.compute(x, y, split)
        self.last_accuracy = None if acc is None else acc.detach()
        return loss

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}"
