"""Energy voice activity detection as Kaldi's ``compute-vad`` and ``select-voiced-frames``.

Kaldi (``src/ivector/voice-activity-detection.cc``, ``ComputeVadEnergy``) marks frame ``t`` of an
utterance of ``T`` frames voiced when, with ``log_energy`` the first feature column (C0 of MFCCs
computed with ``--use-energy=true``, the raw log energy of the frame)::

    threshold = energy_threshold + energy_mean_scale * mean(log_energy)
    window    = [t - frames_context, t + frames_context] clipped to [0, T)
    num       = #{j in window : log_energy[j] > threshold}
    den       = #window
    voiced[t] = num >= den * proportion_threshold

The defaults are those of Kaldi's VoxCeleb x-vector recipe (``egs/voxceleb/v2/conf/vad.conf``):
``--vad-energy-threshold=5.5 --vad-energy-mean-scale=0.5 --vad-frames-context=2
--vad-proportion-threshold=0.12``. As in that recipe, frames are dropped after deltas and CMVN have
been computed on the whole utterance (``apply-cmvn-sliding ... | select-voiced-frames``).

The log energy comes from the same frames as the features (:func:`frame_log_energy`): the
extractor's frame length, shift, ``snip_edges``, DC removal, ``raw_energy`` and ``energy_floor``,
on the same dithered waveform, so mask and feature frames correspond one to one, whatever the
feature type (an fbank config without ``use_energy`` gets its energy column computed aside).
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch

from pysv.features import FeatureExtractor, resolve_config

__all__ = ["VAD_DEFAULTS", "VAD_METHODS", "energy_vad", "select_voiced", "frame_log_energy",
           "apply_energy_vad", "compute_with_vad", "vad_options"]

#: Kaldi VoxCeleb recipe options of ``compute-vad`` (``egs/voxceleb/v2/conf/vad.conf``)
VAD_DEFAULTS: Dict[str, Any] = {"energy_threshold": 5.5, "energy_mean_scale": 0.5, "frames_context": 2,
                                "proportion_threshold": 0.12}
#: accepted values of the ``vad`` options of stage 1 and of inference (``None`` / ``"none"``: no VAD)
VAD_METHODS = ("none", "energy")

# options that only fbank / only mfcc configs have (dropped from the energy-only config)
_TYPE_KEYS = ("num_ceps", "cepstral_lifter", "use_log_fbank", "use_power")
_ENERGY_EXTRACTORS: "weakref.WeakKeyDictionary[FeatureExtractor, FeatureExtractor]" = weakref.WeakKeyDictionary()


def energy_vad(log_energy: np.ndarray, energy_threshold: float = 5.5, energy_mean_scale: float = 0.5,
               frames_context: int = 2, proportion_threshold: float = 0.12) -> np.ndarray:
    """Kaldi ``compute-vad`` of a per-frame log energy ``[T]``: the boolean voiced mask ``[T]``.

    Vectorised with cumulative sums; the same decisions as Kaldi's loop over the (edge-clipped)
    window of ``2 * frames_context + 1`` frames.
    """
    e = np.asarray(log_energy, dtype=np.float64).reshape(-1)
    T = e.size
    if T == 0:
        return np.zeros(0, dtype=bool)
    if int(frames_context) != frames_context or frames_context < 0:
        raise ValueError(f"frames_context must be an integer >= 0, got {frames_context!r}")
    if not 0.0 < proportion_threshold < 1.0:
        raise ValueError(f"proportion_threshold must be in (0, 1), got {proportion_threshold!r}")
    if energy_mean_scale < 0.0:
        raise ValueError(f"energy_mean_scale must be >= 0, got {energy_mean_scale!r}")
    # Kaldi's energies and threshold are float (BaseFloat); compare in float32 as it does
    e32 = e.astype(np.float32)
    threshold = np.float32(energy_threshold)
    if energy_mean_scale != 0.0:
        threshold = np.float32(threshold + np.float32(energy_mean_scale) * np.float32(e32.sum(dtype=np.float32) / T))
    above = np.concatenate([[0], np.cumsum(e32 > threshold)])
    t = np.arange(T)
    c = int(frames_context)
    lo, hi = np.maximum(t - c, 0), np.minimum(t + c + 1, T)
    num = above[hi] - above[lo]
    den = hi - lo
    return num >= den * float(np.float32(proportion_threshold))


def select_voiced(feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Kaldi ``select-voiced-frames``: the rows of ``feats`` ``[T, D]`` where ``mask`` ``[T]`` is true.

    When no frame is voiced all frames are kept (Kaldi reports an error and drops the utterance;
    keeping it lets every utterance of a data dir have features and an embedding).
    """
    feats = np.asarray(feats)
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if mask.shape[0] != feats.shape[0]:
        raise ValueError(f"VAD mask has {mask.shape[0]} frames but the features have {feats.shape[0]}")
    if not mask.any():
        return feats
    return np.ascontiguousarray(feats[mask])


