"""Why AS-norm helps or hurts a system: cosine, cosine after mean subtraction and AS-norm under
several cohorts and top-N, on the development trials of the held-out training speakers (where a
choice may be made) and on the test trials (reported, never used to choose).

    python bench/asnorm_cohort.py --exp exp/<system> --train-set <train> --test-set <test> \\
        --trials data/<test>/trials [--top-n 0 100 50 20 10 5] [--out table.md]

Inputs are stage 3's embeddings (exp/<system>/embeddings/<set>/xvector.scp), the held-out speakers
(exp/<system>/valid_speakers) and the development trials stage 5's calibration drew among them
(exp/<system>/calibration/trials). The cohort and the training mean never contain the held-out
speakers here (stage 5's AS-norm of the test trials may use every training speaker: none of them
is a test speaker). Cohorts: ``spk`` = speaker means of the training speakers (wespeaker, pysv's
stage 5), ``utt`` = their utterance embeddings, and -- on the test trials only -- the held-out
speakers' means (``unseen spk``: speakers the encoder never trained on) against as many seen
speakers' means (``seen spk``, a seeded draw), whole cohort. ``--top-n 0`` = the whole cohort (S-norm).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pysv.backend import asnorm_cosine_trials, cosine_score_trials, index_trials, load_embeddings
from pysv.metrics import compute_metrics
from pysv.utils.io import read_table, read_trials


def evaluate(X, keys, trials, fn):
    ei, ti, missing = index_trials(trials, keys)
    if missing.any():
        raise SystemExit(f"{int(missing.sum())} trials name utterances without embeddings")
    labels = np.array([t[2] for t in trials])
    m = compute_metrics(fn(X, ei, ti), labels, p_targets=(0.01,))
    return m["eer"], m["min_dcf_p0.01"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", required=True)
    p.add_argument("--train-set", required=True)
    p.add_argument("--test-set", required=True)
    p.add_argument("--trials", required=True, help="test trial list")
    p.add_argument("--utt2spk", default=None, help="utt2spk of the training set (default data/<train-set>/utt2spk)")
    p.add_argument("--top-n", type=int, nargs="+", default=[0, 100, 50, 20, 10, 5])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    exp = Path(args.exp)
    emb = exp / "embeddings"
    utt2spk = read_table(args.utt2spk or f"data/{args.train_set}/utt2spk")
    held_out = set((exp / "valid_speakers").read_text().split())
    tr_keys, tr_X = load_embeddings(emb / args.train_set / "xvector.scp", progress=False)
    te_keys, te_X = load_embeddings(emb / args.test_set / "xvector.scp", progress=False)
    keep = np.array([utt2spk[k] not in held_out for k in tr_keys])
    spk = np.array([utt2spk[k] for k in tr_keys])
    fit_X, fit_spk = tr_X[keep].astype(np.float64), spk[keep]
    mean = fit_X.mean(axis=0)
    speakers = sorted(set(fit_spk))
    cohorts = {"spk": np.stack([fit_X[fit_spk == s].mean(axis=0) for s in speakers]), "utt": fit_X}
    # seen or unseen by the encoder: the held-out speakers' means against as many seen speakers'
    # (test trials only: the development trials are the held-out speakers' own)
    unseen = sorted(held_out)
    seen = sorted(np.random.default_rng(0).choice(speakers, size=min(len(unseen), len(speakers)), replace=False))
    small = {"unseen spk": np.stack([tr_X[spk == s].astype(np.float64).mean(axis=0) for s in unseen]),
             "seen spk": np.stack([fit_X[fit_spk == s].mean(axis=0) for s in seen])}
    sets = {"dev": (tr_X, tr_keys, read_trials(exp / "calibration" / "trials")),
            "test": (te_X, te_keys, read_trials(args.trials))}
    rows = [("cosine", "-", "-", lambda X, e, t: cosine_score_trials(X, X, e, t)),
            ("cosine_mean", "-", "-", lambda X, e, t: cosine_score_trials(X, X, e, t, mean=mean))]
    for cname, C in cohorts.items():
        for n in args.top_n:
            if n > C.shape[0]:
                continue
            top = None if n <= 0 else n
            rows.append(("asnorm", f"{cname} ({C.shape[0]})", "all" if top is None else str(top),
                         lambda X, e, t, C=C, top=top: asnorm_cosine_trials(X, X, e, t, C, top_n=top, mean=mean)))
    for cname, C in small.items():
        rows.append(("asnorm", f"{cname} ({C.shape[0]})", "all",
                     lambda X, e, t, C=C: asnorm_cosine_trials(X, X, e, t, C, top_n=None, mean=mean), "test"))
    lines = [f"AS-norm study of {exp} ({len(speakers)} cohort speakers, {len(held_out)} held-out speakers: "
             f"{len(sets['dev'][2])} development trials, {len(sets['test'][2])} test trials)", "",
             "| scoring | cohort | top-N | dev EER (%) | dev minDCF0.01 | test EER (%) | test minDCF0.01 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, cohort, top, fn, *only in rows:
        cells = []
        for set_name, (X, keys, trials) in sets.items():
            if only and set_name not in only:
                cells += ["-", "-"]
                continue
            eer, dcf = evaluate(X, keys, trials, fn)
            cells += [f"{eer:.2f}", f"{dcf:.3f}"]
        lines.append(f"| {name} | {cohort} | {top} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
