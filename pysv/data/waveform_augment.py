"""Training-time waveform augmentation: MUSAN noise / music / babble and RIR reverberation.

Follows the Kaldi x-vector recipe and voxceleb_trainer's ``AugmentWAV``: each training crop gets at
most ONE of {noise, music, babble, reverb} (or none):

* noise  : 1 MUSAN ``noise`` file, SNR ~ U[0, 15] dB
* music  : 1 MUSAN ``music`` file, SNR ~ U[5, 15] dB
* babble : 3-7 talkers, each added at its own SNR ~ U[13, 20] dB (Kaldi ``--bg-snrs 20:17:15:13
  --num-bg-noises 3:4:5:6:7``; voxceleb_trainer ``speech: [13, 20]``). Talkers come from MUSAN
  ``speech`` when the noise set has it, otherwise from utterances of OTHER training speakers
  (the training data dir), never the target speaker.
* reverb : convolution with a random RIR normalised to unit energy (``rir / ||rir||``), ``fftconvolve``,
  output cut at the RIR's direct-path peak so it stays time-aligned with the input and has its length.

The noise and RIR sets are the ones stage 0 prepares (``python -m pysv.bin.prepare_data musan|rirs``):
the ``musan`` and ``rirs`` config keys name their lhotse recordings manifests
``<data-root>/manifests/<name>_recordings.jsonl.gz``; a noise recording's category (noise, music,
speech) is read from the supervisions manifest next to it.

Noise files are read as random segments of the needed length (partial reads, wrap-repeated when
the file is shorter). Everything random is drawn from the ``numpy.random.Generator`` the caller
passes, so results are reproducible. Nothing of the noise corpus is held in memory.

SNR is ``10 log10(P_clean / P_noise)`` with powers the mean squares over the crop (no floor).
Mixed output is not clipped (it is float and usually goes into features or a model directly).
"""
from __future__ import annotations

import gzip
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torch
from scipy.signal import fftconvolve

from pysv.data.dataset import SpeakerIndex
from pysv.data.spec_augment import enabled_section
from pysv.features import resample
from pysv.utils.io import DataError

log = logging.getLogger(__name__)

__all__ = [
    "AudioFile",
    "AugmentPlan",
    "WaveformAugmentor",
    "mix_at_snr",
    "reverberate",
    "read_segment",
    "load_audio_list",
    "build_augmentor",
    "AUGMENT_TYPES",
]

AUGMENT_TYPES = ("noise", "music", "babble", "reverb")
_CATEGORIES = ("noise", "music", "speech", "babble")
_EPS = 1e-20
#: rows per pass of the batched (device) augmentation on a CPU
CPU_CHUNK = 8
#: how stage 0 names the manifests of an augmentation set (pysv.data.corpora._augment_sets)
RECORDINGS_SUFFIX = "_recordings.jsonl.gz"
SUPERVISIONS_SUFFIX = "_supervisions.jsonl.gz"
PREPARE_HINT = ("stage 0 writes it: run.sh --musan-dir DIR / --rirs-dir DIR, or python -m pysv.bin.prepare_data "
                "musan|rirs ... -> <data-root>/manifests/<name>_recordings.jsonl.gz")

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------------
# augmentation sets (the lhotse manifests of stage 0)
# --------------------------------------------------------------------------------------------------
@dataclass
class AudioFile:
    """One recording of an augmentation set (``category``: noise, music or speech for noise sets)."""

    id: str
    path: str
    category: Optional[str] = None
    num_samples: Optional[int] = None
    sampling_rate: Optional[int] = None


