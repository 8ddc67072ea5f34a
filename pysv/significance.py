"""How sure is a difference in EER? A paired bootstrap over speakers.

The trials of a verification list are not independent: every trial of one enrolment speaker shares
that speaker's voice, recordings and (for the target trials) utterances, so a binomial error on the
trial count understates how much the EER would move on another set of speakers. The bootstrap here
resamples *speakers*: each resample draws the enrolment-side speakers of the trial list with
replacement and counts every trial of a drawn speaker as often as the speaker was drawn (trial
weights, :func:`pysv.metrics.operating_points`). All systems are scored on the same resamples
(paired), so the spread of a *difference* between two systems is not inflated by the spread of
each one alone (the speakers that are hard for one model are mostly hard for the other).

Percentile intervals (Efron & Tibshirani 1993, ch. 13). Used by ``python -m pysv.bin.compare``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from pysv.metrics import compute_eer, compute_min_dcf

__all__ = ["SystemSpread", "PairedDifference", "BootstrapResult", "speaker_bootstrap"]


@dataclass
class SystemSpread:
    eer: float                  # on the whole trial list, percent
    eer_ci: tuple               # (low, high) percentile interval, percent
    min_dcf: float
    min_dcf_ci: tuple


@dataclass
class PairedDifference:
    """``system`` against ``reference``: relative EER reduction ``1 - EER_system / EER_reference`` in percent."""
    reference: str
    system: str
    reduction: float
    reduction_ci: tuple
    p_better: float             # fraction of resamples where the system's EER is lower
    p_reaches: Dict[float, float] = field(default_factory=dict)  # aim (percent reduction) -> fraction reaching it


@dataclass
class BootstrapResult:
    num_speakers: int
    num_resamples: int
    confidence: float
    systems: Dict[str, SystemSpread]
    differences: List[PairedDifference]


def _interval(values: np.ndarray, confidence: float) -> tuple:
    lo = (1.0 - confidence) / 2.0
    return float(np.quantile(values, lo)), float(np.quantile(values, 1.0 - lo))


def speaker_bootstrap(scores: Mapping[str, np.ndarray], labels, groups: Sequence[str],
                      reference: Optional[str] = None, num_resamples: int = 1000, seed: int = 0,
                      confidence: float = 0.95, aims: Sequence[float] = (), p_target: float = 0.01
                      ) -> BootstrapResult:
    """EER / minDCF intervals of every system in ``scores`` (name -> one score per trial, all on the
    same trials with ``labels``) and the relative EER reduction of each against ``reference`` (default:
    the first), from ``num_resamples`` resamples of the speakers in ``groups`` (one per trial: the
    enrolment side's speaker). ``aims``: reductions (percent) whose attainment rate is reported."""
    if not scores:
        raise ValueError("no systems to compare")
    names = list(scores)
    reference = names[0] if reference is None else reference
    if reference not in scores:
        raise ValueError(f"reference system {reference!r} is not among {names}")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n = labels.size
    for name, s in scores.items():
        if np.asarray(s).size != n:
            raise ValueError(f"system {name!r} has {np.asarray(s).size} scores for {n} trials")
    if groups.size != n:
        raise ValueError(f"{groups.size} speaker labels for {n} trials")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be positive, got {num_resamples}")
    speakers, group_idx = np.unique(groups, return_inverse=True)
    k = speakers.size
    if k < 2:
        raise ValueError("the bootstrap over speakers needs at least two enrolment speakers")
    rng = np.random.default_rng(seed)
    eers = {name: [] for name in names}
    dcfs = {name: [] for name in names}
    drawn = 0
    while drawn < num_resamples:
        counts = rng.multinomial(k, np.full(k, 1.0 / k))
        w = counts[group_idx].astype(np.float64)
        tw = float((w * labels).sum())
        if tw == 0 or tw == w.sum():  # a resample without targets or non-targets has no EER: draw again
            continue
        for name in names:
            eers[name].append(compute_eer(scores[name], labels, w)[0])
            dcfs[name].append(compute_min_dcf(scores[name], labels, p_target, weights=w))
        drawn += 1
    systems = {}
    for name in names:
        e, d = np.array(eers[name]), np.array(dcfs[name])
        systems[name] = SystemSpread(compute_eer(scores[name], labels)[0], _interval(e, confidence),
                                     compute_min_dcf(scores[name], labels, p_target), _interval(d, confidence))
    ref = np.array(eers[reference])
    differences = []
    for name in names:
        if name == reference:
            continue
        e = np.array(eers[name])
        red = 100.0 * (1.0 - e / np.maximum(ref, 1e-12))
        differences.append(PairedDifference(
            reference, name, 100.0 * (1.0 - systems[name].eer / max(systems[reference].eer, 1e-12)),
            _interval(red, confidence), float((e < ref).mean()),
            {float(a): float((red >= a).mean()) for a in aims}))
    return BootstrapResult(k, num_resamples, confidence, systems, differences)
