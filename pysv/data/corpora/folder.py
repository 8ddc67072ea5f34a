"""Any corpus laid out as ``<corpus-dir>/<speaker>/<utterance>.{wav,flac}``.

Deeper nesting is allowed (``<speaker>/<session>/<utt>.wav`` becomes ``<speaker>-<session>-<utt>``);
a file name that already starts with ``<speaker>-`` is kept as the utterance id. The test speakers are
a separate directory of the same layout, a list of speaker ids, fold K of N seeded folds of the
speakers (``--test-fold K/N``: k-fold cross-validation over speakers), or a seeded fraction of them;
training and test speakers are always disjoint.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import List, Optional, Sequence, Tuple

import numpy as np

from pysv.data.prepare import (AudioOptions, SetSpec, Utterance, check_id, run_sets, scan_speaker_tree,
                               sets_complete)
from pysv.data.trials import TrialOptions, trials_for
from pysv.utils.io import DataError
from pysv.utils.stage import file_signature, listing_signature

logger = logging.getLogger(__name__)


def make_utt_id(speaker: str, rel: PurePosixPath) -> str:
    """``<spk>-<path parts joined by '-'>``; a file name already starting with ``<spk>-`` is kept."""
    parts = rel.with_suffix("").parts
    if len(parts) == 1 and parts[0].startswith(speaker + "-"):
        return parts[0]
    return "-".join((speaker,) + tuple(parts))


def scan_speaker_dirs(root, what: str = "corpus", progress: bool = True) -> List[Utterance]:
    """Utterances of a ``<root>/<speaker>/<utterance>.{wav,flac}`` tree (ids by :func:`make_utt_id`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} directory not found: {root}")
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return scan_speaker_tree(root, speakers, make_utt_id, what, "<speaker>/<utterance>.wav|.flac", progress)


def read_speaker_list(path) -> List[str]:
    """Speaker ids, the first field of each line (``#`` comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing test-speaker list: {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            out.append(parts[0])
    if not out:
        raise DataError(f"test-speaker list {path} is empty")
    return out


def parse_fold(text: str) -> Tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``: fold K (1-based) of N; a malformed value is named."""
    k, sep, n = str(text).partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = 0
    if not sep or n < 2 or not 1 <= k <= n:
        raise DataError(f"--test-fold must be K/N with 1 <= K <= N and N >= 2 (fold K of N), got {text!r}")
    return k, n


def speaker_folds(speakers: Sequence[str], num_folds: int, seed: int) -> List[List[str]]:
    """The speakers in ``num_folds`` disjoint folds of near-equal size (a seeded permutation of the
    sorted ids cut into consecutive parts): every speaker is in exactly one fold, so testing on each
    fold in turn (k-fold cross-validation over speakers) tests every speaker once."""
    speakers = sorted(speakers)
    if num_folds > len(speakers) // 2:
        raise DataError(f"{num_folds} folds of {len(speakers)} speakers leave fewer than 2 test speakers per fold")
    order = np.random.default_rng(seed).permutation(len(speakers))
    return [sorted(speakers[i] for i in part) for part in np.array_split(order, num_folds)]


def split_speakers(speakers: Sequence[str], test_fraction: float, seed: int,
                   test_speakers_file: Optional[str] = None,
                   test_fold: Optional[str] = None) -> Tuple[List[str], List[str]]:
    """Speaker-disjoint split: the listed speakers, fold K of N (``test_fold="K/N"``,
    :func:`speaker_folds`), or a seeded choice of ``test_fraction`` of them (the first given of these;
    :func:`prepare_folder` refuses a list and a fold together)."""
    speakers = sorted(speakers)
    if test_speakers_file:
        listed = read_speaker_list(test_speakers_file)
        missing = [s for s in listed if s not in set(speakers)]
        if missing:
            raise DataError(f"{test_speakers_file}: speaker(s) not found in the corpus: {', '.join(missing[:20])}")
        test = sorted(set(listed))
    elif test_fold:
        k, n = parse_fold(test_fold)
        test = speaker_folds(speakers, n, seed)[k - 1]
    else:
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        if test_fraction == 0.0:
            return speakers, []
        n_test = max(2, int(round(test_fraction * len(speakers))))
        if n_test >= len(speakers):
            raise DataError(f"cannot hold out {n_test} test speakers out of {len(speakers)} and keep "
                            "training speakers; lower --test-fraction or add speakers")
        rng = np.random.default_rng(seed)
        test = sorted(rng.choice(speakers, n_test, replace=False).tolist())
    train = [s for s in speakers if s not in set(test)]
    if not train:
        raise DataError("every speaker is a test speaker; nothing left for training")
    return train, test


