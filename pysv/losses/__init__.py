"""Training losses for speaker embeddings, one file per family; each loss registers itself by name.

``build(name, embed_dim, num_classes, **hparams)`` returns a ``torch.nn.Module`` whose
``forward(embeddings [N, D], labels [N])`` returns a scalar loss and sets ``last_accuracy``
(a float tensor, or ``None`` where the loss defines no accuracy). See ``docs/losses.md``.

Adding a loss is one file in this package holding a :class:`LossBase` subclass decorated with
``@pysv.losses.register("name")`` (``aliases=`` for other spellings): modules here are imported
automatically. The contract: ``__init__(embed_dim, num_classes, **hparams)`` (hyper-parameters are
its keyword arguments), ``compute(x, labels, split)`` called by :meth:`LossBase.forward`; class
attributes ``requirements`` (what a batch must hold) and ``recommended_sampler``.

Names, families and defaults: ``names()``, ``default_hparams(name)`` and ``docs/losses.md``.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from pysv.utils.registry import Registry

from .common import LossBase, SamplingRequirements

LOSSES = Registry("loss", __name__, skip=("embed_dim", "num_classes"))


def register(name: str, aliases: Tuple[str, ...] = ()):
    """Class decorator: make a :class:`LossBase` subclass buildable as ``name`` (and ``aliases``)."""
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, LossBase)):
            raise TypeError(f"@pysv.losses.register({name!r}): {cls!r} is not a pysv.losses.LossBase subclass")
        cls.loss_name = name
        return LOSSES.register(name, aliases)(cls)
    return add


def names() -> Tuple[str, ...]:
    """The registered loss names."""
    return LOSSES.names()


def hparam_names(name: str) -> Tuple[str, ...]:
    """The hparams ``build(name, ...)`` accepts."""
    return LOSSES.hparam_names(name)


def default_hparams(name: str) -> Dict[str, Any]:
    """The hparams of loss ``name`` with their defaults."""
    return LOSSES.default_hparams(name)


def build(name: str, embed_dim: int, num_classes: int, **hparams) -> torch.nn.Module:
    """Build loss ``name`` (a registered name or alias) for ``embed_dim``-dimensional embeddings
    and ``num_classes`` training speakers. Unknown hparams raise ``TypeError`` naming the key."""
    return LOSSES.build(name, embed_dim, num_classes, **hparams)


def sampling_requirements(name: str, **hparams) -> SamplingRequirements:
    """``(min_per_class, needs_multiple_classes)`` that loss ``name`` needs from every batch.

    ``min_per_class``: every class present in a batch must have at least this many samples
    (1: softmax family, proxy_nca, proxy_anchor; 2: triplet, proto, angleproto, ge2e (its paper
    trains with 3), mp, mmp). ``needs_multiple_classes``: the loss takes its negatives from the
    other classes of the batch (triplet, proto, angleproto, ge2e). The hparams are those of
    :func:`build` (validated the same way; none of them changes the requirement today).
    """
    LOSSES.check_hparams(name, hparams)
    return LOSSES.get(name).requirements


def recommended_sampler(name: str) -> Tuple[str, dict]:
    """``(kind, kwargs)`` for :func:`pysv.data.samplers.build_sampler` matching the papers' setup."""
    kind, kw = LOSSES.get(name).recommended_sampler
    return kind, dict(kw)


__all__ = ["LOSSES", "register", "names", "build", "sampling_requirements", "recommended_sampler",
           "hparam_names", "default_hparams", "LossBase", "SamplingRequirements"]

LOSSES.discover()
