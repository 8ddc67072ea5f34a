"""Training data wiring (stage 2): dataset, validation split, sampler and DataLoader from a config.

:func:`build_training_data` turns the ``data`` and ``sampler`` sections of a resolved config into a
:class:`TrainingData`: the crop dataset over the training speakers (labels renumbered 0..K-1), the
batch sampler, the ``DataLoader``, the held-out validation speakers and their trials, and the
front end that runs on the training device where ``data.front_end=device``.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pysv import features as features_lib
from pysv import losses as loss_lib
from pysv.data import dataset as ds
from pysv.data.crop_windows import frames_to_samples
from pysv.data.samplers import build_sampler
from pysv.data.spec_augment import build_spec_augment
from pysv.data.trials import TrialOptions, make_trials
from pysv.data.waveform_augment import build_augmentor
from pysv.train.config import ConfigError, validation_seed
from pysv.train.distributed import DistInfo
from pysv.utils.io import DataError, read_trials

log = logging.getLogger("pysv.train")


def features_dir(data_dir: str, feature: str) -> str:
    """Where stage 1 writes the features of ``data_dir``: ``<data_dir>_<feature name>``."""
    return f"{data_dir.rstrip('/')}_{Path(feature).stem}"


class RelabeledSubset(Dataset):
    """Utterances of the training speakers only, with speaker labels renumbered 0..K-1 (a
    speed-perturbed copy counted as a new speaker, label ``c * num_base + y`` of the base dataset,
    becomes ``c * K + label``). The indices are one numpy array, not a list of Python ints: the
    loader workers read them, and touching a million list items would copy the pages holding their
    reference counts into every worker (copy-on-write)."""

    def __init__(self, base: Dataset, indices: List[int], label_map: Dict[int, int], num_base: int = 0):
        self.base, self.label_map = base, label_map
        self.indices = np.asarray(indices, dtype=np.int64)
        self.num_base, self.num_train = num_base, len(label_map)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        x, y, *plan = self.base[int(self.indices[i])]  # plan: the augmentation plan of front_end device
        copy, y = divmod(int(y), self.num_base) if self.num_base else (0, int(y))
        return (x, copy * self.num_train + self.label_map[y], *plan)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)


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


def validation_trials(spk2utts: Dict[str, List[str]], max_target: int, nontarget_ratio: float,
                      seed: int) -> List[Tuple[str, str, int]]:
    """Trials among the held-out validation speakers, drawn by stage 0's generator
    (:func:`pysv.data.trials.make_trials`); speakers with a single utterance give no target pair
    and are left out."""
    usable = {s: u for s, u in spk2utts.items() if len(u) >= 2}
    if len(usable) < 2:
        log.warning("validation: fewer than 2 held-out speakers with 2 utterances; no validation EER")
        return []
    opts = TrialOptions(seed=seed, max_target_trials=max_target, nontarget_ratio=nontarget_ratio)
    return make_trials(usable, opts, set_name="validation")


@dataclasses.dataclass
class TrainingData:
    """What :func:`build_training_data` wires up for the trainer."""

    train_set: RelabeledSubset
    sampler: Any                                # a pysv.data.samplers batch sampler
    loader: DataLoader
    train_speakers: List[str]                   # label i = train_speakers[i] (speed copies: "sp<factor>-<spk>")
    valid_speakers: List[str]
    valid_trials: Optional[List[Tuple[str, str, int]]]
    valid_reader_dir: Optional[str]             # the data / features dir validation reads
    feature_extractor: Optional[features_lib.FeatureExtractor]
    device_front: Optional[tuple]               # (features, SpecAugment, augmentor) run on the device, or None

    @property
    def num_classes(self) -> int:
        return len(self.train_speakers)


SPEED_PERTURB_KEYS = ("factors", "new_speakers")


def speed_perturbation(cfg: Dict[str, Any]) -> Tuple[List[float], bool]:
    """``(factors, new_speakers)`` of ``data.speed_perturb`` (``([], False)`` when off)."""
    sp = cfg["data"]["speed_perturb"]
    if not sp:
        return [], False
    unknown = sorted(set(sp) - set(SPEED_PERTURB_KEYS))
    if unknown:
        raise ConfigError(f"config key 'data.speed_perturb': unknown key(s) {unknown}; "
                          f"accepted: {', '.join(SPEED_PERTURB_KEYS)}")
    factors = [float(f) for f in sp.get("factors", (0.9, 1.0, 1.1))]
    new = bool(sp.get("new_speakers", True))
    if new and loss_lib.sampling_requirements(cfg["loss"]["name"], **cfg["loss"]["hparams"]).min_per_class > 1:
        raise ConfigError(f"config key 'data.speed_perturb.new_speakers': loss '{cfg['loss']['name']}' needs "
                          "several utterances of a speaker per batch, which random speed copies counted as new "
                          "speakers would split; use new_speakers: false with it")
    return factors, new


def check_sampler_fits_loss(cfg: Dict[str, Any]) -> None:
    """The configured sampler gives every batch what the loss needs (samples per speaker)."""
    min_per_class = loss_lib.sampling_requirements(cfg["loss"]["name"], **cfg["loss"]["hparams"]).min_per_class
    kind = cfg["sampler"]["kind"]
    if kind == "shuffle" and min_per_class > 1:
        raise ConfigError(
            f"config key 'sampler.kind': loss '{cfg['loss']['name']}' needs at least {min_per_class} "
            "utterances of each speaker in a batch; use sampler.kind=balanced or mp_random, not shuffle")
    if kind == "balanced" and cfg["sampler"]["utts_per_spk"] < min_per_class:
        raise ConfigError(
            f"config key 'sampler.utts_per_spk': loss '{cfg['loss']['name']}' needs at least "
            f"{min_per_class} utterances per speaker, got {cfg['sampler']['utts_per_spk']}")


def build_training_data(cfg: Dict[str, Any], input_kind: str, dist: DistInfo, device: torch.device) -> TrainingData:
    """Dataset, validation split, sampler and loader of a resolved config (see the module doc)."""
    dcfg = cfg["data"]
    train_dir = dcfg["train"]
    speed_factors, speed_new = speed_perturbation(cfg)
    on_the_fly = input_kind == "waveform" or dcfg["on_the_fly_features"] or dcfg["augment"] or speed_factors
    feature_extractor = None
    device_front = None
    if input_kind == "features":
        feature_extractor = features_lib.build(dcfg["feature"])
    spec_aug = build_spec_augment(dcfg["spec_augment"])
    if on_the_fly:
        augment = build_augmentor(dcfg["augment"], train_wav_scp=str(Path(train_dir) / "wav.scp")) \
            if dcfg["augment"] else None
        if input_kind == "waveform":
            crop_samples = dcfg["crop"]
        else:  # the audio length whose features have exactly data.crop frames
            fe = feature_extractor
            crop_samples = frames_to_samples(dcfg["crop"], fe.frame_shift, fe.frame_length, fe.snip_edges)
        # front_end "device": the workers read waveform crops and plan their augmentation (the
        # random draws and file reads); augmentation, features and SpecAugment run batched on
        # the training device (Trainer.device_features)
        on_device = dcfg["front_end"] == "device"
        fe = feature_extractor if input_kind == "features" else None
        device_front = (fe, spec_aug, augment) if on_device and (fe is not None or augment) else None
        base = ds.WaveformCropDataset(train_dir, crop_samples, augment=augment, seed=cfg["seed"],
                                      feature_extractor=None if on_device else fe,
                                      spec_augment=None if on_device else spec_aug,
                                      plan_augment=on_device and augment is not None,
                                      speed_factors=speed_factors, speed_new_speakers=speed_new)
        eval_dir = train_dir
    else:
        fdir = features_dir(train_dir, dcfg["feature"])
        if not (Path(fdir) / "feats.scp").is_file():
            raise DataError(f"missing features {fdir}/feats.scp for training set {train_dir} "
                            f"(run stage 1 with feature {dcfg['feature']})")
        base = ds.FeatureCropDataset(fdir, dcfg["crop"], spec_augment=spec_aug, seed=cfg["seed"])
        eval_dir = fdir
    index = base.index
    spk_names = sorted(index.spk2label, key=lambda s: index.spk2label[s])
    valid_seed = validation_seed(cfg)
    train_spk, valid_spk = split_validation_speakers(
        spk_names, dcfg["valid_speakers"] if not dcfg["valid_trials"] else 0, valid_seed)
    train_speakers = sorted(train_spk)
    label_map = {index.spk2label[s]: i for i, s in enumerate(train_speakers)}
    indices = [i for i, lab in enumerate(index.labels) if lab in label_map]
    train_set = RelabeledSubset(base, indices, label_map, num_base=index.num_classes if speed_new else 0)
    labels = [label_map[index.labels[i]] for i in indices]
    sampler = _build_sampler(cfg, [train_speakers[lab] for lab in labels], dist)
    nw = dcfg["num_workers"]
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=nw,
                        pin_memory=device.type == "cuda", collate_fn=ds.collate,
                        persistent_workers=False, prefetch_factor=4 if nw > 0 else None)
    # validation: held-out training speakers (or an explicit list); never the test speakers
    valid_trials, valid_reader_dir = None, None
    if dcfg["valid_trials"]:
        valid_trials = read_trials(dcfg["valid_trials"])
        valid_reader_dir = dcfg["valid_data"] or eval_dir
    elif valid_spk:
        spk2utts: Dict[str, List[str]] = {}
        for utt, lab in zip(index.utts, index.labels):
            s = spk_names[lab]
            if s in valid_spk:
                spk2utts.setdefault(s, []).append(utt)
        valid_trials = validation_trials(spk2utts, dcfg["valid_max_target"], dcfg["valid_nontarget_ratio"],
                                         valid_seed)
        valid_reader_dir = eval_dir
    if speed_new:  # the copies at the other factors are speakers of their own (wespeaker, 3D-Speaker)
        copies = [f for f in speed_factors if f != 1.0]
        train_speakers = train_speakers + [f"sp{f:g}-{s}" for f in copies for s in train_speakers]
    return TrainingData(train_set=train_set, sampler=sampler, loader=loader, train_speakers=train_speakers,
                        valid_speakers=valid_spk, valid_trials=valid_trials, valid_reader_dir=valid_reader_dir,
                        feature_extractor=feature_extractor, device_front=device_front)


def _build_sampler(cfg: Dict[str, Any], speakers: List[str], dist: DistInfo):
    """The batch sampler over the training utterances' speaker ids (so that its messages name
    speakers as stage 0 does); each rank draws its share of ``sampler.batch_size``."""
    scfg = cfg["sampler"]
    world = dist.world_size
    if scfg["batch_size"] % world:
        raise ConfigError(f"config key 'sampler.batch_size': {scfg['batch_size']} is not divisible "
                          f"by the number of processes ({world})")
    kw = dict(seed=cfg["seed"], num_replicas=world, rank=dist.rank, max_utts_per_spk=scfg["max_utts_per_spk"])
    if scfg["kind"] == "balanced":
        kw["utts_per_spk"] = scfg["utts_per_spk"]
    elif scfg["kind"] == "shuffle":
        kw["drop_last"] = True  # a last batch of one utterance would break batch norm
    try:
        return build_sampler(scfg["kind"], speakers, scfg["batch_size"] // world, **kw)
    except (TypeError, ValueError) as e:  # e.g. fewer speakers than a batch needs
        raise ConfigError(f"config key 'sampler' ({scfg['kind']}, batch_size {scfg['batch_size']}, "
                          f"{len(set(speakers))} training speakers): {e}") from None
