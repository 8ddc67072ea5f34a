"""Compare systems scored on the same trial list, with confidence intervals from a paired bootstrap
over speakers (:mod:`pysv.significance`): each system's EER and minDCF with its interval, and the
relative EER reduction of every system against the reference with its interval, the share of
resamples in which it is better, and (``--aim``) the share in which it reaches a target reduction.

    python -m pysv.bin.compare --trials data/<test>/trials --utt2spk data/<test>/utt2spk \\
        --scores vt=exp/A/scores/<test>_cosine small=exp/B/scores/<test>_cosine \\
        [--reference vt] [--resamples 2000] [--aim 40] [--json out.json]

Score files are stage 5's (``enroll test score`` per line) and must cover every trial.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", required=True, help="the trial list every score file was scored on")
    p.add_argument("--utt2spk", required=True, help="utt2spk naming the speaker of every enrolment utterance")
    p.add_argument("--scores", required=True, nargs="+", metavar="NAME=PATH", help="score files to compare")
    p.add_argument("--reference", help="the system the others are measured against (default: the first)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--aim", type=float, nargs="*", default=[], help="relative EER reductions (percent) to test")
    p.add_argument("--json", help="also write the result here")
    return p


def load_aligned(trials, path: Path) -> np.ndarray:
    """The scores of ``path`` in the order of ``trials``; a trial without a score is named."""
    from pysv.utils.io import DataError, read_scores

    by_pair = {(a, b): s for a, b, s in read_scores(path)}
    out = np.empty(len(trials))
    for i, (a, b, _) in enumerate(trials):
        s = by_pair.get((a, b))
        if s is None:
            raise DataError(f"{path}: no score for trial '{a} {b}' (line {i + 1} of the trial list)")
        out[i] = s
    return out


def run(args: argparse.Namespace) -> int:
    from pysv.significance import speaker_bootstrap
    from pysv.utils.io import DataError, atomic_write, read_table, read_trials

    trials = read_trials(args.trials)
    utt2spk = read_table(args.utt2spk)
    groups = []
    for a, _, _ in trials:
        if a not in utt2spk:
            raise DataError(f"{args.utt2spk}: enrolment utterance '{a}' of {args.trials} has no speaker")
        groups.append(utt2spk[a])
    scores = {}
    for item in args.scores:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--scores expects NAME=PATH, got {item!r}")
        if name in scores:
            raise DataError(f"--scores names system {name!r} twice")
        scores[name] = load_aligned(trials, Path(path))
    labels = np.array([lab for *_, lab in trials])
    res = speaker_bootstrap(scores, labels, groups, args.reference, args.resamples, args.seed,
                            args.confidence, args.aim)
    pct = f"{100 * res.confidence:g} %"
    print(f"{len(trials)} trials, {res.num_speakers} enrolment speakers, {res.num_resamples} speaker resamples, "
          f"{pct} intervals")
    for name, s in res.systems.items():
        print(f"  {name}: EER {s.eer:.2f} % [{s.eer_ci[0]:.2f}, {s.eer_ci[1]:.2f}], "
              f"minDCF(0.01) {s.min_dcf:.3f} [{s.min_dcf_ci[0]:.3f}, {s.min_dcf_ci[1]:.3f}]")
    for d in res.differences:
        aims = "".join(f", reaches {a:g} % in {100 * p:.1f} % of resamples" for a, p in d.p_reaches.items())
        print(f"  {d.system} vs {d.reference}: EER {d.reduction:.1f} % lower [{d.reduction_ci[0]:.1f}, "
              f"{d.reduction_ci[1]:.1f}], lower in {100 * d.p_better:.1f} % of resamples{aims}")
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(dataclasses.asdict(res), f, indent=1)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from pysv.utils.io import DataError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DataError, ValueError) as e:
        print(f"pysv.bin.compare: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
