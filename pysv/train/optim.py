"""Optimisers and learning-rate schedules of the ``optim`` / ``scheduler`` config sections.

:data:`OPTIMIZERS` and :data:`SCHEDULERS` are the names a config may choose. Schedules named in
:data:`PER_ITERATION` step after every optimiser step (warm-up then decay, as wespeaker's
``utils/schedulers.py``); ``step`` steps per epoch, ``plateau`` per epoch on the validation EER.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import torch


def _sgd(params, o: Dict[str, Any]):
    return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                           nesterov=o["nesterov"])


def _adam(params, o: Dict[str, Any], amsgrad: bool = False):
    return torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"], amsgrad=amsgrad)


#: optim.name -> builder(params, optim section)
OPTIMIZERS: Dict[str, Callable] = {
    "sgd": _sgd,
    "adam": _adam,
    "amsgrad": lambda params, o: _adam(params, o, amsgrad=True),
}

#: scheduler.name choices ("none": constant learning rate)
SCHEDULERS = ("plateau", "step", "warmup_exp", "warmup_cosine", "none")
PER_ITERATION = ("warmup_exp", "warmup_cosine")


def lr_multiplier(step: int, warmup: int, total: int, final_ratio: float, kind: str) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) of ``total``: linear warm-up from 0
    over ``warmup`` steps, then ``warmup_exp`` (exponential from 1 to ``final_ratio`` at the last
    step, wespeaker's ExponentialDecrease) or ``warmup_cosine`` (cosine from 1 to ``final_ratio``)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    if kind == "warmup_exp":
        return final_ratio ** t
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def effective_lr(cfg: Dict[str, Any]) -> float:
    """``optim.lr``, scaled linearly by ``sampler.batch_size / optim.lr_batch`` where ``lr_batch``
    is set (the linear scaling rule of Goyal et al. 2017: a learning rate tuned for one batch size,
    used at another)."""
    o = cfg["optim"]
    if not o["lr_batch"]:
        return float(o["lr"])
    return float(o["lr"]) * cfg["sampler"]["batch_size"] / o["lr_batch"]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Dict[str, Any]) -> torch.optim.Optimizer:
    """The optimiser of ``cfg["optim"]`` at :func:`effective_lr`."""
    return OPTIMIZERS[cfg["optim"]["name"]](params, {**cfg["optim"], "lr": effective_lr(cfg)})


class Horizon:
    """How many optimiser steps a per-iteration schedule spans. ``scheduler.horizon: epochs``:
    ``train.epochs`` epochs of ``steps_per_epoch`` steps. ``budget``: re-estimated before every
    epoch from ``train.max_minutes`` -- the epochs done plus the whole epochs the remaining minutes
    hold at the pace of the last three (the estimate the time budget stops on), so the decay reaches
    ``min_lr`` when the budget ends (budget-aware schedules: Li, Yumer & Ramanan, ICLR 2020)."""

    def __init__(self, steps_per_epoch: int, epochs: int):
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.max_total = self.steps_per_epoch * epochs
        self.total = self.max_total

    def fit_budget(self, epoch_seconds: Sequence[float], budget_minutes: float, pace: float) -> int:
        """Set :attr:`total` from the wall seconds of the epochs done (the same on every rank) and the
        seconds one more epoch costs (``pace``, the trainer's estimate); before the first epoch the
        horizon stays ``train.epochs``."""
        if epoch_seconds:
            left = max(0, int((60.0 * budget_minutes - sum(epoch_seconds)) // max(pace, 1e-9)))
            self.total = min(self.max_total, (len(epoch_seconds) + left) * self.steps_per_epoch)
        return self.total


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Dict[str, Any], steps_per_epoch: int,
                    horizon: Optional[Horizon] = None) -> Optional[Any]:
    """The schedule of ``cfg["scheduler"]`` (None for ``none``); per-iteration schedules span the
    steps of ``horizon`` (default: ``train.epochs`` epochs of ``steps_per_epoch``), read at every step."""
    s = cfg["scheduler"]
    if s["name"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=s["factor"],
                                                          patience=s["patience"], min_lr=s["min_lr"])
    if s["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s["step_size"], gamma=s["factor"])
    if s["name"] in PER_ITERATION:
        span = horizon or Horizon(steps_per_epoch, cfg["train"]["epochs"])
        warm = int(round(s["warmup_epochs"] * steps_per_epoch))
        ratio = s["min_lr"] / effective_lr(cfg)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, warm, span.total, ratio, s["name"]))
    return None
