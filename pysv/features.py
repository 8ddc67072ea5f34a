"""Kaldi-compatible acoustic features: log mel filterbanks and MFCCs, vectorized.

The definitions are those of Kaldi's ``compute-fbank-feats`` / ``compute-mfcc-feats``
(``src/feat/feature-window.cc``, ``mel-computations.cc``, ``feature-fbank.cc``, ``feature-mfcc.cc``),
followed by optional ``add-deltas`` and ``apply-cmvn`` / ``apply-cmvn-sliding`` post-processing.
Frames are cut with a strided view, processed as one ``[batch, frames, samples]`` tensor, transformed
with one batched real FFT on the power-of-two padded window and mapped to mel bands with one matmul.
That torch code is :class:`TorchFrontEnd` (``FeatureExtractor.front_end()``), the one definition that
stage 1 (``ext(samples, sr)``), the on-device training front end (``ext.batch``) and the exported
embedding graphs (:mod:`pysv.export`) all run; its sizes follow the input's shape, so it traces.

Public entry point (fixed by ``../shared/DESIGN.md``)::

    ext = pysv.features.build("fbank40", dither=0.0)   # or a yaml path; key=value overrides
    feats = ext(samples, 16000)                          # float32 [frames, ext.dim]

Named configurations (``pysv/feature_configs/<name>.yaml``, linked from the recipe's ``conf/``):

* ``fbank40`` -- 40 log mel filterbanks, 25/10 ms, 16 kHz, no CMVN (MP-2021 / MP-2020, voxceleb_trainer-style
  front-end; voxceleb_trainer normalizes per utterance inside the model with InstanceNorm).
* ``fbank64`` -- 64 log mel filterbanks with sliding-window mean/variance normalization over up to 3 s
  (MLA-SAP Sec. 4.2), as ``apply-cmvn-sliding --norm-vars=true --center=true --cmn-window=300``.
* ``mfcc30`` -- 30 MFCCs (30 mel bins) + deltas + double deltas (``add-deltas``, window 2) = 90 dims,
  per-utterance mean and variance normalization (SAEP Sec. 3).

See ``docs/features.md`` for every option.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch
import yaml
from scipy.signal import resample_poly

from pysv.utils.io import DataError, load_yaml

__all__ = ["build", "load_config", "resolve_config", "FeatureExtractor", "TorchFrontEnd", "FEATURE_NAMES",
           "apply_deltas", "apply_cmvn", "apply_sliding_cmvn", "mel_banks", "feature_window",
           "dct_matrix", "lifter_coeffs", "num_frames", "config_to_yaml", "feature_dim"]

FLOAT_EPS = float(np.finfo(np.float32).eps)  # Kaldi: std::numeric_limits<float>::epsilon()

# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

# Options shared by both feature types (Kaldi FrameExtractionOptions + MelBanksOptions + ours).
_COMMON_DEFAULTS: Dict[str, Any] = {
    "sample_rate": 16000,            # --sample-frequency
    "resample": "refuse",            # refuse | resample (scipy.signal.resample_poly)
    "channel": None,                 # null: refuse multi-channel audio; int: use that channel; "mean": downmix
    "input_scale": 32768.0,          # samples in [-1, 1] are scaled to the int16 range, as Kaldi reads wavs
    "frame_length_ms": 25.0,         # --frame-length
    "frame_shift_ms": 10.0,          # --frame-shift
    "dither": 1.0,                   # --dither (in int16 units, like Kaldi); 0 disables
    "dither_seed": 0,                # base seed of the dither RNG (make_features mixes in the utterance id)
    "preemphasis_coefficient": 0.97,  # --preemphasis-coefficient
    "remove_dc_offset": True,        # --remove-dc-offset
    "window_type": "povey",          # --window-type: povey | hamming | hanning | sine | rectangular | blackman
    "blackman_coeff": 0.42,          # --blackman-coeff
    "round_to_power_of_two": True,   # --round-to-power-of-two
    "snip_edges": True,              # --snip-edges
    "num_mel_bins": 23,              # --num-mel-bins
    "low_freq": 20.0,                # --low-freq
    "high_freq": 0.0,                # --high-freq (<= 0: offset from Nyquist)
    "use_energy": False,             # --use-energy
    "energy_floor": 0.0,             # --energy-floor
    "raw_energy": True,              # --raw-energy
    # post-processing
    "delta_order": 0,                # add-deltas --delta-order (0: none)
    "delta_window": 2,               # add-deltas --delta-window
    "cmvn": "none",                  # none | utterance (apply-cmvn, per-utterance stats) | sliding (apply-cmvn-sliding)
    "cmvn_norm_vars": False,         # --norm-vars
    "cmvn_window": 600,              # apply-cmvn-sliding --cmn-window (frames)
    "cmvn_center": False,            # apply-cmvn-sliding --center
    "cmvn_min_window": 100,          # apply-cmvn-sliding --min-cmn-window (only used when center is false)
}
_TYPE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "fbank": {"use_log_fbank": True, "use_power": True},
    "mfcc": {"num_ceps": 13, "cepstral_lifter": 22.0, "use_energy": True},
}

# The named configurations: pysv/feature_configs/<name>.yaml (the recipe's conf/<name>.yaml links there).
FEATURE_CONFIG_DIR = Path(__file__).resolve().parent / "feature_configs"
FEATURE_NAMES = tuple(sorted(p.stem for p in FEATURE_CONFIG_DIR.glob("*.yaml")))

# Accepted spellings of option names (Kaldi command-line names, knf names).
_ALIASES = {
    "sample_frequency": "sample_rate", "samp_freq": "sample_rate", "sampling_rate": "sample_rate",
    "frame_length": "frame_length_ms", "frame_shift": "frame_shift_ms",
    "preemphasis": "preemphasis_coefficient", "preemph_coeff": "preemphasis_coefficient",
    "num_bins": "num_mel_bins", "num_mel_filters": "num_mel_bins",
    "norm_vars": "cmvn_norm_vars", "cmn_window": "cmvn_window", "center": "cmvn_center",
    "min_cmn_window": "cmvn_min_window", "delta_order": "delta_order", "order": "delta_order",
}
_WINDOWS = ("povey", "hamming", "hanning", "hann", "sine", "rectangular", "blackman")


def _canon_key(key: str) -> str:
    key = key.strip().lstrip("-").replace("-", "_")
    return _ALIASES.get(key, key)


def _kaldi_defaults(feat_type: str) -> Dict[str, Any]:
    if feat_type not in _TYPE_DEFAULTS:
        raise ValueError(f"feature type must be one of {sorted(_TYPE_DEFAULTS)}, got {feat_type!r}")
    cfg = dict(_COMMON_DEFAULTS)
    cfg.update(_TYPE_DEFAULTS[feat_type])
    return cfg


def load_config(name_or_path: Union[str, Path]) -> Dict[str, Any]:
    """Raw (unresolved) options of a named config (:data:`FEATURE_NAMES`) or of a yaml file."""
    s = str(name_or_path)
    path = FEATURE_CONFIG_DIR / f"{s}.yaml" if s in FEATURE_NAMES else Path(s)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature config {s!r} is neither a known name ({', '.join(FEATURE_NAMES)}) nor a yaml file")
    data = load_yaml(path, ValueError) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return data


def resolve_config(raw: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Kaldi defaults for ``type``, updated with ``raw`` then ``overrides``; validated and normalized."""
    merged: Dict[str, Any] = {}
    for src in (raw, overrides or {}):
        for k, v in src.items():
            merged[_canon_key(k)] = v
    feat_type = str(merged.get("type", "fbank")).lower()
    cfg = _kaldi_defaults(feat_type)
    cfg = {"name": merged.get("name", feat_type), "type": feat_type, **cfg}
    unknown = sorted(set(merged) - set(cfg))
    if unknown:
        raise ValueError(f"unknown {feat_type} feature option(s) {unknown}; valid options: {sorted(cfg)}")
    cfg.update(merged)
    cfg["type"] = feat_type
    _normalize(cfg)
    return cfg


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0"):
        return v.lower() in ("true", "yes", "1")
    raise ValueError(f"feature option {key} must be true/false, got {v!r}")


