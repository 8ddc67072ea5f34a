"""Training losses for speaker embeddings.

``build(name, embed_dim, num_classes, **hparams)`` returns a ``torch.nn.Module`` whose
``forward(embeddings [N, D], labels [N])`` returns a scalar loss and sets ``last_accuracy``
(a float tensor, or ``None`` where the loss defines no accuracy). See ``docs/losses.md``.

==============  =======================================  =========================================
name            family                                    hparams (defaults)
==============  =======================================  =========================================
softmax         linear + bias + cross-entropy             --
amsoftmax       CosFace / AM-softmax                      scale=30, margin=0.4
aamsoftmax      ArcFace / AAM-softmax                     scale=30, margin=0.2, easy_margin=False
triplet         triplet, in-batch mining                  margin=0.1, mining='hardest', negatives='all',
                                                          hard_rank=0, hard_prob=1.0
proto           prototypical (-squared Euclidean)         --
angleproto      angular prototypical                      init_w=10, init_b=-5
ge2e            generalised end-to-end (softmax)          init_w=10, init_b=-5, normalize=True, min_cosine=None
proxy_nca       Proxy-NCA                                 scale=1, squared=False, label_smoothing=None
proxy_anchor    Proxy-Anchor                              scale=50, margin=0.15
mp              Masked Proxy                              init_w=10, init_b=-1, reg_lambda=0.5,
                                                          normalize_centroids=False
mmp             Multinomial Masked Proxy                  init_w=10, init_b=-1, reg_lambda=0.5,
                                                          normalize_centroids=True
==============  =======================================  =========================================
"""
from __future__ import annotations

import inspect
from typing import Dict, Tuple, Type

import torch

from .classification import AAMSoftmax, AMSoftmax, Softmax
from .common import LossBase, SamplingRequirements
from .masked_proxy import MaskedProxy, MultinomialMaskedProxy
from .prototypical import GE2E, AngularPrototypical, Prototypical
from .proxy import ProxyAnchor, ProxyNCA
from .triplet import Triplet

_REGISTRY: Dict[str, Type[LossBase]] = {
    "softmax": Softmax,
    "amsoftmax": AMSoftmax,
    "aamsoftmax": AAMSoftmax,
    "triplet": Triplet,
    "proto": Prototypical,
    "angleproto": AngularPrototypical,
    "ge2e": GE2E,
    "proxy_nca": ProxyNCA,
    "proxy_anchor": ProxyAnchor,
    "mp": MaskedProxy,
    "mmp": MultinomialMaskedProxy,
}

#: the loss names :func:`build` accepts
LOSS_NAMES: Tuple[str, ...] = tuple(_REGISTRY)

#: other spellings users type; they resolve to a name in LOSS_NAMES
ALIASES: Dict[str, str] = {
    "cosface": "amsoftmax",
    "am_softmax": "amsoftmax",
    "arcface": "aamsoftmax",
    "aam_softmax": "aamsoftmax",
    "prototypical": "proto",
    "angular_prototypical": "angleproto",
    "proxynca": "proxy_nca",
    "proxyanchor": "proxy_anchor",
}

#: sampler each loss was trained with in the seeds: (kind for pysv.data.samplers.build_sampler, kwargs).
#: MP-Balance / MMP-Balance = mp / mmp with ("balanced", {"utts_per_spk": 2}).
RECOMMENDED_SAMPLER: Dict[str, Tuple[str, dict]] = {
    "softmax": ("shuffle", {}),
    "amsoftmax": ("shuffle", {}),
    "aamsoftmax": ("shuffle", {}),
    "triplet": ("balanced", {"utts_per_spk": 2}),
    "proto": ("balanced", {"utts_per_spk": 2}),
    "angleproto": ("balanced", {"utts_per_spk": 2}),
    "ge2e": ("balanced", {"utts_per_spk": 3}),
    "proxy_nca": ("shuffle", {}),
    "proxy_anchor": ("shuffle", {}),
    "mp": ("mp_random", {"utts_choices": (2, 3)}),
    "mmp": ("mp_random", {"utts_choices": (2, 3)}),
}


def _resolve(name: str) -> Type[LossBase]:
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return _REGISTRY[key]


def hparam_names(name: str) -> Tuple[str, ...]:
    """The hparams ``build(name, ...)`` accepts."""
    params = list(inspect.signature(_resolve(name).__init__).parameters)
    return tuple(p for p in params if p not in ("self", "embed_dim", "num_classes"))


def default_hparams(name: str) -> Dict[str, object]:
    """The hparams of loss ``name`` with their defaults."""
    sig = inspect.signature(_resolve(name).__init__)
    return {k: sig.parameters[k].default for k in hparam_names(name)}


def _check_hparams(name: str, hparams: dict) -> None:
    allowed = hparam_names(name)
    unknown = [k for k in hparams if k not in allowed]
    if unknown:
        raise TypeError(
            f"loss {name!r} got unknown hparam(s) {', '.join(repr(k) for k in unknown)}; "
            f"it accepts: {', '.join(allowed) if allowed else '(none)'}"
        )


def build(name: str, embed_dim: int, num_classes: int, **hparams) -> torch.nn.Module:
    """Build loss ``name`` (one of :data:`LOSS_NAMES`) for ``embed_dim``-dimensional embeddings and
    ``num_classes`` training speakers. Unknown hparams raise ``TypeError`` naming the key."""
    cls = _resolve(name)
    _check_hparams(name, hparams)
    return cls(embed_dim, num_classes, **hparams)


def sampling_requirements(name: str, **hparams) -> SamplingRequirements:
    """``(min_per_class, needs_multiple_classes)`` that loss ``name`` needs from every batch.

    ``min_per_class``: every class present in a batch must have at least this many samples
    (1: softmax family, proxy_nca, proxy_anchor; 2: triplet, proto, angleproto, ge2e (the seeds
    train GE2E with 3), mp, mmp). ``needs_multiple_classes``: the loss takes its negatives from the
    other classes of the batch (triplet, proto, angleproto, ge2e). The hparams are those of
    :func:`build` (validated the same way; none of them changes the requirement today).
    """
    cls = _resolve(name)
    _check_hparams(name, hparams)
    return cls.requirements


def recommended_sampler(name: str) -> Tuple[str, dict]:
    """``(kind, kwargs)`` for :func:`pysv.data.samplers.build_sampler` matching the seeds' setup."""
    kind, kw = RECOMMENDED_SAMPLER[_resolve(name).loss_name]
    return kind, dict(kw)


__all__ = [
    "LOSS_NAMES",
    "ALIASES",
    "RECOMMENDED_SAMPLER",
    "SamplingRequirements",
    "LossBase",
    "build",
    "sampling_requirements",
    "recommended_sampler",
    "hparam_names",
    "default_hparams",
    "Softmax",
    "AMSoftmax",
    "AAMSoftmax",
    "Triplet",
    "Prototypical",
    "AngularPrototypical",
    "GE2E",
    "ProxyNCA",
    "ProxyAnchor",
    "MaskedProxy",
    "MultinomialMaskedProxy",
]
