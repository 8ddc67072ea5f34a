"""Collect the results of a recipe run into one markdown table (in the spirit of MP-2021 Table 2).

Reads every exp/<system>/scores/*.metrics written by stage 5 (python -m pysv.bin.score) and, when
present, exp/<system>/num_params (the encoder's parameter count, first token) and
exp/<system>/history.json (the trainer's per-epoch record: number of epochs and the summed
wall time of the training steps, per-epoch validation excluded). One row per (system, trial list,
back-end, back-ends in the order of pysv.backend.SCORERS): system, params, epochs, train time,
trials, back-end, EER (%), minDCF at p=0.01 and p=0.05. Printed to stdout and, with --out, written
atomically to a file.

Example:
    python -m pysv.bin.results_table --exp-root exp --out RESULTS_table.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from pysv.utils.io import atomic_write


def format_params(n: Optional[int]) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def read_num_params(system_dir: Path) -> Optional[int]:
    f = system_dir / "num_params"
    if not f.is_file():
        return None
    try:
        return int(float(f.read_text().split()[0]))
    except (ValueError, IndexError):
        return None


def read_training(system_dir: Path) -> Tuple[Optional[int], Optional[float]]:
    """(epochs trained, summed training-step seconds) from history.json, or (None, None)."""
    f = system_dir / "history.json"
    if not f.is_file():
        return None, None
    try:
        hist = json.loads(f.read_text())
        return len(hist), float(sum(e.get("seconds", 0.0) for e in hist))
    except (ValueError, TypeError, AttributeError):
        print(f"warning: unreadable {f}; no epochs / training time for {system_dir.name}", file=sys.stderr)
        return None, None


def format_duration(sec: Optional[float]) -> str:
    if sec is None:
        return "-"
    if sec < 60:
        return f"{sec:.0f} s"
    if sec < 3600:
        return f"{sec / 60:.1f} min"
    return f"{sec / 3600:.2f} h"


def collect(exp_root: Path) -> List[dict]:
    from pysv.backend import SCORERS

    backend_order = {name: i for i, name in enumerate(SCORERS)}
    rows = []
    systems = {}  # system dir -> (params, epochs, train seconds), read once per system, not per metrics file
    for mfile in sorted(exp_root.glob("*/scores/*.metrics")):
        try:
            m = json.loads(mfile.read_text())
        except ValueError:
            print(f"warning: skipping unreadable {mfile}", file=sys.stderr)
            continue
        system_dir = mfile.parent.parent
        if system_dir not in systems:
            systems[system_dir] = (read_num_params(system_dir), *read_training(system_dir))
        params, epochs, train_seconds = systems[system_dir]
        rows.append({
            "system": system_dir.name,
            "params": params,
            # the epoch of the model the scores came from (recorded by stages 3 and 5), else the
            # epochs in history.json (scores of an older pysv)
            "epochs": m.get("model_epochs") if m.get("model_epochs") is not None else epochs,
            "train_seconds": train_seconds,
            "trials": m.get("trials_name", mfile.stem),
            "backend": m.get("backend", "?"),
            "eer": m.get("eer"),
            "dcf01": m.get("min_dcf_p0.01"),
            "dcf05": m.get("min_dcf_p0.05"),
            "num_trials": m.get("num_trials"),
            "num_skipped": m.get("num_skipped", 0),
        })
    rows.sort(key=lambda r: (r["trials"], r["system"], backend_order.get(r["backend"], len(backend_order)),
                             r["backend"]))
    return rows


def to_markdown(rows: List[dict]) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["| System | Params | Epochs | Train time | Trials | Back-end | EER (%) | minDCF (p=0.01) "
             "| minDCF (p=0.05) |",
             "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        trials = r["trials"]
        if r["num_skipped"]:
            trials += f" ({r['num_skipped']} skipped)"
        lines.append(f"| {r['system']} | {format_params(r['params'])} | {fmt(r['epochs'], 'd')} | "
                     f"{format_duration(r['train_seconds'])} | {trials} | {r['backend']} | "
                     f"{fmt(r['eer'], '.3f')} | {fmt(r['dcf01'], '.4f')} | {fmt(r['dcf05'], '.4f')} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pysv.bin.results_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-root", default="exp", help="directory holding the exp/<system>/ folders (default exp)")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    root = Path(args.exp_root)
    if not root.is_dir():
        print(f"results_table.py: error: missing directory {root}", file=sys.stderr)
        return 1
    rows = collect(root)
    if not rows:
        print(f"results_table.py: error: no {root}/*/scores/*.metrics found (run stage 5 first)", file=sys.stderr)
        return 1
    table = to_markdown(rows)
    sys.stdout.write(table)
    if args.out:
        with atomic_write(args.out, encoding="utf-8") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
