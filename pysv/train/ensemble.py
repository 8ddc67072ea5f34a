"""``train.ensemble: N``: train N members of one system with different seeds and combine them into one
``final.pt`` whose encoder is :class:`pysv.models.ensemble.EmbeddingEnsemble` (cosine scoring of the
combined embedding = the mean of the members' cosine scores).

Members run one after the other in ``exp/<system>/members/m<k>/`` (ordinary run directories: each
resumes and skips like any run). Member k (0-based) trains with ``seed + k``; all hold out the same
validation speakers (``data.valid_seed`` = the system's), so stage 5's development trials stay
unseen by every member. ``train.member_overrides`` makes the members differ in more than the seed
(member k's loss, sampler, augmentation or encoder hparams; the data, features, validation speakers
and test protocol stay shared: :data:`pysv.train.config.MEMBER_SHARED`). A time budget
``train.max_minutes`` is the ensemble's: each member gets an equal share of what the members before
it left (a member that stops early leaves its rest to the others). The ensemble directory then
holds ``final.pt`` (model ``ensemble`` with the members' resolved encoders; data / extract blocks of
the system), ``config.yaml`` (the system's config as trained, with ``train.ensemble``),
``history.json`` (the members' epochs one after the other, each record with its ``member``),
``valid_speakers``, ``num_params`` and ``.done``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from pysv.train import checkpoint
from pysv.train.config import apply_member_overrides, save_config, validation_seed
from pysv.utils import stage
from pysv.utils.io import DataError, atomic_write


def member_dir(exp, k: int) -> Path:
    return Path(exp) / "members" / f"m{k + 1}"


def member_config(cfg: Dict[str, Any], k: int, minutes_left=None) -> Dict[str, Any]:
    """Member ``k``'s config (0-based): the system's with its ``train.member_overrides[k]``, seed + k,
    the system's validation speakers, one share of the budget left (``minutes_left`` / members still
    to train)."""
    n = int(cfg["train"]["ensemble"])
    m = apply_member_overrides(cfg, k)
    m["train"]["ensemble"] = 1
    m["seed"] = int(cfg["seed"]) + k
    m["data"]["valid_seed"] = validation_seed(cfg)
    if cfg["train"]["max_minutes"] is not None:
        left = cfg["train"]["max_minutes"] if minutes_left is None else minutes_left
        # a spent budget still trains one epoch (as any run: the first epoch always runs)
        m["train"]["max_minutes"] = max(round(left / (n - k), 6), 1e-4)
    return m


def member_minutes(exp) -> float:
    """Wall minutes spent by a complete member run (its history's epoch walls, validation included)."""
    from pysv.train.trainer import epoch_walls

    return sum(epoch_walls(json.loads((Path(exp) / "history.json").read_text()))) / 60.0


def write_ensemble(exp, cfg: Dict[str, Any], members: Sequence[Path]) -> Dict[str, Any]:
    """Combine the complete member runs ``members`` into the ensemble run ``exp`` (see the module doc);
    the members must hold out the same validation speakers."""
    exp = Path(exp)
    states, cfgs, histories, valid = [], [], [], []
    for d in members:
        path = d / "final.pt"
        if stage.outputs_intact(d / ".done") is not None:
            raise DataError(f"ensemble member {d} is not a complete run (missing or changed {d}/.done)")
        state = checkpoint.load(path)
        states.append(state)
        cfgs.append(checkpoint.config_from_state(state, path))
        histories.append(json.loads((d / "history.json").read_text()))
        valid.append((d / "valid_speakers").read_text() if (d / "valid_speakers").is_file() else "")
    if len(set(valid)) != 1:
        raise DataError(f"ensemble members {', '.join(map(str, members))} hold out different validation "
                        "speakers (data.valid_seed must be shared)")
    model = {"name": "ensemble",
             "hparams": {"members": [{"name": c["model"]["name"], "hparams": c["model"]["hparams"]} for c in cfgs]}}
    runnable = copy.deepcopy(cfgs[0])
    runnable["model"] = model
    runnable["train"]["ensemble"] = len(members)
    weights = {f"members.{k}.{name}": t for k, s in enumerate(states) for name, t in s["model"].items()}
    num_params = sum(int(s.get("num_params", 0)) for s in states)
    final = {"model": weights, "config": checkpoint.config_to_text(runnable), "num_params": num_params,
             # averaged_epochs (one run's epochs) stays empty: the tables count the members' history
             "averaged_epochs": [], "member_averaged_epochs": [list(s.get("averaged_epochs", [])) for s in states]}
    exp.mkdir(parents=True, exist_ok=True)
    (exp / ".done").unlink(missing_ok=True)
    checkpoint.save(final, exp / "final.pt")
    save_config(cfg, exp / "config.yaml")
    history: List[Dict[str, Any]] = [{**h, "member": k + 1} for k, hist in enumerate(histories) for h in hist]
    with atomic_write(exp / "history.json") as f:
        json.dump(history, f, indent=1)
    with atomic_write(exp / "num_params") as f:
        f.write(f"{num_params}\n")
    if valid[0]:
        with atomic_write(exp / "valid_speakers") as f:
            f.write(valid[0])
    checkpoint.mark_run_complete(exp, cfg["system"], len(history))
    return final