def prepare_folder(corpus_dir, data_root="data", name: str = "folder", test_corpus_dir=None,
                   test_speakers: Optional[str] = None, test_fraction: float = 0.2,
                   trial_opts: Optional[TrialOptions] = None, audio_opts: Optional[AudioOptions] = None,
                   force: bool = False, test_fold: Optional[str] = None) -> List[Path]:
    """Prepare ``<name>_train`` and ``<name>_test`` from speaker folders. Returns the set dirs."""
    trial_opts = trial_opts or TrialOptions()
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    trial_opts.validate()
    check_id("set name", name, "--name")
    if test_corpus_dir and (test_speakers or test_fold):
        raise DataError("give either --test-corpus-dir or --test-speakers / --test-fold, not both")
    if test_speakers and test_fold:
        raise DataError("give either --test-speakers or --test-fold, not both")
    if test_fold:
        parse_fold(test_fold)
    has_test = bool(test_corpus_dir or test_speakers or test_fold or test_fraction > 0)
    set_names = [f"{name}_train"] + ([f"{name}_test"] if has_test else [])
    utts = scan_speaker_dirs(corpus_dir, "corpus", audio_opts.progress)
    test_scan = scan_speaker_dirs(test_corpus_dir, "test corpus", audio_opts.progress) if test_corpus_dir else []
    # the listing (names, sizes, modification times of every audio file) is part of the
    # configuration: an added, removed or rewritten file makes stage 0 run again
    fp = dict(stage="folder", corpus_dir=os.path.abspath(corpus_dir),
              test_corpus_dir=os.path.abspath(test_corpus_dir) if test_corpus_dir else None,
              test_speakers=os.path.abspath(test_speakers) if test_speakers else None,
              test_speakers_file=file_signature(test_speakers) if test_speakers else None,
              test_fraction=test_fraction if not (test_corpus_dir or test_speakers or test_fold) else None,
              test_fold=test_fold or None,
              trials=dataclasses.asdict(trial_opts), audio=audio_opts.fingerprint(), name=name,
              audio_files=listing_signature(u.path for u in utts + test_scan))
    if not force and sets_complete(data_root, set_names, fp):
        return [Path(data_root) / s for s in set_names]

    if test_corpus_dir:
        train_utts = utts
        test_utts = test_scan
        overlap = sorted({u.speaker for u in train_utts} & {u.speaker for u in test_utts})
        if overlap:
            raise DataError(f"speaker(s) {', '.join(overlap[:20])} appear in both {corpus_dir} and "
                            f"{test_corpus_dir}; train and test speakers must be disjoint")
    else:
        train_spk, test_spk = split_speakers(sorted({u.speaker for u in utts}), test_fraction,
                                             trial_opts.seed, test_speakers, test_fold)
        tset = set(test_spk)
        train_utts = [u for u in utts if u.speaker not in tset]
        test_utts = [u for u in utts if u.speaker in tset]
    specs = [SetSpec(f"{name}_train", name, train_utts)]
    _warn_single_utt_speakers(train_utts, f"{name}_train")
    if has_test:
        specs.append(SetSpec(f"{name}_test", name, test_utts,
                             {"trials": trials_for(test_utts, trial_opts, f"{name}_test")}))
    return run_sets(specs, Path(data_root), audio_opts, fp)


def _warn_single_utt_speakers(utts: Sequence[Utterance], set_name: str) -> None:
    single = sorted(s for s, n in Counter(u.speaker for u in utts).items() if n < 2)
    if single:
        logger.warning("training set %s: %d speaker(s) with a single utterance (e.g. %s); samplers that "
                       "need 2 utterances per speaker will skip them", set_name, len(single), single[0])
