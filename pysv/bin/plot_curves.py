"""Plot the validation-EER curves of several systems in one figure (like MP-2021 Fig. 2).

    python -m pysv.bin.plot_curves --exp-root exp --out exp/valid_eer_curves.png [system ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-root", default="exp")
    p.add_argument("--out", default="exp/valid_eer_curves.png")
    p.add_argument("systems", nargs="*", help="systems to plot (default: every exp/*/history.json)")
    args = p.parse_args(argv)
    from pysv.train.plots import plot_eer_curves
    root = Path(args.exp_root)
    names = args.systems or sorted(d.parent.name for d in root.glob("*/history.json"))
    hist = {}
    for s in names:
        f = root / s / "history.json"
        if f.is_file():
            hist[s] = json.loads(f.read_text())
        else:
            print(f"plot_curves: no {f}; skipping {s}", file=sys.stderr)
    plot_eer_curves(hist, args.out)
    print(f"plot_curves: wrote {args.out} ({len(hist)} systems)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
