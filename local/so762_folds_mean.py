"""Each fold's own EER per row and their mean over the folds, for local/so762_folds.sh.

    python local/so762_folds_mean.py OUT.json FOLD ROW TRIALS SCORES [FOLD ROW TRIALS SCORES ...]

Within a fold the raw scores are used (a calibration is monotonic and does not move a fold's EER).
Prints every row's per-fold EERs and mean, and how much lower each row's mean is than the first
row's (the reference, as pysv.bin.compare's); writes {"eer": {row: {fold: EER}}, "mean": {row: EER}}.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from pysv.bin.compare import load_aligned
from pysv.metrics import compute_eer
from pysv.utils.io import atomic_write, read_trials


def main(argv: list) -> int:
    out, groups = argv[0], argv[1:]
    if not groups or len(groups) % 4:
        print(__doc__, file=sys.stderr)
        return 2
    eer: dict = {}
    for fold, row, trials_path, scores_path in zip(*[iter(groups)] * 4):
        trials = read_trials(trials_path)
        labels = np.array([lab for *_, lab in trials])
        eer.setdefault(row, {})[fold] = compute_eer(load_aligned(trials, scores_path), labels)[0]
    rows = list(eer)
    mean = {r: float(np.mean(list(eer[r].values()))) for r in rows}
    for r in rows:
        folds = ", ".join(f"fold {k} {e:.2f} %" for k, e in eer[r].items())
        print(f"  per fold {r}: {folds}; mean {mean[r]:.2f} %")
    for r in rows[1:]:
        print(f"  mean of the per-fold EERs, {r} vs {rows[0]}: {100 * (1 - mean[r] / mean[rows[0]]):.1f} % lower")
    with atomic_write(out) as f:
        json.dump({"eer": eer, "mean": mean}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
