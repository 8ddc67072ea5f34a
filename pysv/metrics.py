"""Verification metrics: EER, normalized minDCF and DET curves (Kaldi / voxceleb_trainer conventions).

All functions take ``scores`` (higher = more likely the same speaker) and ``labels`` (1 target,
0 non-target). They are sort-based and vectorized (580k trials take a few tens of milliseconds)
and **tie-aware**: trials with equal scores are grouped, so that the operating points — and the
results — do not depend on the order in which the trials are given.

Operating points
    Sorting the ``U`` distinct score values ``v_1 < ... < v_U``, the decision "accept if
    score >= t" has ``U + 1`` distinct outcomes: ``t = v_1`` (accept all), ..., ``t = v_U``,
    ``t = +inf`` (reject all). At each one ``FNR = #targets < t / #targets`` and
    ``FPR = #non-targets >= t / #non-targets``. These are the points of Kaldi's
    ``compute_min_dcf.py`` and of ``sklearn.metrics.roc_curve`` (which voxceleb_trainer uses),
    with equal scores merged into one step.

EER
    ``FNR - FPR`` grows from -1 to +1 along the operating points; the EER is where the
    piecewise-linear curve through them crosses ``FNR == FPR``. Between two adjacent points the
    line is what a randomized decision on the tied group achieves, so a system that gives every
    trial the same score has EER 50 %. Without tied scores the crossing lies on a step where
    only one of FNR/FPR changes, and the value equals Kaldi's ``compute-eer`` (up to one trial of
    its discretisation).

minDCF (normalized, as Kaldi's ``compute_min_dcf.py`` and voxceleb_trainer's ``ComputeMinDcf``)
    ``min_t [c_miss * FNR(t) * p_target + c_fa * FPR(t) * (1 - p_target)] / c_def`` with
    ``c_def = min(c_miss * p_target, c_fa * (1 - p_target))``; DCF is linear between adjacent
    points, so its minimum is at one of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "compute_eer",
    "compute_min_dcf",
    "compute_metrics",
    "det_curve",
    "plot_det",
    "OperatingPoints",
    "operating_points",
]


@dataclass
class OperatingPoints:
    """Tie-grouped operating points, ordered by increasing threshold (FNR up, FPR down)."""

    fnr: np.ndarray  # [U + 1]
    fpr: np.ndarray  # [U + 1]
    thresholds: np.ndarray  # [U + 1]: accept if score >= threshold (last one is +inf)
    num_target: float  # int unless the trials were weighted
    num_nontarget: float


def _check(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = np.asarray(labels).ravel()
    if s.shape != lab.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {lab.size}")
    if s.size == 0:
        raise ValueError("no trials: scores are empty")
    if lab.dtype == bool:
        lab = lab.astype(np.int64)
    bad = ~np.isin(lab, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 1 (target) or 0 (non-target); found {lab[bad][0]!r}")
    if not np.isfinite(s).all():
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"score {i} is not finite ({s[i]})")
    lab = lab.astype(np.int64)
    n_tar = int(lab.sum())
    if n_tar == 0:
        raise ValueError("no target trials: EER/minDCF need at least one target (label 1) trial")
    if n_tar == lab.size:
        raise ValueError("no non-target trials: EER/minDCF need at least one non-target (label 0) trial")
    return s, lab


def operating_points(scores, labels, weights=None) -> OperatingPoints:
    """All distinct operating points of the decision ``score >= t`` (equal scores grouped).

    ``weights`` (non-negative, one per trial) count each trial that many times: a bootstrap
    resample given as multiplicities (:func:`speaker_bootstrap`). The trial counts of the result
    are then the summed weights."""
    s, lab = _check(scores, labels)
    if weights is None:
        w = np.ones(s.size)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != s.shape:
            raise ValueError(f"weights and scores differ in length: {w.size} vs {s.size}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and non-negative")
    order = np.argsort(s)  # order inside a group of equal scores is irrelevant: groups are merged
    s = s[order]
    lab = lab[order]
    w = w[order]
    n_tar = float((w * lab).sum())
    n_non = float(w.sum()) - n_tar
    if n_tar <= 0 or n_non <= 0:
        raise ValueError("the weights leave no target or no non-target trial")
    tar_cum = np.cumsum(w * lab)
    non_cum = np.cumsum(w) - tar_cum
    # index of the last element of each group of equal scores
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tar_rej = np.r_[0, tar_cum[last]]
    non_rej = np.r_[0, non_cum[last]]
    fnr = tar_rej / n_tar
    fpr = (n_non - non_rej) / n_non
    thresholds = np.r_[s[last], np.inf]
    if weights is None:
        n_tar, n_non = int(n_tar), int(n_non)
    return OperatingPoints(fnr, fpr, thresholds, n_tar, n_non)


def _eer(op: OperatingPoints) -> Tuple[float, float]:
    d = op.fnr - op.fpr  # non-decreasing, d[0] = -1, d[-1] = +1
    k = int(np.searchsorted(d, 0.0, side="left"))  # first point with d >= 0 (k >= 1)
    if d[k] == 0.0:
        return float(op.fnr[k]) * 100.0, float(op.thresholds[k])
    # crossing between point k-1 (d < 0) and k (d > 0): the tied group k-1 is split
    t = -d[k - 1] / (d[k] - d[k - 1])
    eer = op.fnr[k - 1] + t * (op.fnr[k] - op.fnr[k - 1])
    return float(eer) * 100.0, float(op.thresholds[k - 1])


def _min_dcf(op: OperatingPoints, p_target: float, c_miss: float, c_fa: float) -> float:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss}, {c_fa}")
    dcf = c_miss * op.fnr * p_target + c_fa * op.fpr * (1.0 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf.min() / c_def)


def compute_eer(scores, labels, weights=None) -> Tuple[float, float]:
    """Equal error rate in percent and the threshold (accept if score >= threshold) there.

    Raises ``ValueError`` if there are no target or no non-target trials.
    """
    return _eer(operating_points(scores, labels, weights))


def compute_min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0,
                    c_fa: float = 1.0, weights=None) -> float:
    """Normalized minimum detection cost (Kaldi ``compute_min_dcf.py`` definition)."""
    return _min_dcf(operating_points(scores, labels, weights), p_target, c_miss, c_fa)


def compute_metrics(scores, labels, p_targets: Sequence[float] = (0.01, 0.05),
                    c_miss: float = 1.0, c_fa: float = 1.0) -> Dict[str, float]:
    """EER and minDCF at several priors from one sort. Keys: ``eer`` (percent),
    ``eer_threshold``, ``min_dcf_p<p>`` for each prior (e.g. ``min_dcf_p0.01``), trial counts."""
    op = operating_points(scores, labels)
    eer, thr = _eer(op)
    out: Dict[str, float] = {
        "eer": eer,
        "eer_threshold": thr,
        "num_target": op.num_target,
        "num_nontarget": op.num_nontarget,
    }
    for p in p_targets:
        out[f"min_dcf_p{p:g}"] = _min_dcf(op, p, c_miss, c_fa)
    return out


def det_curve(scores, labels) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, fnr, thresholds)`` of all distinct operating points (FPR decreasing)."""
    op = operating_points(scores, labels)
    return op.fpr, op.fnr, op.thresholds


_DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99]


def _decimate(fpr: np.ndarray, fnr: np.ndarray, max_points: int) -> Tuple[np.ndarray, np.ndarray]:
    if fpr.size <= max_points:
        return fpr, fnr
    idx = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).astype(np.int64), fpr.size - 1])
    return fpr[idx], fnr[idx]


def plot_det(path: Union[str, Path],
             curves: Union[Mapping[str, Tuple[Iterable[float], Iterable[int]]], Tuple[Iterable[float], Iterable[int]]],
             title: Optional[str] = None, max_points: int = 20000, mark_eer: bool = True) -> Path:
    """Write a DET plot (normal-deviate axes, as NIST plots) to a PNG file, atomically.

    ``curves`` is ``{label: (scores, labels)}`` or a single ``(scores, labels)`` pair.
    Uses matplotlib's Agg canvas directly (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.special import ndtri

    from pysv.utils.io import atomic_path

    if isinstance(curves, tuple):
        curves = {"": curves}
    fig = Figure(figsize=(5.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = 0.0005, 0.995
    for name, (s, lab) in curves.items():
        op = operating_points(s, lab)
        fpr, fnr = _decimate(op.fpr, op.fnr, max_points)
        x = ndtri(np.clip(fpr, lo, hi))
        y = ndtri(np.clip(fnr, lo, hi))
        eer, _ = _eer(op)
        label = f"{name} (EER {eer:.2f}%)" if name else f"EER {eer:.2f}%"
        (line,) = ax.plot(x, y, label=label, linewidth=1.2)
        if mark_eer:
            e = ndtri(np.clip(eer / 100.0, lo, hi))
            ax.plot([e], [e], "o", color=line.get_color(), markersize=4)
    ticks = ndtri(np.array(_DET_TICKS))
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=45, fontsize=7)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=7)
    lim = (ndtri(lo), ndtri(hi))
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.plot(lim, lim, ":", color="grey", linewidth=0.8)
    ax.grid(True, linestyle=":", linewidth=0.5)
    ax.set_xlabel("False acceptance rate (%)")
    ax.set_ylabel("False rejection rate (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png")
    return path
