"""LDA as Kaldi's ``ivector-compute-lda`` (default ``--total-covariance-factor=0.0``).

Kaldi's recipe (``ComputeLdaTransform`` in ``ivectorbin/ivector-compute-lda.cc``):

1. subtract the mean ``m`` of all training vectors;
2. with ``N`` utterances, speakers ``s`` with ``n_s`` utterances and means ``mu_s``:
   total covariance ``T = sum_x x x^T / N``, between-class ``B = sum_s n_s mu_s mu_s^T / N``,
   within-class ``W = T - B``;
3. ``P = f T + (1 - f) W`` (``f`` = total-covariance-factor, 0 → within-class);
   ``P = U diag(s) U^T``, eigenvalues floored at ``covariance_floor * max(s)``;
   normalizing transform ``C = diag(s^-1/2) U^T`` (so ``C P C^T = I``);
4. ``C B C^T = V diag(e) V^T`` with eigenvalues sorted decreasing; keep the first ``dim``
   columns ``V_k``; linear part ``A = V_k^T C`` (``dim x D``);
5. the written matrix is affine, ``[A | -A m]`` (``dim x (D+1)``), as ``transform-vec`` applies it.

After the transform the within-class covariance (with the ``/N`` normalization above) is the
identity and the between-class covariance is ``diag(e_1 >= e_2 >= ...)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from scipy.sparse import csr_matrix

from .kaldi_io import read_kaldi_matrix, write_kaldi_matrix

__all__ = ["LDA", "class_stats"]


def class_stats(X: np.ndarray, labels, chunk: int = 65536):
    """``(classes, inverse, counts, means)`` of rows of ``X`` grouped by ``labels`` (means in
    float64, accumulated in row chunks so a float32 ``X`` is never copied whole)."""
    labels = np.asarray(labels)
    if labels.shape[0] != X.shape[0]:
        raise ValueError(f"{X.shape[0]} vectors but {labels.shape[0]} labels")
    classes, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    sums = np.zeros((classes.size, X.shape[1]), dtype=np.float64)
    for s in range(0, X.shape[0], chunk):
        blk = np.asarray(X[s:s + chunk], dtype=np.float64)
        sel = csr_matrix((np.ones(blk.shape[0]), (inv[s:s + chunk], np.arange(blk.shape[0]))),
                         shape=(classes.size, blk.shape[0]))
        sums += sel @ blk
    means = sums / counts[:, None]
    return classes, inv, counts, means


def scatter(X: np.ndarray, center: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``sum_x (x - center)(x - center)^T`` in float64, over row chunks."""
    D = X.shape[1]
    S = np.zeros((D, D), dtype=np.float64)
    for s in range(0, X.shape[0], chunk):
        blk = np.asarray(X[s:s + chunk], dtype=np.float64) - center
        S += blk.T @ blk
    return (S + S.T) * 0.5


def _sorted_eigh(S: np.ndarray):
    s, U = np.linalg.eigh((S + S.T) / 2)
    order = np.argsort(-s, kind="stable")
    return s[order], U[:, order]


