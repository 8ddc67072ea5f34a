"""Score calibration: linear logistic regression score → log-likelihood ratio, Cllr and minCllr.

As BOSARIS / Brümmer's FoCal: ``llr = a * score + b`` fitted by minimising the prior-weighted
cross-entropy of the target posteriors at the effective prior ``prior`` (default 0.5, where the
objective is ``Cllr``). ``minCllr`` is the Cllr of the optimal monotonic (PAV) transform of the
scores: what calibration could reach at best; ``Cllr - minCllr`` is the calibration loss. A
:class:`Calibration` also stores the decision threshold on the LLR scale: at the equal-error point
of the development trials, or where their false-accept rate reaches a chosen value.

Several back-ends' scores of the same trials fuse the same way (``fit_linear_fusion``, FoCal's
linear fusion): ``llr = sum_k w_k * score_k + b``; the ``fusion`` back-end
(:data:`pysv.backend.SCORERS`) scores ``sum_k w_k * score_k`` with the weights stored here.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
from scipy.optimize import isotonic_regression, minimize
from scipy.special import expit, log_expit

from pysv.metrics import compute_eer
from pysv.utils.io import DataError, atomic_write

LN2 = math.log(2.0)


def _split(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    _check_classes(y)
    return s[y], s[~y]


def _check_classes(y: np.ndarray) -> None:
    if not y.any() or y.all():
        raise DataError("calibration needs target and non-target trials")


def cllr(llr, labels) -> float:
    """Cost of the log-likelihood ratios ``llr`` in bits: 0 perfect, 1 = an uninformative system."""
    tar, non = _split(llr, labels)
    return float((-log_expit(tar).mean() - log_expit(-non).mean()) / (2 * LN2))


def min_cllr(scores, labels) -> float:
    """Cllr after the optimal monotonic transform of the scores (pool-adjacent-violators)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.float64)
    _split(s, y)
    order = np.lexsort((-y, s))  # ties: targets first, the PAV convention that does not reward ties
    post = isotonic_regression(y[order]).x
    n_tar, n_non = y.sum(), len(y) - y.sum()
    with np.errstate(divide="ignore"):
        llr = np.log(post) - np.log1p(-post) - math.log(n_tar / n_non)
    out = np.empty_like(llr)
    out[order] = llr
    return cllr(out, y)


def _check_prior(prior: float) -> None:
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be in (0, 1), got {prior}")


def fit_linear_fusion(scores, labels, prior: float = 0.5,
                      nonnegative: bool = True) -> Tuple[np.ndarray, float]:
    """``(w, b)`` of ``llr = scores @ w + b`` (``scores``: ``[trials, K]``, one column per back-end)
    minimising the prior-weighted cross-entropy: BOSARIS / FoCal linear logistic-regression fusion,
    with the weights held non-negative unless ``nonnegative=False`` (every back-end's score rises
    with the evidence for a target; a negative weight only fits the collinearity of near-identical
    back-ends, such as cosine and cosine_mean, to the development trials). The objective is convex;
    the columns are standardised for the optimiser and the weights mapped back."""
    _check_prior(prior)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.ndim != 2 or s.shape[0] != y.shape[0] or y.ndim != 1:
        raise ValueError(f"scores must be [trials, K] and labels [trials], got {s.shape} and {y.shape}")
    _check_classes(y)
    scale = np.maximum(s.std(axis=0), 1e-12)
    tar, non = s[y] / scale, s[~y] / scale
    offset = math.log(prior / (1 - prior))

    def objective(p):
        w, b = p[:-1], p[-1]
        zt = tar @ w + b + offset
        zn = non @ w + b + offset
        f = -prior * log_expit(zt).mean() - (1 - prior) * log_expit(-zn).mean()
        gt, gn = -prior * expit(-zt) / len(tar), (1 - prior) * expit(zn) / len(non)
        return f, np.concatenate([gt @ tar + gn @ non, [gt.sum() + gn.sum()]])

    start = np.concatenate([np.full(s.shape[1], 1.0 / s.shape[1]), [0.0]])
    bounds = [(0.0 if nonnegative else None, None)] * s.shape[1] + [(None, None)]
    res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return res.x[:-1] / scale, float(res.x[-1])


def fit_logistic(scores, labels, prior: float = 0.5) -> Tuple[float, float]:
    """``(a, b)`` of ``llr = a * score + b`` minimising the prior-weighted cross-entropy."""
    _split(scores, labels)  # 1-D scores and labels of one length, both classes
    w, b = fit_linear_fusion(np.asarray(scores, dtype=np.float64)[:, None], labels, prior, nonnegative=False)
    return float(w[0]), b


@dataclasses.dataclass
class Calibration:
    """A fitted score → LLR map of one back-end and its decision threshold (on the LLR scale)."""

    backend: str
    a: float
    b: float
    prior: float
    threshold: float
    threshold_rule: str  # "eer" or "far=<rate>"
    dev_trials: str
    dev_cllr: float
    dev_min_cllr: float
    dev_eer: float
    # the linear fusion fitted on the development trials (fit_linear_fusion), back-end -> weight; its
    # raw score is sum(weight * score); backend "fusion" when it was picked (then a ~ 1, b its bias)
    fusion_weights: Optional[Dict[str, float]] = None

    @property
    def raw_threshold(self) -> float:
        """The threshold on the back-end's raw scores (the LLR map is increasing: a > 0)."""
        return (self.threshold - self.b) / self.a

    def llr(self, scores):
        """Calibrated log-likelihood ratio(s) of raw back-end score(s)."""
        return self.a * np.asarray(scores, dtype=np.float64) + self.b if np.ndim(scores) else \
            self.a * float(scores) + self.b

    @classmethod
    def fit(cls, backend: str, scores, labels, dev_trials: str, prior: float = 0.5,
            far: Optional[float] = None, fusion_weights: Optional[Dict[str, float]] = None) -> "Calibration":
        """Fit on development scores; threshold at their EER point, or where the false-accept
        rate is ``far``."""
        a, b = fit_logistic(scores, labels, prior)
        if a <= 0:
            raise DataError(f"back-end {backend}: the development scores rank non-targets above targets "
                            f"(fitted slope {a:.4g}); no calibration")
        llr = a * np.asarray(scores, dtype=np.float64) + b
        eer, eer_thr = compute_eer(llr, np.asarray(labels))
        if far is None:
            thr, rule = float(eer_thr), "eer"
        else:
            if not 0.0 < far < 1.0:
                raise ValueError(f"far must be in (0, 1), got {far}")
            non = np.sort(llr[~np.asarray(labels).astype(bool)])
            k = int(math.ceil((1.0 - far) * len(non))) - 1  # at most far of the non-targets at or above
            thr, rule = float(np.nextafter(non[min(max(k, 0), len(non) - 1)], np.inf)), f"far={far:g}"
        return cls(backend=backend, a=a, b=b, prior=prior, threshold=thr, threshold_rule=rule,
                   dev_trials=str(dev_trials), dev_cllr=cllr(llr, labels), dev_min_cllr=min_cllr(scores, labels),
                   dev_eer=float(eer), fusion_weights=fusion_weights)

    def save(self, path) -> None:
        with atomic_write(path) as f:
            json.dump(dataclasses.asdict(self), f, indent=1)
            f.write("\n")

    @classmethod
    def load(cls, path) -> "Calibration":
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise DataError(f"{path}: not a pysv calibration ({e})") from None
