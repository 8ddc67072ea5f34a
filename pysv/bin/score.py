"""Stage 5: score a trial list with one back-end and compute EER / minDCF and a DET plot.

Reads   data/<test>/trials (Kaldi "enroll test target|nontarget" or VoxCeleb "1 enroll test"),
        exp/<system>/embeddings/<test-set>/xvector.scp (xvector_crops.scp for --backend crops),
        exp/<system>/backend/{mean.vec,transform.mat,plda} for --backend plda (stage 4),
        exp/<system>/embeddings/<train-set>/ for cosine_mean (training mean) and asnorm (cohort).
Writes  exp/<system>/scores/<trials-name>_<backend>          "enroll test score" lines
        exp/<system>/scores/<trials-name>_<backend>.metrics  json: EER (%), minDCF p=0.01/0.05, counts
        exp/<system>/scores/<trials-name>_<backend>_det.png  DET plot
All atomically; a re-run with the same options and unchanged inputs does nothing.

Back-ends:
  cosine       cosine similarity of the raw embeddings
  cosine_mean  cosine after subtracting the training mean (mean of <train-set> embeddings, or
               exp/<system>/backend/mean.vec when --train-set is not given)
  plda         mean subtraction → LDA → length norm → PLDA log-likelihood ratio (Kaldi
               ivector-plda-scoring; fit with python -m pysv.bin.backend)
  crops        seed 000 §4.2: minus the mean of the 10×10 Euclidean distances between the crop
               embeddings of the two utterances (xvector_crops.scp)
  tta          seed 004 §4.2: cosine similarity of the test-time-augmented embeddings (mean over
               crops of the training length with 20 % overlap, xvector_tta.scp)
  asnorm       adaptive symmetric score normalization of cosine_mean scores with a cohort of
               <train-set> speaker embeddings (spk_xvector.scp, or speaker means via utt2spk)

Example:
    python -m pysv.bin.score --exp exp/xvector_softmax --trials data/voxceleb1_test/trials \\
        --test-set voxceleb1_test --backend plda
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from pysv.utils.cli import run_cli, str2bool
from pysv.utils.io import DataError, atomic_write, read_table, read_trials

log = logging.getLogger("pysv.bin.score")

BACKENDS = ("cosine", "cosine_mean", "plda", "crops", "tta", "asnorm")
#: back-ends that score the embeddings of a test protocol other than full utterances (stage 3 mode)
PROTOCOL_FILES = {"crops": "xvector_crops.scp", "tta": "xvector_tta.scp"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="experiment directory exp/<system>")
    p.add_argument("--trials", required=True, help="trial list (Kaldi or VoxCeleb format), e.g. data/<test>/trials")
    p.add_argument("--test-set", required=True,
                   help="set whose embeddings are in exp/<system>/embeddings/<test-set>/ (test side of the trials)")
    p.add_argument("--backend", required=True, choices=BACKENDS, help="scoring back-end (see above)")
    p.add_argument("--train-set", default=None,
                   help="training set (exp/<system>/embeddings/<train-set>/): mean for cosine_mean, "
                        "mean and cohort for asnorm")
    p.add_argument("--utt2spk", default=None,
                   help="utt2spk of the training set for the asnorm cohort when spk_xvector.scp is "
                        "absent (default: data/<train-set>/utt2spk)")
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
    p.add_argument("--p-target", type=float, nargs="+", default=[0.01, 0.05],
                   help="priors for minDCF (default 0.01 0.05; c_miss = c_fa = 1)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the DET plot")
    p.add_argument("--force", action="store_true", help="re-score even if outputs are complete")
    return p


# --------------------------------------------------------------------------- helpers
def default_trials_name(trials: Path, test_set: str) -> str:
    return test_set if trials.name == "trials" else f"{test_set}_{trials.stem}"


def _load(scp: Path, what: str):
    from pysv.backend import load_embeddings

    if not scp.is_file():
        raise DataError(f"missing {what}: {scp} (run stage 3, embedding extraction)")
    return load_embeddings(scp, what=what)


def _train_embeddings(exp: Path, train_set: Optional[str], why: str):
    if not train_set:
        raise DataError(f"--backend {why} needs --train-set (training embeddings)")
    return _load(exp / "embeddings" / train_set / "xvector.scp", "training embeddings")


def _index(keys: List[str]) -> Dict[str, int]:
    return {k: i for i, k in enumerate(keys)}


def _map_trials(trials, e_index, t_index, e_src: Path, t_src: Path, skip_missing: bool, trials_path: Path):
    n = len(trials)
    ei = np.fromiter((e_index.get(a, -1) for a, _, _ in trials), dtype=np.int64, count=n)
    ti = np.fromiter((t_index.get(b, -1) for _, b, _ in trials), dtype=np.int64, count=n)
    bad = (ei < 0) | (ti < 0)
    nbad = int(bad.sum())
    if nbad and not skip_missing:
        missing = []
        for k in np.flatnonzero(bad)[:5]:
            a, b, _ = trials[k]
            if ei[k] < 0:
                missing.append(f"'{a}' (not in {e_src})")
            if ti[k] < 0:
                missing.append(f"'{b}' (not in {t_src})")
        raise DataError(f"{trials_path}: {nbad} of {n} trials name utterances with no embedding, e.g. "
                        + ", ".join(missing[:5]) + "; use --skip-missing to skip them")
    return ei, ti, bad


def _inputs_mtime(paths) -> float:
    return max((Path(p).stat().st_mtime for p in paths if p and Path(p).exists()), default=0.0)


# --------------------------------------------------------------------------- main logic
def run(args: argparse.Namespace) -> int:
    from pysv.metrics import compute_metrics, plot_det

    t_start = time.time()
    exp = Path(args.exp)
    if not exp.is_dir():
        raise DataError(f"missing experiment directory: {exp}")
    trials_path = Path(args.trials)
    name = args.trials_name or default_trials_name(trials_path, args.test_set)
    out_dir = exp / "scores"
    score_path = out_dir / f"{name}_{args.backend}"
    metrics_path = out_dir / f"{name}_{args.backend}.metrics"
    det_path = out_dir / f"{name}_{args.backend}_det.png"
    enroll_set = args.enroll_set or args.test_set
    emb = exp / "embeddings"
    test_file = PROTOCOL_FILES.get(args.backend, "xvector.scp")
    t_scp = emb / args.test_set / test_file
    if args.enroll_level == "spk":
        if args.backend in PROTOCOL_FILES:
            raise DataError(f"--backend {args.backend} needs utterance-level enrollment (--enroll-level utt)")
        e_scp = emb / enroll_set / "spk_xvector.scp"
    else:
        e_scp = emb / enroll_set / test_file

    config = {k: v for k, v in sorted(vars(args).items()) if k not in ("force", "no_plot")}
    inputs = [trials_path, t_scp, e_scp, t_scp.parent / f".done_{t_scp.stem}"]
    if args.backend == "plda":
        inputs += [exp / "backend" / f for f in ("mean.vec", "transform.mat", "plda")]
    if args.train_set:
        inputs += [emb / args.train_set / "xvector.scp", emb / args.train_set / "spk_xvector.scp"]
    if not args.force and metrics_path.is_file() and score_path.is_file():
        try:
            prev = json.loads(metrics_path.read_text())
        except ValueError:
            prev = {}
        if prev.get("config") == config and metrics_path.stat().st_mtime >= _inputs_mtime(inputs):
            print(f"{score_path} is complete; skipping (use --force to re-score)")
            _print_summary(prev)
            return 0

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

    # ---- embeddings
    if args.backend == "crops":
        from pysv.backend import load_crops

        if not t_scp.is_file():
            raise DataError(f"missing crop embeddings: {t_scp} (run stage 3 in crop mode)")
        t_keys, T = load_crops(t_scp)
        if e_scp == t_scp:
            e_keys, E = t_keys, T
        else:
            if not e_scp.is_file():
                raise DataError(f"missing crop embeddings: {e_scp}")
            e_keys, E = load_crops(e_scp)
    else:
        t_keys, T = _load(t_scp, "test embeddings")
        if e_scp == t_scp:
            e_keys, E = t_keys, T
        else:
            e_keys, E = _load(e_scp, "enrollment embeddings")
        if E.shape[1] != T.shape[1]:
            raise DataError(f"enrollment ({e_scp}) and test ({t_scp}) embeddings differ in dimension: "
                            f"{E.shape[1]} vs {T.shape[1]}")
    num_enroll = None
    if args.enroll_level == "spk":
        from pysv.backend import read_num_utts

        nu_path = emb / enroll_set / "num_utts.ark"
        if args.backend == "plda":
            if not nu_path.is_file():
                raise DataError(f"missing {nu_path} (utterance counts of the speaker models, needed by PLDA)")
            counts = read_num_utts(nu_path)
            absent = [k for k in e_keys if k not in counts]
            if absent:
                raise DataError(f"{nu_path}: no utterance count for speaker '{absent[0]}'")
            num_enroll = np.array([counts[k] for k in e_keys], dtype=np.float64)

    e_index = _index(e_keys)
    t_index = e_index if t_keys is e_keys else _index(t_keys)
    ei, ti, bad = _map_trials(trials, e_index, t_index, e_scp, t_scp, args.skip_missing, trials_path)
    n_skipped = int(bad.sum())
    if n_skipped:
        keep = ~bad
        ei, ti, labels = ei[keep], ti[keep], labels_all[keep]
        kept_trials = [tr for tr, b in zip(trials, bad) if not b]
        print(f"skipped {n_skipped} of {len(trials)} trials naming utterances with no embedding")
        log.warning("skipped %d of %d trials naming utterances with no embedding", n_skipped, len(trials))
        if ei.size == 0:
            raise DataError(f"{trials_path}: every trial was skipped (no embeddings for its utterances)")
    else:
        labels = labels_all
        kept_trials = trials
    E_arg = E
    T_arg = E if T is E else T

    # ---- scoring
    from pysv.backend.kernels import preload

    preload()
    t0 = time.time()
    if args.backend in ("cosine", "tta"):
        from pysv.backend import cosine_score_trials

        scores = cosine_score_trials(E_arg, T_arg, ei, ti)
    elif args.backend == "cosine_mean":
        from pysv.backend import cosine_score_trials, read_kaldi_vector

        if args.train_set:
            _, Xtr = _train_embeddings(exp, args.train_set, "cosine_mean")
            mean = Xtr.mean(axis=0, dtype=np.float64)
        elif (exp / "backend" / "mean.vec").is_file():
            mean = read_kaldi_vector(exp / "backend" / "mean.vec")
        else:
            raise DataError("--backend cosine_mean needs --train-set or "
                            f"{exp / 'backend' / 'mean.vec'} (stage 4)")
        if mean.size != E.shape[1]:
            raise DataError(f"training mean has dimension {mean.size}, embeddings {E.shape[1]}")
        t0 = time.time()
        scores = cosine_score_trials(E_arg, T_arg, ei, ti, mean=mean)
    elif args.backend == "plda":
        from pysv.backend import PldaBackend

        be = PldaBackend.load(exp / "backend", plda_length_norm=args.plda_length_norm,
                              smoothing=args.plda_smoothing)
        if be.mean.mean_.size != E.shape[1]:
            raise DataError(f"back-end in {exp / 'backend'} expects dimension {be.mean.mean_.size}, "
                            f"embeddings have {E.shape[1]}")
        t0 = time.time()
        scores = be.score_trials(E_arg, T_arg, ei, ti, num_enroll=num_enroll)
    elif args.backend == "crops":
        from pysv.backend import crop_distance_score_trials

        scores = crop_distance_score_trials(E_arg, T_arg, ei, ti, normalize=args.crops_normalize)
    elif args.backend == "asnorm":
        from pysv.backend import asnorm_cosine_trials, load_embeddings

        tr_keys, Xtr = _train_embeddings(exp, args.train_set, "asnorm")
        mean = Xtr.mean(axis=0, dtype=np.float64)
        spk_scp = emb / args.train_set / "spk_xvector.scp"
        if spk_scp.is_file():
            _, cohort = load_embeddings(spk_scp, what="cohort speaker embedding")
        else:
            u2s_path = Path(args.utt2spk) if args.utt2spk else Path("data") / args.train_set / "utt2spk"
            if not u2s_path.is_file():
                raise DataError(f"asnorm cohort: neither {spk_scp} nor {u2s_path} exists (give --utt2spk)")
            u2s = read_table(u2s_path)
            spk = np.array([u2s.get(k, "") for k in tr_keys])
            ok = spk != ""
            if not ok.any():
                raise DataError(f"asnorm cohort: no training embedding has a speaker in {u2s_path}")
            from pysv.backend.lda import class_stats

            _, _, _, cohort = class_stats(Xtr if ok.all() else Xtr[ok], spk if ok.all() else spk[ok])
        if cohort.shape[1] != E.shape[1]:
            raise DataError(f"cohort dimension {cohort.shape[1]} differs from the embeddings' {E.shape[1]}")
        top_n = None if args.asnorm_top_n <= 0 else args.asnorm_top_n
        t0 = time.time()
        scores = asnorm_cosine_trials(E_arg, T_arg, ei, ti, cohort, top_n=top_n, mean=mean)
    else:  # pragma: no cover - argparse restricts choices
        raise DataError(f"unknown back-end {args.backend}")
    t_score = time.time() - t0

    # ---- outputs
    with atomic_write(score_path, encoding="utf-8") as f:
        f.write("".join(f"{a} {b} {s:.6f}\n" for (a, b, _), s in zip(kept_trials, scores.tolist())))
    t1 = time.time()
    m = compute_metrics(scores, labels, p_targets=args.p_target)
    t_metrics = time.time() - t1
    from pysv.utils import stage
    embedded = stage.info(t_scp.parent / f".done_{t_scp.stem}")
    result = {
        "system": exp.name, "backend": args.backend, "model_epochs": embedded.get("model_epochs"), "trials": str(trials_path), "trials_name": name,
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
    _print_summary(result)
    log.info("scored %d trials in %.3f s (metrics %.3f s, total %.1f s)", labels.size, t_score, t_metrics,
             time.time() - t_start)
    return 0


def _print_summary(r: dict) -> None:
    dcfs = "  ".join(f"minDCF(p={k[len('min_dcf_p'):]}) {v:.4f}" for k, v in r.items() if k.startswith("min_dcf_p"))
    skipped = f", {r.get('num_skipped', 0)} skipped" if r.get("num_skipped") else ""
    print(f"{r.get('system')} {r.get('trials_name')} {r.get('backend')}: EER {r['eer']:.3f}%  {dcfs}  "
          f"({r.get('num_trials')} trials: {r.get('num_target')} target, {r.get('num_nontarget')} nontarget{skipped})")


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.logging import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    return run_cli(run, args, "score.py", log)


if __name__ == "__main__":
    sys.exit(main())
