"""Cosine scoring (``ivector-compute-dot-products`` on length-normalized vectors), vectorized."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .kernels import paired_dot

__all__ = ["cosine_score", "cosine_score_trials", "unit_rows"]


def unit_rows(X, mean: Optional[np.ndarray] = None, dtype=np.float32) -> np.ndarray:
    """Rows of ``X`` (after subtracting ``mean`` if given) scaled to unit length (zero rows stay 0)."""
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


def cosine_score_trials(enroll, test, enroll_idx, test_idx, mean: Optional[np.ndarray] = None) -> np.ndarray:
    """Cosine scores for trials ``(enroll[enroll_idx[k]], test[test_idx[k]])``.

    Each distinct vector is normalized once; the trials are then a sampled matrix product
    (:func:`pysv.backend.kernels.paired_dot`, float32).
    """
    E = unit_rows(enroll, mean)
    T = E if test is enroll else unit_rows(test, mean)
    return paired_dot(E, T, enroll_idx, test_idx)
