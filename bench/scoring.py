"""Scoring speed at VoxCeleb1-E scale: cosine / PLDA over ~580k trials plus EER and minDCF.

Random embeddings (``--utts`` utterances of ``--dim`` dims, grouped in speakers so that target
trials exist), ``--trials`` random trials (``--target-frac`` of them target). Times, after the
embeddings are in memory:

* cosine scoring (``pysv.backend.cosine_score_trials``) + EER + minDCF(0.01, 0.05)
  (wall-clock time of the best of 3 runs, and the process CPU time of that run, which is the
  fairer figure on a loaded machine)
* PLDA scoring (``PldaBackend.score_trials``: mean → LDA → length norm → PLDA LLR) + metrics
* references measured in the same process: a naive per-pair ``np.dot`` loop (cosine), PLDA
  applied row-pair by row-pair (``PLDA.score`` on gathered pairs, i.e. every trial transformed
  anew), a per-pair Python LLR loop on a subset (extrapolated), and a Kaldi
  ``compute_min_dcf.py``-style Python loop for the error rates.

Run:  PYTHONPATH=. python bench/scoring.py            (defaults: 40000 utts, 512 dims, 580000 trials)
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


CPU = {}


def timeit(fn, repeat=3):
    """Best wall-clock time of ``repeat`` runs; the CPU time of that run is kept in CPU[fn]."""
    best, out, cpu = float("inf"), None, None
    for _ in range(repeat):
        t = time.perf_counter()
        c = time.process_time()
        out = fn()
        w = time.perf_counter() - t
        if w < best:
            best, cpu = w, time.process_time() - c
    CPU["last"] = cpu
    return best, out


def naive_cosine(E, ei, ti):
    out = np.empty(ei.size)
    for k in range(ei.size):
        a = E[ei[k]]
        b = E[ti[k]]
        out[k] = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def kaldi_error_rates(scores, labels):
    """Kaldi compute_min_dcf.py ComputeErrorRates as a plain Python loop: FNRs and FPRs at every
    threshold of the sorted scores (ties in input order). The reference for tests/test_metrics.py."""
    idx = sorted(range(len(scores)), key=lambda i: scores[i])
    labs = [labels[i] for i in idx]
    fnrs, fprs = [], []
    for i, lab in enumerate(labs):
        fnrs.append(lab if i == 0 else fnrs[-1] + lab)
        fprs.append(1 - lab if i == 0 else fprs[-1] + 1 - lab)
    nt = sum(labs)
    nn = len(labs) - nt
    return [x / nt for x in fnrs], [1 - x / nn for x in fprs]


def kaldi_min_dcf(fnrs, fprs, p, c_miss=1.0, c_fa=1.0):
    """Kaldi compute_min_dcf.py ComputeMinDcf over the error rates above."""
    best = min(c_miss * fr * p + c_fa * fa * (1 - p) for fr, fa in zip(fnrs, fprs))
    return best / min(c_miss * p, c_fa * (1 - p))


def naive_error_rates(scores, labels):
    """Kaldi compute_min_dcf.py (ComputeErrorRates + ComputeMinDcf at 0.01 and 0.05) as loops."""
    fnrs, fprs = kaldi_error_rates(scores, labels)
    return [kaldi_min_dcf(fnrs, fprs, p) for p in (0.01, 0.05)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utts", type=int, default=40000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--trials", type=int, default=580000)
    ap.add_argument("--utts-per-spk", type=int, default=20)
    ap.add_argument("--target-frac", type=float, default=0.5)
    ap.add_argument("--lda-dim", type=int, default=200)
    ap.add_argument("--train-spk", type=int, default=1000)
    ap.add_argument("--naive-plda-subset", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from pysv.backend import PldaBackend, cosine_score_trials  # imports torch (its sparse kernel) before timing
    from pysv.metrics import compute_metrics

    rng = np.random.default_rng(args.seed)
    D, U = args.dim, args.utts
    n_spk = U // args.utts_per_spk
    spk_of = np.repeat(np.arange(n_spk), args.utts_per_spk)[:U]
    spk_means = rng.standard_normal((n_spk, D)).astype(np.float32)
    E = (spk_means[spk_of] + 1.5 * rng.standard_normal((U, D)).astype(np.float32)).astype(np.float32)
    # trials: half target (same speaker), half non-target
    n_tar = int(args.trials * args.target_frac)
    ei = rng.integers(0, U, args.trials)
    ti = rng.integers(0, U, args.trials)
    # make the first n_tar trials target: pick a partner of the same speaker
    k = rng.integers(0, args.utts_per_spk, n_tar)
    ti[:n_tar] = np.minimum(spk_of[ei[:n_tar]] * args.utts_per_spk + k, U - 1)
    labels = (spk_of[ei] == spk_of[ti]).astype(np.int64)

    # PLDA back-end trained on separate random data
    Ntr = args.train_spk * 10
    tr_spk = np.repeat(np.arange(args.train_spk), 10)
    tr_means = rng.standard_normal((args.train_spk, D))
    Xtr = tr_means[tr_spk] + 1.5 * rng.standard_normal((Ntr, D))
    t = time.perf_counter()
    be = PldaBackend(lda_dim=args.lda_dim).fit(Xtr, tr_spk)
    t_fit = time.perf_counter() - t

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, numpy {np.__version__}, "
          f"load average {load:.2f} at start")
    print(f"# {U} utterances x {D} dims, {args.trials} trials ({labels.sum()} target), "
          f"PLDA: LDA {D}->{args.lda_dim}, trained on {Ntr} utts / {args.train_spk} spk in {t_fit:.2f} s")

    t_cos, s_cos = timeit(lambda: cosine_score_trials(E, E, ei, ti))
    t_met, m = timeit(lambda: compute_metrics(s_cos, labels, p_targets=(0.01, 0.05)))
    t_cos_all, _ = timeit(lambda: compute_metrics(cosine_score_trials(E, E, ei, ti), labels))
    c_cos_all = CPU["last"]
    print("                                  wall (s)  cpu (s)")
    print(f"cosine scoring                    {t_cos:8.3f}")
    print(f"EER + minDCF(0.01, 0.05)          {t_met:8.3f}            (EER {m['eer']:.3f}%)")
    print(f"cosine + metrics (end to end)     {t_cos_all:8.3f} {c_cos_all:8.3f}   target < 1 s")

    t_plda, s_plda = timeit(lambda: be.score_trials(E, E, ei, ti))
    t_plda_all, mp = timeit(lambda: compute_metrics(be.score_trials(E, E, ei, ti), labels))
    c_plda_all = CPU["last"]
    print(f"PLDA scoring                      {t_plda:8.3f}")
    print(f"PLDA + metrics (end to end)       {t_plda_all:8.3f} {c_plda_all:8.3f}   target < 5 s   "
          f"(EER {mp['eer']:.3f}%)")

    # references
    t_naive_cos, s_naive = timeit(lambda: naive_cosine(E, ei, ti), repeat=1)
    assert np.allclose(s_naive, s_cos, atol=1e-5)
    P = be.preprocess(E)

    def plda_rowpairs():
        out = np.empty(ei.size)
        for s in range(0, ei.size, 1 << 16):
            sl = slice(s, s + (1 << 16))
            out[sl] = be.plda.score(P[ei[sl]], P[ti[sl]])
        return out

    t_rows, s_rows = timeit(plda_rowpairs, repeat=1)
    assert np.allclose(s_rows, s_plda, atol=1e-3, rtol=1e-5), np.abs(s_rows - s_plda).max()
    nsub = min(args.naive_plda_subset, ei.size)

    def plda_loop():
        out = np.empty(nsub)
        for k in range(nsub):
            out[k] = be.plda.score(P[ei[k]][None], P[ti[k]][None])[0]
        return out

    t_loop, s_loop = timeit(plda_loop, repeat=1)
    assert np.allclose(s_loop, s_plda[:nsub], atol=1e-3, rtol=1e-5)
    t_loop_full = t_loop * ei.size / nsub
    sl, ll = s_cos.tolist(), labels.tolist()
    t_naive_met, dc = timeit(lambda: naive_error_rates(sl, ll), repeat=1)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print("references (same process)")
    print(f"naive per-pair np.dot cosine loop {t_naive_cos:8.3f} s   "
          f"-> vectorized is {t_naive_cos / t_cos:6.1f}x faster")
    print(f"PLDA.score on gathered row pairs  {t_rows:8.3f} s   -> score_trials is {t_rows / t_plda:6.1f}x faster")
    print(f"per-pair PLDA LLR loop            {t_loop_full:8.3f} s   (extrapolated from {nsub} trials) "
          f"-> {t_loop_full / t_plda:6.0f}x")
    print(f"Python-loop error rates (Kaldi compute_min_dcf.py style) {t_naive_met:8.3f} s -> "
          f"{t_naive_met / t_met:6.1f}x  (minDCF {dc[0]:.4f}/{dc[1]:.4f} vs ours "
          f"{m['min_dcf_p0.01']:.4f}/{m['min_dcf_p0.05']:.4f})")


if __name__ == "__main__":
    main()
