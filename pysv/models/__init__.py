"""Speaker-embedding encoders.

    model = pysv.models.build(name, **hparams)
    emb = model(x)                    # x: [batch, frames, feat_dim] ([batch, samples] for rawnet2)
    emb = model(x, lengths=lengths)   # padded batch; lengths = valid frames / samples per row

Names (``MODEL_NAMES``): ``thin_resnet34`` (seeds 000/002), ``xvector`` and ``saep`` (seed 001),
``mla_resnet34`` (seed 003), ``rawnet2`` (seed 004). Every module has ``embed_dim``,
``input_kind`` ('features' | 'waveform'), ``feat_dim`` (None for rawnet2) and ``hparams`` (the
resolved hyper-parameters, for recording in a run's config). Unknown hyper-parameters raise
``TypeError`` naming the key; invalid values raise ``ValueError`` naming the key.

``xvector`` and ``saep`` take their embedding from a hidden layer (x-vector: segment6 affine;
SAEP: second-to-last dense layer), while the loss is trained on the layer above it. Their
``forward`` therefore returns the training output in ``train()`` mode and the embedding in
``eval()`` mode (same size); ``embed()`` / ``train_output()`` select one explicitly. The other
encoders return the same tensor in both modes.

Embedding invariance (eval mode): an utterance's embedding does not depend on the other rows of
its batch. With ``lengths``, every encoder zeroes padded frames before each time-mixing
convolution, masks attention / pooling / FMS / SE averages, and packs the GRU, so a padded row
gives the embedding of the unpadded utterance up to float rounding (tested to 1e-4 relative).
"""
from __future__ import annotations

import inspect
from typing import Dict, Iterator, Optional

import torch.nn as nn

from .mla_resnet import MLAResNet34
from .rawnet2 import RawNet2
from .saep import SAEP
from .thin_resnet import ThinResNet34
from .xvector import XVector

__all__ = ["MODEL_NAMES", "build", "input_kind", "default_feat_dim", "hparam_names", "count_parameters",
           "ThinResNet34", "XVector", "SAEP", "MLAResNet34", "RawNet2"]

_REGISTRY: Dict[str, type] = {
    "thin_resnet34": ThinResNet34,
    "xvector": XVector,
    "saep": SAEP,
    "mla_resnet34": MLAResNet34,
    "rawnet2": RawNet2,
}
MODEL_NAMES = tuple(_REGISTRY)

_DEFAULT_FEAT_DIM: Dict[str, Optional[int]] = {
    "thin_resnet34": 40, "xvector": 30, "saep": 90, "mla_resnet34": 64, "rawnet2": None}


def _cls(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name]


def input_kind(name: str) -> str:
    """'features' (``[batch, frames, feat_dim]``) or 'waveform' (``[batch, samples]``)."""
    return _cls(name).input_kind


def default_feat_dim(name: str) -> Optional[int]:
    """Feature dim an encoder expects by default (None for waveform encoders)."""
    _cls(name)
    return _DEFAULT_FEAT_DIM[name]


def hparam_names(name: str) -> tuple:
    """Hyper-parameters ``build(name, ...)`` accepts."""
    return tuple(p for p in inspect.signature(_cls(name).__init__).parameters if p != "self")


def build(name: str, **hparams) -> nn.Module:
    """Build encoder ``name`` with ``hparams`` (all optional; defaults follow the papers)."""
    cls = _cls(name)
    allowed = hparam_names(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise TypeError(f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for model "
                        f"{name!r}; accepted: {', '.join(allowed)}")
    for k in ("channels", "layers", "filters", "blocks"):
        if k in hparams and isinstance(hparams[k], (str, int)):
            raise ValueError(f"hyper-parameter {k!r} of {name!r} must be a list, got {hparams[k]!r}")
    model = cls(**hparams)
    model.model_name = name
    return model


def _post_embedding(model: nn.Module) -> Iterator[nn.Parameter]:
    fn = getattr(model, "post_embedding_parameters", None)
    return fn() if fn is not None else iter(())


def count_parameters(model: nn.Module, upto_embedding: bool = False) -> int:
    """Number of parameters; ``upto_embedding`` leaves out layers used only after the embedding
    (x-vector segment7, SAEP dense3), the convention under which seed 001 reports its sizes."""
    total = sum(p.numel() for p in model.parameters())
    if upto_embedding:
        total -= sum(p.numel() for p in _post_embedding(model))
    return total
