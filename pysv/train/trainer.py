"""One training loop for every encoder × loss system (stage 2).

The run directory ``exp/<system>/`` holds ``config.yaml`` (resolved), ``checkpoints/epoch_NNN.pt``
(everything needed to resume: model, loss, optimizer, scheduler, fp16 loss scaler, RNG states, history),
``history.json`` (per-epoch loss / accuracy / validation EER / lr), ``valid_eer.png``, ``train.log``,
``final.pt`` (encoder weights, averaged over the last K epochs if configured), ``num_params`` and a
``.done`` marker written last.
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
from torch.utils.data import DataLoader, Dataset

from pysv import losses as loss_lib
from pysv import models as model_lib
from pysv.train import checkpoint
from pysv.train import precision as precision_lib
from pysv.train.config import ConfigError, save_config
from pysv.train.distributed import DistInfo, barrier, broadcast_float
from pysv.utils.io import DataError, atomic_write, mark_complete

log = logging.getLogger("pysv.train")


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
            # seed 004's reference model scales the embedding to a fixed norm before the classifier
            emb = F.normalize(emb, dim=1) * self.embed_norm_scale
        value = self.loss(emb.float(), labels)
        acc = getattr(self.loss, "last_accuracy", None)
        return value, acc


# ----------------------------------------------------------------------------------------- data
class RelabeledSubset(Dataset):
    """Utterances of the training speakers only, with speaker labels renumbered 0..K-1."""

    def __init__(self, base: Dataset, indices: List[int], label_map: Dict[int, int]):
        self.base, self.indices, self.label_map = base, indices, label_map

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, y, *plan = self.base[self.indices[i]]  # plan: the augmentation plan of front_end device
        return (x, self.label_map[int(y)], *plan)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


def features_dir(data_dir: str, feature: str) -> str:
    return f"{data_dir.rstrip('/')}_{Path(feature).stem}"


def split_validation_speakers(spk_list: List[str], num_valid: int, seed: int) -> Tuple[List[str], List[str]]:
    """Seeded choice of held-out validation speakers (never the test speakers)."""
    if num_valid == 0:
        return list(spk_list), []
    if num_valid >= len(spk_list) - 1:
        raise ConfigError(f"config key 'data.valid_speakers': {num_valid} leaves fewer than 2 of "
                          f"{len(spk_list)} speakers for training")
    rng = random.Random(seed)
    valid = sorted(rng.sample(sorted(spk_list), num_valid))
    train = [s for s in spk_list if s not in set(valid)]
    return train, valid


def make_validation_trials(spk2utts: Dict[str, List[str]], max_target: int, nontarget_ratio: float,
                           seed: int) -> List[Tuple[str, str, int]]:
    rng = random.Random(seed)
    target = [(a, b, 1) for utts in spk2utts.values() for i, a in enumerate(utts) for b in utts[i + 1:]]
    if len(target) > max_target:
        target = rng.sample(target, max_target)
    spks = sorted(spk2utts)
    n_non = int(round(len(target) * nontarget_ratio))
    non = set()
    while len(non) < n_non and len(spks) > 1:
        s1, s2 = rng.sample(spks, 2)
        non.add((rng.choice(spk2utts[s1]), rng.choice(spk2utts[s2]), 0))
    return sorted(target) + sorted(non)


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
        if model_name not in model_lib.MODEL_NAMES:
            raise ConfigError(f"config key 'model.name': unknown encoder {model_name!r}, "
                              f"expected one of {model_lib.MODEL_NAMES}")
        if cfg["loss"]["name"] not in loss_lib.LOSS_NAMES:
            raise ConfigError(f"config key 'loss.name': unknown loss {cfg['loss']['name']!r}, "
                              f"expected one of {loss_lib.LOSS_NAMES}")
        self.input_kind = model_lib.input_kind(model_name)
        if self.input_kind == "features" and not cfg["data"]["feature"]:
            raise ConfigError(f"config key 'data.feature': encoder {model_name} needs features")
        self._check_sampler_compatible()
        self._build_data()
        try:
            encoder = model_lib.build(model_name, **cfg["model"]["hparams"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key 'model.hparams': {e}") from None
        try:
            loss = loss_lib.build(cfg["loss"]["name"], encoder.embed_dim, self.num_classes,
                                  **cfg["loss"]["hparams"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key 'loss.hparams': {e}") from None
        if hasattr(encoder, "hparams"):  # record the resolved encoder hyper-parameters in config.yaml
            cfg["model"]["hparams"] = dict(encoder.hparams)
        self.num_params = sum(p.numel() for p in encoder.parameters())
        net = SpeakerNet(encoder, loss, cfg["train"]["embed_norm_scale"]).to(self.device)
        if cfg["train"]["channels_last"] and getattr(encoder, "prefers_channels_last", False):
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.optimizer = self._build_optimizer()
        self.scheduler = self._build_scheduler()
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

    def _check_sampler_compatible(self) -> None:
        cfg = self.cfg
        need = loss_lib.sampling_requirements(cfg["loss"]["name"], **cfg["loss"]["hparams"])
        min_per_class = need["min_per_class"] if isinstance(need, dict) else need[0]
        kind = cfg["sampler"]["kind"]
        if kind == "shuffle" and min_per_class > 1:
            raise ConfigError(
                f"config key 'sampler.kind': loss '{cfg['loss']['name']}' needs at least {min_per_class} "
                "utterances of each speaker in a batch; use sampler.kind=balanced or mp_random, not shuffle")
        if kind == "balanced" and cfg["sampler"]["utts_per_spk"] < min_per_class:
            raise ConfigError(
                f"config key 'sampler.utts_per_spk': loss '{cfg['loss']['name']}' needs at least "
                f"{min_per_class} utterances per speaker, got {cfg['sampler']['utts_per_spk']}")

    def _build_data(self) -> None:
        from pysv.data import dataset as ds
        from pysv.data.augment import build_augmentor, build_spec_augment
        from pysv.data.samplers import build_sampler

        cfg, dcfg = self.cfg, self.cfg["data"]
        train_dir = dcfg["train"]
        on_the_fly = self.input_kind == "waveform" or dcfg["on_the_fly_features"] or dcfg["augment"]
        self.feature_extractor = None
        self.device_front = None
        if self.input_kind == "features":
            from pysv import features
            self.feature_extractor = features.build(dcfg["feature"], **(dcfg["feature_overrides"] or {}))
        spec_aug = build_spec_augment(dcfg["spec_augment"])
        if on_the_fly:
            augment = build_augmentor(dcfg["augment"], train_wav_scp=str(Path(train_dir) / "wav.scp")) \
                if dcfg["augment"] else None
            crop_samples = dcfg["crop"] if self.input_kind == "waveform" else \
                self._frames_to_samples(dcfg["crop"])
            # front_end "device": the workers read waveform crops and plan their augmentation (the
            # random draws and file reads); augmentation, features and SpecAugment run batched on
            # the training device (device_features)
            on_device = dcfg["front_end"] == "device"
            fe = self.feature_extractor if self.input_kind == "features" else None
            self.device_front = (fe, spec_aug, augment) if on_device and (fe is not None or augment) else None
            base = ds.WaveformCropDataset(train_dir, crop_samples, augment=augment, seed=cfg["seed"],
                                          feature_extractor=None if on_device else fe,
                                          spec_augment=None if on_device else spec_aug,
                                          plan_augment=on_device and augment is not None)
            self.eval_dir = train_dir
        else:
            fdir = features_dir(train_dir, dcfg["feature"])
            if not (Path(fdir) / "feats.scp").is_file():
                raise DataError(f"missing features {fdir}/feats.scp for training set {train_dir} "
                                f"(run stage 1 with feature {dcfg['feature']})")
            base = ds.FeatureCropDataset(fdir, dcfg["crop"], spec_augment=spec_aug, seed=cfg["seed"])
            self.eval_dir = fdir
        index = base.index
        spk_names = sorted(index.spk2label, key=lambda s: index.spk2label[s])
        train_spk, valid_spk = split_validation_speakers(
            spk_names, dcfg["valid_speakers"] if not dcfg["valid_trials"] else 0, cfg["seed"])
        label_map = {index.spk2label[s]: i for i, s in enumerate(sorted(train_spk))}
        indices = [i for i, lab in enumerate(index.labels) if lab in label_map]
        self.train_speakers = sorted(train_spk)
        self.num_classes = len(train_spk)
        self.train_set = RelabeledSubset(base, indices, label_map)
        labels = [label_map[index.labels[i]] for i in indices]
        scfg = cfg["sampler"]
        world = self.dist.world_size
        if scfg["batch_size"] % world:
            raise ConfigError(f"config key 'sampler.batch_size': {scfg['batch_size']} is not divisible "
                              f"by the number of processes ({world})")
        kw = dict(seed=cfg["seed"], num_replicas=world, rank=self.dist.rank,
                  max_utts_per_spk=scfg["max_utts_per_spk"])
        if scfg["kind"] == "balanced":
            kw["utts_per_spk"] = scfg["utts_per_spk"]
        elif scfg["kind"] == "shuffle":
            kw["drop_last"] = True  # a last batch of one utterance would break batch norm
        try:
            # speaker ids, not label indices, so that the sampler's messages name speakers as stage 0
            # does (label i is the i-th sorted speaker id: the same grouping and order either way)
            self.sampler = build_sampler(scfg["kind"], [self.train_speakers[lab] for lab in labels],
                                         scfg["batch_size"] // world, **kw)
        except (TypeError, ValueError) as e:  # e.g. fewer speakers than a batch needs
            raise ConfigError(f"config key 'sampler' ({scfg['kind']}, batch_size {scfg['batch_size']}, "
                              f"{len(set(labels))} training speakers): {e}") from None
        nw = dcfg["num_workers"]
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=nw,
                                 pin_memory=self.device.type == "cuda", collate_fn=ds.collate,
                                 persistent_workers=False, prefetch_factor=4 if nw > 0 else None)
        # validation: held-out training speakers (or an explicit list); never the test speakers
        self.valid_trials = None
        if dcfg["valid_trials"]:
            from pysv.utils.io import read_trials
            vdir = dcfg["valid_data"] or self.eval_dir
            self.valid_trials = read_trials(dcfg["valid_trials"])
            self.valid_reader_dir = vdir
        elif valid_spk:
            spk2utts: Dict[str, List[str]] = {}
            for utt, lab in zip(index.utts, index.labels):
                s = spk_names[lab]
                if s in valid_spk:
                    spk2utts.setdefault(s, []).append(utt)
            self.valid_trials = make_validation_trials(spk2utts, dcfg["valid_max_target"],
                                                       dcfg["valid_nontarget_ratio"], cfg["seed"])
            self.valid_reader_dir = self.eval_dir
        self.valid_speakers = valid_spk

    def _frames_to_samples(self, frames: int) -> int:
        """Audio length whose on-the-fly features have exactly ``frames`` frames."""
        from pysv.data.crops import frames_to_samples
        fe = self.feature_extractor
        return frames_to_samples(frames, fe.frame_shift, fe.frame_length, fe.snip_edges)

    def _build_optimizer(self):
        o = self.cfg["optim"]
        params = self.net.parameters()
        if o["name"] == "sgd":
            return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                   nesterov=o["nesterov"])
        return torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"], amsgrad=o["name"] == "amsgrad")

    def _build_scheduler(self):
        s = self.cfg["scheduler"]
        if s["name"] == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min", factor=s["factor"],
                                                              patience=s["patience"], min_lr=s["min_lr"])
        if s["name"] == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=s["step_size"], gamma=s["factor"])
        if s["name"] in ("warmup_exp", "warmup_cosine"):
            per_epoch = len(self.loader)
            total = max(1, per_epoch * self.cfg["train"]["epochs"])
            warm = int(round(s["warmup_epochs"] * per_epoch))
            ratio = s["min_lr"] / self.cfg["optim"]["lr"]
            return torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: lr_multiplier(step, warm, total, ratio, s["name"]))
        return None

    @property
    def steps_per_iteration_scheduler(self) -> bool:
        """True for the schedules stepped after every optimiser step (warm-up + decay)."""
        return self.cfg["scheduler"]["name"] in ("warmup_exp", "warmup_cosine")

    # ---- checkpoints ----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.exp / "checkpoints"

    def checkpoints(self) -> List[Path]:
        return sorted(self.ckpt_dir.glob("epoch_*.pt"))

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
            "train_speakers": self.train_speakers,
        }
        checkpoint.save(state, self.ckpt_dir / f"epoch_{epoch:03d}.pt")
        keep = self.cfg["train"]["keep_checkpoints"]
        if keep:
            keep = max(keep, self.cfg["train"]["average_last"])
            for old in self.checkpoints()[:-keep]:
                old.unlink()

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
        from tqdm import tqdm
        self.ddp.train()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        tcfg = self.cfg["train"]
        dev = self.device
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        acc_sum = torch.zeros((), device=dev, dtype=torch.float64)
        n_acc = 0
        n_steps = 0
        n_samples = 0
        t0 = time.time()
        bar = tqdm(self.loader, desc=f"epoch {epoch}", disable=not self.progress, unit="batch",
                   dynamic_ncols=True, leave=False)
        for step, batch in enumerate(bar, 1):
            x = batch[0].to(dev, non_blocking=True)
            y = batch[1].to(dev, non_blocking=True)
            if self.cfg["train"]["margin_ramp"]:
                self._ramp_margin(epoch - 1 + (step - 1) / len(self.loader))
            if self.device_front is not None:
                x = self.device_features(x, epoch, batch[2] if len(batch) == 3 else None)
            loss, acc = self.train_step(x, y, epoch, step)
            loss_sum += loss.detach().double()
            if acc is not None:
                acc_sum += torch.as_tensor(acc, device=dev).detach().double()
                n_acc += 1
            n_steps += 1
            n_samples += x.shape[0]
            if step % tcfg["log_interval"] == 0 or step == len(self.loader):
                rate = n_samples * self.dist.world_size / max(time.time() - t0, 1e-9)
                post = {"loss": f"{loss_sum.item() / n_steps:.4f}", "utt/s": f"{rate:.1f}"}
                if n_acc:
                    post["acc"] = f"{100 * acc_sum.item() / n_acc:.1f}%"
                bar.set_postfix(post)
                if not self.progress and self.dist.is_main:
                    log.info("epoch %d step %d/%d loss %s%s %s utt/s", epoch, step, len(self.loader),
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
        fe, spec_aug, augment = self.device_front
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
        ``final.pt`` or an epoch checkpoint; the loss and its class vectors start new, so the
        speakers may differ. The architecture must be the same (the message names what differs)."""
        state = checkpoint.load(path)
        if "model" not in state:
            raise DataError(f"{path}: no encoder weights ('model') in this checkpoint")
        missing, unexpected = [], []
        own = self.net.encoder.state_dict()
        for k, v in state["model"].items():
            if k not in own:
                unexpected.append(k)
            elif tuple(own[k].shape) != tuple(v.shape):
                missing.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
        missing += [k for k in own if k not in state["model"]]
        if missing or unexpected:
            raise ConfigError(f"config key 'train.init_from': {path} holds another architecture than "
                              f"model {self.cfg['model']['name']} with these hparams (differs: "
                              f"{', '.join((missing + unexpected)[:5])})")
        self.net.encoder.load_state_dict(state["model"])
        log.info("encoder initialised from %s (loss head new)", path)

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
        if not self.valid_trials:
            return None
        from pysv.embed import (UtteranceReader, cosine_trial_scores, default_batch_seconds, embed_utterances,
                                units_per_second)
        from pysv.metrics import compute_eer
        if not self.dist.is_main:
            return None
        # a feature system trained on on-the-fly features validates on features computed from audio
        on_the_fly = self.input_kind == "features" and not Path(self.valid_reader_dir, "feats.scp").is_file()
        reader = UtteranceReader(self.valid_reader_dir, kind="audio" if on_the_fly else self.input_kind,
                                 feature_extractor=self.feature_extractor if on_the_fly else None)
        utts = sorted({u for a, b, _ in self.valid_trials for u in (a, b)})
        emb = embed_utterances(self.net.encoder, reader, utts, self.device, mode="full",
                               progress=self.progress, desc=f"validation ({len(utts)} utterances)",
                               batch_frames=int(default_batch_seconds(self.device)
                                                * units_per_second(self.cfg, self.input_kind)))
        scores = cosine_trial_scores(emb, self.valid_trials)
        labels = np.array([t[2] for t in self.valid_trials])
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
                     cfg["loss"]["name"], self.num_classes, len(self.train_set), len(self.valid_speakers),
                     len(self.valid_trials or []), self.device, self.dist.world_size)
        budget = cfg["train"]["max_minutes"]
        for epoch in range(self.start_epoch, epochs + 1):
            if budget is not None and self._over_budget(budget):
                break
            t_epoch = time.time()
            stats = self.train_epoch(epoch)
            eer = broadcast_float(self.validate() if self.dist.is_main else 0.0, self.dist)
            lr = self.optimizer.param_groups[0]["lr"]
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if eer is not None and not math.isnan(eer):
                    self.scheduler.step(eer)
            elif self.scheduler is not None and not self.steps_per_iteration_scheduler:
                self.scheduler.step()
            rec = {"epoch": epoch, "lr": lr, **stats, "epoch_seconds": time.time() - t_epoch}
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

    def _over_budget(self, budget_minutes: float) -> bool:
        """``train.max_minutes``: would the next epoch end past the budget? Spent = the wall time of
        the epochs in the history (training and validation, resumed runs included); the next epoch is
        estimated as the mean of the last three. At least one epoch always runs. Every rank reads
        the same history, so all stop together."""
        done = [h.get("epoch_seconds", h.get("seconds", 0.0)) for h in self.history]
        if not done:
            return False
        spent = sum(done)
        estimate = sum(done[-3:]) / len(done[-3:])
        if spent + estimate <= 60.0 * budget_minutes:
            return False
        if self.dist.is_main:
            log.info("train.max_minutes=%g: %.1f min spent in %d epochs, the next would take about %.1f min; "
                     "stopping", budget_minutes, spent / 60, len(done), estimate / 60)
        self.history[-1]["stopped"] = "train.max_minutes"
        return True

    def _finalize(self) -> None:
        k = self.cfg["train"]["average_last"]
        ckpts = self.checkpoints()[-k:]
        if not ckpts:
            raise RuntimeError(f"no checkpoint in {self.ckpt_dir}")
        avg = None
        for p in ckpts:
            sd = checkpoint.load(p)["model"]
            if avg is None:
                avg = {n: t.clone().double() if t.is_floating_point() else t.clone() for n, t in sd.items()}
            else:
                for n, t in sd.items():
                    if t.is_floating_point():
                        avg[n] += t.double()
        for n, t in avg.items():
            if t.is_floating_point():
                avg[n] = (t / len(ckpts)).float()
        final = {"model": avg, "config": checkpoint.config_to_text(self.cfg), "num_params": self.num_params,
                 "averaged_epochs": [int(p.stem.split("_")[1]) for p in ckpts]}
        checkpoint.save(final, self.exp / "final.pt")
        with atomic_write(self.exp / "num_params") as f:
            f.write(f"{self.num_params}\n")
        with atomic_write(self.exp / "history.json") as f:
            json.dump(self.history, f, indent=1)
        from pysv.train.plots import plot_eer_curves
        plot_eer_curves({self.cfg["system"]: self.history}, self.exp / "valid_eer.png")
        if self.valid_speakers:
            with atomic_write(self.exp / "valid_speakers") as f:
                f.write("\n".join(self.valid_speakers) + "\n")
        mark_complete(self.exp / ".done", f"epochs {len(self.history)}\n")
        log.info("wrote %s (average of epochs %s)", self.exp / "final.pt", final["averaged_epochs"])


def load_encoder(exp_dir, device="cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """The trained encoder of ``exp/<system>`` (``final.pt``) in eval mode, and its config."""
    path = Path(exp_dir) / "final.pt"
    if not path.is_file():
        raise DataError(f"missing trained model {path} (run stage 2 for this system)")
    state = checkpoint.load(path)
    cfg = checkpoint.config_from_state(state, path)
    return encoder_from_state(state, cfg, device), cfg


def encoder_from_state(state: Dict[str, Any], cfg: Dict[str, Any], device="cpu") -> nn.Module:
    """The encoder of a loaded ``final.pt`` state and its config, in eval mode on ``device``."""
    model = model_lib.build(cfg["model"]["name"], **cfg["model"]["hparams"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


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
