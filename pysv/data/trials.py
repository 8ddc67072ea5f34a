"""Verification trials: seeded target / non-target pairs drawn from the utterances of a test set.

A trial is ``(enroll, test, label)`` with label 1 for a same-speaker (target) pair and 0 for a
different-speaker (non-target) pair; :func:`pysv.utils.io.write_trials` writes them in Kaldi's
``enroll test target|nontarget`` format.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

from pysv.utils.io import DataError

if TYPE_CHECKING:
    from pysv.data.prepare import Utterance

logger = logging.getLogger(__name__)

Trial = Tuple[str, str, int]

#: up to this many utterance pairs the non-target pairs are enumerated, above it they are sampled
ENUMERATE_PAIRS_LIMIT = 4_000_000


@dataclasses.dataclass
class TrialOptions:
    """How many trials to draw, and from which seed."""

    seed: int = 0
    max_target_trials: int = 0  # 0 = all target pairs
    nontarget_ratio: float = 1.0

    def validate(self) -> None:
        if self.max_target_trials < 0:
            raise DataError(f"--max-target-trials must be >= 0, got {self.max_target_trials}")
        if self.nontarget_ratio < 0:
            raise DataError(f"--nontarget-ratio must be >= 0, got {self.nontarget_ratio}")


def check_trial_speakers(spk2utt: Dict[str, List[str]], set_name: str) -> None:
    """Refuse test sets that cannot give both kinds of trials (< 2 speakers, a single-utterance speaker)."""
    if len(spk2utt) < 2:
        raise DataError(f"test set '{set_name}' has {len(spk2utt)} speaker(s); non-target trials need at "
                        "least 2 speakers")
    for spk in sorted(spk2utt):
        if len(spk2utt[spk]) < 2:
            raise DataError(f"speaker '{spk}' has only {len(spk2utt[spk])} utterance in test set "
                            f"'{set_name}'; target trials need at least 2 utterances per test speaker")


def make_trials(spk2utt: Dict[str, List[str]], opts: TrialOptions, set_name: str = "test") -> List[Trial]:
    """All (or a seeded sample of ``max_target_trials``) same-speaker pairs + a seeded sample of
    ``round(nontarget_ratio * #target)`` different-speaker pairs, drawn uniformly without replacement.

    Each unordered pair appears once, as ``(a, b)`` with ``a < b``; the list is sorted.
    """
    opts.validate()
    check_trial_speakers(spk2utt, set_name)
    rng = np.random.default_rng(opts.seed)
    speakers = sorted(spk2utt)
    targets = [(a, b) for s in speakers for a, b in itertools.combinations(sorted(spk2utt[s]), 2)]
    if opts.max_target_trials and len(targets) > opts.max_target_trials:
        keep = np.sort(rng.choice(len(targets), opts.max_target_trials, replace=False))
        targets = [targets[i] for i in keep]
    utts = sorted(u for s in speakers for u in spk2utt[s])
    spk_of = {u: s for s in speakers for u in spk2utt[s]}
    sid = {s: i for i, s in enumerate(speakers)}
    spk_idx = np.array([sid[spk_of[u]] for u in utts], dtype=np.int64)
    n = len(utts)
    sizes = np.bincount(spk_idx)
    total_non = n * (n - 1) // 2 - int(np.sum(sizes * (sizes - 1) // 2))
    want = int(round(opts.nontarget_ratio * len(targets)))
    if want > total_non:
        logger.warning("set %s: only %d non-target pairs exist; asked for %d", set_name, total_non, want)
        want = total_non
    if want == 0:
        pairs = np.zeros((0, 2), dtype=np.int64)
    elif n * (n - 1) // 2 <= ENUMERATE_PAIRS_LIMIT:  # enumerate every non-target pair, then sample
        i, j = np.triu_indices(n, k=1)
        m = spk_idx[i] != spk_idx[j]
        i, j = i[m], j[m]
        pick = np.sort(rng.choice(len(i), want, replace=False))
        pairs = np.stack([i[pick], j[pick]], axis=1)
    else:  # rejection sampling for large sets (few pairs wanted out of very many)
        chosen: Dict[Tuple[int, int], None] = {}
        while len(chosen) < want:
            k = max(1024, 2 * (want - len(chosen)))
            a = rng.integers(0, n, k)
            b = rng.integers(0, n, k)
            ok = spk_idx[a] != spk_idx[b]
            for x, y in zip(np.minimum(a, b)[ok], np.maximum(a, b)[ok]):
                chosen.setdefault((int(x), int(y)), None)
                if len(chosen) == want:
                    break
        pairs = np.array(sorted(chosen), dtype=np.int64).reshape(-1, 2)
    trials = [(a, b, 1) for a, b in targets] + [(utts[x], utts[y], 0) for x, y in pairs]
    trials.sort()
    return trials


def trials_for(utts: Sequence["Utterance"], opts: TrialOptions, set_name: str) -> List[Trial]:
    """:func:`make_trials` over the utterances of a test set (grouped by their speaker)."""
    spk2utt: Dict[str, List[str]] = {}
    for u in utts:
        spk2utt.setdefault(u.speaker, []).append(u.utt_id)
    return make_trials(spk2utt, opts, set_name)
