"""Stage 2: train one encoder × loss system.

    python -m pysv.bin.train --config conf/thin_resnet34_angleproto.yaml [key=value ...] [--resume]
    torchrun --nproc_per_node 4 -m pysv.bin.train --config conf/... --device cuda

Every config value can be overridden as ``section.key=value`` (yaml syntax for the value), e.g.
``train.epochs=5 sampler.batch_size=64 loss.hparams.margin=0.3``. The resolved config is written to
``exp/<system>/config.yaml``. A run whose ``exp/<system>/.done`` exists is skipped (``--overwrite``
retrains); ``--resume`` continues a killed run from its last epoch checkpoint.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="system yaml, e.g. conf/thin_resnet34_angleproto.yaml")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    p.add_argument("--exp-dir", default=None, help="run directory (default exp/<system>)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch default)")
    args = p.parse_args(argv)

    import torch
    from pysv.train.config import ConfigError, load_config
    from pysv.train.distributed import cleanup, init_distributed
    from pysv.utils.io import DataError, is_complete
    from pysv.utils.logging import setup_logging

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"pysv.bin.train: config error: {e}", file=sys.stderr)
        return 2
    exp = Path(args.exp_dir or Path("exp") / cfg["system"])
    info = init_distributed(args.device)
    # every rank takes the same decision (the run directory is on a shared file system), so that
    # no rank is left waiting in a collective when the others return
    from pysv.train.distributed import barrier
    if args.overwrite and info.is_main and exp.exists():
        shutil.rmtree(exp)
    barrier(info)
    if is_complete(exp / ".done") and not args.overwrite:
        if info.is_main:
            print(f"pysv.bin.train: {exp} is complete (.done exists); skipping. Use --overwrite to retrain.",
                  file=sys.stderr)
        cleanup(info)
        return 0
    if any((exp / "checkpoints").glob("epoch_*.pt")) and not args.resume:
        if info.is_main:
            print(f"pysv.bin.train: {exp} has checkpoints from an unfinished run; pass --resume to continue "
                  "it or --overwrite to start again", file=sys.stderr)
        cleanup(info)
        return 2
    setup_logging(str(exp / "train.log") if info.is_main else None,
                  level=logging.INFO if info.is_main else logging.WARNING)
    from pysv.train.trainer import NonFiniteLossError, Trainer
    trainer = Trainer(cfg, str(exp), info, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty())
    try:
        trainer.build()
        trainer.fit()
    except (ConfigError, DataError) as e:
        logging.getLogger("pysv.train").error("%s", e)
        cleanup(info)
        return 2
    except NonFiniteLossError as e:
        logging.getLogger("pysv.train").error("%s", e)
        cleanup(info)
        return 3
    cleanup(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
