"""Crop-distance scoring of MP-2021 §4.2, voxceleb_trainer's evaluation.

Each utterance is represented by ``K`` (10) embeddings of crops covering it; a trial's score is
minus the mean of the ``K x K`` Euclidean distances between the crops of the two utterances
("the mean of 10×10 Euclidean distances are computed as the distance measurement").
voxceleb_trainer L2-normalizes the crops first for the metric-learning losses
(``test_normalize``); ``normalize=True`` does that.
"""
from __future__ import annotations

import numpy as np

from .cosine import unit_rows

__all__ = ["crop_distance_score", "crop_distance_score_trials"]


def _prep(C, normalize: bool) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    return unit_rows(C, dtype=np.float64) if normalize else C


def _mean_dist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b for all K x K crop pairs of each trial
    na = np.einsum("pkd,pkd->pk", A, A)
    nb = np.einsum("pld,pld->pl", B, B)
    G = np.matmul(A, B.transpose(0, 2, 1))
    d2 = na[:, :, None] + nb[:, None, :] - 2.0 * G
    return np.sqrt(np.maximum(d2, 0.0)).mean(axis=(1, 2))


def crop_distance_score(enroll_crops, test_crops, normalize: bool = True) -> np.ndarray:
    """``-mean_{k,l} |a_k - b_l|`` for each pair of crop sets ``[P, K, D]`` (or one pair ``[K, D]``)."""
    A = _prep(enroll_crops, normalize)
    B = _prep(test_crops, normalize)
    single = A.ndim == 2
    if single:
        A, B = A[None], B[None]
    if A.shape[0] != B.shape[0] or A.shape[2] != B.shape[2]:
        raise ValueError(f"crop arrays do not match: {A.shape} vs {B.shape}")
    s = -_mean_dist(A, B)
    return s[0] if single else s


def crop_distance_score_trials(enroll_crops, test_crops, enroll_idx, test_idx,
                               normalize: bool = True, chunk: int = 2048) -> np.ndarray:
    """Crop-distance scores for trials ``(enroll_crops[enroll_idx[k]], test_crops[test_idx[k]])``."""
    A = _prep(enroll_crops, normalize)
    B = A if test_crops is enroll_crops else _prep(test_crops, normalize)
    ei = np.asarray(enroll_idx, dtype=np.int64)
    ti = np.asarray(test_idx, dtype=np.int64)
    out = np.empty(ei.size, dtype=np.float64)
    for s in range(0, ei.size, chunk):
        out[s:s + chunk] = -_mean_dist(A[ei[s:s + chunk]], B[ti[s:s + chunk]])
    return out
