"""Two-covariance PLDA as Kaldi's ``ivector-compute-plda`` / ``ivector-plda-scoring``.

Model (Ioffe 2006, Kaldi ``ivector/plda.{h,cc}``): a vector of speaker ``s`` is
``x = m + y_s + e`` with speaker offset ``y_s ~ N(0, B)`` and within-speaker noise ``e ~ N(0, W)``.

Estimation (``PldaEstimator``), from per-speaker means ``mu_s`` (``n_s`` utterances):
    start from ``W = B = I``; each EM iteration treats the centred speaker mean
    ``c_s = mu_s - mean_s(mu_s)`` as ``x + y``, ``x ~ N(0, B)``, ``y ~ N(0, W / n)``:
    ``V_n = (B^-1 + n W^-1)^-1``, ``w_s = n V_n W^-1 c_s``;
    between stats ``+= V_n + w_s w_s^T`` (count 1), within stats ``+= n (V_n + (c_s - w_s)(c_s - w_s)^T)``
    (count 1) on top of the intra-speaker scatter ``sum (x - mu_s)(x - mu_s)^T`` (count ``N - S``);
    then ``W`` and ``B`` are the stats divided by their counts.
Output (``GetOutput``): ``mean`` = mean of speaker means; ``W = C C^T`` (Cholesky), ``C^-1 B C^-T = U diag(psi) U^T``
    (psi decreasing, floored at 0); ``transform = U^T C^-1`` — in that space within-class covariance is
    ``I`` and between-class is ``diag(psi)``.
Scoring (``TransformIvector`` + ``LogLikelihoodRatio``):
    ``u = transform (x - mean)``, scaled (default ``normalize_length=true, simple_length_norm=false``) by
    ``sqrt(dim / sum_i u_i^2 / (psi_i + 1/n))`` so that its expected squared norm under the model
    matches ``dim``, ``n`` being the number of utterances averaged into ``x`` (1 for test vectors).
    With enrollment ``u`` (from ``n`` utterances) and test ``v``:
    ``LLR = log N(v | n psi/(n psi + 1) u, 1 + psi/(n psi + 1)) - log N(v | 0, 1 + psi)`` (diagonal Gaussians).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .kaldi_io import read_plda_file, write_plda_file
from .lda import class_stats, scatter
from .sampled_matmul import paired_dot

log = logging.getLogger(__name__)

__all__ = ["PLDA"]

_LNORM = ("kaldi", "simple", "none")


def _sym(S: np.ndarray) -> np.ndarray:
    return (S + S.T) * 0.5


def _inv_sym(S: np.ndarray) -> np.ndarray:
    return _sym(np.linalg.inv(_sym(S)))


class PLDA:
    """Kaldi's two-covariance PLDA.

    Parameters
    ----------
    num_em_iters: EM iterations (``ivector-compute-plda --num-em-iters``, default 10).
    length_norm: length normalization applied by :meth:`transform` / :meth:`score`:
        ``'kaldi'`` (default; ``ivector-plda-scoring --normalize-length=true``), ``'simple'``
        (``--simple-length-normalization=true``: length ``sqrt(dim)``), ``'none'``
        (``--normalize-length=false``).

    Attributes (after :meth:`fit` or :meth:`read`): ``mean_``, ``transform_`` (``[D, D]``), ``psi_``
    (``[D]``, decreasing), ``offset_ = -transform_ @ mean_``; after :meth:`fit` also ``within_var_``,
    ``between_var_`` (the EM estimates in the input space) and ``objf_`` (objective per iteration).
    """

    def __init__(self, num_em_iters: int = 10, length_norm: str = "kaldi"):
        if int(num_em_iters) < 0:
            raise ValueError(f"num_em_iters must be >= 0, got {num_em_iters}")
        if length_norm not in _LNORM:
            raise ValueError(f"length_norm must be one of {_LNORM}, got {length_norm!r}")
        self.num_em_iters = int(num_em_iters)
        self.length_norm = length_norm
        self.mean_ = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, mean, transform, psi, **kwargs) -> "PLDA":
        obj = cls(**kwargs)
        obj._set(np.asarray(mean, np.float64).ravel(), np.asarray(transform, np.float64),
                 np.asarray(psi, np.float64).ravel())
        return obj

    @classmethod
    def from_covariances(cls, mean, between, within, **kwargs) -> "PLDA":
        """Model with the given between/within-class covariances (``GetOutput`` diagonalization)."""
        obj = cls(**kwargs)
        obj.within_var_ = _sym(np.asarray(within, np.float64))
        obj.between_var_ = _sym(np.asarray(between, np.float64))
        obj._get_output(np.asarray(mean, np.float64).ravel())
        return obj

    def _set(self, mean, transform, psi) -> None:
        D = mean.size
        if transform.shape != (D, D) or psi.shape != (D,):
            raise ValueError(f"inconsistent PLDA parameters: mean {mean.shape}, transform "
                             f"{transform.shape}, psi {psi.shape}")
        self.mean_ = mean
        self.transform_ = transform
        self.psi_ = psi
        self.offset_ = -transform @ mean  # ComputeDerivedVars

    @property
    def dim(self) -> int:
        self._check_fitted()
        return self.mean_.size

    def _check_fitted(self):
        if self.mean_ is None:
            raise RuntimeError("PLDA is not fitted (call fit() or PLDA.read())")

    # ------------------------------------------------------------------ estimation
    def fit(self, X, labels, weights: Optional[Sequence[float]] = None) -> "PLDA":
        """Estimate from vectors ``X [N, D]`` with speaker ``labels`` (``ivector-compute-plda``).

        ``weights`` (per speaker, in ``np.unique(labels)`` order) default to 1 as in Kaldi's binary.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, D] array, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("PLDA training vectors contain NaN or infinite values")
        N, D = X.shape
        classes, inv, counts, means = class_stats(X, labels)
        S = classes.size
        if S == N:
            raise ValueError("No speakers with multiple utterances, unable to estimate PLDA")
        if S <= D:
            raise ValueError(
                f"PLDA of dimension {D} needs more speakers than dimensions, got {S} speakers: the "
                f"between-class covariance has rank at most {S - 1}. Use a smaller dim (LDA "
                f"dimension, e.g. --lda-dim {max(1, S - 1)} or less) or more training speakers.")
        w = np.ones(S) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (S,) or (w <= 0).any():
            raise ValueError(f"weights must be {S} positive numbers (one per speaker)")
        # PldaStats::AddSamples: offset_scatter = sum_s w_s sum_{x in s} (x - mu_s)(x - mu_s)^T
        #   = sum_x w x x^T - sum_s w_s n_s mu_s mu_s^T (about any centre c; c = data mean here)
        c = X.mean(axis=0, dtype=np.float64)
        if weights is None:
            tot = scatter(X, c)
        else:
            tot = np.zeros((D, D))
            for k in range(S):
                blk = np.asarray(X[inv == k], dtype=np.float64) - c
                tot += w[k] * (blk.T @ blk)
        Mc = means - c
        offset_scatter = tot - (Mc * (w * counts)[:, None]).T @ Mc
        offset_scatter = (offset_scatter + offset_scatter.T) * 0.5
        class_weight = w.sum()
        example_weight = (w * counts).sum()
        glob = (w[:, None] * means).sum(axis=0) / class_weight
        C = means - glob  # class means minus the global mean (of class means)
        self._stats = dict(offset_scatter=offset_scatter, counts=counts, weights=w, centred=C,
                           class_weight=class_weight, example_weight=example_weight)
        within = np.eye(D)
        between = np.eye(D)
        self.objf_ = []
        for it in range(self.num_em_iters):
            within, between = self._em_iter(within, between)
            self.objf_.append(self._objf(within, between))
            log.debug("PLDA EM iteration %d/%d: objf per sample %.6f", it + 1, self.num_em_iters,
                      self.objf_[-1])
        self.within_var_, self.between_var_ = within, between
        del self._stats
        self.num_classes_ = S
        self._get_output(glob)
        return self

    def _em_iter(self, within: np.ndarray, between: np.ndarray):
        st = self._stats
        D = within.shape[0]
        w_stats = st["offset_scatter"].copy()
        w_count = st["example_weight"] - st["class_weight"]
        b_stats = np.zeros((D, D))
        b_count = 0.0
        B_inv = _inv_sym(between)
        W_inv = _inv_sym(within)
        counts, weights, C = st["counts"], st["weights"], st["centred"]
        for n in np.unique(counts):
            idx = counts == n
            wt = weights[idx]
            mixed = _inv_sym(B_inv + n * W_inv)  # (B^-1 + n W^-1)^-1
            Wm = (n * C[idx] @ W_inv) @ mixed  # rows: w = mixed n W^-1 m
            MW = C[idx] - Wm
            sw = wt.sum()
            b_stats += sw * mixed + (Wm * wt[:, None]).T @ Wm
            b_count += sw
            w_stats += n * sw * mixed + n * (MW * wt[:, None]).T @ MW
            w_count += sw
        return _sym(w_stats / w_count), _sym(b_stats / b_count)

    def _objf(self, within: np.ndarray, between: np.ndarray) -> float:
        """Log-likelihood per example (``ComputeObjf``), for diagnostics."""
        st = self._stats
        D = within.shape[0]
        log2pi = np.log(2 * np.pi)
        wc = st["example_weight"] - st["class_weight"]
        sign, logdet = np.linalg.slogdet(within)
        part1 = -0.5 * (wc * (logdet + log2pi * D) + np.trace(_inv_sym(within) @ st["offset_scatter"]))
        part2 = 0.0
        for n in np.unique(st["counts"]):
            idx = st["counts"] == n
            comb = between + within / n
            _, ld = np.linalg.slogdet(comb)
            ci = _inv_sym(comb)
            M = st["centred"][idx]
            quad = np.einsum("ij,jk,ik->i", M, ci, M)
            part2 += (st["weights"][idx] * -0.5 * (ld + log2pi * D + quad)).sum()
        return float((part1 + part2) / st["example_weight"])

    def _get_output(self, mean: np.ndarray) -> None:
        within, between = self.within_var_, self.between_var_
        L = np.linalg.cholesky(within)  # within = L L^T
        T1 = np.linalg.inv(L)  # T1 within T1^T = I  (ComputeNormalizingTransform)
        Bp = _sym(T1 @ between @ T1.T)
        s, U = np.linalg.eigh(Bp)
        n_floor = int((s < 0).sum())
        if n_floor:
            log.warning("Floored %d eigenvalues of between-class variance to zero.", n_floor)
        s = np.maximum(s, 0.0)
        order = np.argsort(-s, kind="stable")  # SortSvd: greatest first
        s, U = s[order], U[:, order]
        self._set(mean, U.T @ T1, s)

    def smooth_within_class_covariance(self, factor: float) -> "PLDA":
        """``ivector-copy-plda --smoothing=<factor>`` (``Plda::SmoothWithinClassCovariance``)."""
        self._check_fitted()
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"smoothing factor must be in [0, 1], got {factor}")
        wc = 1.0 + factor * self.psi_
        psi = self.psi_ / wc
        transform = self.transform_ * (wc ** -0.5)[:, None]
        self._set(self.mean_, transform, psi)
        return self

    # ------------------------------------------------------------------ model covariances
    def model_covariances(self):
        """``(within, between)`` in the input space implied by ``transform_`` and ``psi_``."""
        self._check_fitted()
        Ti = np.linalg.inv(self.transform_)
        return Ti @ Ti.T, (Ti * self.psi_) @ Ti.T

    # ------------------------------------------------------------------ transform / scoring
    def normalization_factor(self, U: np.ndarray, num_examples=1) -> np.ndarray:
        """Per-row factor (Kaldi ``GetNormalizationFactor`` or the simple ``sqrt(dim)/|u|`` rule)
        for vectors ``U`` already in the PLDA space."""
        U = np.atleast_2d(U)
        D = U.shape[1]
        if self.length_norm == "simple":
            norm = np.linalg.norm(U, axis=1)
            return np.sqrt(D) / np.where(norm > 0, norm, np.inf)
        n = np.broadcast_to(np.asarray(num_examples, dtype=np.float64), (U.shape[0],))
        if (n <= 0).any():
            raise ValueError("num_examples must be positive")
        inv_covar = 1.0 / (self.psi_[None, :] + 1.0 / n[:, None])
        dot = np.einsum("ij,ij->i", U * U, inv_covar)
        return np.sqrt(D / np.where(dot > 0, dot, np.inf))

    def transform(self, X, num_examples=1) -> np.ndarray:
        """``Plda::TransformIvector``: into the space with unit within-class and diagonal
        between-class covariance, then length-normalized per ``length_norm``. ``num_examples``
        (scalar or per row) is the number of utterances each row averages (enrollment)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        squeeze = X.ndim == 1
        X = np.atleast_2d(X)
        if X.shape[1] != self.dim:
            raise ValueError(f"input dimension {X.shape[1]} does not match the PLDA dimension {self.dim}")
        U = X @ self.transform_.T + self.offset_
        if self.length_norm != "none":
            U = U * self.normalization_factor(U, num_examples)[:, None]
        return U[0] if squeeze else U

    def llr_transformed(self, U, V, num_enroll=1) -> np.ndarray:
        """``Plda::LogLikelihoodRatio`` for rows of transformed enrollment ``U`` (each averaging
        ``num_enroll`` utterances) and test ``V``."""
        U = np.atleast_2d(np.asarray(U, np.float64))
        V = np.atleast_2d(np.asarray(V, np.float64))
        n = np.broadcast_to(np.asarray(num_enroll, np.float64), (U.shape[0],))[:, None]
        psi = self.psi_[None, :]
        mean = n * psi / (n * psi + 1.0) * U
        var = 1.0 + psi / (n * psi + 1.0)
        given = -0.5 * (np.log(var).sum(1) + (((V - mean) ** 2) / var).sum(1))
        var0 = 1.0 + self.psi_
        without = -0.5 * (np.log(var0).sum() + ((V * V) / var0).sum(1))
        return given - without

    def score(self, enroll, test, num_enroll=None) -> np.ndarray:
        """One log-likelihood ratio per row pair ``(enroll[i], test[i])`` (inputs in the space the
        PLDA was trained in). ``num_enroll`` (scalar or per row): utterances averaged into each
        enrollment vector (Kaldi ``--num-utts``); default 1 (single-utterance enrollment)."""
        enroll = np.atleast_2d(np.asarray(enroll, np.float64))
        test = np.atleast_2d(np.asarray(test, np.float64))
        if enroll.shape != test.shape:
            raise ValueError(f"enroll and test must have the same shape, got {enroll.shape} and {test.shape}")
        n = 1 if num_enroll is None else num_enroll
        return self.llr_transformed(self.transform(enroll, n), self.transform(test, 1), n)

    def score_trials(self, enroll, test, enroll_idx, test_idx, num_enroll=None) -> np.ndarray:
        """LLRs for trials ``(enroll[enroll_idx[k]], test[test_idx[k]])``, vectorized.

        ``enroll``/``test`` hold each distinct vector once (``num_enroll`` per enroll row). The LLR
        is expanded as ``K_n + q_n(v) + r(u) + a(u).v`` so that each distinct vector is transformed
        once and a trial costs one gathered dot product.
        """
        U_all = np.asarray(enroll, np.float64)
        n_e = np.ones(U_all.shape[0]) if num_enroll is None else np.broadcast_to(
            np.asarray(num_enroll, np.float64), (U_all.shape[0],))
        U = self.transform(U_all, n_e)
        if test is enroll and num_enroll is None:
            V = U
        else:
            V = self.transform(np.asarray(test, np.float64), 1)
        ei = np.asarray(enroll_idx, dtype=np.int64)
        ti = np.asarray(test_idx, dtype=np.int64)
        psi = self.psi_
        w = 1.0 + psi
        out = np.empty(ei.size, dtype=np.float64)
        n_trial = n_e[ei]
        Vf = V.astype(np.float32)
        for n in np.unique(n_e):
            g = n * psi / (n * psi + 1.0)
            v = 1.0 + psi / (n * psi + 1.0)
            K = 0.5 * (np.log(w).sum() - np.log(v).sum())
            q = (V * V) @ (0.5 / w - 0.5 / v)  # per test vector
            r = -0.5 * (U * U) @ (g * g / v)  # per enroll vector
            A = (U * (g / v)).astype(np.float32)
            sel = None if np.all(n_e == n) else np.flatnonzero(n_trial == n)
            e_sel = ei if sel is None else ei[sel]
            t_sel = ti if sel is None else ti[sel]
            res = paired_dot(A, Vf, e_sel, t_sel)
            res += K + q[t_sel] + r[e_sel]
            if sel is None:
                out[:] = res
            else:
                out[sel] = res
        return out

    # ------------------------------------------------------------------ io
    def write(self, path: Union[str, Path], binary: bool = True) -> None:
        """Write Kaldi's PLDA model (``<Plda> mean transform psi </Plda>``), atomically."""
        self._check_fitted()
        write_plda_file(path, self.mean_, self.transform_, self.psi_, binary=binary)

    @classmethod
    def read(cls, path: Union[str, Path], **kwargs) -> "PLDA":
        """Read a Kaldi PLDA model (binary or text); ``kwargs`` as for the constructor."""
        mean, transform, psi = read_plda_file(path)
        return cls.from_params(mean, transform, psi, **kwargs)