def _normalize(cfg: Dict[str, Any]) -> None:
    bools = ["remove_dc_offset", "round_to_power_of_two", "snip_edges", "use_energy", "raw_energy",
             "cmvn_norm_vars", "cmvn_center", "use_log_fbank", "use_power"]
    floats = ["input_scale", "frame_length_ms", "frame_shift_ms", "dither", "preemphasis_coefficient",
              "blackman_coeff", "low_freq", "high_freq", "energy_floor", "cepstral_lifter"]
    ints = ["sample_rate", "dither_seed", "num_mel_bins", "delta_order", "delta_window", "cmvn_window",
            "cmvn_min_window", "num_ceps"]
    for k in bools:
        if k in cfg:
            cfg[k] = _as_bool(k, cfg[k])
    for k in floats:
        if k in cfg:
            try:
                cfg[k] = float(cfg[k])
            except (TypeError, ValueError):
                raise ValueError(f"feature option {k} must be a number, got {cfg[k]!r}") from None
    for k in ints:
        if k in cfg:
            v = cfg[k]
            try:
                integral = not isinstance(v, bool) and float(v).is_integer()
            except (TypeError, ValueError):
                integral = False
            if not integral:
                raise ValueError(f"feature option {k} must be an integer, got {v!r}")
            cfg[k] = int(float(v))
    cfg["name"] = str(cfg["name"])
    cfg["window_type"] = str(cfg["window_type"]).lower()
    cfg["cmvn"] = "none" if cfg["cmvn"] in (None, False) else str(cfg["cmvn"]).lower()
    cfg["resample"] = str(cfg["resample"]).lower()
    ch = cfg["channel"]
    if ch is not None and ch != "mean":
        try:
            ch = int(ch)
        except (TypeError, ValueError):
            raise ValueError(f"feature option channel must be null, an integer or 'mean', got {ch!r}") from None
        cfg["channel"] = ch
    checks = [
        (cfg["window_type"] in _WINDOWS, f"window_type must be one of {_WINDOWS}"),
        (cfg["cmvn"] in ("none", "utterance", "sliding"), "cmvn must be none | utterance | sliding"),
        (cfg["resample"] in ("refuse", "resample"), "resample must be refuse | resample"),
        (cfg["sample_rate"] > 0, "sample_rate must be positive"),
        (cfg["dither"] >= 0, "dither must be >= 0"),
        (0.0 <= cfg["preemphasis_coefficient"] <= 1.0, "preemphasis_coefficient must be in [0, 1]"),
        (cfg["frame_shift_ms"] > 0 and cfg["frame_length_ms"] > 0, "frame length/shift must be positive"),
        (cfg["num_mel_bins"] >= 3, "num_mel_bins must be >= 3"),
        (cfg["delta_order"] >= 0 and cfg["delta_window"] >= 1, "delta_order >= 0 and delta_window >= 1"),
        (cfg["cmvn_window"] >= 1 and cfg["cmvn_min_window"] >= 1, "cmvn_window and cmvn_min_window >= 1"),
        (cfg["input_scale"] > 0, "input_scale must be positive"),
    ]
    if cfg["type"] == "mfcc":
        checks.append((1 <= cfg["num_ceps"] <= cfg["num_mel_bins"], "need 1 <= num_ceps <= num_mel_bins"))
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"bad feature option: {msg} (config {cfg['name']!r})")


