"""Stage 2: train one encoder × loss system.

    python -m pysv.bin.train --config conf/thin_resnet34_angleproto.yaml [key=value ...] [--resume]
    torchrun --nproc_per_node 4 -m pysv.bin.train --config conf/... --device cuda

Every config value can be overridden as ``section.key=value`` (yaml syntax for the value), e.g.
``train.epochs=5 sampler.batch_size=64 loss.hparams.margin=0.3``. The resolved config is written to
``exp/<system>/config.yaml``. A run whose ``exp/<system>/.done`` exists is skipped (``--overwrite``
retrains); ``--resume`` continues a killed run from its last epoch checkpoint, and a finished run
asked for more epochs (``train.epochs``) from its last epoch. A run dir whose recorded config
differs in any other key than ``train.epochs``, ``train.log_interval``, ``data.num_workers``,
``train.max_minutes`` is
refused with the changed keys named (``--overwrite`` retrains it, or use another ``--exp-dir``).

``train.ensemble=N`` (N > 1) trains N members of the system one after the other in
``exp/<system>/members/m<k>/`` (seeds ``seed`` .. ``seed+N-1``, the same held-out validation
speakers, ``train.max_minutes`` shared between them) and writes one ``final.pt`` whose encoder is
their ensemble (``pysv.train.ensemble``): stages 3-5, ``pysv.load`` and export use it as any run.
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
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="fine-tune: start the encoder from a trained system's final.pt (the loss head, e.g. "
                        "a classifier for other speakers, starts new); same as train.init_from=CKPT")
    p.add_argument("--profile", action="append", default=[], metavar="KEY=VALUE",
                   help="a corpus profile value (repeatable): like an override, but not applied to a key "
                        "the system lists in keep_over_profile (run.sh passes its per-corpus epochs / batch)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines instead)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0 = torch default)")
    args = p.parse_intermixed_args(argv)  # overrides may come before and after --profile items

    import torch
    from pysv.train.config import ConfigError, load_config
    from pysv.train.distributed import cleanup, init_distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"train.init_from={args.init_from}"] if args.init_from else [])
    try:
        cfg = load_config(args.config, overrides, profile=args.profile)
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
    if cfg["train"]["ensemble"] > 1:
        rc = train_ensemble(cfg, exp, args, info)
    else:
        rc = train_run(cfg, exp, args, info)
    cleanup(info)
    return rc


def train_run(cfg: dict, exp: Path, args: argparse.Namespace, info) -> int:
    """One training run of ``cfg`` in ``exp`` (skipped when complete, refused when changed); exit code."""
    from pysv.train.config import ConfigError, parse_override
    from pysv.utils.io import DataError
    from pysv.utils.logging import setup_logging

    decision = None if args.overwrite else previous_run_decision(exp, cfg, args.resume)
    if decision is not None:
        rc, message = decision
        if info.is_main:
            print(f"pysv.bin.train: {message}", file=sys.stderr)
        return rc
    if any((exp / "checkpoints").glob("epoch_*.pt")) and not args.resume:
        if info.is_main:
            print(f"pysv.bin.train: {exp} has checkpoints from an unfinished run; pass --resume to continue "
                  "it or --overwrite to start again", file=sys.stderr)
        return 2
    setup_logging(str(exp / "train.log") if info.is_main else None,
                  level=logging.INFO if info.is_main else logging.WARNING)
    kept = [item for item in args.profile if parse_override(item)[0] in cfg["keep_over_profile"]]
    if kept:
        logging.getLogger("pysv.train").info("the system keeps its own %s over the profile's %s",
                                             ", ".join(parse_override(k)[0] for k in kept), " ".join(kept))
    from pysv.train.trainer import NonFiniteLossError, Trainer
    trainer = Trainer(cfg, str(exp), info, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty())
    try:
        trainer.build()
        trainer.fit()
    except (ConfigError, DataError) as e:
        logging.getLogger("pysv.train").error("%s", e)
        return 2
    except NonFiniteLossError as e:
        logging.getLogger("pysv.train").error("%s", e)
        return 3
    return 0


def train_ensemble(cfg: dict, exp: Path, args: argparse.Namespace, info) -> int:
    """``train.ensemble: N``: the members one after the other in ``exp/members/m<k>``, each a run of
    :func:`train_run` (resumed and skipped alike), then the combined ``exp/final.pt``
    (:mod:`pysv.train.ensemble`). Skipped when complete; refused when the config changed."""
    from pysv.train import ensemble
    from pysv.train.config import load_config
    from pysv.train.distributed import barrier
    from pysv.utils import stage
    from pysv.utils.io import DataError

    saved = exp / "config.yaml"
    if not args.overwrite and saved.is_file():
        fixed = [k for k in changed_keys(load_config(str(saved)), cfg) if k not in MAY_CHANGE]
        if fixed:
            if info.is_main:
                print(f"pysv.bin.train: {exp} holds an ensemble with another configuration (changed: "
                      f"{', '.join(fixed[:8])}); use --overwrite to retrain it, or another --exp-dir",
                      file=sys.stderr)
            return 2
        if stage.outputs_intact(exp / ".done") is None:
            if info.is_main:
                print(f"pysv.bin.train: {exp} is complete (an ensemble of {cfg['train']['ensemble']} members); "
                      "skipping. Use --overwrite to retrain.", file=sys.stderr)
            return 0
    n = int(cfg["train"]["ensemble"])
    member_args = argparse.Namespace(**{**vars(args), "overwrite": False})
    minutes_left = cfg["train"]["max_minutes"]
    dirs = []
    for k in range(n):
        member = ensemble.member_dir(exp, k)
        if info.is_main:
            print(f"pysv.bin.train: ensemble member {k + 1}/{n} in {member}", file=sys.stderr)
        rc = train_run(ensemble.member_config(cfg, k, minutes_left), member, member_args, info)
        if rc != 0:
            return rc
        dirs.append(member)
        if minutes_left is not None:
            minutes_left -= ensemble.member_minutes(member)
    if info.is_main:
        try:
            ensemble.write_ensemble(exp, cfg, dirs)
        except DataError as e:
            print(f"pysv.bin.train: {e}", file=sys.stderr)
            return 2
        print(f"pysv.bin.train: wrote {exp / 'final.pt'} (an ensemble of {n} members)", file=sys.stderr)
    barrier(info)
    return 0


#: config keys that may differ between a run and its continuation (--resume): they change how
#: long or how verbosely it trains, not what it trains
MAY_CHANGE = ("train.epochs", "train.log_interval", "data.num_workers", "train.max_minutes")


def changed_keys(old: dict, new: dict) -> list:
    """Flattened keys whose values differ between two resolved configs. ``model.hparams`` /
    ``loss.hparams`` keys absent from ``new`` take the recorded (resolved default) value."""
    a, b = _flat_values(old), _flat_values(new)
    keys = []
    for k in sorted(set(a) | set(b)):
        if k.startswith(("model.hparams.", "loss.hparams.")) and k not in b:
            continue
        if a.get(k) != b.get(k):
            keys.append(k)
    return keys


def previous_run_decision(exp: Path, cfg: dict, resume: bool):
    """What to do with an existing run in ``exp``: ``None`` = train (new run, continuation, or
    more epochs), else ``(exit code, message)`` (skip a complete run, refuse a changed config)."""
    from pysv.train.config import load_config
    from pysv.utils import stage

    saved = exp / "config.yaml"
    done = stage.outputs_intact(exp / ".done") is None
    if not saved.is_file():
        return (0, f"{exp} is complete (.done exists); skipping. Use --overwrite to retrain.") if done else None
    old = load_config(str(saved))
    changed = changed_keys(old, cfg)
    fixed = [k for k in changed if k not in MAY_CHANGE]
    if fixed:
        flat_old, flat_new = _flat_values(old), _flat_values(cfg)
        detail = "; ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in fixed[:8])
        return (2, f"{exp} holds a run with another configuration ({len(fixed)} changed key(s): {detail}). "
                   f"Only {', '.join(MAY_CHANGE)} may change for a run to continue. Use --overwrite to retrain "
                   "it with the new configuration, or another --exp-dir (run.sh: another --exp root)")
    if done:
        history = _history(exp)
        trained = len(history) if history else old["train"]["epochs"]
        wanted = cfg["train"]["epochs"]
        budget = cfg["train"]["max_minutes"]
        if history and history[-1].get("stopped") == "train.max_minutes" and budget == old["train"]["max_minutes"]:
            return (0, f"{exp} is complete: {trained} epochs fitted in train.max_minutes={budget}; skipping. "
                       "Raise train.max_minutes (or remove it) to train on.")
        if wanted <= trained:
            if wanted < trained:
                return (0, f"{exp} is complete with {trained} epochs (asked for {wanted}); skipping. "
                           "Use --overwrite to retrain with fewer epochs.")
            return (0, f"{exp} is complete (.done exists); skipping. Use --overwrite to retrain.")
        if not resume:
            return (2, f"{exp} is complete with {trained} epochs; pass --resume to continue it to {wanted} epochs "
                       "or --overwrite to start again")
        (exp / ".done").unlink(missing_ok=True)
        logging.getLogger("pysv.train").info("continuing %s from %d to %d epochs", exp, trained, wanted)
        print(f"pysv.bin.train: continuing {exp} from {trained} to {wanted} epochs", file=sys.stderr)
    return None


def _history(exp: Path) -> list:
    import json
    try:
        return json.loads((exp / "history.json").read_text())
    except (OSError, ValueError):
        return []


def _flat_values(cfg: dict) -> dict:
    """``section.key`` -> value, with the free-form hparams dicts expanded one level deeper."""
    from pysv.train.config import _flatten
    out = {}
    for k, v in _flatten(cfg).items():
        if k in ("model.hparams", "loss.hparams") and isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


if __name__ == "__main__":
    sys.exit(main())
