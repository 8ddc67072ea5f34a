"""Does ``train.compile: true`` help on this machine? The trainer's own step (``Trainer.train_step``)
of ``conf/thin_resnet34_angleproto.yaml`` on a generated corpus, eager against a ``torch.compile``d
encoder, same batch (64 x 200 x 40), the config's precision; prints the compile time (first steps)
and the steady-state samples/s of both.

    python bench/compile.py [--batch 64] [--steps 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    import logging
    from training import make_corpus
    from pysv.bin import make_features
    from pysv.train.config import load_config
    from pysv.train.distributed import DistInfo
    from pysv.train.trainer import Trainer
    from pysv.utils.logging import setup_logging
    setup_logging(level=logging.WARNING)
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="pysv_compile_"))
    data = make_corpus(tmp, args.batch // 2 + 2, utts=2, seconds=2.5)
    make_features.main(["--data", str(data), "--feat-config", "fbank40", "--out", f"{data}_fbank40"])
    torch.set_num_threads(threads)
    feats = torch.randn(args.batch, 200, 40)
    labels = torch.arange(args.batch // 2).repeat_interleave(2)
    for compiled in (False, True):
        cfg = load_config(str(REPO / "conf" / "thin_resnet34_angleproto.yaml"), [
            f"data.train={data}", f"sampler.batch_size={args.batch}", "data.num_workers=0",
            "data.valid_speakers=0", f"train.compile={str(compiled).lower()}"])
        trainer = Trainer(cfg, str(tmp / f"exp{int(compiled)}"), DistInfo(), progress=False)
        trainer.build()
        t0 = time.perf_counter()
        for _ in range(2):
            trainer.train_step(feats, labels)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(feats, labels)
        rate = args.steps * args.batch / (time.perf_counter() - t0)
        eager = getattr(trainer.net.__dict__.get("_compiled_encoder"), "failed", None)
        print(f"compile={compiled}: first 2 steps {first:.1f} s, then {rate:.1f} samples/s "
              f"({trainer.precision}{', fell back to eager' if eager else ''})", flush=True)


if __name__ == "__main__":
    main()