class LDA:
    """``ivector-compute-lda --dim=<dim> --total-covariance-factor=<f>`` (fit) + ``transform-vec`` (transform).

    Attributes after :meth:`fit` (or :meth:`read`): ``matrix_`` (Kaldi's ``[dim, D+1]`` affine
    matrix), ``linear_`` (``[dim, D]``), ``offset_`` (``[dim]``); after fit also ``mean_``,
    ``eigenvalues_`` (between-class variances in the normalized space, all ``D`` of them,
    decreasing), ``within_covar_``/``between_covar_`` of the input (of the PCA subspace when the data forced one).
    """

    def __init__(self, dim: int = 200, total_covariance_factor: float = 0.0,
                 covariance_floor: float = 1.0e-6):
        if int(dim) <= 0:
            raise ValueError(f"LDA dim must be positive, got {dim}")
        if not 0.0 <= total_covariance_factor <= 1.0:
            raise ValueError(f"total_covariance_factor must be in [0, 1], got {total_covariance_factor}")
        if covariance_floor < 0:
            raise ValueError(f"covariance_floor must be >= 0, got {covariance_floor}")
        self.dim = int(dim)
        self.total_covariance_factor = float(total_covariance_factor)
        self.covariance_floor = float(covariance_floor)
        self.matrix_ = None

    # ------------------------------------------------------------------ fit
    def fit(self, X, labels) -> "LDA":
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, D] array, got shape {X.shape}")
        N, D = X.shape
        if self.dim > D:
            raise ValueError(f"LDA dim {self.dim} exceeds the input dimension {D}; use dim <= {D}")
        mean = X.mean(axis=0, dtype=np.float64)  # ComputeAndSubtractMean
        classes, inv, counts, means = class_stats(X, labels)
        means = means - mean
        S = classes.size
        if N - S == 0:
            raise ValueError(f"LDA needs speakers with several utterances: {S} speakers, {N} utterances "
                             "(within-class covariance would be zero)")
        total = scatter(X, mean) / N
        between = (means * counts[:, None]).T @ means / N
        # Small training sets (N - S < D, e.g. the mini corpus with 512-dim embeddings) make the
        # within-class covariance singular, and Kaldi's eigenvalue floor would then blow up the
        # null-space directions. We first project onto the leading N - S - 1 principal components of
        # the total covariance and fit LDA there; the PCA is folded into the one affine matrix, so
        # the written model keeps Kaldi's format. With enough data (N - S > D) nothing changes.
        rank = N - S - 1
        pca = None
        if rank < D:
            if self.dim > rank:
                raise ValueError(f"too little data for LDA dim {self.dim}: {N} utterances of {S} speakers "
                                 f"give a within-class covariance of rank {N - S}; use dim <= {rank}")
            _, Ut = _sorted_eigh(total)
            pca = Ut[:, :rank].T  # rank x D
            total = pca @ total @ pca.T
            between = pca @ between @ pca.T
        within = total - between
        f = self.total_covariance_factor
        to_norm = f * total + (1.0 - f) * within
        s, U = _sorted_eigh(to_norm)
        floor = self.covariance_floor * s[0]
        s = np.maximum(s, floor)
        C = (s ** -0.5)[:, None] * U.T  # C to_norm C^T = I
        Bp = C @ between @ C.T
        e, V = _sorted_eigh(Bp)
        A = V[:, : self.dim].T @ C
        if pca is not None:
            A = A @ pca
        self.mean_ = mean
        self.within_covar_ = within
        self.between_covar_ = between
        self.eigenvalues_ = e
        self.num_classes_ = S
        self._set_matrix(np.hstack([A, (-A @ mean)[:, None]]))
        return self

    def _set_matrix(self, M: np.ndarray) -> None:
        M = np.asarray(M, dtype=np.float64)
        self.matrix_ = M
        self.linear_ = M[:, :-1]
        self.offset_ = M[:, -1]
        self.dim = M.shape[0]

    # ------------------------------------------------------------------ apply
    def transform(self, X) -> np.ndarray:
        """Apply the matrix as ``transform-vec`` does: ``[dim, D+1]`` is affine (last column the
        offset), ``[dim, D]`` is linear."""
        if self.matrix_ is None:
            raise RuntimeError("LDA is not fitted")
        X = np.asarray(X)
        dt = np.result_type(X.dtype, np.float32)
        M = self.matrix_
        if X.shape[-1] == M.shape[1] - 1:
            lin, off = M[:, :-1], M[:, -1]
        elif X.shape[-1] == M.shape[1]:
            lin, off = M, np.zeros(M.shape[0])
        else:
            raise ValueError(f"input dimension {X.shape[-1]} does not match the LDA matrix "
                             f"{M.shape[0]}x{M.shape[1]} (expects {M.shape[1] - 1}, affine)")
        return (X.astype(dt, copy=False) @ lin.T.astype(dt)) + off.astype(dt)

    __call__ = transform

    # ------------------------------------------------------------------ io
    def write(self, path: Union[str, Path], binary: bool = True) -> None:
        """Write Kaldi's ``transform.mat`` (float matrix ``[dim, D+1]``)."""
        write_kaldi_matrix(path, self.matrix_, binary=binary)

    @classmethod
    def read(cls, path: Union[str, Path]) -> "LDA":
        """Read a Kaldi LDA matrix (``[dim, D+1]`` affine as ``ivector-compute-lda`` writes it;
        a ``[dim, D]`` linear one also works with :meth:`transform`)."""
        M = read_kaldi_matrix(path)
        obj = cls(dim=max(M.shape[0], 1))
        obj._set_matrix(M)
        return obj
