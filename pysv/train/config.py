"""Training configuration: defaults ← a chain of yaml files (``_base_``) ← ``key.sub=value`` overrides.

:data:`DEFAULTS` is the one place that lists every key a config may hold, with its default. A
system yaml states only what differs: from :data:`DEFAULTS`, or from the yaml it names in
``_base_:`` (a path relative to the file; bases may name bases). Mappings merge key by key, any
other value (lists included) replaces the base's. A key that is not in :data:`DEFAULTS`, or a value
of the wrong type, is rejected before any work starts with a message naming the key and file. The
mappings ``model.hparams`` and ``loss.hparams`` are free-form: their keys are checked by the encoder
/ loss registries, which reject unknown hyper-parameters by name. Choices (encoder, loss, sampler,
optimizer, scheduler, feature names) are checked against the registries that own them. A run
records the resolved, complete config (``exp/<system>/config.yaml``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from pysv.utils.io import atomic_write, load_yaml

FREE_FORM = {"model.hparams", "loss.hparams", "data.augment", "data.spec_augment", "data.speed_perturb"}

# None means "optional"; the type of a None default is given in OPTIONAL_TYPES.
DEFAULTS: Dict[str, Any] = {
    "system": "",                 # name of the run; exp/<system>/ unless --exp-dir is given
    "seed": 1,
    "keep_over_profile": [],      # dotted keys this system keeps when a corpus profile sets them
                                  # (load_config(profile=...); run.sh's per-corpus epochs / batch)
    "data": {
        "train": "data/mini_train",   # Kaldi data dir (wav.scp, utt2spk); features in <train>_<feature>
        "feature": "fbank40",         # a named feature config (fbank40 | fbank64 | mfcc30), a feature yaml,
                                      # or null (waveform encoders)
        "on_the_fly_features": False, # compute features from audio in the loader (needed for waveform augmentation)
        "front_end": "worker",        # on-the-fly features: in the loader workers | on the training device, batched
        "crop": 200,                  # training crop: frames (features) or samples (waveform)
        "augment": None,              # waveform augmentation (pysv.data.waveform_augment.build_augmentor), null = off
        "spec_augment": None,         # SpecAugment on features, null = off
        "speed_perturb": None,        # {factors: [0.9, 1.0, 1.1], new_speakers: true}: lhotse Speed per crop
        "num_workers": 2,
        "valid_speakers": 8,          # training speakers held out for the per-epoch validation EER
        "valid_seed": None,           # seed of the held-out speakers and their trials; null = seed (the
                                      # members of an ensemble differ in seed but hold out the same speakers)
        "valid_trials": None,         # or an explicit trial list (its utterances read from valid_data)
        "valid_data": None,           # Kaldi data dir (features dir for feature systems) for valid_trials
        "valid_max_target": 2000,     # cap on target trials of the held-out validation speakers (0 = all)
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
        "lr_batch": None,             # the batch size optim.lr is for: lr scales linearly to sampler.batch_size
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
                                      # (absolute: not scaled by optim.lr_batch)
        "warmup_epochs": 0.0,         # warmup_*: linear warm-up from 0 over this many epochs (per iteration)
        "horizon": "epochs",          # warmup_*: decay over train.epochs | budget: over train.max_minutes
                                      # (re-estimated each epoch; pysv.train.optim.Horizon)
    },
    "train": {
        "epochs": 10,
        "precision": "auto",          # auto | fp32 | bf16 | fp16 (pysv.train.precision; auto = bf16 where native)
        "compile": False,             # torch.compile the encoder (falls back to eager with a warning)
        "grad_clip": None,
        "embed_norm_scale": None,     # scale embeddings to this L2 norm before the loss (RawNet2: 10)
        "average_last": 1,            # average the weights of K epoch checkpoints into final.pt ...
        "average_select": "last",     # ... the last K epochs (wespeaker's average_model.py) | best_valid:
                                      # the K with the lowest validation EER (needs validation speakers)
        "log_interval": 10,
        "channels_last": True,        # channels-last weights for 2-D CNN encoders
                                      # (encoder attribute prefers_channels_last)
        "find_unused_parameters": False,
        "keep_checkpoints": 0,        # 0 = keep all epoch checkpoints
        "max_minutes": None,          # time budget: stop after the last epoch that fits (then finalise)
        "valid_every": 1,             # validate after every N-th epoch (and the last of train.epochs);
                                      # plateau steps on validated epochs (voxceleb_trainer's test_interval)
        "init_from": None,            # fine-tuning: encoder weights from this final.pt / checkpoint (new loss head)
        "margin_ramp": None,          # [start_epoch, end_epoch]: AM/AAM margin ramps 0 -> loss.hparams.margin
        "ensemble": 1,                # N > 1: N members, seeds seed..seed+N-1, one final.pt (pysv.train.ensemble)
        "member_overrides": [],       # ensemble: member k's {key: value} changes of this config (a different
                                      # loss, sampler, augmentation, encoder hparams); [] = identical members
    },
    # the system's test protocol: stage 3 always writes full-utterance embeddings (cosine / PLDA)
    # and, when mode is not full, the protocol's embeddings of the test set as well
    "extract": {
        "mode": "full",               # full | crops (num_crops evenly spaced, distance back-end)
                                      # | tta (averaged sliding crops)
        "crop": None,                 # crop length for crops / tta, frames or samples; null = data.crop
        "num_crops": 10,              # crops per utterance (mode crops)
        "overlap": 0.2,               # overlap of consecutive crops (mode tta)
    },
}

OPTIONAL_TYPES: Dict[str, tuple] = {
    "data.feature": (str,),
    "data.augment": (dict,),
    "data.spec_augment": (dict,),
    "data.speed_perturb": (dict,),
    "data.valid_trials": (str,),
    "data.valid_seed": (int,),
    "data.valid_data": (str,),
    "sampler.max_utts_per_spk": (int,),
    "optim.lr_batch": (int,),
    "train.grad_clip": (float, int),
    "train.embed_norm_scale": (float, int),
    "extract.crop": (int,),
    "train.max_minutes": (float, int),
    "train.init_from": (str,),
    "train.margin_ramp": (list,),
}


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


def _flatten_file(d: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`_flatten`, but a non-empty free-form mapping of a file merges into its base's key by
    key (``model.hparams.<name>``) instead of replacing it."""
    out = {}
    for key, value in _flatten(d).items():
        if key in FREE_FORM and isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
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