def feature_dim(cfg: Mapping[str, Any]) -> int:
    """Output dimension of a resolved config: (bins [+1 energy] | ceps) * (delta_order + 1)."""
    if cfg["type"] == "fbank":
        base = cfg["num_mel_bins"] + (1 if cfg["use_energy"] else 0)
    else:
        base = cfg["num_ceps"]
    return base * (cfg["delta_order"] + 1)


def config_to_yaml(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------
# Kaldi building blocks (numpy, float64 where Kaldi uses double, then float32)
# --------------------------------------------------------------------------------------------

def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``x`` (float32, along its first axis) from ``sr_in`` to ``sr_out`` Hz (``scipy.signal.resample_poly``)."""
    if int(sr_in) == int(sr_out):
        return x
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, int(sr_out) // g, int(sr_in) // g).astype(np.float32)


def window_size(sample_rate: float, ms: float) -> int:
    """Kaldi ``FrameExtractionOptions::WindowSize/WindowShift``: int(samp_freq * 0.001 * ms)."""
    return int(float(sample_rate) * 0.001 * float(ms))


def num_frames(num_samples: int, frame_length: int, frame_shift: int, snip_edges: bool = True) -> int:
    """Kaldi ``NumFrames`` (feature-window.cc)."""
    if snip_edges:
        return 0 if num_samples < frame_length else 1 + (num_samples - frame_length) // frame_shift
    return (num_samples + frame_shift // 2) // frame_shift


def feature_window(window_type: str, length: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """Kaldi ``FeatureWindowFunction`` (float64)."""
    i = np.arange(length, dtype=np.float64)
    a = 2.0 * math.pi / (length - 1) if length > 1 else 0.0
    if window_type in ("hanning", "hann"):
        return 0.5 - 0.5 * np.cos(a * i)
    if window_type == "sine":
        return np.sin(0.5 * a * i)
    if window_type == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    if window_type == "povey":  # like hamming but goes to zero at edges
        return np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    if window_type == "rectangular":
        return np.ones(length)
    if window_type == "blackman":
        return blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    raise ValueError(f"unknown window_type {window_type!r}")


def mel_scale(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float,
              high_freq: float) -> np.ndarray:
    """Kaldi ``MelBanks`` triangular weights as a ``[padded_window // 2 + 1, num_bins]`` matrix.

    The last row (Nyquist bin) is zero: Kaldi's banks only cover FFT bins ``0 .. N/2 - 1``.
    """
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * sample_rate
    hi = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < hi <= nyquist and hi > low_freq):
        raise ValueError(f"bad mel band edges low_freq={low_freq} high_freq={high_freq} "
                         f"for sample rate {sample_rate} (resolved high freq {hi})")
    fft_bin_width = sample_rate / padded_window
    mel_low, mel_high = mel_scale(low_freq), mel_scale(hi)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[None, :]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(fft_bin_width * np.arange(num_fft_bins, dtype=np.float64))[:, None]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = np.where(mel <= center, up, down)
    w = np.where((mel > left) & (mel < right), w, 0.0)
    out = np.zeros((num_fft_bins + 1, num_bins), dtype=np.float64)
    out[:num_fft_bins] = w
    return out


def dct_matrix(num_ceps: int, num_bins: int) -> np.ndarray:
    """Kaldi ``ComputeDctMatrix`` rows ``0 .. num_ceps-1``: ``[num_ceps, num_bins]``."""
    n = np.arange(num_bins, dtype=np.float64)[None, :]
    k = np.arange(num_ceps, dtype=np.float64)[:, None]
    m = math.sqrt(2.0 / num_bins) * np.cos(math.pi / num_bins * (n + 0.5) * k)
    m[0, :] = math.sqrt(1.0 / num_bins)
    return m


def lifter_coeffs(num_ceps: int, q: float) -> np.ndarray:
    """Kaldi ``ComputeLifterCoeffs``: 1 + 0.5 Q sin(pi i / Q); all ones when Q == 0."""
    if q == 0.0:
        return np.ones(num_ceps)
    i = np.arange(num_ceps, dtype=np.float64)
    return 1.0 + 0.5 * q * np.sin(math.pi * i / q)


def delta_scales(order: int, window: int):
    """Kaldi ``DeltaFeatures`` regression windows ``scales[0..order]`` (float64)."""
    scales = [np.ones(1)]
    for _ in range(order):
        prev = scales[-1]
        prev_off = (len(prev) - 1) // 2
        cur_off = prev_off + window
        cur = np.zeros(len(prev) + 2 * window)
        normalizer = 0.0
        for j in range(-window, window + 1):
            normalizer += j * j
            for k in range(-prev_off, prev_off + 1):
                cur[j + k + cur_off] += j * prev[k + prev_off]
        scales.append(cur / normalizer)
    return scales


def apply_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi ``add-deltas``: ``[x, delta, delta-delta, ...]``; frames beyond the edges replicate the edge frame.

    Each block is Kaldi's regression window ``scales[i]`` (``delta_scales``) correlated along time with the
    edge-replicated features (Kaldi's clamping of the frame index). numpy wrapper of :func:`deltas_torch`.
    """
    feats = np.asarray(feats, dtype=np.float32)
    return deltas_torch(torch.from_numpy(feats)[None], order, window)[0].numpy()


def deltas_torch(x, order: int = 2, window: int = 2):
    """:func:`apply_deltas` on a batch ``[B, T, D]`` of equal-length feature tensors (any device);
    accumulated in float64 (each block a weighted sum of time-shifted copies of the edge-replicated
    features, the correlation of ``scipy.ndimage.correlate1d``), returned as float32. Every shape
    comes from ``x``, so the code traces for any length (:class:`TorchFrontEnd`)."""
    if order == 0:
        return x
    t = x.shape[1]
    xd = x.double()
    blocks = [x.float()]
    for sc in delta_scales(order, window)[1:]:
        half = len(sc) // 2
        # frames beyond the edges replicate the edge frame (Kaldi's index clamping)
        padded = torch.cat([xd[:, :1].expand(-1, half, -1), xd, xd[:, -1:].expand(-1, half, -1)], dim=1)
        acc = None
        for j, coef in enumerate(sc.tolist()):
            if coef != 0.0:
                term = padded[:, j:j + t] * coef
                acc = term if acc is None else acc + term
        blocks.append(acc.float())
    return torch.cat(blocks, dim=2)


def apply_cmvn(feats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi ``apply-cmvn`` with per-utterance stats (``compute-cmvn-stats`` on the utterance itself).

    Stats in float64; the offset/scale are applied in float32, as Kaldi's ``ApplyCmvn`` does.
    numpy wrapper of :func:`cmvn_torch`.
    """
    x = np.asarray(feats, dtype=np.float32)
    return cmvn_torch(torch.from_numpy(x)[None], norm_vars)[0].numpy()


def cmvn_torch(x, norm_vars: bool = False):
    """:func:`apply_cmvn` on a batch ``[B, T, D]`` (each row normalised with its own stats)."""
    count = x.shape[1]
    xf = x.float()
    mean = x.double().sum(1, keepdim=True) / count
    if not norm_vars:
        return xf - mean.float()
    var = torch.clamp(x.double().square().sum(1, keepdim=True) / count - mean * mean, min=1.0e-20)
    scale = 1.0 / torch.sqrt(var)
    return xf * scale.float() + (-mean * scale).float()


def _sliding_windows(t, window: int, center: bool, min_window: int, device=None):
    """Start/end frame (end exclusive) of Kaldi's ``SlidingWindowCmnInternal`` window for every frame
    (int64 tensors ``[t]``); ``t`` may be a traced size."""
    fr = torch.arange(t, device=device)
    if center:
        start = fr - window // 2
        end = start + window
    else:
        start = fr - window
        end = fr + 1
    end = torch.where(start < 0, end - start, end)
    start = start.clamp(min=0)
    if not center:
        end = torch.where(end > fr, (fr + 1).clamp(min=min_window), end)
    over = end > t
    start = torch.where(over, (start - (end - t)).clamp(min=0), start)
    return start, torch.where(over, t, end)  # (not clamp(max=t): a traced t must stay a tensor)


def apply_sliding_cmvn(feats: np.ndarray, window: int = 600, center: bool = False, min_window: int = 100,
                       norm_vars: bool = False) -> np.ndarray:
    """Kaldi ``apply-cmvn-sliding`` (``SlidingWindowCmnInternal``), vectorized with float64 cumulative
    sums; numpy wrapper of :func:`sliding_cmvn_torch`."""
    x = np.asarray(feats, dtype=np.float32)
    if x.shape[0] == 0:
        return x.copy()
    return sliding_cmvn_torch(torch.from_numpy(x)[None], window, center, min_window, norm_vars)[0].numpy()


def sliding_cmvn_torch(x, window: int = 600, center: bool = False, min_window: int = 100, norm_vars: bool = False):
    """:func:`apply_sliding_cmvn` on a batch ``[B, T, D]`` of equal-length feature tensors: window sums
    as differences of float64 cumulative sums. Eagerly, inputs whose every window is the whole
    utterance take per-utterance sums instead (the same values, ~2x faster on short crops); under
    ``torch.jit.trace`` the cumulative-sum code runs for every length, so the graph is right for any."""
    t = x.shape[1]
    tracing = torch.jit.is_tracing()
    start, end = _sliding_windows(t, window, center, min_window, x.device if tracing else None)
    xd = x.double()
    if not tracing and t > 0 and int(start.max()) == 0 and int(end.min()) == t:
        mean = xd.sum(1, keepdim=True) / t
        out = xd - mean
        if norm_vars:
            if t == 1:
                return torch.zeros_like(x, dtype=torch.float32)
            var = torch.clamp(xd.square().sum(1, keepdim=True) / t - mean * mean, min=1.0e-10)
            out = out / torch.sqrt(var)
        return out.float()
    start, end = start.to(x.device), end.to(x.device)
    d = x.shape[2]
    n = (end - start).to(torch.float64)[None, :, None]
    stats = torch.cat([xd, xd * xd], dim=2) if norm_vars else xd  # sums of x (and x^2) in one pass
    cs = torch.cat([torch.zeros_like(stats[:, :1]), torch.cumsum(stats, dim=1)], dim=1)  # [B, T + 1, D | 2D]
    sums = cs.index_select(1, end).sub_(cs.index_select(1, start)).div_(n)
    mean = sums[..., :d]
    out = xd - mean
    if norm_vars:
        var = sums[..., d:] - mean.square()
        out.div_(var.clamp_min_(1.0e-10).sqrt_())
        out.mul_((n != 1).to(out.dtype))  # a one-frame window normalises to 0
    return out.float()


# --------------------------------------------------------------------------------------------
# The extractor
# --------------------------------------------------------------------------------------------

class FeatureExtractor:
    """Kaldi-compatible fbank / MFCC extractor with post-processing; call as ``ext(samples, sample_rate)``.

    Attributes: ``config`` (resolved options), ``dim``, ``sample_rate``, ``frame_shift`` and ``frame_length``
    (in samples, like Kaldi's WindowShift/WindowSize: 160 and 400 at 16 kHz), ``frame_shift_seconds``,
    ``frame_length_seconds``, ``snip_edges``, ``padded_window`` (FFT size).
    """

    def __init__(self, config: Mapping[str, Any]):
        cfg = resolve_config(config)
        self.config = cfg
        self.name = cfg["name"]
        self.type = cfg["type"]
        self.sample_rate = cfg["sample_rate"]
        self.frame_length_samples = window_size(self.sample_rate, cfg["frame_length_ms"])
        self.frame_shift_samples = window_size(self.sample_rate, cfg["frame_shift_ms"])
        if self.frame_length_samples < 2 or self.frame_shift_samples < 1:
            raise ValueError(f"frame length/shift too small for sample rate {self.sample_rate}")
        self.frame_shift = self.frame_shift_samples      # samples
        self.frame_length = self.frame_length_samples    # samples
        self.frame_shift_seconds = self.frame_shift_samples / self.sample_rate
        self.frame_length_seconds = self.frame_length_samples / self.sample_rate
        self.snip_edges = cfg["snip_edges"]
        L = self.frame_length_samples
        self.padded_window = 1 << (L - 1).bit_length() if cfg["round_to_power_of_two"] else L
        self.dim = feature_dim(cfg)
        self.base_dim = self.dim // (cfg["delta_order"] + 1)

        self._gen = torch.Generator().manual_seed(cfg["dither_seed"])

    # -- public helpers ---------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name!r}, type={self.type}, dim={self.dim}, sample_rate={self.sample_rate})"

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for ``num_samples`` samples (Kaldi ``NumFrames``)."""
        return num_frames(int(num_samples), self.frame_length_samples, self.frame_shift_samples,
                          self.config["snip_edges"])

    # -- input checks -----------------------------------------------------------------------
    def prepare(self, samples, sample_rate: int) -> np.ndarray:
        """Validate audio and return float32 mono samples at ``self.sample_rate`` (raises DataError)."""
        cfg = self.config
        if hasattr(samples, "detach"):  # torch.Tensor
            samples = samples.detach().cpu().numpy()
        x = np.asarray(samples)
        if np.issubdtype(x.dtype, np.integer):
            if x.dtype != np.int16:
                raise DataError(f"integer audio of type {x.dtype} is not supported; pass float samples in [-1, 1]")
            x = x.astype(np.float32) / 32768.0
        if x.ndim == 2:
            if min(x.shape) == 1:
                x = x.reshape(-1)
            else:
                ch_axis = 1 if x.shape[1] < x.shape[0] else 0  # channels are the short axis
                nch = x.shape[ch_axis]
                ch = cfg["channel"]
                if ch is None:
                    raise DataError(f"audio has {nch} channels; multi-channel audio is refused by default: set "
                                    f"channel=<index> (e.g. channel=0 for the first) or channel=mean to downmix")
                if ch == "mean":
                    x = x.mean(axis=ch_axis)
                else:
                    if not -nch <= ch < nch:
                        raise DataError(f"channel={ch} requested but the audio has {nch} channels")
                    x = np.take(x, ch, axis=ch_axis)
        elif x.ndim != 1:
            raise DataError(f"audio must be 1-D (or 2-D samples x channels), got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size == 0:
            raise DataError("empty audio (0 samples)")
        sr = int(sample_rate)
        if sr != self.sample_rate:
            if cfg["resample"] != "resample":
                raise DataError(f"sample rate {sr} Hz differs from the configured {self.sample_rate} Hz; "
                                f"enable resampling with the option resample=resample (or convert the audio)")
            x = resample(x, sr, self.sample_rate)
        if not np.isfinite(x).all():
            raise DataError("audio contains NaN or infinite samples")
        if not x.any():
            raise DataError(f"all-zero audio ({x.size} samples of digital silence)")
        if self.num_frames(x.size) == 0:
            raise DataError(f"audio too short: {x.size} samples give no frame "
                            f"(frame length {self.frame_length_samples}, snip_edges={cfg['snip_edges']})")
        return x

    # -- computation ------------------------------------------------------------------------
    def __call__(self, samples, sample_rate: int, seed: Optional[int] = None) -> np.ndarray:
        """Features of one utterance: float32 ``[frames, dim]``. ``seed`` re-seeds the dither RNG."""
        x = self.prepare(samples, sample_rate)
        base = self.compute_base(x, seed=seed)
        return self.postprocess(base)

    def compute_base(self, x: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
        """Kaldi fbank / MFCC of prepared samples, before deltas and CMVN: float32 ``[frames, base_dim]``."""
        w = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        return self.base_torch(self._dithered(w, seed))[0].numpy()

    def postprocess(self, base: np.ndarray) -> np.ndarray:
        """Deltas (``add-deltas``) then CMVN (``apply-cmvn`` per utterance or ``apply-cmvn-sliding``)."""
        feats = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))[None]
        return np.ascontiguousarray(self.postprocess_torch(feats)[0].numpy(), dtype=np.float32)

    # -- the batched torch definition (stage 1, on-device training front end, export) ----------
    def batch(self, w, generator=None):
        """Features of a batch of equal-length waveforms ``w`` ``[B, samples]`` (float32 in [-1, 1],
        at ``self.sample_rate``, on any device): ``[B, frames, dim]`` on the same device -- the same
        computation as ``__call__`` on each row (which validates its input; this does not). Dither,
        when configured, draws from ``generator`` (a CPU ``torch.Generator``; default the
        extractor's own)."""
        if w.device.type == "cpu" and w.shape[0] > self.CPU_CHUNK:
            # on a CPU, a few rows at a time stay in cache: 2.5x the crops/s of one 128-row pass
            return torch.cat([self.batch(w[i:i + self.CPU_CHUNK], generator)
                              for i in range(0, w.shape[0], self.CPU_CHUNK)])
        return self.front_end(w.device)(self._dithered(w, None, generator))

    #: rows per pass of :meth:`batch` on a CPU (measured best of 1-128 for 2 s crops, bench/data_pipeline.py)
    CPU_CHUNK = 8

    def _dithered(self, w, seed: Optional[int] = None, generator=None):
        dither = self.config["dither"]
        if dither == 0.0:
            return w
        # Kaldi draws N(0, dither^2) noise (int16 units) for every sample of every frame copy; we add it once
        # to the waveform: every frame sees the same noise distribution, at 40 % of the RNG cost.
        gen = generator if generator is not None else (
            self._gen if seed is None else torch.Generator().manual_seed(int(seed)))
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(w.device)
        return torch.add(w, noise, alpha=dither / self.config["input_scale"])

    def front_end(self, device=None) -> "TorchFrontEnd":
        """This extractor's :class:`TorchFrontEnd` (no dither) with its constants on ``device``
        (default CPU); one module per device, built once."""
        cache = self.__dict__.setdefault("_front_ends", {})
        key = str(torch.device(device if device is not None else "cpu"))
        if key not in cache:
            cache[key] = TorchFrontEnd(self).to(key)
        return cache[key]

    def base_torch(self, w):
        """Kaldi fbank / MFCC of ``[B, samples]`` waveforms, before deltas and CMVN: ``[B, frames, base_dim]``."""
        return self.front_end(w.device).base(w)

    def postprocess_torch(self, feats):
        """Deltas then CMVN of a batch ``[B, frames, base_dim]`` (see :meth:`postprocess`)."""
        return self.front_end(feats.device).postprocess(feats)


class TorchFrontEnd(torch.nn.Module):
    """The torch definition of an extractor's features (the one that :meth:`FeatureExtractor.__call__`,
    :meth:`FeatureExtractor.batch` and exported graphs run): ``forward(waveforms)`` maps float32
    ``[B, samples]`` in [-1, 1] at the extractor's sample rate to ``[B, frames, dim]``, without dither
    (the extractor adds it before) and without input checks (``FeatureExtractor.prepare`` does them).

    Every size is computed from the input's shape, so ``torch.jit.trace`` gives a graph that is right
    for any length and the module exports to ONNX with a dynamic samples axis. The constants (window,
    mel banks, DCT) are non-persistent buffers: ``.to(device)`` moves them, the state dict is empty.
    """

    def __init__(self, extractor: FeatureExtractor):
        super().__init__()
        cfg = extractor.config
        self.type = extractor.type
        self.dim, self.base_dim = extractor.dim, extractor.base_dim
        self.sample_rate = extractor.sample_rate
        self.frame_length = L = extractor.frame_length_samples
        self.frame_shift = extractor.frame_shift_samples
        self.padded_window = extractor.padded_window
        self.snip_edges = cfg["snip_edges"]
        self.preemphasis = cfg["preemphasis_coefficient"]
        self.remove_dc_offset = cfg["remove_dc_offset"]
        self.input_scale = cfg["input_scale"]
        self.use_energy, self.raw_energy = cfg["use_energy"], cfg["raw_energy"]
        self.log_energy_floor = math.log(cfg["energy_floor"]) if cfg["energy_floor"] > 0 else None
        self.magnitude = self.type == "fbank" and not cfg["use_power"]
        self.log_fbank = self.type == "mfcc" or cfg["use_log_fbank"]
        self.delta_order, self.delta_window = cfg["delta_order"], cfg["delta_window"]
        self.cmvn, self.cmvn_norm_vars = cfg["cmvn"], cfg["cmvn_norm_vars"]
        self.cmvn_window, self.cmvn_center, self.cmvn_min_window = (cfg["cmvn_window"], cfg["cmvn_center"],
                                                                    cfg["cmvn_min_window"])
        # The int16 input scale is folded into the window: DC removal, pre-emphasis and windowing are
        # linear, so scaling after them is exact. Sample 0 of a frame has its own factor (see base).
        c = self.preemphasis
        win = feature_window(cfg["window_type"], L, cfg["blackman_coeff"]) * cfg["input_scale"]
        self._buffer("window_head", win[:1] * (1.0 - c))
        self._buffer("window_body", win[1:])
        mel = mel_banks(cfg["num_mel_bins"], self.padded_window, self.sample_rate, cfg["low_freq"], cfg["high_freq"])
        self._buffer("mel", mel)  # [P/2+1, bins]
        # rfft output viewed as [N, (P/2+1)*2] (re, im interleaved): squaring it and multiplying by the mel
        # matrix with every row repeated twice gives mel(power) in one matmul.
        self._buffer("mel2", np.repeat(mel, 2, axis=0))
        if self.type == "mfcc":
            d = dct_matrix(cfg["num_ceps"], cfg["num_mel_bins"]) * lifter_coeffs(cfg["num_ceps"],
                                                                                 cfg["cepstral_lifter"])[:, None]
            self._buffer("dct", np.ascontiguousarray(d.T))  # [bins, ceps]

    def _buffer(self, name: str, value: np.ndarray) -> None:
        self.register_buffer(name, torch.from_numpy(np.asarray(value, dtype=np.float32)), persistent=False)

    def extra_repr(self) -> str:
        return f"type={self.type}, dim={self.dim}, sample_rate={self.sample_rate}"

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.postprocess(self.base(waveforms))

    def base(self, w: torch.Tensor) -> torch.Tensor:
        """Kaldi fbank / MFCC of ``[B, samples]``, before deltas and CMVN: ``[B, frames, base_dim]``."""
        L, S, P = self.frame_length, self.frame_shift, self.padded_window
        if self.snip_edges:
            frames = w.unfold(1, L, S)  # exactly Kaldi's NumFrames frames
        else:
            n = w.shape[1]
            num = (n + S // 2) // S
            first = S // 2 - L // 2  # first sample of frame 0; out-of-range samples are reflected
            idx = torch.arange(first, (num - 1) * S + first + L, device=w.device)
            # numpy's "symmetric" reflection (the edge sample repeated), as Kaldi's ExtractWindow
            idx = torch.where(idx < 0, -idx - 1, idx)
            idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
            frames = w.index_select(1, idx).unfold(1, L, S)
        # [B, T, L] frames (a view of the waveform with snip_edges); every op below keeps the three axes,
        # so the matmuls run on the whole batch and the frame count stays whatever the input gives.
        # In-place ops only touch fresh intermediates (written out of place, with a new [B, T, L] temporary
        # per step, this function measured ~4x slower on 8 x 2 s crops on a CPU).
        c = self.preemphasis
        mean = frames.mean(dim=-1, keepdim=True) if self.remove_dc_offset else None
        log_energy = None
        if self.use_energy and self.raw_energy:
            centered = frames - mean if mean is not None else frames.clone()
            log_energy = centered.square_().sum(dim=-1).mul_(self.input_scale ** 2).clamp_min_(FLOAT_EPS).log_()
        # Pre-emphasis of DC-removed frames:  y[i] = (x[i] - m) - c (x[i-1] - m) = x[i] - c x[i-1] - (1 - c) m,
        # y[0] = (1 - c) (x[0] - m); then the window, then zeros up to the FFT size (one buffer, so the
        # FFT pads nothing itself).
        body = torch.sub(frames[..., 1:], frames[..., :-1], alpha=c) if c != 0.0 else frames[..., 1:].clone()
        head = frames[..., :1]
        if mean is not None:
            body.sub_(mean * (1.0 - c))
            head = head - mean
        body.mul_(self.window_body)
        pad = body.new_zeros(()).expand(body.shape[0], body.shape[1], P - L)
        buf = torch.cat([head * self.window_head, body, pad], dim=-1)  # [B, T, P]
        if self.use_energy and not self.raw_energy:
            log_energy = buf.square().sum(dim=-1).clamp_min_(FLOAT_EPS).log_()
        spec = torch.view_as_real(torch.fft.rfft(buf, n=P, dim=-1))  # [B, T, P/2+1, 2]
        if self.magnitude:
            mel = spec.square_().sum(-1).sqrt_() @ self.mel
        else:
            mel = spec.flatten(2).square_() @ self.mel2
        if self.log_fbank:
            mel = mel.clamp_min_(FLOAT_EPS).log_()
        out = mel @ self.dct if self.type == "mfcc" else mel
        if log_energy is not None:
            if self.log_energy_floor is not None:
                log_energy = log_energy.clamp_min(self.log_energy_floor)
            rest = out if self.type == "fbank" else out[..., 1:]  # MFCC: c0 replaced by the log energy
            out = torch.cat([log_energy.unsqueeze(-1), rest], dim=-1)
        return out

    def postprocess(self, feats: torch.Tensor) -> torch.Tensor:
        """Deltas then CMVN of a batch ``[B, frames, base_dim]`` (see :meth:`FeatureExtractor.postprocess`)."""
        if self.delta_order > 0:
            feats = deltas_torch(feats, self.delta_order, self.delta_window)
        if self.cmvn == "utterance":
            feats = cmvn_torch(feats, self.cmvn_norm_vars)
        elif self.cmvn == "sliding":
            feats = sliding_cmvn_torch(feats, self.cmvn_window, self.cmvn_center, self.cmvn_min_window,
                                       self.cmvn_norm_vars)
        return feats


def build(name_or_yaml_path: Union[str, Path, Mapping[str, Any]] = "fbank40", **overrides) -> FeatureExtractor:
    """Build a feature extractor from a name (``fbank40``, ``fbank64``, ``mfcc30``), a yaml path or a dict.

    Keyword overrides replace options (``dither=0.0``, ``snip_edges=False`` ...); Kaldi's option
    spellings (``preemphasis``, ``frame_length``, ``sample_frequency``) are accepted too.
    """
    raw = dict(name_or_yaml_path) if isinstance(name_or_yaml_path, Mapping) else load_config(name_or_yaml_path)
    return FeatureExtractor(resolve_config(raw, overrides))