def vad_options(method: Optional[str] = "energy", **overrides: Any) -> Optional[Dict[str, Any]]:
    """Resolved VAD options (``method`` plus :data:`VAD_DEFAULTS` updated with ``overrides``);
    ``None`` for ``method`` ``None`` / ``"none"``."""
    m = "none" if method is None else str(method).lower()
    if m not in VAD_METHODS:
        raise ValueError(f"vad must be one of {VAD_METHODS}, got {method!r}")
    if m == "none":
        if overrides:
            raise ValueError(f"VAD options {sorted(overrides)} given without vad=energy")
        return None
    unknown = sorted(set(overrides) - set(VAD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown VAD option(s) {unknown}; valid options: {sorted(VAD_DEFAULTS)}")
    opts: Dict[str, Any] = {"method": m, **VAD_DEFAULTS, **overrides}
    for k in ("energy_threshold", "energy_mean_scale", "proportion_threshold"):
        opts[k] = float(opts[k])
    opts["frames_context"] = int(opts["frames_context"])
    energy_vad(np.zeros(1), **{k: opts[k] for k in VAD_DEFAULTS})  # validates the values
    return opts


def _energy_extractor(extractor: FeatureExtractor) -> FeatureExtractor:
    """An fbank extractor with the framing of ``extractor`` whose base column 0 is the log energy."""
    if extractor not in _ENERGY_EXTRACTORS:
        cfg = {k: v for k, v in extractor.config.items() if k not in _TYPE_KEYS}
        cfg.update(name=f"{extractor.name}-energy", type="fbank", use_energy=True, dither=0.0,
                   delta_order=0, cmvn="none")
        _ENERGY_EXTRACTORS[extractor] = FeatureExtractor(resolve_config(cfg))
    return _ENERGY_EXTRACTORS[extractor]


def _base_and_energy(extractor: FeatureExtractor, x: np.ndarray, seed: Optional[int]):
    """Base features ``[T, base_dim]`` and log energy ``[T]`` of prepared samples, from one dithered waveform."""
    w = extractor._dithered(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None], seed)
    base = extractor.base_torch(w)[0]
    if extractor.config["use_energy"]:  # fbank and MFCC: column 0 is then the log energy
        energy = base[:, 0]
    else:
        energy = _energy_extractor(extractor).base_torch(w)[0, :, 0]
    return base.numpy(), energy.numpy().astype(np.float32)


def frame_log_energy(samples, sample_rate: int, extractor: FeatureExtractor,
                     seed: Optional[int] = None) -> np.ndarray:
    """Per-frame log energy ``[T]`` of an utterance, framed as ``extractor``'s features (``T`` =
    ``extractor.num_frames``): Kaldi's C0 with ``--use-energy=true`` (before deltas and CMVN), with
    the extractor's ``raw_energy``, ``energy_floor`` and dither (``seed`` as in ``extractor(..., seed=)``)."""
    x = extractor.prepare(samples, sample_rate)
    return _base_and_energy(extractor, x, seed)[1]


def compute_with_vad(extractor: FeatureExtractor, samples, sample_rate: int, vad: Optional[Mapping[str, Any]],
                     seed: Optional[int] = None):
    """Features of one utterance and its voiced mask: ``(feats [T, dim], mask [T] bool)``; ``feats``
    are all ``T`` frames (deltas and CMVN over the whole utterance), ``mask`` is all true for ``vad``
    ``None``; ``vad`` is a :func:`vad_options` dict. The features equal ``extractor(samples, sample_rate, seed)``."""
    x = extractor.prepare(samples, sample_rate)
    if vad is None:
        feats = extractor.postprocess(extractor.compute_base(x, seed=seed))
        return feats, np.ones(feats.shape[0], dtype=bool)
    base, energy = _base_and_energy(extractor, x, seed)
    mask = energy_vad(energy, **{k: vad[k] for k in VAD_DEFAULTS})
    return extractor.postprocess(base), mask


def apply_energy_vad(samples, sample_rate: int, extractor: FeatureExtractor, seed: Optional[int] = None,
                     **options: Any) -> np.ndarray:
    """Features of one utterance with only its voiced frames (``compute-vad`` then
    ``select-voiced-frames``; all frames when none is voiced). ``options`` override :data:`VAD_DEFAULTS`."""
    feats, mask = compute_with_vad(extractor, samples, sample_rate, vad_options("energy", **options), seed=seed)
    return select_voiced(feats, mask)
