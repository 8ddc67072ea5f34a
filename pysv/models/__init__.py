"""Speaker-embedding encoders, one file per system; each registers itself by name.

    model = pysv.models.build(name, **hparams)
    emb = model(x)                    # x: [batch, frames, feat_dim] ([batch, samples] for waveform encoders)
    emb = model(x, lengths=lengths)   # padded batch; lengths = valid frames / samples per row

Built in (see REFERENCES.md): ``thin_resnet34`` (MP/MMP), ``xvector`` and ``saep`` (SAEP),
``mla_resnet34`` (MLA-SAP), ``rawnet2`` (RawNet2). :func:`names` lists what is registered.

Adding an encoder is one file in this package holding a class decorated with
``@pysv.models.register("name")``: modules here are imported automatically. The contract:
``forward(x, lengths=None)``; attributes ``embed_dim``, ``input_kind`` ('features' | 'waveform') and
``feat_dim`` (None for waveform encoders); hyper-parameters are the keyword arguments of
``__init__`` (their defaults are what a run records when a config leaves them out). Optional class
attributes: ``prefers_channels_last`` (2-D CNNs; the trainer converts the weights) and a method
``post_embedding_parameters()`` (layers used only after the embedding, see :func:`count_parameters`).
Unknown hyper-parameters raise ``TypeError`` naming the key; invalid values ``ValueError``.

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

from typing import Any, Dict, Iterator, Optional, Tuple

import torch.nn as nn

from pysv.utils.registry import Registry

ENCODERS = Registry("encoder", __name__)
#: class decorator ``@register("name")`` of an encoder
register = ENCODERS.register

__all__ = ["ENCODERS", "register", "build", "names", "input_kind", "default_feat_dim", "hparam_names",
           "resolve_hparams", "count_parameters"]

_LIST_HPARAMS = ("channels", "layers", "filters", "blocks")


def names() -> Tuple[str, ...]:
    """The registered encoder names."""
    return ENCODERS.names()


def input_kind(name: str) -> str:
    """'features' (``[batch, frames, feat_dim]``) or 'waveform' (``[batch, samples]``)."""
    return ENCODERS.get(name).input_kind


def default_feat_dim(name: str) -> Optional[int]:
    """Feature dim an encoder expects by default: its ``feat_dim`` default (None for waveform encoders;
    an encoder without that hyper-parameter, e.g. ``ensemble``, may say it with a ``default_feat_dim``
    class method)."""
    hook = getattr(ENCODERS.get(name), "default_feat_dim", None)
    return hook() if callable(hook) else ENCODERS.default_hparams(name).get("feat_dim")


def hparam_names(name: str) -> Tuple[str, ...]:
    """Hyper-parameters ``build(name, ...)`` accepts."""
    return ENCODERS.hparam_names(name)


def resolve_hparams(name: str, hparams: Dict[str, Any]) -> Dict[str, Any]:
    """Every hyper-parameter of encoder ``name`` (given values over the defaults), as recorded in a run."""
    return ENCODERS.resolve_hparams(name, hparams)


def build(name: str, **hparams) -> nn.Module:
    """Build encoder ``name`` with ``hparams`` (all optional; defaults follow the papers)."""
    ENCODERS.check_hparams(name, hparams)
    for k in _LIST_HPARAMS:
        if k in hparams and isinstance(hparams[k], (str, int)):
            raise ValueError(f"hyper-parameter {k!r} of {name!r} must be a list, got {hparams[k]!r}")
    return ENCODERS.build(name, **hparams)


def _post_embedding(model: nn.Module) -> Iterator[nn.Parameter]:
    fn = getattr(model, "post_embedding_parameters", None)
    return fn() if fn is not None else iter(())


def count_parameters(model: nn.Module, upto_embedding: bool = False) -> int:
    """Number of parameters; ``upto_embedding`` leaves out layers used only after the embedding
    (x-vector segment7, SAEP dense3), the convention under which SAEP reports its sizes."""
    total = sum(p.numel() for p in model.parameters())
    if upto_embedding:
        total -= sum(p.numel() for p in _post_embedding(model))
    return total


ENCODERS.discover()
