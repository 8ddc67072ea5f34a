"""The table of local/so762_ablation.sh: one line per row (experiment root <exp-root>/<row>/<system>).

    python local/so762_ablation_table.py [--exp-root exp_so762_abl] [--rows vt mean ...] [--set-name so762]
                                         [--out table.md]

--set-name is run.sh's --name of the split (its sets <name>_test, <name>_train_dev): so762 for the
ablation script's rows, folder for a plain `./run.sh --corpus folder ...` (--exp-root . --rows exp).

Columns: training (epochs, summed training-step minutes from history.json, the validation EER of the
held-out training speakers: last epoch and mean of the last three -- the column choices are made on),
then the test EER (%) and minDCF (p=0.01) of every back-end stage 5 scored (so762_test), reported
only. The best back-end on the development trials (stage 5's calibration, held-out speakers) is marked.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pysv.bin.results_table import read_training

BACKENDS = ("cosine", "cosine_mean", "asnorm", "plda", "crops")


def row_line(row_dir: Path, set_name: str = "so762") -> str:
    systems = [d for d in sorted(row_dir.iterdir()) if (d / "history.json").is_file()]
    if not systems:
        return ""
    lines = []
    for sysdir in systems:
        epochs, seconds = read_training(sysdir)
        hist = json.loads((sysdir / "history.json").read_text())
        valid = [e["valid_eer"] for e in hist if "valid_eer" in e]
        last3 = sum(valid[-3:]) / len(valid[-3:]) if valid else float("nan")
        cells = [row_dir.name, sysdir.name, str(epochs), f"{seconds / 60:.1f}",
                 f"{valid[-1]:.1f}" if valid else "-", f"{last3:.1f}"]
        dev = {}
        for b in BACKENDS:
            f = sysdir / "scores" / f"{set_name}_train_dev_{b}.metrics"
            if f.is_file():
                dev[b] = json.loads(f.read_text())["eer"]
        best_dev = min(dev, key=dev.get) if dev else None
        for b in BACKENDS:
            f = sysdir / "scores" / f"{set_name}_test_{b}.metrics"
            if not f.is_file():
                cells.append("-")
                continue
            m = json.loads(f.read_text())
            mark = " (d)" if b == best_dev else ""
            cells.append(f"{m['eer']:.2f} / {m['min_dcf_p0.01']:.3f}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-root", default="exp_so762_abl")
    p.add_argument("--rows", nargs="*", default=None, help="row names in this order (default: every row dir)")
    p.add_argument("--set-name", default="so762", help="run.sh --name of the split (default so762)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    root = Path(args.exp_root)
    rows = [root / r for r in args.rows] if args.rows else sorted(d for d in root.iterdir() if d.is_dir())
    head = ("| row | system | epochs | train min | valid EER last | valid EER last 3 | "
            + " | ".join(f"{b} EER / minDCF" for b in BACKENDS) + " |")
    sep = "| --- | --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(BACKENDS)
    body = [line for line in (row_line(r, args.set_name) for r in rows if r.is_dir()) if line]
    text = "\n".join([head, sep] + body) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
