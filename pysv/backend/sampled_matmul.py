"""Sampled matrix product: the dot products ``A[ai[k]] . B[bi[k]]`` of a trial list, without
materializing gathered rows.

Scoring a trial list is a sampled dense-dense matrix product (SDDMM): only the ``(enroll, test)``
entries named by the trials of ``A @ B.T`` are wanted. Gathering both rows per trial copies
``2 x trials x dim`` floats (2.4 GB for 580k trials of 512 dims), which dominates the time; torch's
CPU ``sparse.sampled_addmm`` computes the sampled entries directly from the two matrices. A
chunked numpy gather serves short lists and is the fallback where the sparse op is unsupported.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["paired_dot"]


def _paired_dot_numpy(A: np.ndarray, B: np.ndarray, ai: np.ndarray, bi: np.ndarray,
                      chunk: int = 2048) -> np.ndarray:
    out = np.empty(ai.size, dtype=np.float64)
    for s in range(0, ai.size, chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", A[ai[s:s + chunk]], B[bi[s:s + chunk]])
    return out


def _paired_dot_torch(A: np.ndarray, B: np.ndarray, ai: np.ndarray, bi: np.ndarray) -> np.ndarray:
    # canonical CSR (rows sorted, columns sorted and unique within a row): repeated trials are
    # scored once and mapped back
    key = ai * np.int64(B.shape[0]) + bi
    ukey, inverse = np.unique(key, return_inverse=True)
    rows = ukey // B.shape[0]
    col = np.ascontiguousarray(ukey - rows * B.shape[0])
    crow = np.zeros(A.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=A.shape[0]), out=crow[1:])
    At = torch.from_numpy(np.ascontiguousarray(A))
    Bt = torch.from_numpy(np.ascontiguousarray(B))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta" / invariant-check notices
        with torch.sparse.check_sparse_tensor_invariants(False):
            S = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col),
                                        torch.zeros(ukey.size, dtype=At.dtype), size=(A.shape[0], B.shape[0]))
            vals = torch.sparse.sampled_addmm(S, At, Bt.T, beta=0.0).values().numpy()
    return vals[inverse.ravel()].astype(np.float64)


def paired_dot(A, B, ai, bi, backend: str = "auto") -> np.ndarray:
    """``out[k] = A[ai[k]] . B[bi[k]]`` (float32 arithmetic for float32 inputs, float64 output).

    ``backend``: ``'torch'`` (SDDMM), ``'numpy'`` (chunked gather) or ``'auto'`` (torch from 4096
    trials on, numpy below or where the sparse op fails).
    """
    A = np.asarray(A)
    B = np.asarray(B)
    ai = np.asarray(ai, dtype=np.int64).ravel()
    bi = np.asarray(bi, dtype=np.int64).ravel()
    if ai.shape != bi.shape:
        raise ValueError(f"index arrays differ in length: {ai.size} vs {bi.size}")
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"expected [N, D] and [M, D] matrices, got {A.shape} and {B.shape}")
    if ai.size == 0:
        return np.empty(0, dtype=np.float64)
    if ai.min() < 0 or ai.max() >= A.shape[0] or bi.min() < 0 or bi.max() >= B.shape[0]:
        raise IndexError("trial index out of range")
    dt = np.result_type(A.dtype, B.dtype, np.float32)
    A = A.astype(dt, copy=False)
    B = B.astype(dt, copy=False)
    if backend in ("auto", "torch") and ai.size >= 4096:
        try:
            return _paired_dot_torch(A, B, ai, bi)
        except Exception:  # sparse op unsupported on this build: numpy fallback
            if backend == "torch":
                raise
    return _paired_dot_numpy(A, B, ai, bi)
