"""Fixed-length crop windows shared by training (random crops) and extraction (even / sliding crops).

All functions work on a length along one axis (frames for features, samples for waveforms), so
the same rule applies to both. Index construction is vectorized (``np.arange`` broadcasting),
never a Python loop over frames.

The rule for utterances shorter than the crop (``length_total < crop_len``): the utterance is
**wrap-repeated** from its beginning until it is ``crop_len`` long (``x[0], ..., x[n-1], x[0], ...``),
as voxceleb_trainer's ``numpy.pad(audio, ..., 'wrap')``; the crop start is then always 0. Nothing is
zero-padded, so a short utterance never contributes silence the model could key on.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "random_crop",
    "crop_indices",
    "crop_or_wrap",
    "gather_crops",
    "even_crops",
    "sliding_crops",
    "frames_to_samples",
]


def _check(length_total: int, crop_len: int) -> None:
    if int(crop_len) <= 0:
        raise ValueError(f"crop length must be positive, got {crop_len}")
    if int(length_total) <= 0:
        raise ValueError(f"cannot crop an empty utterance (length {length_total})")


def random_crop(length_total: int, crop_len: int, rng: np.random.Generator) -> int:
    """Start of a uniformly random crop: an integer in ``[0, length_total - crop_len]`` (inclusive).

    Returns 0 when the utterance is not longer than the crop (it is then wrap-repeated,
    see :func:`crop_or_wrap`). # MP-2021 §4.3: fixed-length random segments during training
    """
    _check(length_total, crop_len)
    slack = int(length_total) - int(crop_len)
    if slack <= 0:
        return 0
    return int(rng.integers(0, slack + 1))


def crop_indices(length_total: int, starts, crop_len: int) -> np.ndarray:
    """Index matrix ``[n_crops, crop_len]`` (int64): ``(start + arange(crop_len)) mod length_total``.

    For crops inside the utterance the modulo does nothing; for a short utterance it implements
    the wrap-repeat rule. ``starts`` may be a scalar (returns ``[crop_len]``) or a 1-D array.
    """
    _check(length_total, crop_len)
    starts_arr = np.asarray(starts, dtype=np.int64)
    idx = starts_arr[..., None] + np.arange(int(crop_len), dtype=np.int64)
    if starts_arr.size and (starts_arr.min() < 0 or starts_arr.max() + crop_len > length_total):
        idx %= int(length_total)
    return idx


def crop_or_wrap(x, start: int, crop_len: int, axis: int = 0):
    """``x[start:start + crop_len]`` along ``axis``; wrap-repeats ``x`` when it is shorter than the crop.

    Works on numpy arrays and torch tensors. A crop fully inside ``x`` is a slice (a view, no copy).
    """
    n = x.shape[axis]
    _check(n, crop_len)
    start = int(start)
    if 0 <= start and start + crop_len <= n:
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(start, start + crop_len)
        return x[tuple(sl)]
    idx = crop_indices(n, start, crop_len)
    if isinstance(x, np.ndarray):
        return np.take(x, idx, axis=axis)

    return torch.index_select(x, axis, torch.from_numpy(idx).to(x.device))


def gather_crops(x, starts, crop_len: int, axis: int = 0):
    """Stack several crops of ``x`` in one vectorized gather: ``[n_crops, crop_len, ...rest]``.

    ``axis`` must be 0 (time first: ``[frames, dim]`` features or ``[samples]`` waveform).
    Use with :func:`even_crops` or :func:`sliding_crops` at extraction time.
    """
    if axis != 0:
        raise ValueError("gather_crops expects time on axis 0")
    idx = crop_indices(x.shape[0], np.asarray(starts, dtype=np.int64).reshape(-1), crop_len)
    if isinstance(x, np.ndarray):
        return x[idx]

    return x[torch.from_numpy(idx).to(x.device)]


def even_crops(length_total: int, crop_len: int, n: int = 10) -> np.ndarray:
    """``n`` evenly spaced crop starts covering the whole utterance (first at 0, last at the tail).

    # MP-2021 §4.2: 10 crops "cover the full utterance" (voxceleb_trainer ``loadWAV(evalmode=True)``:
    # ``linspace(0, len - crop, num=10)`` truncated to int). Short utterances: ``n`` zeros (each crop
    # is the wrap-repeated utterance, so all ``n`` are identical, as in voxceleb_trainer).
    """
    _check(length_total, crop_len)
    if n <= 0:
        raise ValueError(f"number of crops must be positive, got {n}")
    slack = int(length_total) - int(crop_len)
    if slack <= 0:
        return np.zeros(n, dtype=np.int64)
    return np.linspace(0, slack, num=n).astype(np.int64)


def sliding_crops(length_total: int, crop_len: int, overlap: float = 0.2) -> np.ndarray:
    """Starts of crops of ``crop_len`` with a fractional ``overlap``, the last one ending at the tail.

    # RawNet2 §4 (RawNet2 test-time augmentation): crops of the training duration with 20 % overlap,
    # embeddings averaged. Hop = ``crop_len - round(overlap * crop_len)``; starts are
    # ``0, hop, 2 hop, ...`` below ``length_total - crop_len``, plus ``length_total - crop_len`` so the
    # tail is always covered (no duplicate crop when the grid already ends there). A short
    # utterance gives the single start 0 (wrap-repeated crop).
    """
    _check(length_total, crop_len)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    slack = int(length_total) - int(crop_len)
    if slack <= 0:
        return np.zeros(1, dtype=np.int64)
    hop = max(1, int(crop_len) - int(round(overlap * crop_len)))
    starts = np.arange(0, slack, hop, dtype=np.int64)
    return np.append(starts, np.int64(slack))


def frames_to_samples(num_frames: int, frame_shift: int = 160, frame_length: int = 400,
                      snip_edges: bool = True) -> int:
    """Samples needed for exactly ``num_frames`` Kaldi frames.

    ``snip_edges=True``: ``(num_frames - 1) * shift + length`` (voxceleb_trainer's
    ``max_frames * 160 + 240`` at 16 kHz); ``snip_edges=False``: ``num_frames * shift``
    (Kaldi then gives ``round(samples / shift)`` frames).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if snip_edges:
        return (int(num_frames) - 1) * int(frame_shift) + int(frame_length)
    return int(num_frames) * int(frame_shift)
