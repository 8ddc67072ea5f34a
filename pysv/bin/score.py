"""Stage 5: score a trial list with one back-end and compute EER / minDCF and a DET plot.

Reads   --trials (Kaldi "enroll test target|nontarget" or VoxCeleb "1 enroll test");
        exp/<system>/embeddings/<test-set>/<archive>.scp, the back-end's stage-3 archive
        (xvector, or xvector_crops / xvector_tta for crops / tta; the enrollment side from
        --enroll-set, spk_xvector.scp + num_utts.ark with --enroll-level spk);
        and what the back-end reads besides (pysv.backend.scorers.INPUTS): the training mean (of
        exp/<system>/embeddings/<train-set>/xvector.scp, else exp/<system>/backend/mean.vec), the
        cohort exp/<system>/embeddings/<train-set>/spk_xvector.scp, the stage-4 model
        exp/<system>/backend/{mean.vec,transform.mat,plda}.
Writes  exp/<system>/scores/<trials-name>_<backend>          "enroll test score" lines
        exp/<system>/scores/<trials-name>_<backend>.metrics  json: EER (%), minDCF p=0.01/0.05, counts
        exp/<system>/scores/<trials-name>_<backend>_det.png  DET plot
        exp/<system>/scores/.done_<trials-name>_<backend>    what they were computed from
All atomically; a re-run with the same options and unchanged inputs does nothing.

Back-ends (pysv.backend.SCORERS):
  cosine       cosine similarity of the raw embeddings
  cosine_mean  cosine after subtracting the training mean
  asnorm       adaptive symmetric score normalization of cosine_mean scores, the training
               speakers (spk_xvector.scp of <train-set>) as cohort
  crops        MP-2021 §4.2: minus the mean of the 10×10 Euclidean distances
               between the crop embeddings of the two utterances (xvector_crops.scp)
  tta          RawNet2 §4.2: cosine similarity of the test-time-augmented
               embeddings (mean over crops of the training length with 20 % overlap, xvector_tta.scp)
  plda         mean subtraction → LDA → length norm → PLDA log-likelihood ratio (Kaldi
               ivector-plda-scoring; fit with python -m pysv.bin.backend)
  fusion       sum of weight * score of cosine / cosine_mean / plda, the linear fusion that
               stage 5's calibration fitted on development trials (exp/<system>/calibration.json)

Example:
    python -m pysv.bin.score --exp exp/xvector_softmax --trials data/voxceleb1_test/trials \\
        --test-set voxceleb1_test --train-set voxceleb2_dev --backend plda
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from pysv.utils.cli import run_cli, str2bool
from pysv.utils.io import DataError, atomic_write, read_trials, write_scores

log = logging.getLogger("pysv.bin.score")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="experiment directory exp/<system>")
    p.add_argument("--trials", required=True, help="trial list (Kaldi or VoxCeleb format), e.g. data/<test>/trials")
    p.add_argument("--test-set", required=True,
                   help="set whose embeddings are in exp/<system>/embeddings/<test-set>/ (test side of the trials)")
    p.add_argument("--backend", required=True, metavar="NAME", help="scoring back-end (listed above)")
    p.add_argument("--train-set", default=None,
                   help="training set (exp/<system>/embeddings/<train-set>/): mean for cosine_mean, "
                        "mean and cohort for asnorm")
    p.add_argument("--enroll-set", default=None,
                   help="set holding the enrollment side of the trials (default: the test set)")
    p.add_argument("--enroll-level", choices=("utt", "spk"), default="utt",
                   help="utt: enrollment keys are utterances (xvector.scp, VoxCeleb style, default); "
                        "spk: speaker models from spk_xvector.scp, with num_utts.ark giving the "
                        "utterance counts PLDA uses (Kaldi --num-utts)")
    p.add_argument("--trials-name", default=None,
                   help="name used for the outputs (default: <test-set> when the file is called "
                        "'trials', else <test-set>_<file stem>)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip (and count) trials naming an utterance without embedding instead of failing")
    p.add_argument("--plda-length-norm", choices=("kaldi", "simple", "none"), default="kaldi",
                   help="PLDA length normalization: kaldi (ivector-plda-scoring default), simple "
                        "(--simple-length-normalization), none (--normalize-length=false)")
    p.add_argument("--plda-smoothing", type=float, default=0.0,
                   help="ivector-copy-plda --smoothing applied before scoring (default 0.0)")
    p.add_argument("--crops-normalize", type=str2bool, default=True,
                   help="L2-normalize each crop embedding before the distances (voxceleb_trainer "
                        "test_normalize; default true)")
    p.add_argument("--asnorm-top-n", type=int, default=300,
                   help="AS-norm: number of highest cohort scores used per utterance (default 300; "
                        "0 = whole cohort, i.e. S-norm)")
    p.add_argument("--cohort-exclude", default=None, metavar="FILE",
                   help="AS-norm: speakers (one per line) left out of the cohort, e.g. the speakers of "
                        "development trials drawn from the training set (pysv.bin.calibrate)")
    p.add_argument("--p-target", type=float, nargs="+", default=[0.01, 0.05],
                   help="priors for minDCF (default 0.01 0.05; c_miss = c_fa = 1)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the DET plot")
    p.add_argument("--force", action="store_true", help="re-score even if outputs are complete")
    return p


def default_trials_name(trials: Path, test_set: str) -> str:
    return test_set if trials.name == "trials" else f"{test_set}_{trials.stem}"


# --------------------------------------------------------------------------- inputs of the scorers
def _signature(path: Path) -> Dict[str, Any]:
    from pysv.backend import archive_signature
    from pysv.utils.stage import file_signature

    return archive_signature(path) if path.suffix == ".scp" else file_signature(path)


def _missing_error(trials, bad, ei, ti, e_scp: Path, t_scp: Path, trials_path: Path) -> DataError:
    missing = []
    for k in np.flatnonzero(bad)[:5]:
        a, b, _ = trials[k]
        if ei[k] < 0:
            missing.append(f"'{a}' (not in {e_scp})")
        if ti[k] < 0:
            missing.append(f"'{b}' (not in {t_scp})")
    return DataError(f"{trials_path}: {int(bad.sum())} of {len(trials)} trials name utterances with no "
                     "embedding, e.g. " + ", ".join(missing[:5]) + "; use --skip-missing to skip them")


# --------------------------------------------------------------------------- main logic
def run(args: argparse.Namespace) -> int:
    from pysv.backend import SCORERS, ScoringOptions, TrialSides, index_trials, read_num_utts
    from pysv.backend.scorers import input_files, load_input, load_vectors
    from pysv.calibration import Calibration, cllr, min_cllr
    from pysv.metrics import compute_metrics, plot_det
    from pysv.utils import stage

    t_start = time.time()
    scorer = SCORERS[args.backend]
    exp = Path(args.exp)
    if not exp.is_dir():
        raise DataError(f"missing experiment directory: {exp}")
    trials_path = Path(args.trials)
    name = args.trials_name or default_trials_name(trials_path, args.test_set)
    out_dir = exp / "scores"
    score_path = out_dir / f"{name}_{args.backend}"
    metrics_path = out_dir / f"{name}_{args.backend}.metrics"
    det_path = out_dir / f"{name}_{args.backend}_det.png"
    marker = out_dir / f".done_{name}_{args.backend}"
    enroll_set = args.enroll_set or args.test_set
    emb = exp / "embeddings"
    t_scp = emb / args.test_set / f"{scorer.archive}.scp"
    num_utts_path = None
    if args.enroll_level == "spk":
        if scorer.archive != "xvector":
            raise DataError(f"--backend {args.backend} needs utterance-level enrollment (--enroll-level utt)")
        e_scp = emb / enroll_set / "spk_xvector.scp"
        if scorer.uses_num_enroll:
            num_utts_path = emb / enroll_set / "num_utts.ark"
    else:
        e_scp = emb / enroll_set / t_scp.name
    files_of = {n: input_files(n, args.backend, exp, args.train_set) for n in scorer.reads}

    calibration_path = exp / "calibration.json"  # pysv.bin.calibrate: Cllr of the calibrated scores
    config = {k: v for k, v in sorted(vars(args).items()) if k not in ("force", "no_plot")}
    fingerprint = {
        "options": config,
        "trials": stage.file_signature(trials_path),
        "test": _signature(t_scp),
        "enroll": None if e_scp == t_scp else _signature(e_scp),
        "num_utts": None if num_utts_path is None else stage.file_signature(num_utts_path),
        "inputs": {n: [_signature(f) for f in files] for n, files in files_of.items()},
        "calibration": stage.file_signature(calibration_path) if calibration_path.is_file() else None,
    }
    if not args.force:
        reason = stage.check(marker, fingerprint)
        if reason is None:
            print(f"{score_path} is complete; skipping (use --force to re-score)")
            _print_summary(json.loads(metrics_path.read_text()))
            return 0
        log.info("scoring %s: %s", score_path, reason)

    # ---- trials
    trials = read_trials(trials_path)
    if not trials:
        raise DataError(f"{trials_path}: the trial list is empty")
    labels_all = np.fromiter((lab for _, _, lab in trials), dtype=np.int64, count=len(trials))
    if labels_all.sum() == 0:
        raise DataError(f"{trials_path}: no target trials (every trial is nontarget); EER/minDCF "
                        "need both target and nontarget trials")
    if labels_all.sum() == labels_all.size:
        raise DataError(f"{trials_path}: no nontarget trials (every trial is target); EER/minDCF "
                        "need both target and nontarget trials")

    # ---- both sides of the trials
    t_keys, T = load_vectors(t_scp, "test embeddings", scorer.crops)
    if e_scp == t_scp:
        e_keys, E = t_keys, T
    else:
        e_keys, E = load_vectors(e_scp, "enrollment embeddings", scorer.crops)
    if E.shape[1:] != T.shape[1:]:
        raise DataError(f"enrollment ({e_scp}) and test ({t_scp}) embeddings differ in dimension: "
                        f"{E.shape[1:]} vs {T.shape[1:]}")
    num_enroll = None
    if num_utts_path is not None:
        if not num_utts_path.is_file():
            raise DataError(f"missing {num_utts_path} (utterance counts of the speaker models, needed by PLDA)")
        counts = read_num_utts(num_utts_path)
        absent = [k for k in e_keys if k not in counts]
        if absent:
            raise DataError(f"{num_utts_path}: no utterance count for speaker '{absent[0]}'")
        num_enroll = np.array([counts[k] for k in e_keys], dtype=np.float64)

    ei, ti, bad = index_trials(trials, e_keys, t_keys)
    n_skipped = int(bad.sum())
    labels, kept_trials = labels_all, trials
    if n_skipped:
        if not args.skip_missing:
            raise _missing_error(trials, bad, ei, ti, e_scp, t_scp, trials_path)
        keep = ~bad
        ei, ti, labels = ei[keep], ti[keep], labels_all[keep]
        kept_trials = [tr for tr, b in zip(trials, bad) if not b]
        print(f"skipped {n_skipped} of {len(trials)} trials naming utterances with no embedding")
        log.warning("skipped %d of %d trials naming utterances with no embedding", n_skipped, len(trials))
        if ei.size == 0:
            raise DataError(f"{trials_path}: every trial was skipped (no embeddings for its utterances)")
    sides = TrialSides(E, T, ei, ti, num_enroll)
    options = ScoringOptions(plda_length_norm=args.plda_length_norm, plda_smoothing=args.plda_smoothing,
                             crops_normalize=args.crops_normalize,
                             asnorm_top_n=None if args.asnorm_top_n <= 0 else args.asnorm_top_n,
                             cohort_exclude=frozenset(Path(args.cohort_exclude).read_text().split())
                             if args.cohort_exclude else frozenset())

    inputs = {n: load_input(n, files, E.shape[-1], options) for n, files in files_of.items()}

    # ---- scoring
    t0 = time.time()
    scores = scorer.score(sides, inputs, options)
    t_score = time.time() - t0

    # ---- outputs
    marker.unlink(missing_ok=True)
    write_scores(score_path, ((a, b, s) for (a, b, _), s in zip(kept_trials, scores.tolist())))
    t1 = time.time()
    m = compute_metrics(scores, labels, p_targets=args.p_target)
    m["min_cllr"] = min_cllr(scores, labels)
    if calibration_path.is_file():
        cal = Calibration.load(calibration_path)
        if cal.backend == args.backend:
            m["cllr"] = cllr(cal.llr(scores), labels)
    t_metrics = time.time() - t1
    embedded = stage.info(t_scp.parent / f".done_{t_scp.stem}")
    result = {
        "system": exp.name, "backend": args.backend, "model_epochs": embedded.get("model_epochs"),
        "trials": str(trials_path), "trials_name": name,
        "test_set": args.test_set, "enroll_set": enroll_set, "num_trials": int(labels.size),
        "num_skipped": n_skipped, **m, "score_file": str(score_path),
        "det_plot": None if args.no_plot else str(det_path),
        "seconds_scoring": round(t_score, 4), "seconds_metrics": round(t_metrics, 4),
        "config": config,
    }
    if not args.no_plot:
        plot_det(det_path, {f"{exp.name} {args.backend}": (scores, labels)}, title=f"{name} ({exp.name})")
    with atomic_write(metrics_path, encoding="utf-8") as f:
        json.dump(result, f, indent=2, sort_keys=False)
        f.write("\n")
    stage.write(marker, fingerprint, outputs=[score_path, metrics_path] + ([] if args.no_plot else [det_path]))
    _print_summary(result)
    log.info("scored %d trials in %.3f s (metrics %.3f s, total %.1f s)", labels.size, t_score, t_metrics,
             time.time() - t_start)
    return 0


def _print_summary(r: dict) -> None:
    dcfs = "  ".join(f"minDCF(p={k[len('min_dcf_p'):]}) {v:.4f}" for k, v in r.items() if k.startswith("min_dcf_p"))
    skipped = f", {r.get('num_skipped', 0)} skipped" if r.get("num_skipped") else ""
    cal = (f"  Cllr {r['cllr']:.4f}" if "cllr" in r else "") + \
        (f"  minCllr {r['min_cllr']:.4f}" if "min_cllr" in r else "")
    print(f"{r.get('system')} {r.get('trials_name')} {r.get('backend')}: EER {r['eer']:.3f}%  {dcfs}{cal}  "
          f"({r.get('num_trials')} trials: {r.get('num_target')} target, {r.get('num_nontarget')} nontarget{skipped})")


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.logging import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    from pysv.backend import SCORERS  # after parsing: --help stays fast

    if args.backend not in SCORERS:
        parser.error(f"argument --backend: invalid choice: '{args.backend}' (choose from {', '.join(SCORERS)})")
    setup_logging()
    return run_cli(run, args, "score.py", log)


if __name__ == "__main__":
    sys.exit(main())