BASE_KEY = "_base_"


def read_chain(path, _seen: Sequence[Path] = ()) -> List[Tuple[Path, Dict[str, Any]]]:
    """The yaml files of ``path``'s ``_base_`` chain, root base first, each with its mapping (without
    ``_base_``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" + (f" (the {BASE_KEY} of {_seen[-1]})" if _seen else ""))
    if p.resolve() in [s.resolve() for s in _seen]:
        raise ConfigError(f"{p}: {BASE_KEY} chain loops ({' -> '.join(map(str, [*_seen, p]))})")
    user = load_yaml(p, ConfigError) or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = user.pop(BASE_KEY, None)
    if base is None:
        return [(p, user)]
    if not isinstance(base, str):
        raise ConfigError(f"{p}: {BASE_KEY} must be a path (relative to {p.parent}), got {base!r}")
    return read_chain(p.parent / base, [*_seen, p]) + [(p, user)]


def load_config(path: Optional[str], overrides: Sequence[str] = (), check_choices: bool = True,
                profile: Sequence[str] = ()) -> Dict[str, Any]:
    """Defaults ← the ``_base_`` chain of the yaml file ← ``profile`` ← ``key=value`` overrides; every
    key, type and value validated (``check_choices=False`` skips the names owned by the registries,
    which import torch: for tools that only read values).

    ``profile`` holds ``key=value`` items too: a recipe's adaptation of every system to a corpus
    (run.sh: fewer epochs and smaller batches than the papers' VoxCeleb runs). Unlike overrides they
    skip the keys the system lists in ``keep_over_profile`` (a fine-tuning step's own epochs, a
    time-budgeted system's epochs, a toolkit-equivalent config's batch)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        for p, user in read_chain(path):
            for key, value in _flatten_file(user).items():
                try:
                    _set(cfg, key, value)
                except ConfigError as e:
                    raise ConfigError(f"{p}: {e}") from None
        if not cfg["system"]:
            cfg["system"] = Path(path).stem
    keep = cfg["keep_over_profile"]
    flat = _flatten(DEFAULTS)
    for key in keep:
        if not isinstance(key, str) or (key not in flat and key.rsplit(".", 1)[0] not in FREE_FORM):
            raise ConfigError(f"{path}: keep_over_profile names {key!r}, which is not a config key")
    for item in profile:
        key, value = parse_override(item)
        if key not in keep:
            _set(cfg, key, value)
    for ov in overrides:
        key, value = parse_override(ov)
        _set(cfg, key, value)
    check_values(cfg, check_choices)
    return cfg


def registry_choices() -> Dict[str, Sequence[str]]:
    """Config keys whose values name a registered component, with the names their owners accept."""
    from pysv import losses, models
    from pysv.data.samplers import SAMPLERS
    from pysv.embed import MODES
    from pysv.train.optim import OPTIMIZERS, SCHEDULERS
    from pysv.train.precision import PRECISIONS
    return {
        "model.name": models.names(),
        "loss.name": (*losses.names(), *losses.LOSSES.aliases()),
        "sampler.kind": SAMPLERS.names(),
        "optim.name": tuple(OPTIMIZERS),
        "scheduler.name": SCHEDULERS,
        "extract.mode": MODES,
        "train.precision": PRECISIONS,
    }


def check_values(cfg: Dict[str, Any], check_choices: bool = True) -> None:
    choices: Dict[str, Sequence[str]] = {"data.front_end": ("worker", "device"),
                                         "train.average_select": ("last", "best_valid")}
    if check_choices:
        choices.update(registry_choices())
    flat = _flatten(cfg)
    for key, allowed in choices.items():
        if flat[key] not in allowed:
            raise ConfigError(f"config key '{key}': {flat[key]!r} is not one of {tuple(allowed)}")
    positive = ["data.crop", "sampler.batch_size", "optim.lr", "train.epochs", "train.average_last",
                "train.valid_every", "train.ensemble"]
    for key in positive:
        if flat[key] <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {flat[key]!r}")
    ramp = flat["train.margin_ramp"]
    if ramp is not None and (len(ramp) != 2 or not all(isinstance(v, (int, float)) for v in ramp)
                             or not 0 <= ramp[0] < ramp[1]):
        raise ConfigError(f"config key 'train.margin_ramp' must be [start_epoch, end_epoch] with "
                          f"0 <= start < end, got {ramp!r}")
    if flat["scheduler.horizon"] not in ("epochs", "budget"):
        raise ConfigError(f"config key 'scheduler.horizon': {flat['scheduler.horizon']!r} is not one of "
                          "('epochs', 'budget')")
    if flat["scheduler.horizon"] == "budget" and (flat["train.max_minutes"] is None
                                                   or flat["scheduler.name"] not in ("warmup_exp", "warmup_cosine")):
        raise ConfigError("config key 'scheduler.horizon': budget needs train.max_minutes and a per-iteration "
                          f"schedule (warmup_exp / warmup_cosine), got scheduler.name={flat['scheduler.name']!r}, "
                          f"train.max_minutes={flat['train.max_minutes']!r}")
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
    feature = flat["data.feature"]
    if check_choices and feature is not None and not str(feature).endswith(".yaml"):
        from pysv.features import FEATURE_NAMES
        if feature not in FEATURE_NAMES:
            raise ConfigError(f"config key 'data.feature': unknown feature {feature!r} "
                              f"(a name of {', '.join(FEATURE_NAMES)} or a feature yaml)")
    overrides = flat["train.member_overrides"]
    if len(overrides) > flat["train.ensemble"]:
        raise ConfigError(f"config key 'train.member_overrides' has {len(overrides)} items for "
                          f"train.ensemble={flat['train.ensemble']} members")
    for k in range(len(overrides)):
        check_values(apply_member_overrides(cfg, k), check_choices)


# what every member of an ensemble must share: the data it is trained and validated on, its input
# features, the test protocol, and the ensemble's own keys (seed + k and the budget share are set per member)
MEMBER_SHARED = ("seed", "system", "keep_over_profile", "data.train", "data.feature", "data.valid_speakers",
                 "data.valid_seed", "data.valid_trials", "data.valid_data", "data.valid_max_target",
                 "data.valid_nontarget_ratio", "extract", "train.ensemble", "train.member_overrides",
                 "train.max_minutes", "train.epochs", "train.init_from")


def apply_member_overrides(cfg: Dict[str, Any], k: int) -> Dict[str, Any]:
    """Member ``k``'s copy of ``cfg``: ``train.member_overrides[k]`` applied (none when the list is
    shorter), each key validated as an override, keys of :data:`MEMBER_SHARED` refused by name; the
    copy's own ``train.member_overrides`` is empty."""
    out = copy.deepcopy(cfg)
    overrides = out["train"]["member_overrides"]
    out["train"]["member_overrides"] = []
    if k >= len(overrides):
        return out
    changes = overrides[k]
    if not isinstance(changes, dict):
        raise ConfigError(f"config key 'train.member_overrides': item {k + 1} must be a mapping of config "
                          f"keys to values, got {changes!r}")
    for key, value in _flatten_file(changes).items():
        if any(key == s or key.startswith(s + ".") for s in MEMBER_SHARED):
            raise ConfigError(f"config key 'train.member_overrides': item {k + 1} sets '{key}', which the "
                              "members of an ensemble share")
        try:
            _set(out, key, value)
        except ConfigError as e:
            raise ConfigError(f"config key 'train.member_overrides': item {k + 1}: {e}") from None
    return out


def validation_seed(cfg: Dict[str, Any]) -> int:
    """The seed that draws the held-out validation speakers and their trials: ``data.valid_seed``,
    else ``seed`` (the training run, stage 5's development trials and ensemble members agree on it)."""
    return int(cfg["seed"] if cfg["data"]["valid_seed"] is None else cfg["data"]["valid_seed"])


def save_config(cfg: Dict[str, Any], path) -> None:
    with atomic_write(path, encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def list_systems(conf_dir="conf") -> List[str]:
    """The systems of a recipe: the ``conf/*.yaml`` files whose ``_base_`` chain has a ``loss``
    section (feature configs, bases and the list file have none)."""
    out = []
    for p in sorted(Path(conf_dir).glob("*.yaml")):
        if any("loss" in part for _, part in read_chain(p)):
            out.append(p.stem)
    return out


def system_lists(conf_dir="conf") -> Dict[str, List[str]]:
    """The named lists of ``conf/systems.yaml`` (e.g. ``default``, ``paper``)."""
    path = Path(conf_dir) / "systems.yaml"
    lists = load_yaml(path, ConfigError) if path.is_file() else {}
    if not isinstance(lists, dict) or not all(isinstance(v, list) for v in lists.values()):
        raise ConfigError(f"{path}: expected a mapping of list names to lists of system names")
    return lists