def _json_lines(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not a JSON line ({e})") from None
    except (OSError, UnicodeDecodeError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: not a gzipped lhotse manifest ({e})") from None


def _categories(supervisions: Path) -> Dict[str, str]:
    """``recording id -> custom.category`` of a supervisions manifest ({} when there is none)."""
    if not supervisions.is_file():
        return {}
    cats: Dict[str, str] = {}
    for _, d in _json_lines(supervisions):
        cat = (d.get("custom") or {}).get("category")
        if d.get("recording_id") and isinstance(cat, str):
            cats[d["recording_id"]] = cat.lower()
    return cats


def load_audio_list(path: PathLike) -> List[AudioFile]:
    """The recordings of an augmentation set prepared by stage 0, from its lhotse recordings manifest
    ``<name>_recordings.jsonl.gz``, with the category of each (noise sets) from the supervisions
    manifest ``<name>_supervisions.jsonl.gz`` next to it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"augmentation set manifest {p}: no such file ({PREPARE_HINT})")
    if not p.name.endswith(RECORDINGS_SUFFIX):
        raise DataError(f"{p}: not the recordings manifest of an augmentation set (*{RECORDINGS_SUFFIX}; "
                        f"{PREPARE_HINT})")
    categories = _categories(p.with_name(p.name[:-len(RECORDINGS_SUFFIX)] + SUPERVISIONS_SUFFIX))
    out: List[AudioFile] = []
    for lineno, d in _json_lines(p):
        rid, sources = d.get("id"), d.get("sources")
        if rid is None or not sources:
            raise DataError(f"{p}:{lineno}: not a lhotse Recording (no id/sources)")
        src = sources[0]
        if src.get("type") != "file":
            raise DataError(f"{p}: recording '{rid}' has a '{src.get('type')}' source; "
                            "only plain files are supported")
        out.append(AudioFile(rid, src["source"], categories.get(rid), d.get("num_samples"), d.get("sampling_rate")))
    if not out:
        raise DataError(f"{p}: no recordings")
    return out


# --------------------------------------------------------------------------------------------------
# signal helpers
# --------------------------------------------------------------------------------------------------
def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return x[:n]
    return np.resize(x, n)  # wrap-repeat


def read_segment(path: str, num_samples: int, rng: np.random.Generator,
                 sample_rate: Optional[int] = None) -> np.ndarray:
    """A random ``num_samples`` segment of ``path`` (first channel, float32), read partially.

    Files shorter than the request are wrap-repeated. When the file's rate differs from
    ``sample_rate`` the needed span is read and resampled (:func:`pysv.features.resample`).
    """
    try:
        f = sf.SoundFile(path)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise DataError(f"cannot open audio file {path}: {e}") from None
    with f:
        sr_file = f.samplerate
        need = num_samples if (sample_rate is None or sr_file == sample_rate) else \
            int(math.ceil(num_samples * sr_file / sample_rate)) + 1
        total = f.frames
        if total <= 0:
            raise DataError(f"empty audio file {path}")
        if total > need:
            f.seek(int(rng.integers(0, total - need + 1)))
            seg = f.read(need, dtype="float32", always_2d=True)[:, 0]
        else:
            seg = f.read(dtype="float32", always_2d=True)[:, 0]
    if sample_rate is not None and sr_file != sample_rate:
        seg = resample(seg, sr_file, sample_rate)
    return _fit_length(seg, num_samples)


def _read_rir(path: str, sample_rate: Optional[int]) -> np.ndarray:
    try:
        rir, sr_file = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:
        raise DataError(f"cannot read RIR file {path}: {e}") from None
    rir = rir[:, 0]
    if sample_rate is not None:
        rir = resample(rir, sr_file, sample_rate)
    return rir


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` such that ``10 log10(P_clean / P(g * noise)) = snr_db``.

    Powers are mean squares over the arrays (same length). Silent noise is not added.
    """
    p_noise = _power(noise)
    if p_noise <= _EPS:
        return clean.copy()
    g = math.sqrt(_power(clean) / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (clean + g * noise).astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with the unit-energy RIR, keeping length and alignment at the direct-path peak.

    ``y[n] = sum_k x[n - k + p] h[k] / ||h||`` with ``p = argmax |h|`` (voxceleb_trainer normalises
    ``rir / sqrt(sum(rir**2))``; Kaldi's ``wav-reverberate --shift-output`` shifts by the peak too).
    """
    rir = np.asarray(rir, dtype=np.float64)
    energy = float(np.sqrt(np.sum(rir * rir)))
    if energy <= 0:
        raise DataError("RIR is all zeros")
    peak = int(np.argmax(np.abs(rir)))
    rir = rir[: peak + x.shape[0]]  # taps beyond peak + n never reach the kept output samples
    # float32 FFTs: ~2x faster than float64, error ~1e-7 relative (far below 16-bit audio resolution)
    y = fftconvolve(np.asarray(x, dtype=np.float32), (rir / energy).astype(np.float32), mode="full")
    return y[peak: peak + x.shape[0]].astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# waveform augmentor
# --------------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------------
# waveform augmentor
# --------------------------------------------------------------------------------------------------
class _TrainPool:
    """Utterances of the training set grouped by speaker, for babble from other speakers."""

    def __init__(self, train_data: PathLike):
        p = Path(train_data)
        index = SpeakerIndex(p if p.is_dir() else p.parent, source="wav", check_files=False)
        spks = sorted(index.spk2label, key=index.spk2label.__getitem__)
        if len(spks) < 2:
            raise DataError(f"{index.scp}: babble from training speakers needs at least 2 speakers, "
                            f"found {len(spks)}")
        codes = np.asarray(index.labels, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        self.spk2code = dict(index.spk2label)
        self.paths = [_plain_path(index.entries[i], index.utts[i], index.scp) for i in order]
        self.codes = codes[order]
        self.utts = [index.utts[i] for i in order]
        self.spks = spks
        self.counts = np.bincount(codes, minlength=len(spks))
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    @property
    def num_speakers(self) -> int:
        return len(self.spks)

    def draw(self, k: int, rng: np.random.Generator, exclude_spk: Optional[str]) -> List[int]:
        """``k`` utterances of ``k`` distinct speakers, none of them ``exclude_spk`` (vectorized)."""
        s = self.num_speakers
        ex = self.spk2code.get(exclude_spk) if exclude_spk is not None else None
        n_avail = s - (1 if ex is not None else 0)
        k = min(k, n_avail)
        codes = rng.choice(n_avail, size=k, replace=False)
        if ex is not None:
            codes = codes + (codes >= ex)  # skip the target speaker's code
        within = rng.integers(0, self.counts[codes])
        return (self.offsets[codes] + within).tolist()


def _plain_path(value: str, key: str, scp: Path) -> str:
    parts = value.split()
    if len(parts) != 1 or value.rstrip().endswith("|"):
        raise DataError(f"{scp}: entry '{key}' is not a plain file path ({value!r}); "
                        "pipes and extended filenames are not supported")
    return parts[0]


class WaveformAugmentor:
    """Applies one of {noise, music, babble, reverb} or nothing to a waveform crop.

    Call ``aug(x, rng, spk=None, return_info=False)``: ``x`` float32 ``[samples]``, ``rng`` a
    ``numpy.random.Generator``, ``spk`` the target speaker id (excluded from training-speaker babble).
    With ``return_info`` also returns a dict (``type``, ``files``, ``snrs``) describing what was done.
    """

    def __init__(self, noises: Sequence[AudioFile] = (), rirs: Sequence[AudioFile] = (),
                 train_pool: Optional[_TrainPool] = None, prob: float = 0.6,
                 types: Optional[Sequence[str]] = None, weights: Optional[Mapping[str, float]] = None,
                 noise_snr: Tuple[float, float] = (0.0, 15.0), music_snr: Tuple[float, float] = (5.0, 15.0),
                 babble_snr: Tuple[float, float] = (13.0, 20.0), babble_count: Tuple[int, int] = (3, 7),
                 babble_source: str = "auto", sample_rate: int = 16000):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"augment prob must be in [0, 1], got {prob}")
        if babble_source not in ("auto", "musan", "train"):
            raise ValueError(f"babble_source must be auto, musan or train, got {babble_source!r}")
        self.by_cat: Dict[str, List[AudioFile]] = {c: [] for c in _CATEGORIES}
        for a in noises:
            if a.category not in self.by_cat:
                found = "no category" if a.category is None else f"category {a.category!r}"
                raise DataError(f"noise recording '{a.id}' ({a.path}) has {found}; expected one of "
                                f"{', '.join(_CATEGORIES)} (stage 0 labels each file with its top folder "
                                "in the supervisions manifest; prepare_data musan --categories keeps some)")
            self.by_cat[a.category].append(a)
        self.rirs = list(rirs)
        self.prob = float(prob)
        self.sample_rate = int(sample_rate)
        self.snr = {"noise": _range(noise_snr, "noise_snr"), "music": _range(music_snr, "music_snr"),
                    "babble": _range(babble_snr, "babble_snr")}
        lo, hi = _range(babble_count, "babble_count")
        if lo < 1 or int(lo) != lo or int(hi) != hi:
            raise ValueError(f"babble_count must be positive integers, got {babble_count}")
        self.babble_count = (int(lo), int(hi))

        # where babble comes from
        has_speech = bool(self.by_cat["speech"])
        if babble_source == "musan" or (babble_source == "auto" and has_speech):
            self.babble_from = "musan" if has_speech else None
            self.train_pool = None
        else:
            self.babble_from = "train" if train_pool is not None else None
            self.train_pool = train_pool

        available = {"noise": bool(self.by_cat["noise"]), "music": bool(self.by_cat["music"]),
                     "babble": self.babble_from is not None, "reverb": bool(self.rirs)}
        if types is None:
            types = [t for t in AUGMENT_TYPES if available[t]]
            if not types and self.prob > 0:
                raise DataError("augmentation enabled but no noise, music, speech, RIR or training "
                                "speakers available (give 'musan' and/or 'rirs')")
        for t in types:
            if t not in AUGMENT_TYPES:
                raise ValueError(f"unknown augmentation type '{t}' (expected one of {', '.join(AUGMENT_TYPES)})")
            if not available[t]:
                raise DataError(_missing_msg(t, babble_source))
        self.types = list(types)
        if weights is None:
            w = np.ones(len(self.types))
        else:
            for k in weights:
                if k not in self.types:
                    raise ValueError(f"augment weights: unknown or disabled type '{k}' (types: {self.types})")
            w = np.array([float(weights.get(t, 0.0)) for t in self.types])
            if (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"augment weights must be >= 0 and not all 0, got {dict(weights)}")
        self.type_probs = w / w.sum() if len(w) else w

    def __repr__(self) -> str:
        cats = {c: len(v) for c, v in self.by_cat.items() if v}
        return (f"WaveformAugmentor(prob={self.prob}, types={self.types}, "
                f"probs={np.round(self.type_probs, 3).tolist()}, files={cats}, rirs={len(self.rirs)}, "
                f"babble_from={self.babble_from}, sample_rate={self.sample_rate})")

    # -- choice ------------------------------------------------------------------------------------
    def choose(self, rng: np.random.Generator) -> str:
        """Draw the augmentation type: ``none`` with probability ``1 - prob``, else one of ``types``."""
        if not self.types or rng.random() >= self.prob:
            return "none"
        return self.types[int(rng.choice(len(self.types), p=self.type_probs))]

    def __call__(self, x: np.ndarray, rng: np.random.Generator, spk: Optional[str] = None,
                 return_info: bool = False):
        x = np.asarray(x, dtype=np.float32)
        plan = self.plan(x.shape[0], rng, spk)
        y = self.apply(x, plan)
        return (y, plan.info) if return_info else y

    # -- planning (every random draw and file read) and applying (the arithmetic) ------------------
    def _noise_segment(self, a: AudioFile, n: int, rng: np.random.Generator) -> np.ndarray:
        return read_segment(a.path, n, rng, self.sample_rate)

    def plan(self, n: int, rng: np.random.Generator, spk: Optional[str] = None) -> "AugmentPlan":
        """Draw what to do to an ``n``-sample crop and read the signals it needs, in the order of the
        random draws of :meth:`__call__` (same ``rng`` state -> same plan). ``spk``: the target
        speaker (excluded from training-speaker babble)."""
        kind = self.choose(rng)
        info: Dict[str, Any] = {"type": kind, "files": [], "snrs": []}
        if kind in ("noise", "music"):
            files = self.by_cat[kind]
            a = files[int(rng.integers(0, len(files)))]
            snr = float(rng.uniform(*self.snr[kind]))  # Kaldi/voxceleb_trainer: noise 0-15, music 5-15 dB
            sources = self._noise_segment(a, n, rng)[None]
            info["files"].append(a.path)
            info["snrs"].append(snr)
            return AugmentPlan(kind, sources, np.array([snr]), None, info)
        if kind == "babble":  # 3-7 talkers, each at its own SNR ~ U[13, 20] dB relative to the crop
            k = int(rng.integers(self.babble_count[0], self.babble_count[1] + 1))
            if self.babble_from == "musan":
                speech = self.by_cat["speech"]
                pick = rng.choice(len(speech), size=min(k, len(speech)), replace=False)
                paths = [speech[i].path for i in pick]
                spks: List[Optional[str]] = [None] * len(paths)
            else:
                assert self.train_pool is not None
                idx = self.train_pool.draw(k, rng, spk)
                paths = [self.train_pool.paths[i] for i in idx]
                spks = [self.train_pool.spks[int(self.train_pool.codes[i])] for i in idx]
            snrs = rng.uniform(*self.snr["babble"], size=len(paths))
            sources = np.stack([read_segment(path, n, rng, self.sample_rate) for path in paths])
            info["files"].extend(paths)
            info["snrs"].extend(float(v) for v in snrs)
            info["speakers"] = spks
            return AugmentPlan(kind, sources, snrs, None, info)
        if kind == "reverb":
            a = self.rirs[int(rng.integers(0, len(self.rirs)))]
            info["files"].append(a.path)
            return AugmentPlan(kind, None, None, _read_rir(a.path, self.sample_rate), info)
        return AugmentPlan("none", None, None, None, info)

    @staticmethod
    def apply(x: np.ndarray, plan: "AugmentPlan") -> np.ndarray:
        """The augmentation of ``plan`` applied to ``x`` (numpy; the per-item worker path)."""
        if plan.kind in ("noise", "music"):
            return mix_at_snr(x, plan.sources[0], float(plan.snrs[0]))
        if plan.kind == "babble":
            p_clean = _power(x)
            total = np.zeros(x.shape[0], dtype=np.float64)
            for seg, snr in zip(plan.sources, plan.snrs):
                p = _power(seg)
                if p > _EPS:
                    total += math.sqrt(p_clean / (p * 10.0 ** (snr / 10.0))) * seg
            return (x + total).astype(np.float32)
        if plan.kind == "reverb":
            return reverberate(x, plan.rir)
        return x

    @staticmethod
    def apply_batch(x, plans: Sequence["AugmentPlan"]):
        """:meth:`apply` for a batch ``x`` ``[B, n]`` (torch, any device) and one plan per row, as
        batched torch operations: additive rows at once (powers in float64, as numpy), reverberant
        rows as one batched FFT convolution (float32, as ``fftconvolve`` on float32)."""
        if len(plans) != x.shape[0]:
            raise ValueError(f"{len(plans)} augmentation plans for a batch of {x.shape[0]}")
        if x.device.type == "cpu" and x.shape[0] > CPU_CHUNK:  # cache-sized passes on a CPU
            return torch.cat([WaveformAugmentor.apply_batch(x[i:i + CPU_CHUNK], plans[i:i + CPU_CHUNK])
                              for i in range(0, x.shape[0], CPU_CHUNK)])
        out = x.clone()
        n = x.shape[1]
        add = [i for i, p in enumerate(plans) if p.kind in ("noise", "music", "babble")]
        if add:
            k = max(plans[i].sources.shape[0] for i in add)
            src = np.zeros((len(add), k, n), dtype=np.float32)
            snr = np.zeros((len(add), k))
            valid = np.zeros((len(add), k), dtype=bool)
            for r, i in enumerate(add):
                m = plans[i].sources.shape[0]
                src[r, :m], snr[r, :m], valid[r, :m] = plans[i].sources, plans[i].snrs, True
            src_t = torch.from_numpy(src).to(x.device)
            rows = torch.tensor(add, device=x.device)
            clean = x.index_select(0, rows).float()
            p_clean = torch.sum(clean.square(), dim=1, keepdim=True, dtype=torch.float64) / n  # [R, 1]
            p_src = torch.sum(src_t.square(), dim=2, dtype=torch.float64) / n  # [R, K]
            ok = torch.from_numpy(valid).to(x.device) & (p_src > _EPS)
            snr_t = torch.from_numpy(snr).to(x.device)
            gain = torch.where(ok, torch.sqrt(p_clean / (p_src.clamp_min(_EPS) * 10.0 ** (snr_t / 10.0))),
                               torch.zeros_like(p_src))
            mixed = clean + torch.bmm(gain.float().unsqueeze(1), src_t).squeeze(1)  # sum_k g_k s_k
            out[rows] = mixed.to(x.dtype)
        rev = [i for i, p in enumerate(plans) if p.kind == "reverb"]
        if rev:
            taps = []
            peaks = []
            for i in rev:
                h = np.asarray(plans[i].rir, dtype=np.float64)
                energy = float(np.sqrt(np.sum(h * h)))
                if energy <= 0:
                    raise DataError("RIR is all zeros")
                peak = int(np.argmax(np.abs(h)))
                taps.append((h[: peak + n] / energy).astype(np.float32))
                peaks.append(peak)
            width = max(len(h) for h in taps)
            h_t = torch.zeros((len(rev), width), dtype=torch.float32)
            for r, h in enumerate(taps):
                h_t[r, :len(h)] = torch.from_numpy(h)
            h_t = h_t.to(x.device)
            size = 1 << (n + width - 2).bit_length()  # >= n + width - 1: a linear convolution
            rows = torch.tensor(rev, device=x.device)
            y = torch.fft.irfft(torch.fft.rfft(x.index_select(0, rows).float(), size)
                                * torch.fft.rfft(h_t, size), size)
            idx = torch.tensor(peaks, device=x.device).unsqueeze(1) + torch.arange(n, device=x.device)
            out[rows] = y.gather(1, idx).to(x.dtype)
        return out


@dataclass
class AugmentPlan:
    """What :class:`WaveformAugmentor` does to one crop: ``kind`` (none, noise, music, babble,
    reverb), the additive ``sources`` ``[K, n]`` with their ``snrs`` (dB), or the raw ``rir``; ``info``
    (``type``, ``files``, ``snrs``) for logs and tests."""

    kind: str
    sources: Optional[np.ndarray]
    snrs: Optional[np.ndarray]
    rir: Optional[np.ndarray]
    info: Dict[str, Any]


def _missing_msg(t: str, babble_source: str) -> str:
    if t == "reverb":
        return "augmentation type 'reverb' needs 'rirs' (RIR list)"
    if t == "babble":
        return ("augmentation type 'babble' needs MUSAN 'speech' recordings or the training wav.scp "
                f"(train_wav_scp / babble_wav_scp) with babble_source={babble_source!r}")
    return f"augmentation type '{t}' needs MUSAN recordings of category '{t}' in 'musan'"


def _range(v, name: str) -> Tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    try:
        lo, hi = v
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be [low, high], got {v!r}") from None
    if lo > hi:
        raise ValueError(f"{name}: low {lo} > high {hi}")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# config builder
# --------------------------------------------------------------------------------------------------
AUGMENT_KEYS = ("enabled", "musan", "rirs", "prob", "types", "weights", "noise_snr", "music_snr",
                "babble_snr", "babble_count", "babble_source", "babble_wav_scp", "sample_rate")


def build_augmentor(cfg: Optional[Mapping[str, Any]],
                    train_wav_scp: Optional[Union[str, os.PathLike]] = None) -> Optional[WaveformAugmentor]:
    """Build a :class:`WaveformAugmentor` from the ``augment:`` yaml section; None when disabled.

    Disabled: ``cfg`` is None / empty / False, or ``enabled: false``, or ``prob: 0``.
    ``musan`` / ``rirs``: the recordings manifests of the sets stage 0 prepared (:func:`load_audio_list`).
    ``train_wav_scp`` (or the ``babble_wav_scp`` key, which wins) is the training ``wav.scp`` (or its
    data dir, with ``utt2spk``) used for babble when the noise set has no ``speech`` category.
    """
    cfg = enabled_section(cfg, AUGMENT_KEYS, "augment")
    if cfg is None or float(cfg.get("prob", 0.6)) == 0.0:
        return None
    noises = load_audio_list(cfg["musan"]) if cfg.get("musan") else []
    rirs = load_audio_list(cfg["rirs"]) if cfg.get("rirs") else []
    babble_source = cfg.get("babble_source", "auto")
    has_speech = any(a.category == "speech" for a in noises)
    types = cfg.get("types")
    if isinstance(types, str):
        types = [types]
    wants_babble = types is None or "babble" in types
    pool_src = cfg.get("babble_wav_scp") or train_wav_scp
    pool = None
    if wants_babble and pool_src and (babble_source == "train" or (babble_source == "auto" and not has_speech)):
        pool = _TrainPool(pool_src)
    weights = cfg.get("weights")
    if isinstance(weights, (list, tuple)):
        tl = list(types) if types is not None else None
        if tl is None or len(tl) != len(weights):
            raise ValueError("augment weights given as a list need 'types' of the same length")
        weights = dict(zip(tl, weights))
    aug = WaveformAugmentor(
        noises, rirs, pool, prob=float(cfg.get("prob", 0.6)), types=types, weights=weights,
        noise_snr=cfg.get("noise_snr", (0.0, 15.0)), music_snr=cfg.get("music_snr", (5.0, 15.0)),
        babble_snr=cfg.get("babble_snr", (13.0, 20.0)), babble_count=cfg.get("babble_count", (3, 7)),
        babble_source=babble_source, sample_rate=int(cfg.get("sample_rate", 16000)))
    log.info("%r", aug)
    return aug
