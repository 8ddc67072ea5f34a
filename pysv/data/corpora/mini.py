"""The built-in mini corpus: generated locally (:mod:`pysv.data.corpora.mini_synth`), then prepared as
``<name>_train`` (the first speakers) and ``<name>_test`` (the last ``num_test_speakers``, unseen in
training) with all target trials.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import List, Optional

from pysv.data.corpora.folder import scan_speaker_dirs
from pysv.data.corpora.mini_synth import MiniConfig, check_generated, generate_mini_corpus
from pysv.data.prepare import AudioOptions, SetSpec, check_id, run_sets, sets_complete
from pysv.data.trials import TrialOptions, trials_for
from pysv.utils.io import DataError


def prepare_mini(data_root="data", corpus_dir=None, num_test_speakers: int = 16,
                 mini_cfg: Optional[MiniConfig] = None, trial_opts: Optional[TrialOptions] = None,
                 audio_opts: Optional[AudioOptions] = None, name: str = "mini", force: bool = False) -> List[Path]:
    """Generate the synthetic corpus into ``corpus_dir`` (default ``<data_root>/mini_corpus``) unless
    it is there, then prepare its sets. Returns the set dirs."""
    cfg = mini_cfg or MiniConfig()
    cfg.validate()
    audio_opts = audio_opts or AudioOptions()
    audio_opts.validate()
    trial_opts = trial_opts or TrialOptions(seed=cfg.seed)
    trial_opts.validate()
    check_id("set name", name, "--name")
    if cfg.sample_rate != audio_opts.sample_rate:
        raise DataError(f"mini corpus sample rate {cfg.sample_rate} differs from --sample-rate "
                        f"{audio_opts.sample_rate}")
    if num_test_speakers < 0 or num_test_speakers >= cfg.num_speakers:
        raise DataError(f"--num-test-speakers must be in [0, {cfg.num_speakers}) for {cfg.num_speakers} "
                        f"speakers, got {num_test_speakers}")
    if num_test_speakers == 1:
        raise DataError("--num-test-speakers 1: non-target trials need at least 2 test speakers")
    if num_test_speakers and cfg.utts_per_speaker < 2:
        raise DataError(f"--utts-per-speaker {cfg.utts_per_speaker}: target trials need at least 2 "
                        "utterances per test speaker")
    corpus_dir = Path(corpus_dir) if corpus_dir else Path(data_root) / "mini_corpus"
    set_names = [f"{name}_train"] + ([f"{name}_test"] if num_test_speakers else [])
    fp = dict(stage="mini", corpus=cfg.fingerprint(), corpus_dir=os.path.abspath(corpus_dir),
              num_test_speakers=num_test_speakers, trials=dataclasses.asdict(trial_opts),
              audio=audio_opts.fingerprint(), name=name)
    if not force and check_generated(corpus_dir, cfg) is None and sets_complete(data_root, set_names, fp):
        return [Path(data_root) / s for s in set_names]
    wav_dir = generate_mini_corpus(corpus_dir, cfg, nj=audio_opts.nj, force=force, progress=audio_opts.progress)
    utts = scan_speaker_dirs(wav_dir, "mini corpus", audio_opts.progress)
    speakers = [cfg.speaker_id(i) for i in range(cfg.num_speakers)]
    test_spk = set(speakers[cfg.num_speakers - num_test_speakers:])
    train_utts = [u for u in utts if u.speaker not in test_spk]
    test_utts = [u for u in utts if u.speaker in test_spk]
    specs = [SetSpec(f"{name}_train", name, train_utts)]
    if num_test_speakers:
        specs.append(SetSpec(f"{name}_test", name, test_utts,
                             {"trials": trials_for(test_utts, trial_opts, f"{name}_test")}))
    return run_sets(specs, Path(data_root), audio_opts, fp)
