"""An ensemble of trained encoders as one encoder: the embedding is the concatenation of the members'
length-normalised embeddings divided by sqrt(N), so that

    cos(ensemble(a), ensemble(b)) = mean over members of cos(member(a), member(b))

(score averaging, the usual fusion of speaker-verification systems), while every other back-end
(mean subtraction, LDA/PLDA, AS-norm) and every consumer of a ``final.pt`` (stage 3, ``pysv.load``,
TorchScript / ONNX export) sees one ordinary encoder. ``pysv.bin.train`` builds one from members it
trains with different seeds when a config sets ``train.ensemble`` (RESULTS.md §8f).

    model = pysv.models.build("ensemble", members=[{"name": "thin_resnet34", "hparams": {...}}, ...])

The members must take the same input (all feature encoders of one ``feat_dim``; the feature config
itself is the run's ``data.feature``, shared by construction).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pysv.models import register


@register("ensemble")
class EmbeddingEnsemble(nn.Module):
    """Members' L2-normalised embeddings, concatenated and scaled by 1/sqrt(N).

    Hyper-parameters:
      members: the encoders, each ``{"name": <registered encoder>, "hparams": {...}}`` (at least 2;
        default: two Thin-ResNet34 with their defaults, the recommended small-data recipe's encoder).
    """

    input_kind = "features"

    def __init__(self, members: Sequence[Dict[str, Any]] = ({"name": "thin_resnet34"}, {"name": "thin_resnet34"})):
        super().__init__()
        from pysv.models import build, input_kind, resolve_hparams

        specs: List[Dict[str, Any]] = []
        for i, m in enumerate(members):
            if not isinstance(m, dict) or "name" not in m:
                raise ValueError(f"ensemble member {i} must be a mapping with 'name' (and 'hparams'), got {m!r}")
            if m["name"] == "ensemble":
                raise ValueError(f"ensemble member {i} is itself an ensemble; list its members instead")
            if input_kind(m["name"]) != "features":
                raise ValueError(f"ensemble member {i} ({m['name']}) takes waveforms; ensembles take "
                                 "feature encoders of one feat_dim")
            specs.append({"name": m["name"], "hparams": resolve_hparams(m["name"], dict(m.get("hparams") or {}))})
        if len(specs) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(specs)}")
        self.members = nn.ModuleList(build(s["name"], **s["hparams"]) for s in specs)
        dims = {int(m.feat_dim) for m in self.members}
        if len(dims) != 1:
            raise ValueError(f"ensemble members take different feature dims {sorted(dims)}; they must share one")
        self.feat_dim = dims.pop()
        self.embed_dim = sum(int(m.embed_dim) for m in self.members)
        self.scale = 1.0 / math.sqrt(len(self.members))
        # channels-last only where every member prefers it
        self.prefers_channels_last = all(getattr(m, "prefers_channels_last", False) for m in self.members)

    @classmethod
    def default_feat_dim(cls) -> Optional[int]:
        """The feature dim of the default members (what ``pysv.models.default_feat_dim`` reports)."""
        from pysv.models import default_feat_dim

        return default_feat_dim(cls.__init__.__defaults__[0][0]["name"])

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.cat([F.normalize(m(x, lengths=lengths), dim=-1) for m in self.members], dim=-1) * self.scale
