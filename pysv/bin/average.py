"""Re-average a trained run's epoch checkpoints into its ``final.pt`` without retraining
(wespeaker's ``average_model.py``): the last K epochs, or the K with the lowest validation EER.

    python -m pysv.bin.average --exp-dir exp/<system> --select best_valid --num 5 [--out-dir DIR]

With ``--out-dir`` the run's config.yaml / history.json / num_params / valid_speakers are copied
there and the new ``final.pt`` and ``.done`` marker are written beside them (a second run directory
to extract and score, e.g. ``run.sh --exp <root> --stage 3``); without it ``final.pt`` is replaced
in place and stage 3 re-extracts (its marker fingerprints the model file). The run must be
complete (``.done``) and must still hold the chosen checkpoints (``train.keep_checkpoints``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

COPIED = ("config.yaml", "history.json", "num_params", "valid_speakers", "valid_eer.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True, help="a complete training run (exp/<system>)")
    p.add_argument("--select", choices=("last", "best_valid"), default="best_valid")
    p.add_argument("--num", type=int, default=5, help="how many epoch checkpoints to average")
    p.add_argument("--out-dir", help="write the re-averaged run here (default: replace final.pt in place)")
    args = p.parse_args(argv)
    from pysv.train import checkpoint
    from pysv.train.config import load_config
    from pysv.utils import stage
    from pysv.utils.io import DataError

    src = Path(args.exp_dir)
    why = stage.outputs_intact(src / ".done")
    if why is not None:
        print(f"pysv.bin.average: {src} is not a complete training run ({why})", file=sys.stderr)
        return 2
    if args.num <= 0:
        print(f"pysv.bin.average: --num must be positive, got {args.num}", file=sys.stderr)
        return 2
    history = json.loads((src / "history.json").read_text())
    epochs = checkpoint.averaged_epochs(history, args.num, args.select)
    if not epochs:
        print(f"pysv.bin.average: {src}/history.json has no validation EER to select on", file=sys.stderr)
        return 2
    dst = Path(args.out_dir) if args.out_dir else src
    dst.mkdir(parents=True, exist_ok=True)
    if dst.resolve() != src.resolve():
        for name in COPIED:
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        (dst / ".done").unlink(missing_ok=True)
    cfg = load_config(str(src / "config.yaml"), check_choices=False)
    num_params = checkpoint.load(src / "final.pt").get("num_params", 0)
    try:  # in place, the old marker stays until the new final.pt is written: a failure leaves the run as it was
        checkpoint.write_final(dst / "final.pt", src / "checkpoints", epochs, checkpoint.config_to_text(cfg),
                               num_params)
    except DataError as e:
        print(f"pysv.bin.average: {e}", file=sys.stderr)
        return 2
    checkpoint.mark_run_complete(dst, cfg["system"], len(history))
    valid = {h["epoch"]: h.get("valid_eer") for h in history}
    print(f"pysv.bin.average: wrote {dst / 'final.pt'}: average of epochs {epochs} ({args.select}; validation EER "
          + ", ".join(f"{valid[e]:.2f}" if valid[e] is not None else "n/a" for e in epochs) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
