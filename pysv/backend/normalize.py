"""Mean subtraction and length normalization (Kaldi ``ivector-subtract-global-mean``,
``ivector-normalize-length``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from .kaldi_io import read_kaldi_vector, write_kaldi_vector

__all__ = ["length_norm", "LengthNorm", "MeanSubtract"]


def length_norm(X, scale: Optional[float] = None) -> np.ndarray:
    """Scale each row to length ``scale`` (default ``sqrt(dim)``, as ``ivector-normalize-length``
    with its defaults ``--normalize=true --scaleup=true``). All-zero rows are left unchanged, as
    Kaldi does (it warns and skips them)."""
    X = np.asarray(X)
    squeeze = X.ndim == 1
    X2 = np.atleast_2d(X).astype(np.result_type(X.dtype, np.float32), copy=False)
    if scale is None:
        scale = float(np.sqrt(X2.shape[1]))
    norms = np.linalg.norm(X2, axis=1, keepdims=True)
    factor = np.where(norms > 0, scale / np.where(norms > 0, norms, 1.0), 1.0)
    out = X2 * factor.astype(X2.dtype)
    return out[0] if squeeze else out


class LengthNorm:
    """``ivector-normalize-length`` as a (stateless) transform: rows scaled to ``sqrt(dim)``;
    ``scale='unit'`` gives unit length."""

    def __init__(self, scale: Union[str, float, None] = None):
        self.scale = scale

    def fit(self, X=None, labels=None) -> "LengthNorm":
        return self

    def transform(self, X) -> np.ndarray:
        return length_norm(X, 1.0 if self.scale == "unit" else self.scale)

    __call__ = transform


class MeanSubtract:
    """``ivector-mean`` (fit) + ``ivector-subtract-global-mean`` (transform)."""

    def __init__(self, mean=None):
        self.mean_ = None if mean is None else np.asarray(mean, dtype=np.float64).ravel()

    def fit(self, X, labels=None) -> "MeanSubtract":
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, D] array, got shape {X.shape}")
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        return self

    def transform(self, X) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError("MeanSubtract is not fitted")
        X = np.asarray(X)
        if X.shape[-1] != self.mean_.size:
            raise ValueError(f"dimension {X.shape[-1]} does not match the mean's {self.mean_.size}")
        dt = np.result_type(X.dtype, np.float32)
        return X.astype(dt, copy=False) - self.mean_.astype(dt)

    __call__ = transform

    def write(self, path: Union[str, Path], binary: bool = True) -> None:
        write_kaldi_vector(path, self.mean_, binary=binary)

    @classmethod
    def read(cls, path: Union[str, Path]) -> "MeanSubtract":
        return cls(read_kaldi_vector(path))
