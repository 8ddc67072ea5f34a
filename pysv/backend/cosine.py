"""Cosine scoring (``ivector-compute-dot-products`` on length-normalized vectors), vectorized."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from pysv.utils.io import DataError

from .sampled_matmul import paired_dot
from .trials import index_trials

__all__ = ["cosine_score", "cosine_score_trials", "cosine_trial_scores", "unit_rows"]


def unit_rows(X, mean: Optional[np.ndarray] = None, dtype=np.float32) -> np.ndarray:
    """Rows of ``X`` (after subtracting ``mean`` if given) scaled to unit length (zero rows stay 0).

    Computed in the dtype of ``X`` (float64 when ``mean`` is given), returned as ``dtype``."""
    X = np.asarray(X)
    X = X.astype(np.float64) if mean is not None else X
    if mean is not None:
        X = X - np.asarray(mean, dtype=np.float64)
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    return (X / np.where(n > 0, n, 1.0)).astype(dtype, copy=False)


def cosine_score(enroll, test, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """Cosine similarity of each row pair ``(enroll[i], test[i])``, optionally after subtracting
    a (training) ``mean`` from both."""
    E = np.atleast_2d(np.asarray(enroll))
    T = np.atleast_2d(np.asarray(test))
    if E.shape != T.shape:
        raise ValueError(f"enroll and test must have the same shape, got {E.shape} and {T.shape}")
    E = unit_rows(E, mean, np.float64)
    T = unit_rows(T, mean, np.float64)
    return np.einsum("ij,ij->i", E, T)


def cosine_score_trials(enroll, test, enroll_idx, test_idx, mean: Optional[np.ndarray] = None,
                        dtype=np.float32) -> np.ndarray:
    """Cosine scores for trials ``(enroll[enroll_idx[k]], test[test_idx[k]])``.

    Each distinct vector is normalized once; the trials are then a sampled matrix product
    (:func:`pysv.backend.sampled_matmul.paired_dot`) in ``dtype`` (float32, as Kaldi's BaseFloat,
    for stage 5).
    """
    E = unit_rows(enroll, mean, dtype)
    T = E if test is enroll else unit_rows(test, mean, dtype)
    return paired_dot(E, T, enroll_idx, test_idx)


def cosine_trial_scores(embeddings: Mapping[str, np.ndarray],
                        trials: Sequence[Tuple[str, str, int]]) -> np.ndarray:
    """Cosine score of each ``(enroll, test, label)`` trial between the vectors of a
    ``{key: embedding}`` dict, in float64 (stage 2's per-epoch validation)."""
    keys = sorted(embeddings)
    X = np.stack([embeddings[k] for k in keys]).astype(np.float64)
    ei, ti, missing = index_trials(trials, keys)
    if missing.any():
        a, b, _ = trials[int(np.flatnonzero(missing)[0])]
        raise DataError(f"trial '{a} {b}' names an utterance with no embedding")
    return cosine_score_trials(X, X, ei, ti, dtype=np.float64)
