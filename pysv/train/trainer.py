"""One training loop for every encoder × loss system (stage 2).

The run directory ``exp/<system>/`` holds ``config.yaml`` (resolved), ``checkpoints/epoch_NNN.pt``
(everything needed to resume: model, loss, optimizer, scheduler, fp16 loss scaler, RNG states, history),
``history.json`` (per-epoch loss / accuracy / validation EER / lr), ``valid_eer.png``, ``train.log``,
``final.pt`` (encoder weights, averaged over the last K epochs or the K best on validation if configured),
``num_params`` and a ``.done`` marker written last.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pysv import losses as loss_lib
from pysv import models as model_lib
from pysv.backend import cosine_trial_scores
from pysv.data.loader import build_training_data, check_sampler_fits_loss
from pysv.embed import UtteranceReader, default_batch_seconds, embed_utterances, units_per_second
from pysv.metrics import compute_eer
from pysv.train import checkpoint
from pysv.train import precision as precision_lib
from pysv.train.config import ConfigError, save_config
from pysv.train.distributed import DistInfo, barrier, broadcast_float
from pysv.train.optim import PER_ITERATION, Horizon, build_optimizer, build_scheduler, effective_lr
from pysv.train.plots import plot_eer_curves
from pysv.utils.io import DataError, atomic_write

log = logging.getLogger("pysv.train")


class NonFiniteLossError(RuntimeError):
    pass


class SpeakerNet(nn.Module):
    """Encoder + training objective in one module (so DDP synchronises both, e.g. proxies)."""

    def __init__(self, encoder: nn.Module, loss: nn.Module, embed_norm_scale: Optional[float] = None):
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.embed_norm_scale = embed_norm_scale

    def use_compiled_encoder(self, compiled: nn.Module) -> None:
        """Run the forward through ``compiled`` (a ``torch.compile`` of ``self.encoder``, sharing
        its parameters); kept out of the module tree so state dicts and DDP see the plain encoder."""
        object.__setattr__(self, "_compiled_encoder", compiled)

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        emb = self.__dict__.get("_compiled_encoder", self.encoder)(x)
        if self.embed_norm_scale:
            # RawNet2's reference model scales the embedding to a fixed norm before the classifier
            emb = F.normalize(emb, dim=1) * self.embed_norm_scale
        value = self.loss(emb.float(), labels)
        acc = getattr(self.loss, "last_accuracy", None)
        return value, acc


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    def __init__(self, cfg: Dict[str, Any], exp_dir: str, dist_info: DistInfo, resume: bool = False,
                 progress: bool = True):
        self.cfg = cfg
        self.exp = Path(exp_dir)
        self.dist = dist_info
        self.device = dist_info.device
        self.resume = resume
        self.progress = progress and dist_info.is_main
        self.history: List[Dict[str, Any]] = []
        self.start_epoch = 1

    # ---- set-up ---------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        seed = cfg["seed"]
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

        model_name = cfg["model"]["name"]
        if model_name not in model_lib.ENCODERS:
            raise ConfigError(f"config key 'model.name': unknown encoder {model_name!r}, "
                              f"expected one of {model_lib.names()}")
        if cfg["loss"]["name"] not in loss_lib.LOSSES:
            raise ConfigError(f"config key 'loss.name': unknown loss {cfg['loss']['name']!r}, "
                              f"expected one of {loss_lib.names()}")
        self.input_kind = model_lib.input_kind(model_name)
        if self.input_kind == "features" and not cfg["data"]["feature"]:
            raise ConfigError(f"config key 'data.feature': encoder {model_name} needs features")
        check_sampler_fits_loss(cfg)
        self.data = build_training_data(cfg, self.input_kind, self.dist, self.device)
        self.num_classes = self.data.num_classes
        try:
            encoder = model_lib.build(model_name, **cfg["model"]["hparams"])
            # config.yaml records the resolved hyper-parameters (the signatures' defaults filled in)
            cfg["model"]["hparams"] = model_lib.resolve_hparams(model_name, cfg["model"]["hparams"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key 'model.hparams': {e}") from None
        try:
            loss = loss_lib.build(cfg["loss"]["name"], encoder.embed_dim, self.num_classes,
                                  **cfg["loss"]["hparams"])
            cfg["loss"]["hparams"] = loss_lib.LOSSES.resolve_hparams(cfg["loss"]["name"], cfg["loss"]["hparams"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key 'loss.hparams': {e}") from None
        self.num_params = sum(p.numel() for p in encoder.parameters())
        net = SpeakerNet(encoder, loss, cfg["train"]["embed_norm_scale"]).to(self.device)
        if cfg["train"]["channels_last"] and getattr(encoder, "prefers_channels_last", False):
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.optimizer = build_optimizer(self.net.parameters(), cfg)
        if cfg["optim"]["lr_batch"]:
            log.info("optim.lr %g for batch %d -> %g at sampler.batch_size %d (linear scaling)", cfg["optim"]["lr"],
                     cfg["optim"]["lr_batch"], effective_lr(cfg), cfg["sampler"]["batch_size"])
        if self.steps_per_iteration_scheduler and cfg["scheduler"]["min_lr"] > effective_lr(cfg):
            raise ConfigError(f"config key 'scheduler.min_lr': {cfg['scheduler']['min_lr']:g} is above the learning "
                              f"rate it decays from, {effective_lr(cfg):g} (optim.lr {cfg['optim']['lr']:g}"
                              + (f" x sampler.batch_size {cfg['sampler']['batch_size']} / optim.lr_batch "
                                 f"{cfg['optim']['lr_batch']}" if cfg["optim"]["lr_batch"] else "") + ")")
        self.horizon = Horizon(len(self.data.loader), cfg["train"]["epochs"])
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.data.loader), self.horizon)
        try:
            self.precision = precision_lib.resolve(cfg["train"]["precision"], self.device)
        except ValueError as e:
            raise ConfigError(f"config key 'train.precision': {e}") from None
        self.scaler = precision_lib.grad_scaler(self.precision, self.device)
        if cfg["train"]["compile"]:
            self._compile_encoder()
        if self.dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg["train"]["find_unused_parameters"])
        else:
            self.ddp = self.net
        if self.resume:
            self._load_latest()
        if cfg["train"]["init_from"] and self.start_epoch == 1:
            self._init_encoder(cfg["train"]["init_from"])

    @property
    def steps_per_iteration_scheduler(self) -> bool:
        """True for the schedules stepped after every optimiser step (warm-up + decay)."""
        return self.cfg["scheduler"]["name"] in PER_ITERATION

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.exp / "checkpoints"

    def checkpoints(self) -> List[Path]:
        return checkpoint.epoch_checkpoints(self.ckpt_dir)

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "epoch": epoch,
            "model": self.net.encoder.state_dict(),
            "loss": self.net.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": checkpoint.rng_state(),
            "history": self.history,
            "config": checkpoint.config_to_text(self.cfg),
            "num_classes": self.num_classes,
            "train_speakers": self.data.train_speakers,
        }
        keep = self.cfg["train"]["keep_checkpoints"]
        checkpoint.save_epoch(state, self.ckpt_dir, epoch,
                              keep=max(keep, self.cfg["train"]["average_last"]) if keep else 0,
                              protect=self._averaged_epochs() if keep else ())

    def _load_latest(self) -> None:
        ckpts = self.checkpoints()
        if not ckpts:
            log.info("--resume: no checkpoint in %s, starting from epoch 1", self.ckpt_dir)
            return
        path, state = checkpoint.load_latest(ckpts)
        if state is None:
            log.warning("--resume: no loadable checkpoint in %s, starting from epoch 1", self.ckpt_dir)
            return
        self.net.encoder.load_state_dict(state["model"])
        self.net.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        self.history = state["history"]
        self.start_epoch = state["epoch"] + 1
        log.info("resumed from %s (epoch %d done)", path, state["epoch"])

    # ---- loop -----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> Dict[str, float]:
        self.ddp.train()
        self.data.sampler.set_epoch(epoch)
        self.data.train_set.set_epoch(epoch)
        tcfg = self.cfg["train"]
        dev = self.device
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        acc_sum = torch.zeros((), device=dev, dtype=torch.float64)
        n_acc = 0
        n_steps = 0
        n_samples = 0
        t0 = time.time()
        bar = tqdm(self.data.loader, desc=f"epoch {epoch}", disable=not self.progress, unit="batch",
                   dynamic_ncols=True, leave=False)
        for step, batch in enumerate(bar, 1):
            x = batch[0].to(dev, non_blocking=True)
            y = batch[1].to(dev, non_blocking=True)
            if self.cfg["train"]["margin_ramp"]:
                self._ramp_margin(epoch - 1 + (step - 1) / len(self.data.loader))
            if self.data.device_front is not None:
                x = self.device_features(x, epoch, batch[2] if len(batch) == 3 else None)
            loss, acc = self.train_step(x, y, epoch, step)
            loss_sum += loss.detach().double()
            if acc is not None:
                acc_sum += torch.as_tensor(acc, device=dev).detach().double()
                n_acc += 1
            n_steps += 1
            n_samples += x.shape[0]
            if step % tcfg["log_interval"] == 0 or step == len(self.data.loader):
                rate = n_samples * self.dist.world_size / max(time.time() - t0, 1e-9)
                post = {"loss": f"{loss_sum.item() / n_steps:.4f}", "utt/s": f"{rate:.1f}"}
                if n_acc:
                    post["acc"] = f"{100 * acc_sum.item() / n_acc:.1f}%"
                bar.set_postfix(post)
                if not self.progress and self.dist.is_main:
                    log.info("epoch %d step %d/%d loss %s%s %s utt/s", epoch, step, len(self.data.loader),
                             post["loss"], f" acc {post['acc']}" if n_acc else "", post["utt/s"])
        bar.close()
        if n_steps == 0:
            raise DataError("the sampler produced no batch: too few speakers/utterances for "
                            f"sampler.batch_size={self.cfg['sampler']['batch_size']}")
        stats = {"loss": loss_sum.item() / n_steps, "steps": n_steps,
                 "utts_per_s": n_samples * self.dist.world_size / max(time.time() - t0, 1e-9),
                 "seconds": time.time() - t0}
        if n_acc:
            stats["accuracy"] = 100.0 * acc_sum.item() / n_acc
        return stats

    def _ramp_margin(self, epochs_done: float) -> None:
        """``train.margin_ramp: [a, b]``: the AM/AAM-softmax margin is 0 until ``a`` epochs are done,
        rises linearly to ``loss.hparams.margin`` at ``b`` and stays there (per iteration)."""
        loss = self.net.loss
        if not hasattr(loss, "set_margin"):
            raise ConfigError(f"config key 'train.margin_ramp': loss {self.cfg['loss']['name']!r} has no margin")
        if not hasattr(self, "_target_margin"):
            self._target_margin = loss.margin
        a, b = self.cfg["train"]["margin_ramp"]
        loss.set_margin(self._target_margin * min(1.0, max(0.0, (epochs_done - a) / (b - a))))

    def device_features(self, waveforms: torch.Tensor, epoch: int, plans=None) -> torch.Tensor:
        """The training front end on the device, batched: waveform augmentation of the workers'
        ``plans`` (``WaveformAugmentor.apply_batch``), Kaldi features (``FeatureExtractor.batch``,
        the same definition as stage 1) and SpecAugment. Dither and masks draw from generators
        seeded by (seed, epoch), so a resumed epoch repeats them."""
        fe, spec_aug, augment = self.data.device_front
        if plans is not None:
            waveforms = augment.apply_batch(waveforms, plans)
        if fe is None:  # a waveform encoder: augmentation only
            return waveforms
        if getattr(self, "_front_epoch", None) != epoch:
            self._front_epoch = epoch
            self._dither_gen = torch.Generator().manual_seed(self.cfg["seed"] * 1_000_003 + epoch)
            self._mask_rng = np.random.default_rng([self.cfg["seed"], epoch, 7])
        with torch.no_grad():
            feats = fe.batch(waveforms.float(), generator=self._dither_gen)
            if spec_aug is not None:
                feats = spec_aug(feats, self._mask_rng)
        return feats

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int = 0, step: int = 0):
        """One optimiser step on a batch (on the device): forward under the run's precision,
        finite-loss check, backward (loss-scaled for fp16), clipping, update. Returns the loss
        (detached) and the accuracy of the loss, or None."""
        with precision_lib.autocast(self.precision, self.device):
            loss, acc = self.ddp(x, y)
        # checked before backward so that the weights of the last good step are never corrupted;
        # one scalar read per step (the losses' own input checks read a few values anyway)
        if not bool(torch.isfinite(loss.detach())):
            self._raise_non_finite(epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.cfg["train"]["grad_clip"]
        if clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.steps_per_iteration_scheduler:
            self.scheduler.step()
        return loss.detach(), acc

    def _init_encoder(self, path: str) -> None:
        """Fine-tuning: the encoder's weights (and BN statistics) from a trained system's
        ``final.pt`` or an epoch checkpoint. The loss (classifier rows, proxies) carries over when
        the checkpoint was trained on the same speakers, in the same order, with an objective of
        the same shapes (wespeaker's large-margin fine-tuning keeps its classifier); otherwise it
        starts new, so the speakers may differ."""
        state = checkpoint.load(path)
        try:
            checkpoint.load_encoder_weights(self.net.encoder, path, state=state)
        except checkpoint.ArchitectureMismatch as e:
            raise ConfigError(f"config key 'train.init_from': {e}") from None
        own = self.net.loss.state_dict()
        head = state.get("loss") or {}
        same = (state.get("train_speakers") == self.data.train_speakers and set(head) == set(own)
                and all(tuple(head[k].shape) == tuple(v.shape) for k, v in own.items()))
        if same and own:
            self.net.loss.load_state_dict(head)
            log.info("encoder and loss head initialised from %s (the same %d training speakers)", path,
                     len(self.data.train_speakers))
        else:
            log.info("encoder initialised from %s (loss head new%s)", path,
                     "" if not own else ": other training speakers or objective")

    def _compile_encoder(self) -> None:
        """``train.compile``: the encoder's forward through ``torch.compile`` (the loss stays eager:
        its input checks would break the graph), falling back to eager with a warning where no
        compiler backend works (checked on the first call)."""
        encoder = self.net.encoder
        try:
            compiled = torch.compile(encoder)
        except Exception as e:  # no dynamo for this platform
            log.warning("train.compile: torch.compile is not available (%s: %s); training eagerly",
                        type(e).__name__, e)
            return
        self.net.use_compiled_encoder(_CompileOrEager(compiled, encoder))

    def _raise_non_finite(self, epoch: int, step: int) -> None:
        last = self.checkpoints()
        raise NonFiniteLossError(
            f"loss became non-finite at epoch {epoch}, step {step}; stopping. The last good checkpoint "
            f"is {last[-1] if last else '(none: failed in the first epoch)'}; lower optim.lr or set "
            "train.grad_clip and resume with --resume")

    def validate(self) -> Optional[float]:
        if not self.data.valid_trials:
            return None
        if not self.dist.is_main:
            return None
        # a feature system trained on on-the-fly features validates on features computed from audio
        on_the_fly = self.input_kind == "features" and not Path(self.data.valid_reader_dir, "feats.scp").is_file()
        reader = UtteranceReader(self.data.valid_reader_dir, kind="audio" if on_the_fly else self.input_kind,
                                 feature_extractor=self.data.feature_extractor if on_the_fly else None)
        utts = sorted({u for a, b, _ in self.data.valid_trials for u in (a, b)})
        emb = embed_utterances(self.net.encoder, reader, utts, self.device, mode="full",
                               progress=self.progress, desc=f"validation ({len(utts)} utterances)",
                               batch_frames=int(default_batch_seconds(self.device)
                                                * units_per_second(self.cfg, self.input_kind)))
        scores = cosine_trial_scores(emb, self.data.valid_trials)
        labels = np.array([t[2] for t in self.data.valid_trials])
        eer, _ = compute_eer(scores, labels)
        return float(eer)

    def fit(self) -> Dict[str, Any]:
        cfg = self.cfg
        epochs = cfg["train"]["epochs"]
        if self.dist.is_main:
            self.exp.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.exp / "config.yaml")
            log.info("system %s: encoder %s (%.3f M parameters), loss %s, %d training speakers, "
                     "%d training utterances, %d validation speakers, %d validation trials, device %s, "
                     "%d process(es)", cfg["system"], cfg["model"]["name"], self.num_params / 1e6,
                     cfg["loss"]["name"], self.num_classes, len(self.data.train_set), len(self.data.valid_speakers),
                     len(self.data.valid_trials or []), self.device, self.dist.world_size)
        if cfg["train"]["average_select"] == "best_valid" and not self.data.valid_trials:
            raise ConfigError(f"system {cfg['system']}: train.average_select=best_valid needs validation trials "
                              f"(data.valid_speakers > 0 or data.valid_trials); this run has none")
        budget = cfg["train"]["max_minutes"]
        for epoch in range(self.start_epoch, epochs + 1):
            if budget is not None and self._over_budget(budget, epoch):
                break
            if budget is not None and cfg["scheduler"]["horizon"] == "budget":
                train_s, valid_s = self._pace()
                self.horizon.fit_budget(self._epoch_seconds(), budget,
                                        pace=train_s + valid_s / cfg["train"]["valid_every"])
            t_epoch = time.time()
            stats = self.train_epoch(epoch)
            valid_s = None
            eer = None
            if self._validates(epoch):
                t_valid = time.time()
                eer = broadcast_float(self.validate() if self.dist.is_main else 0.0, self.dist)
                valid_s = broadcast_float(time.time() - t_valid, self.dist)
            lr = self.optimizer.param_groups[0]["lr"]
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if eer is not None and not math.isnan(eer):
                    self.scheduler.step(eer)
            elif self.scheduler is not None and not self.steps_per_iteration_scheduler:
                self.scheduler.step()
            # rank 0's wall time (validation included) on every rank: the budget decisions agree
            wall = broadcast_float(time.time() - t_epoch, self.dist)
            rec = {"epoch": epoch, "lr": lr, **stats, "epoch_seconds": wall}
            if valid_s is not None:
                rec["valid_seconds"] = valid_s
            if self.steps_per_iteration_scheduler:
                rec["lr_horizon_steps"] = self.horizon.total
            if budget is not None:
                rec["max_minutes"] = budget
            if eer is not None and not math.isnan(eer):
                rec["valid_eer"] = eer
            self.history.append(rec)
            if self.dist.is_main:
                log.info("epoch %d/%d: loss %.4f%s, valid EER %s, lr %.3g, %.1f utt/s, %.1f s", epoch, epochs,
                         stats["loss"], f", acc {stats['accuracy']:.1f}%" if "accuracy" in stats else "",
                         f"{rec['valid_eer']:.2f}%" if "valid_eer" in rec else "n/a", lr,
                         stats["utts_per_s"], stats["seconds"])
            self._save_checkpoint(epoch)
            barrier(self.dist)
        if self.dist.is_main:
            self._finalize()
        barrier(self.dist)
        return {"history": self.history, "num_params": self.num_params}

    def _validates(self, epoch: int) -> bool:
        """``train.valid_every``: validation after every N-th epoch and after the last of ``train.epochs``."""
        return epoch % self.cfg["train"]["valid_every"] == 0 or epoch == self.cfg["train"]["epochs"]

    def _epoch_seconds(self) -> List[float]:
        return epoch_walls(self.history)

    def _pace(self) -> Tuple[float, float]:
        """(wall seconds of the next epoch without validation, seconds of one validation): the mean of
        the last three epochs' walls less their validation, and of the last three validations (0 before
        any; histories written before ``valid_seconds`` was recorded count validation in the walls)."""
        walls = self._epoch_seconds()
        valid = [h.get("valid_seconds", 0.0) for h in self.history]
        train = [w - v for w, v in zip(walls, valid)][-3:]
        done = [h["valid_seconds"] for h in self.history if "valid_seconds" in h][-3:]
        return (sum(train) / len(train) if train else 0.0), (sum(done) / len(done) if done else 0.0)

    def _over_budget(self, budget_minutes: float, next_epoch: int) -> bool:
        """``train.max_minutes``: would epoch ``next_epoch`` end past the budget? Spent = the wall time
        of the epochs in the history (training and validation, resumed runs included); the next epoch
        is estimated from the last three (:meth:`_pace`), with a validation if it validates. At least
        one epoch always runs. Every rank reads the same history, so all stop together."""
        done = self._epoch_seconds()
        if not done:
            return False
        spent = sum(done)
        train_s, valid_s = self._pace()
        estimate = train_s + (valid_s if self._validates(next_epoch) else 0.0)
        if spent + estimate <= 60.0 * budget_minutes:
            return False
        if self.dist.is_main:
            log.info("train.max_minutes=%g: %.1f min spent in %d epochs, the next would take about %.1f min; "
                     "stopping", budget_minutes, spent / 60, len(done), estimate / 60)
        self.history[-1]["stopped"] = "train.max_minutes"
        return True

    def _averaged_epochs(self) -> List[int]:
        return checkpoint.averaged_epochs(self.history, self.cfg["train"]["average_last"],
                                          self.cfg["train"]["average_select"])

    def _finalize(self) -> None:
        final = checkpoint.write_final(self.exp / "final.pt", self.ckpt_dir, self._averaged_epochs(),
                                       checkpoint.config_to_text(self.cfg), self.num_params)
        with atomic_write(self.exp / "num_params") as f:
            f.write(f"{self.num_params}\n")
        with atomic_write(self.exp / "history.json") as f:
            json.dump(self.history, f, indent=1)
        plot_eer_curves({self.cfg["system"]: self.history}, self.exp / "valid_eer.png")
        if self.data.valid_speakers:
            with atomic_write(self.exp / "valid_speakers") as f:
                f.write("\n".join(self.data.valid_speakers) + "\n")
        checkpoint.mark_run_complete(self.exp, self.cfg["system"], len(self.history))
        log.info("wrote %s (average of epochs %s)", self.exp / "final.pt", final["averaged_epochs"])



def epoch_walls(history: List[Dict[str, Any]]) -> List[float]:
    """Wall seconds of each epoch of a run's history (validation included; histories written before
    ``epoch_seconds`` was recorded have ``seconds``)."""
    return [h.get("epoch_seconds", h.get("seconds", 0.0)) for h in history]


class _CompileOrEager(nn.Module):
    """Runs the compiled module; if its first call fails (a compiler backend missing: no C
    compiler, an unsupported platform), warns once and runs the eager module from then on."""

    def __init__(self, compiled: nn.Module, eager: nn.Module):
        super().__init__()
        self.compiled, self.eager = compiled, eager
        self.failed = False

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # torch._dynamo / inductor errors are not one class
                self.failed = True
                log.warning("train.compile: compilation failed (%s: %s); training eagerly",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return self.eager(*args, **kwargs)
