"""SpecAugment: time and frequency masking of features, and its builder from the ``data.spec_augment``
config section (also the section check the waveform augmentation builder shares)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["SpecAugment", "build_spec_augment", "enabled_section", "SPEC_AUGMENT_KEYS"]

SPEC_AUGMENT_KEYS = ("enabled", "time_masks", "time_width", "freq_masks", "freq_width", "mask_value", "prob")


class SpecAugment:
    """Time and frequency masking on features ``[T, D]`` (or ``[B, T, D]``, masks drawn per item).

    MLA-SAP §4.1 trains with "SpecAugment ... time and frequency masking" (Park et
    al. 2019): each of ``time_masks`` masks has width ``t ~ U{0..time_width}`` and start
    ``t0 ~ U{0..T-t}``; likewise ``freq_masks`` masks of width ``f ~ U{0..freq_width}`` over the D
    bins. Masks may overlap.
    Masked cells take ``mask_value``: a number, or ``"mean"`` (the item's mean, which is 0 for
    mean-normalised features as in the paper). ``prob`` = probability an item is masked at all.
    """

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8,
                 mask_value: Union[float, str] = "mean", prob: float = 1.0):
        for name, v in (("time_masks", time_masks), ("time_width", time_width),
                        ("freq_masks", freq_masks), ("freq_width", freq_width)):
            if int(v) != v or v < 0:
                raise ValueError(f"spec_augment {name} must be a non-negative integer, got {v!r}")
        if not (mask_value == "mean" or isinstance(mask_value, (int, float))):
            raise ValueError(f"spec_augment mask_value must be a number or 'mean', got {mask_value!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"spec_augment prob must be in [0, 1], got {prob}")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.mask_value = mask_value
        self.prob = float(prob)

    def __repr__(self) -> str:
        return (f"SpecAugment(time_masks={self.time_masks}, time_width={self.time_width}, "
                f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"mask_value={self.mask_value!r}, prob={self.prob})")

    @staticmethod
    def _band(length: int, n: int, width: int, rng: np.random.Generator, batch: int) -> np.ndarray:
        if n == 0 or length == 0:
            return np.zeros((batch, length), dtype=bool)
        w = rng.integers(0, min(width, length) + 1, size=(batch, n))
        s = rng.integers(0, length - w + 1)  # per-mask upper bound T - w (inclusive)
        ar = np.arange(length)
        return ((ar >= s[..., None]) & (ar < (s + w)[..., None])).any(axis=1)

    def make_masks(self, num_frames: int, dim: int, rng: np.random.Generator,
                   batch: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Boolean masks ``time [batch, T]`` and ``freq [batch, D]`` (True = masked)."""
        tm = self._band(num_frames, self.time_masks, self.time_width, rng, batch)
        fm = self._band(dim, self.freq_masks, self.freq_width, rng, batch)
        if self.prob < 1.0:
            keep = rng.random(batch) >= self.prob
            tm[keep] = False
            fm[keep] = False
        return tm, fm

    def __call__(self, feats, rng: Optional[np.random.Generator] = None):
        """Return a masked copy of ``feats`` (torch tensor or numpy array, ``[T, D]`` or ``[B, T, D]``)."""
        if rng is None:
            rng = np.random.default_rng()
        single = feats.ndim == 2
        if feats.ndim not in (2, 3):
            raise ValueError(f"SpecAugment expects [T, D] or [B, T, D], got shape {tuple(feats.shape)}")
        x = feats[None] if single else feats
        b, t, d = x.shape
        tm, fm = self.make_masks(t, d, rng, batch=b)
        mask = tm[:, :, None] | fm[:, None, :]
        if isinstance(x, np.ndarray):
            fill = x.mean(axis=(1, 2), keepdims=True) if self.mask_value == "mean" else self.mask_value
            out = np.where(mask, fill, x).astype(x.dtype, copy=False)
        else:
            m = torch.from_numpy(mask).to(x.device)
            if self.mask_value == "mean":
                fill = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
                out = torch.where(m, fill, x)
            else:
                out = x.masked_fill(m, float(self.mask_value))
        return out[0] if single else out


def enabled_section(cfg: Optional[Mapping[str, Any]], allowed: Sequence[str],
                    section: str) -> Optional[Mapping[str, Any]]:
    """The config section ``cfg`` checked against its ``allowed`` keys (an unknown key raises naming
    it), or None when it is off: None / empty / False / ``enabled: false``."""
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise ValueError(f"'{section}' config must be a mapping, got {type(cfg).__name__}")
    for k in cfg:
        if k not in allowed:
            raise ValueError(f"unknown key '{k}' in '{section}' config (allowed: {', '.join(allowed)})")
    return cfg if cfg.get("enabled", True) else None


def build_spec_augment(cfg: Optional[Mapping[str, Any]]) -> Optional[SpecAugment]:
    """Build :class:`SpecAugment` from the ``spec_augment:`` yaml section; None when it is off."""
    cfg = enabled_section(cfg, SPEC_AUGMENT_KEYS, "spec_augment")
    if cfg is None:
        return None
    return SpecAugment(**{k: v for k, v in cfg.items() if k != "enabled"})
