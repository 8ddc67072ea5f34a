"""Stage 5 calibration: score → log-likelihood ratio on development trials, stored with the system.

    python -m pysv.bin.calibrate --exp exp/<system> --train-set <train> --utt2spk data/<train>/utt2spk \\
        [--backends "cosine plda fusion"] [--far 0.01] [--prior 0.5]

The development trials are drawn (stage 0's generator) among the training speakers held out for
the per-epoch validation (``exp/<system>/valid_speakers``), from their stage-3 embeddings in
``exp/<system>/embeddings/<train>/``; never from the test list. Each back-end of ``--backends``
scores them (``pysv.bin.score``, outputs ``scores/<train>_dev_<backend>``). ``fusion`` among them
adds their linear fusion (BOSARIS / FoCal: ``llr = sum_k w_k * score_k + b`` by logistic regression
on the same trials, weights held non-negative; of those listed among cosine, cosine_mean and plda):
a fixed-rule combination instead of betting on the one back-end that 10 development speakers rank
first. Its weights are stored in ``calibration.json`` whichever back-end wins, so stage 5 can score
the test trials with ``--backend fusion``. The one with the lowest development EER is calibrated by
linear logistic regression (``pysv.calibration``) and ``exp/<system>/calibration.json`` records it
with a threshold at the development EER point (or at ``--far``). ``pysv verify`` /
``SpeakerModel.verify`` use it; stage 5 then reports Cllr of the test
scores. The held-out speakers took no part in training the encoder; run.sh leaves them out of
stage 4's LDA/PLDA (``--exclude-speakers``) and this step leaves them out of the AS-norm cohort
(``pysv.bin.score --cohort-exclude``): a development trial's own speaker in the cohort would raise
its cohort mean and push its target scores down. The training mean still includes them. The
fusion's development EER is measured on the trials its weights were fitted on, a slight optimism
(2-3 weights and a bias on ~1,300 trials) that the single back-ends, whose calibration is monotonic
and leaves their EER unchanged, do not have.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from pysv.utils.cli import run_cli
from pysv.utils.io import DataError, read_scores, read_table, utt2spk_to_spk2utt, write_scores, write_trials

log = logging.getLogger("pysv.calibrate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="experiment directory exp/<system>")
    p.add_argument("--train-set", required=True, help="training set name (its embeddings hold the held-out speakers)")
    p.add_argument("--utt2spk", required=True, help="utt2spk of the training set")
    p.add_argument("--backends", default="cosine plda fusion",
                   help="back-ends to score the development trials with; fusion: their FoCal-style linear "
                        "fusion (of those among cosine, cosine_mean, plda), fitted on the same trials")
    p.add_argument("--far", type=float, default=None, help="threshold at this false-accept rate (default: EER point)")
    p.add_argument("--prior", type=float, default=0.5, help="effective target prior of the logistic regression")
    p.add_argument("--max-target-trials", type=int, default=5000, help="cap on development target trials")
    p.add_argument("--force", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from pysv.backend import SCORERS
    from pysv.backend.scorers import FUSION_COMPONENTS
    from pysv.bin import score as score_bin
    from pysv.calibration import Calibration, fit_linear_fusion
    from pysv.metrics import compute_eer
    from pysv.data.trials import TrialOptions, make_trials
    from pysv.train.config import load_config, validation_seed

    backends = list(dict.fromkeys(args.backends.split()))
    unknown = [b for b in backends if b not in SCORERS]
    if unknown:
        raise DataError(f"--backends: unknown back-end '{unknown[0]}' (choose from {', '.join(SCORERS)})")
    if not backends:
        raise DataError("--backends is empty")
    if "fusion" in backends and sum(b in FUSION_COMPONENTS for b in backends) < 2:
        raise DataError(f"--backends '{args.backends}': fusion combines at least two of "
                        f"{', '.join(FUSION_COMPONENTS)}; list them too")
    exp = Path(args.exp)
    valid = exp / "valid_speakers"
    if not valid.is_file():
        raise DataError(f"{valid} is missing: the system was trained without held-out speakers "
                        "(data.valid_speakers=0), so there are no development trials")
    speakers = set(valid.read_text().split())
    spk2utt = {s: u for s, u in utt2spk_to_spk2utt(read_table(args.utt2spk)).items() if s in speakers}
    missing = sorted(speakers - set(spk2utt))
    if missing:
        raise DataError(f"{args.utt2spk}: held-out speaker '{missing[0]}' of {valid} has no utterance")
    # the trials of the held-out speakers are drawn as the training run drew them (data.valid_seed):
    # runs that differ only in seed (ensemble members) are calibrated on the same trials
    seed = validation_seed(load_config(str(exp / "config.yaml"), check_choices=False))
    trials = make_trials(spk2utt, TrialOptions(seed=seed, max_target_trials=args.max_target_trials), "dev")
    cal_dir = exp / "calibration"
    cal_dir.mkdir(exist_ok=True)
    trials_path = cal_dir / "trials"
    write_trials(trials_path, trials)
    name = f"{args.train_set}_dev"
    (exp / "calibration.json").unlink(missing_ok=True)  # the development metrics must not use an old one
    y = np.array([lab for *_, lab in trials])
    dev_eer, dev_scores = {}, {}
    for backend in backends:
        if backend == "fusion":
            continue
        rc = score_bin.main(["--exp", str(exp), "--trials", str(trials_path), "--test-set", args.train_set,
                             "--train-set", args.train_set, "--trials-name", name, "--backend", backend,
                             "--no-plot", "--cohort-exclude", str(valid)] + (["--force"] if args.force else []))
        if rc != 0:
            raise DataError(f"scoring the development trials with back-end {backend} failed (exit {rc})")
        dev_eer[backend] = json.loads((exp / "scores" / f"{name}_{backend}.metrics").read_text())["eer"]
        scores = {(a, b): s for a, b, s in read_scores(exp / "scores" / f"{name}_{backend}")}
        dev_scores[backend] = np.array([scores[(a, b)] for a, b, _ in trials])
    fusion_weights = None
    if "fusion" in backends:
        parts = [b for b in backends if b in FUSION_COMPONENTS]
        w, bias = fit_linear_fusion(np.stack([dev_scores[b] for b in parts], axis=1), y, prior=args.prior)
        fusion_weights = {b: float(v) for b, v in zip(parts, w)}
        dev_scores["fusion"] = sum(v * dev_scores[b] for b, v in fusion_weights.items())
        dev_eer["fusion"] = compute_eer(dev_scores["fusion"], y)[0]
        write_scores(exp / "scores" / f"{name}_fusion",
                     ((a, b, s) for (a, b, _), s in zip(trials, dev_scores["fusion"].tolist())))
    best = min(dev_eer, key=lambda b: dev_eer[b])
    cal = Calibration.fit(best, dev_scores[best], y, str(trials_path), prior=args.prior, far=args.far,
                          fusion_weights=fusion_weights)
    cal.save(exp / "calibration.json")
    eers = ", ".join(f"{b} EER {e:.2f}%" for b, e in dev_eer.items())
    fused = "" if fusion_weights is None else \
        "; fusion weights " + ", ".join(f"{b} {v:.4g}" for b, v in fusion_weights.items())
    print(f"{exp.name}: calibrated back-end {best} on {len(trials)} development trials "
          f"({eers}{fused}): Cllr {cal.dev_cllr:.4f}, "
          f"minCllr {cal.dev_min_cllr:.4f}, threshold {cal.threshold:.4f} ({cal.threshold_rule})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.logging import setup_logging
    args = build_parser().parse_args(argv)
    setup_logging(None)
    return run_cli(run, args, "pysv.bin.calibrate", log)


if __name__ == "__main__":
    sys.exit(main())
