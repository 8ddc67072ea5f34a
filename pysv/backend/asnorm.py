"""Adaptive symmetric score normalization (AS-norm; Matějka et al., Interspeech 2017).

For a trial ``(e, t)`` with raw score ``s``, let ``S_e`` be the ``top_n`` highest scores of ``e``
against a cohort (speaker embeddings of the training set, never the test speakers) and ``S_t``
the same for ``t``; then

    s' = 1/2 [ (s - mean(S_e)) / std(S_e) + (s - mean(S_t)) / std(S_t) ]

(``std`` is the population standard deviation, ``ddof=0``; with ``top_n`` >= cohort size this is
plain symmetric S-norm). The cohort statistics are computed once per distinct utterance.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np
import torch

from .cosine import cosine_score_trials, unit_rows

log = logging.getLogger(__name__)

__all__ = ["cohort_stats", "asnorm", "asnorm_cosine_trials"]


def cohort_stats(cohort_scores, top_n: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and std (``ddof=0``) of the ``top_n`` highest cohort scores of each row ``[U, C]``.

    The selection runs on the scores as given (float32 from the cosine chunks: ``torch.topk``, ~10x
    faster than a float64 ``np.partition`` at a 5,994-speaker cohort), the moments in float64."""
    S = np.asarray(cohort_scores)
    if S.ndim != 2 or S.shape[1] == 0:
        raise ValueError(f"cohort scores must be a non-empty [utterances, cohort] array, got {S.shape}")
    C = S.shape[1]
    k = C if top_n is None or top_n >= C else int(top_n)
    if k <= 0:
        raise ValueError(f"top_n must be positive, got {top_n}")
    if k < C:
        S = torch.topk(torch.from_numpy(np.ascontiguousarray(S)), k, dim=1, sorted=False).values.numpy()
    S = S.astype(np.float64, copy=False)
    mu = S.mean(axis=1)
    sd = S.std(axis=1)
    return mu, sd


def asnorm(scores, enroll_idx, test_idx, enroll_stats, test_stats, eps: float = 1e-12) -> np.ndarray:
    """Apply AS-norm to raw ``scores`` given per-utterance cohort ``(mean, std)`` statistics."""
    s = np.asarray(scores, dtype=np.float64)
    me, se = enroll_stats
    mt, st = test_stats
    ei = np.asarray(enroll_idx, dtype=np.int64)
    ti = np.asarray(test_idx, dtype=np.int64)
    se = np.maximum(se, eps)
    st = np.maximum(st, eps)
    return 0.5 * ((s - me[ei]) / se[ei] + (s - mt[ti]) / st[ti])


def _cosine_cohort_stats(X_unit: np.ndarray, cohort_unit: np.ndarray, top_n, chunk: int = 4096):
    mus, sds = [], []
    for s in range(0, X_unit.shape[0], chunk):
        mu, sd = cohort_stats(X_unit[s:s + chunk] @ cohort_unit.T, top_n)
        mus.append(mu)
        sds.append(sd)
    return np.concatenate(mus), np.concatenate(sds)


def asnorm_cosine_trials(enroll, test, enroll_idx, test_idx, cohort, top_n: Optional[int] = 300,
                         mean: Optional[np.ndarray] = None) -> np.ndarray:
    """AS-normalized cosine scores for trials ``(enroll[enroll_idx[k]], test[test_idx[k]])``.

    ``cohort`` ``[C, D]``: cohort embeddings (e.g. training-speaker means); ``mean``: optional
    training mean subtracted from every vector (enroll, test and cohort) before the cosine.
    """
    cohort = np.asarray(cohort)
    if cohort.ndim != 2 or cohort.shape[0] < 2:
        raise ValueError(f"AS-norm needs a cohort of at least 2 embeddings, got shape {cohort.shape}")
    if top_n is not None and top_n > cohort.shape[0]:
        log.warning("AS-norm top_n=%d exceeds the cohort size %d; using the whole cohort",
                    top_n, cohort.shape[0])
        top_n = None
    raw = cosine_score_trials(enroll, test, enroll_idx, test_idx, mean=mean)
    Cu = unit_rows(cohort, mean)
    Eu = unit_rows(enroll, mean)
    e_stats = _cosine_cohort_stats(Eu, Cu, top_n)
    if test is enroll:
        t_stats = e_stats
    else:
        t_stats = _cosine_cohort_stats(unit_rows(test, mean), Cu, top_n)
    return asnorm(raw, enroll_idx, test_idx, e_stats, t_stats)
