"""Training configuration: one complete yaml per system, ``key.sub=value`` overrides, validation.

Every key a config may hold appears in :data:`DEFAULTS`; a key that is not there, or a value of the
wrong type, is rejected before any work starts with a message naming the key. The dictionaries
``model.hparams`` and ``loss.hparams`` are free-form: their keys are checked by the encoder / loss
builders themselves, which reject unknown hyper-parameters by name.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

FREE_FORM = {"model.hparams", "loss.hparams", "data.augment", "data.spec_augment", "data.feature_overrides"}

# None means "optional"; the type of a None default is given in OPTIONAL_TYPES.
DEFAULTS: Dict[str, Any] = {
    "system": "",                 # name of the run; exp/<system>/ unless --exp-dir is given
    "seed": 1,
    "data": {
        "train": "data/mini_train",   # Kaldi data dir (wav.scp, utt2spk); features in <train>_<feature>
        "feature": "fbank40",         # fbank40 | fbank64 | mfcc30 | null (raw waveform systems)
        "feature_overrides": {},      # options for on-the-fly features (used with augmentation)
        "on_the_fly_features": False, # compute features from audio in the loader (needed for waveform augmentation)
        "front_end": "worker",        # on-the-fly features: in the loader workers | on the training device, batched
        "crop": 200,                  # training crop: frames (features) or samples (waveform)
        "augment": None,              # waveform augmentation (pysv.data.augment.build_augmentor), null = off
        "spec_augment": None,         # SpecAugment on features, null = off
        "num_workers": 2,
        "valid_speakers": 8,          # training speakers held out for the per-epoch validation EER
        "valid_trials": None,         # or an explicit trial list (its utterances read from valid_data)
        "valid_data": None,           # Kaldi data dir (features dir for feature systems) for valid_trials
        "valid_max_target": 2000,     # cap on target trials of the held-out validation speakers
        "valid_nontarget_ratio": 1.0,
    },
    "model": {"name": "thin_resnet34", "hparams": {}},
    "loss": {"name": "softmax", "hparams": {}},
    "sampler": {
        "kind": "shuffle",            # shuffle | balanced | mp_random
        "batch_size": 128,            # (expected) utterances per batch, summed over all ranks
        "utts_per_spk": 2,            # M of the balanced sampler
        "max_utts_per_spk": None,     # cap per speaker per epoch
    },
    "optim": {
        "name": "sgd",                # sgd | adam | amsgrad
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "nesterov": False,
    },
    "scheduler": {
        "name": "plateau",            # plateau (on validation EER) | step | warmup_exp | warmup_cosine | none
        "factor": 0.8,
        "patience": 3,
        "step_size": 10,
        "min_lr": 1e-6,               # plateau: floor; warmup_exp / warmup_cosine: the lr reached at the last step
        "warmup_epochs": 0.0,         # warmup_*: linear warm-up from 0 over this many epochs (per iteration)
    },
    "train": {
        "epochs": 10,
        "precision": "auto",          # auto | fp32 | bf16 | fp16 (pysv.train.precision; auto = bf16 where native)
        "compile": False,             # torch.compile the encoder (falls back to eager with a warning)
        "grad_clip": None,
        "embed_norm_scale": None,     # scale embeddings to this L2 norm before the loss (RawNet2: 10)
        "average_last": 1,            # average the weights of the last K epoch checkpoints into final.pt
        "log_interval": 10,
        "channels_last": True,        # channels-last weights for 2-D CNN encoders (encoder attribute prefers_channels_last)
        "find_unused_parameters": False,
        "keep_checkpoints": 0,        # 0 = keep all epoch checkpoints
        "max_minutes": None,          # time budget: stop after the last epoch that fits (then finalise)
        "init_from": None,            # fine-tuning: encoder weights from this final.pt / checkpoint (new loss head)
        "margin_ramp": None,          # [start_epoch, end_epoch]: AM/AAM margin ramps 0 -> loss.hparams.margin
    },
    # the system's test protocol: stage 3 always writes full-utterance embeddings (cosine / PLDA)
    # and, when mode is not full, the protocol's embeddings of the test set as well
    "extract": {
        "mode": "full",               # full | crops (num_crops evenly spaced, distance back-end) | tta (averaged sliding crops)
        "crop": None,                 # crop length for crops / tta, frames or samples; null = data.crop
        "num_crops": 10,              # crops per utterance (mode crops)
        "overlap": 0.2,               # overlap of consecutive crops (mode tta)
    },
}

OPTIONAL_TYPES: Dict[str, tuple] = {
    "data.feature": (str,),
    "data.augment": (dict,),
    "data.spec_augment": (dict,),
    "data.valid_trials": (str,),
    "data.valid_data": (str,),
    "sampler.max_utts_per_spk": (int,),
    "train.grad_clip": (float, int),
    "train.embed_norm_scale": (float, int),
    "extract.crop": (int,),
    "train.max_minutes": (float, int),
    "train.init_from": (str,),
    "train.margin_ramp": (list,),
}

#: test protocols of the ``extract`` block (pysv.embed.MODES)
EXTRACT_MODES = ("full", "crops", "tta")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type; the message names the key."""


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in FREE_FORM:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_type(key: str, value: Any) -> Any:
    flat_defaults = _flatten(DEFAULTS)
    default = flat_defaults[key]
    if value is None:
        if default is None or key in OPTIONAL_TYPES or key in FREE_FORM:
            return None
        raise ConfigError(f"config key '{key}' may not be null")
    allowed = OPTIONAL_TYPES.get(key) or (type(default),)
    if key in FREE_FORM:
        allowed = (dict,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str):
        # yaml 1.1 reads 1e-4 (no dot) as a string; a number is what the key wants
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"config key '{key}': expected {'/'.join(t.__name__ for t in allowed)}, got bool {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(f"config key '{key}': expected {'/'.join(t.__name__ for t in allowed)}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def _set(cfg: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    # free-form dictionaries accept any sub-key (validated by the builders)
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in FREE_FORM:
            node = cfg
            for p in parts[:i]:
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
            for p in parts[i:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
            return
    if key not in _flatten(DEFAULTS) and key not in FREE_FORM:
        raise ConfigError(f"unknown config key '{key}'")
    value = _check_type(key, value)
    node = cfg
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value


def parse_override(text: str):
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from e
    return key.strip(), value


def load_config(path: Optional[str], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Defaults ← yaml file ← ``key=value`` overrides; every key and type validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        from pysv.utils.io import load_yaml
        user = load_yaml(p, ConfigError) or {}
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        for key, value in _flatten(user).items():
            try:
                _set(cfg, key, value)
            except ConfigError as e:
                raise ConfigError(f"{p}: {e}") from None
        if not cfg["system"]:
            cfg["system"] = p.stem
    for ov in overrides:
        key, value = parse_override(ov)
        _set(cfg, key, value)
    check_values(cfg)
    return cfg


def check_values(cfg: Dict[str, Any]) -> None:
    choices = {
        "sampler.kind": ("shuffle", "balanced", "mp_random"),
        "optim.name": ("sgd", "adam", "amsgrad"),
        "scheduler.name": ("plateau", "step", "warmup_exp", "warmup_cosine", "none"),
        "extract.mode": EXTRACT_MODES,
        "train.precision": ("auto", "fp32", "bf16", "fp16"),
        "data.front_end": ("worker", "device"),
    }
    flat = _flatten(cfg)
    for key, allowed in choices.items():
        if flat[key] not in allowed:
            raise ConfigError(f"config key '{key}': {flat[key]!r} is not one of {allowed}")
    positive = ["data.crop", "sampler.batch_size", "optim.lr", "train.epochs", "train.average_last"]
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {flat[key]!r}")
    ramp = flat["train.margin_ramp"]
    if ramp is not None and (len(ramp) != 2 or not all(isinstance(v, (int, float)) for v in ramp)
                             or not 0 <= ramp[0] < ramp[1]):
        raise ConfigError(f"config key 'train.margin_ramp' must be [start_epoch, end_epoch] with "
                          f"0 <= start < end, got {ramp!r}")
    if flat["scheduler.warmup_epochs"] < 0:
        raise ConfigError("config key 'scheduler.warmup_epochs' must be >= 0")
    if flat["train.max_minutes"] is not None and flat["train.max_minutes"] <= 0:
        raise ConfigError(f"config key 'train.max_minutes' must be positive or null, got {flat['train.max_minutes']!r}")
    if flat["extract.crop"] is not None and flat["extract.crop"] <= 0:
        raise ConfigError(f"config key 'extract.crop' must be positive or null, got {flat['extract.crop']!r}")
    if flat["extract.num_crops"] <= 0:
        raise ConfigError(f"config key 'extract.num_crops' must be positive, got {flat['extract.num_crops']!r}")
    if not 0.0 <= flat["extract.overlap"] < 1.0:
        raise ConfigError(f"config key 'extract.overlap' must be in [0, 1), got {flat['extract.overlap']!r}")
    if flat["data.num_workers"] < 0:
        raise ConfigError("config key 'data.num_workers' must be >= 0")
    if flat["data.feature"] is not None and flat["data.feature"] not in ("fbank40", "fbank64", "mfcc30") \
            and not str(flat["data.feature"]).endswith(".yaml"):
        raise ConfigError(f"config key 'data.feature': unknown feature {flat['data.feature']!r}")


def save_config(cfg: Dict[str, Any], path) -> None:
    from pysv.utils.io import atomic_write
    with atomic_write(path, encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def list_systems(conf_dir="conf") -> List[str]:
    """Systems are the conf/<encoder>_<loss>.yaml files that have a ``model`` section."""
    out = []
    for p in sorted(Path(conf_dir).glob("*.yaml")):
        with open(p, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
        if isinstance(d, dict) and "model" in d and "loss" in d:
            out.append(p.stem)
    return out
