"""Checkpoints that load without unpickling code: ``torch.load(weights_only=True)`` everywhere.

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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml

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
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or damaged? "
                              f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
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
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
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
