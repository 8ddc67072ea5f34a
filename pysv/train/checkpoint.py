"""Checkpoints: epoch files, the latest loadable one, averaging the last K, the trained encoder.

Everything loads without unpickling code: ``torch.load(weights_only=True)`` everywhere.

What a checkpoint holds is restricted to tensors and plain containers (dict, list, tuple, str,
int, float, bool, None), which is what ``weights_only=True`` accepts. The two things that are not
plain by nature are stored in plain form:

* the resolved config as yaml text (``yaml.safe_dump``; read back with ``yaml.safe_load``);
* the RNG states: torch's as a uint8 tensor, numpy's MT19937 key as an int64 tensor plus plain
  numbers, Python's as a tuple of ints.

A file that needs more (a pickle that would construct other objects, i.e. run code) is refused
with :class:`CheckpointError` naming the file; so is a truncated or otherwise unreadable file.
"""
from __future__ import annotations

import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from pysv import models as model_lib
from pysv.utils import stage
from pysv.utils.io import DataError, atomic_path

log = logging.getLogger("pysv.train.checkpoint")


class CheckpointError(DataError):
    """A checkpoint or model file that cannot be loaded safely; the message names the file."""


def save(state: Dict[str, Any], path) -> None:
    """Write ``state`` atomically (temporary file, then rename)."""
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load(path) -> Dict[str, Any]:
    """Load ``path`` with ``weights_only=True``; refuse anything else with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refusing to load, the file holds objects other than tensors and plain "
            f"containers, whose unpickling could run code ({first}). pysv writes no such files; "
            "do not load files of unknown origin") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or damaged? "
                              f"{type(e).__name__}: {first_line})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a pysv checkpoint (top level is {type(state).__name__}, not a dict)")
    return state


def load_latest(paths: List[Path]) -> Tuple[Optional[Path], Optional[Dict[str, Any]]]:
    """The newest loadable checkpoint of ``paths`` (sorted oldest first) and its state.

    A damaged newest file (killed mid-copy, disk full, or refused as unsafe) is skipped with a
    warning naming it and the fallback, so ``--resume`` continues from the previous epoch.
    Returns ``(None, None)`` when no file is loadable.
    """
    for i in range(len(paths) - 1, -1, -1):
        try:
            return paths[i], load(paths[i])
        except CheckpointError as e:
            nxt = paths[i - 1].name if i > 0 else "no checkpoint (epoch 1)"
            log.warning("%s; falling back to %s", e, nxt)
    return None, None


# ------------------------------------------------------------------------------------------------
# epoch checkpoints of a run (exp/<system>/checkpoints/epoch_NNN.pt) and final.pt
# ------------------------------------------------------------------------------------------------
def epoch_checkpoints(ckpt_dir) -> List[Path]:
    """The epoch checkpoints of a run, oldest first."""
    return sorted(Path(ckpt_dir).glob("epoch_*.pt"))


def epoch_of(path) -> int:
    """The epoch number of ``epoch_NNN.pt``."""
    return int(Path(path).stem.split("_")[1])


def save_epoch(state: Dict[str, Any], ckpt_dir, epoch: int, keep: int = 0,
               protect: Sequence[int] = ()) -> Path:
    """Write ``epoch_NNN.pt``; with ``keep`` > 0 delete all but the newest ``keep`` epoch files and
    those of the epochs in ``protect``."""
    path = Path(ckpt_dir) / f"epoch_{epoch:03d}.pt"
    save(state, path)
    if keep:
        for old in epoch_checkpoints(ckpt_dir)[:-keep]:
            if epoch_of(old) not in protect:
                old.unlink()
    return path


def best_valid_epochs(history: Sequence[Dict[str, Any]], k: int) -> List[int]:
    """The ``k`` epochs of ``history`` with the lowest ``valid_eer`` (ties: the later epoch), in
    epoch order; epochs without a validation EER never count."""
    scored = [(h["valid_eer"], -h["epoch"]) for h in history if h.get("valid_eer") is not None]
    return sorted(-neg for _, neg in sorted(scored)[:k])


def averaged_epochs(history: Sequence[Dict[str, Any]], k: int, select: str = "last") -> List[int]:
    """The epochs ``final.pt`` averages (``train.average_last`` = k, ``train.average_select`` =
    select): the last ``k`` of ``history`` or, with ``best_valid``, its ``k`` best on validation."""
    if select == "best_valid":
        return best_valid_epochs(history, k)
    if select != "last":
        raise ValueError(f"average selection {select!r} is not one of ('last', 'best_valid')")
    return [h["epoch"] for h in history[-k:]]


def write_final(path, ckpt_dir, epochs: Sequence[int], config_text: str, num_params: int) -> Dict[str, Any]:
    """Average the encoder weights of ``ckpt_dir``'s checkpoints of ``epochs`` into ``path``
    (``final.pt``: model, config, num_params, averaged_epochs); a missing checkpoint is named."""
    by_epoch = {epoch_of(p): p for p in epoch_checkpoints(ckpt_dir)}
    missing = [e for e in epochs if e not in by_epoch]
    if missing or not epochs:
        raise CheckpointError(f"{ckpt_dir}: no checkpoint of epoch(s) {missing or list(epochs)} to average "
                              "(pruned by train.keep_checkpoints?)")
    paths = [by_epoch[e] for e in epochs]
    # the objective (classifier / proxies) averaged alike, with the speakers its rows stand for:
    # a fine-tuning run on the same speakers carries it over (train.init_from)
    last = load(paths[-1])
    with_head = bool(last.get("loss")) and bool(last.get("train_speakers"))
    averaged = average_states(paths, ("model", "loss") if with_head else ("model",))
    final = {"model": averaged["model"], "config": config_text, "num_params": num_params,
             "averaged_epochs": list(epochs)}
    if with_head:
        final["loss"] = averaged["loss"]
        final["train_speakers"] = list(last["train_speakers"])
    save(final, path)
    return final


RUN_OUTPUTS = ("final.pt", "history.json", "config.yaml")  # what a complete training run (stage 2) holds


def mark_run_complete(exp_dir, system: str, num_epochs: int) -> None:
    """Write stage 2's ``.done`` marker of training run ``exp_dir`` (last, over :data:`RUN_OUTPUTS`):
    the trainer after finalising and ``pysv.bin.average`` after re-averaging write the same one."""
    exp_dir = Path(exp_dir)
    stage.write(exp_dir / ".done", {"system": system}, [exp_dir / n for n in RUN_OUTPUTS], epochs=num_epochs)


def average_encoder_weights(paths: Sequence[Path]) -> Dict[str, torch.Tensor]:
    """The encoder state dict averaged over checkpoints ``paths`` (:func:`average_states`)."""
    return average_states(paths, ("model",))["model"]


def average_states(paths: Sequence[Path], keys: Sequence[str]) -> Dict[str, Dict[str, torch.Tensor]]:
    """``key -> state dict`` averaged over checkpoints ``paths``, each read once (keys "model": the
    encoder, "loss": the objective): float tensors averaged in float64, returned as float32; integer
    buffers such as BN's batch counter taken from the first, as wespeaker's ``average_model.py``."""
    avg: Dict[str, Dict[str, torch.Tensor]] = {}
    for p in paths:
        state = load(p)
        for key in keys:
            sd = state[key]
            if key not in avg:
                avg[key] = {n: t.clone().double() if t.is_floating_point() else t.clone() for n, t in sd.items()}
            else:
                for n, t in sd.items():
                    if t.is_floating_point():
                        avg[key][n] += t.double()
    if not avg:
        raise CheckpointError("no checkpoint to average")
    return {key: {n: (t / len(paths)).float() if t.is_floating_point() else t for n, t in sd.items()}
            for key, sd in avg.items()}


class ArchitectureMismatch(DataError):
    """Saved encoder weights that do not fit the encoder built from the config."""


def load_encoder_weights(encoder: torch.nn.Module, path, state: Optional[Dict[str, Any]] = None) -> None:
    """Load the encoder weights (``model``) of a ``final.pt`` or epoch checkpoint (``state``: its
    loaded contents) into ``encoder``; :class:`ArchitectureMismatch` names the tensors that differ
    when the architectures do."""
    state = load(path) if state is None else state
    if "model" not in state:
        raise CheckpointError(f"{path}: no encoder weights ('model') in this checkpoint")
    own = encoder.state_dict()
    differs = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state["model"].items()
               if k in own and tuple(own[k].shape) != tuple(v.shape)]
    differs += [k for k in own if k not in state["model"]] + [k for k in state["model"] if k not in own]
    if differs:
        raise ArchitectureMismatch(f"{path} holds another architecture than the configured encoder "
                                   f"(differs: {', '.join(differs[:5])})")
    encoder.load_state_dict(state["model"])


def encoder_from_state(state: Dict[str, Any], cfg: Dict[str, Any], device="cpu") -> torch.nn.Module:
    """The encoder of a loaded ``final.pt`` state and its config, in eval mode on ``device``."""
    model = model_lib.build(cfg["model"]["name"], **cfg["model"]["hparams"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_encoder(exp_dir, device="cpu") -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The trained encoder of ``exp/<system>`` (``final.pt``) in eval mode, and its config."""
    path = Path(exp_dir) / "final.pt"
    if not path.is_file():
        raise DataError(f"missing trained model {path} (run stage 2 for this system)")
    state = load(path)
    cfg = config_from_state(state, path)
    return encoder_from_state(state, cfg, device), cfg


# ------------------------------------------------------------------------------------------------
# config and RNG states in plain form
# ------------------------------------------------------------------------------------------------
def config_to_text(cfg: Dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def config_from_state(state: Dict[str, Any], path="checkpoint") -> Dict[str, Any]:
    """The resolved config stored in a checkpoint (yaml text; plain dicts of older files work too)."""
    cfg = state.get("config")
    if isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: no config stored in the checkpoint")
    return cfg


def rng_state() -> Dict[str, Any]:
    """torch, numpy and Python RNG states (and CUDA's where present) as tensors / plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "python": _python_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _python_state() -> Dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    return {"version": int(version), "internal": list(internal), "gauss_next": gauss_next}


def set_rng_state(rng: Dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = rng["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
