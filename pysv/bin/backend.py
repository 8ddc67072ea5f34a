"""Stage 4: fit the Kaldi-style back-end (mean → LDA → length norm → PLDA) on training embeddings.

Reads   exp/<system>/embeddings/<train-set>/xvector.scp (stage 3) and --utt2spk
Writes  exp/<system>/backend/{mean.vec, transform.mat, plda} in Kaldi formats (atomically), then
        exp/<system>/backend/.done (the options and inputs used); a re-run with the same options
        and unchanged inputs does nothing.

Kaldi equivalent (egs/voxceleb/v2): ivector-mean; ivector-compute-lda --total-covariance-factor=0.0
--dim=<lda-dim>; ivector-compute-plda --num-em-iters=<n> on mean-subtracted, LDA-projected,
length-normalized x-vectors.

Example:
    python -m pysv.bin.backend --exp exp/xvector_softmax --train-set voxceleb2_dev \
        --utt2spk data/voxceleb2_dev/utt2spk --lda-dim 200
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from pysv.utils.cli import run_cli, str2bool
from pysv.utils.io import DataError, read_table

log = logging.getLogger("pysv.bin.backend")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pysv.bin.backend",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True, help="experiment directory exp/<system>")
    p.add_argument("--train-set", required=True,
                   help="name of the training set whose embeddings are in exp/<system>/embeddings/<train-set>/")
    p.add_argument("--utt2spk", required=True, help="utt2spk of the training set, e.g. data/<train-set>/utt2spk")
    p.add_argument("--lda-dim", type=int, default=200,
                   help="LDA output dimension, as ivector-compute-lda --dim; default 200, as for the "
                        "x-vector baseline of SAEP; must be smaller than the number "
                        "of training speakers")
    p.add_argument("--cap-lda-dim", action="store_true",
                   help="take --lda-dim as an upper bound: use at most the embedding dimension and the number "
                        "of training speakers (after --exclude-speakers) minus one, and log the cap (run.sh "
                        "stage 4 passes it: a 128-d system or a 100-speaker corpus still gets a back-end)")
    p.add_argument("--num-em-iters", type=int, default=10,
                   help="PLDA EM iterations, as ivector-compute-plda --num-em-iters (default 10)")
    p.add_argument("--total-covariance-factor", type=float, default=0.0,
                   help="ivector-compute-lda --total-covariance-factor: 0 normalizes the within-class "
                        "covariance (default), 1 the total covariance")
    p.add_argument("--covariance-floor", type=float, default=1e-6,
                   help="ivector-compute-lda --covariance-floor, relative to the largest eigenvalue (default 1e-6)")
    p.add_argument("--binary", type=str2bool, default=True,
                   help="write Kaldi binary (true, default) or text (false) model files")
    p.add_argument("--exclude-speakers", default=None,
                   help="file listing training speakers to leave out (e.g. exp/<system>/valid_speakers, "
                        "whose trials calibrate the scores in stage 5)")
    p.add_argument("--force", action="store_true", help="re-fit even if the back-end is complete")
    p.add_argument("--log-file", default=None, help="also log to this file (default: exp/<system>/backend/backend.log)")
    return p


def _missing(path: str):
    raise DataError(f"--exclude-speakers: missing file {path}")


def run(args: argparse.Namespace) -> int:
    from pysv.backend import BACKEND_FILES, PldaBackend, archive_signature, load_embeddings
    from pysv.utils import stage

    exp = Path(args.exp)
    if not exp.is_dir():
        raise DataError(f"missing experiment directory: {exp}")
    scp = exp / "embeddings" / args.train_set / "xvector.scp"
    utt2spk_path = Path(args.utt2spk)
    for f, what in ((scp, "training embeddings (run stage 3 for the training set)"),
                    (utt2spk_path, "training utt2spk (--utt2spk)")):
        if not f.is_file():
            raise DataError(f"missing {what}: {f}")
    out = exp / "backend"
    done = out / ".done"
    options = {
        "train_set": args.train_set, "utt2spk": str(utt2spk_path), "lda_dim": args.lda_dim,
        "cap_lda_dim": args.cap_lda_dim,
        "num_em_iters": args.num_em_iters, "total_covariance_factor": args.total_covariance_factor,
        "covariance_floor": args.covariance_floor, "binary": args.binary,
    }
    excluded = set()
    if args.exclude_speakers:
        excluded = set(Path(args.exclude_speakers).read_text().split()) if Path(args.exclude_speakers).is_file() \
            else _missing(args.exclude_speakers)
    fingerprint = {"options": options, "embeddings": archive_signature(scp),
                   "utt2spk": stage.file_signature(utt2spk_path), "excluded_speakers": sorted(excluded)}
    if not args.force:
        reason = stage.check(done, fingerprint)
        if reason is None:
            log.info("%s is complete (same options, inputs unchanged); skipping. Use --force to re-fit.", out)
            print(f"back-end {out} already complete; skipping")
            return 0
        log.info("fitting %s: %s", out, reason)

    utt2spk = read_table(utt2spk_path)
    keys, X = load_embeddings(scp)
    keep = [i for i, k in enumerate(keys) if k in utt2spk and utt2spk[k] not in excluded]
    n_no_spk = sum(k not in utt2spk for k in keys)
    if n_no_spk:
        missing = [k for k in keys if k not in utt2spk][:3]
        log.warning("%d of %d training embeddings have no entry in %s (e.g. %s); skipping them",
                    n_no_spk, len(keys), utt2spk_path, ", ".join(missing))
    n_no_emb = len(set(utt2spk) - set(keys))
    if n_no_emb:
        log.warning("%d utterances of %s have no embedding in %s", n_no_emb, utt2spk_path, scp)
    if not keep:
        raise DataError(f"no training embedding in {scp} has a speaker in {utt2spk_path}")
    X = X[keep]
    labels = np.array([utt2spk[keys[i]] for i in keep])
    n_spk = np.unique(labels).size
    log.info("training the back-end on %d utterances of %d speakers (%d left out), dim %d", X.shape[0], n_spk,
             len(excluded), X.shape[1])
    lda_dim = args.lda_dim
    if args.cap_lda_dim and lda_dim > min(X.shape[1], n_spk - 1):
        lda_dim = max(1, min(X.shape[1], n_spk - 1))
        log.info("LDA dimension capped at %d (embedding dimension %d, %d training speakers)",
                 lda_dim, X.shape[1], n_spk)
    if lda_dim > X.shape[1]:
        raise DataError(f"--lda-dim {args.lda_dim} exceeds the embedding dimension {X.shape[1]}; "
                        f"use --lda-dim {X.shape[1]} or less")
    done.unlink(missing_ok=True)
    be = PldaBackend(lda_dim=lda_dim, num_em_iters=args.num_em_iters,
                     total_covariance_factor=args.total_covariance_factor,
                     covariance_floor=args.covariance_floor)
    try:
        be.fit(X, labels)
    except ValueError as e:
        raise DataError(f"cannot fit the back-end on {scp}: {e}") from e
    be.save(out, binary=args.binary)
    stage.write(done, fingerprint, outputs=[out / f for f in BACKEND_FILES],
                utterances=int(X.shape[0]), speakers=int(n_spk))
    psi = be.plda.psi_
    log.info("PLDA between-class variances (normalized space): max %.3f, min %.3f", psi.max(), psi.min())
    print(f"wrote {out}/mean.vec, transform.mat ({lda_dim}x{X.shape[1] + 1}), plda "
          f"({X.shape[0]} utterances, {n_spk} speakers)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.logging import setup_logging

    args = build_parser().parse_args(argv)
    log_file = args.log_file or (str(Path(args.exp) / "backend" / "backend.log") if Path(args.exp).is_dir() else None)
    setup_logging(log_file)
    return run_cli(run, args, "backend.py", log)


if __name__ == "__main__":
    sys.exit(main())
