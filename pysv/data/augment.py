"""Training-time augmentation: waveform (MUSAN noise / music / babble, RIR reverberation) and SpecAugment.

Waveform augmentation follows the Kaldi x-vector recipe and voxceleb_trainer's ``AugmentWAV``: each
training crop gets at most ONE of {noise, music, babble, reverb} (or none):

* noise  : 1 MUSAN ``noise`` file, SNR ~ U[0, 15] dB
* music  : 1 MUSAN ``music`` file, SNR ~ U[5, 15] dB
* babble : 3-7 talkers, each added at its own SNR ~ U[13, 20] dB (Kaldi ``--bg-snrs 20:17:15:13
  --num-bg-noises 3:4:5:6:7``; voxceleb_trainer ``speech: [13, 20]``). Talkers come from MUSAN
  ``speech`` when the noise set has it, otherwise from utterances of OTHER training speakers
  (``train_wav_scp``), never the target speaker.
* reverb : convolution with a random RIR normalised to unit energy (``rir / ||rir||``), ``fftconvolve``,
  output cut at the RIR's direct-path peak so it stays time-aligned with the input and has its length.

Noise files are read as random segments of the needed length (partial reads, wrap-repeated when
the file is shorter). Everything random is drawn from the ``numpy.random.Generator`` the caller
passes, so results are reproducible. Nothing of the noise corpus is held in memory.

SNR is ``10 log10(P_clean / P_noise)`` with powers the mean squares over the crop (no floor).
Mixed output is not clipped (it is float and usually goes into features or a model directly).
"""
from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve, resample_poly

from pysv.utils.io import DataError, read_table

log = logging.getLogger(__name__)

__all__ = [
    "AudioFile",
    "WaveformAugmentor",
    "SpecAugment",
    "mix_at_snr",
    "reverberate",
    "read_segment",
    "load_audio_list",
    "build_augmentor",
    "build_spec_augment",
    "AUGMENT_TYPES",
]

AUGMENT_TYPES = ("noise", "music", "babble", "reverb")
_CATEGORIES = ("noise", "music", "speech", "babble")
_AUDIO_EXT = (".wav", ".flac", ".ogg", ".sph", ".mp3")
_EPS = 1e-20
#: rows per pass of the batched (device) augmentation on a CPU
CPU_CHUNK = 8


# --------------------------------------------------------------------------------------------------
# audio lists (lhotse RecordingSet manifests, Kaldi wav.scp / utt2category, folders)
# --------------------------------------------------------------------------------------------------
@dataclass
class AudioFile:
    id: str
    path: str
    category: Optional[str] = None
    num_samples: Optional[int] = None
    sampling_rate: Optional[int] = None


def _infer_category(rec_id: str, path: str, custom: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """MUSAN category of a recording: custom field, then id prefix (``noise-free-sound-0001``), then folder."""
    if custom:
        for key in ("category", "type", "musan_category"):
            val = custom.get(key)
            if isinstance(val, str) and val.lower() in _CATEGORIES:
                return val.lower()
    tokens = rec_id.lower().replace("_", "-").replace("/", "-").split("-")
    for tok in tokens[:2]:  # "noise-...", "musan-noise-..."
        if tok in _CATEGORIES:
            return tok
    for part in reversed(Path(path).parent.parts):
        if part.lower() in _CATEGORIES:
            return part.lower()
    return None


def _resolve(path: str, base: Path) -> str:
    """Absolute paths stay; relative ones are tried against the cwd (Kaldi) then the list's folder."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return str(base / path)


def _check_plain(value: str, key: str, list_path: Path) -> str:
    parts = value.split()
    if len(parts) != 1 or value.rstrip().endswith("|"):
        raise DataError(f"{list_path}: entry '{key}' is not a plain file path ({value!r}); "
                        "pipes and extended filenames are not supported")
    return parts[0]


def _json_lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not a JSON line ({e})") from None


def _sibling_categories(path: Path) -> Dict[str, str]:
    """``custom.category`` of the supervisions next to a ``*_recordings.jsonl.gz`` (pysv prep_augment)."""
    if "_recordings" not in path.name:
        return {}
    sup = path.with_name(path.name.replace("_recordings", "_supervisions"))
    if not sup.is_file():
        return {}
    cats: Dict[str, str] = {}
    for _, d in _json_lines(sup):
        cat = (d.get("custom") or {}).get("category")
        if d.get("recording_id") and isinstance(cat, str):
            cats[d["recording_id"]] = cat
    return cats


def _load_lhotse_recordings(path: Path) -> List[AudioFile]:
    """AudioFiles of a lhotse RecordingSet, or of a CutSet (each cut's recording + custom)."""
    out: List[AudioFile] = []
    sib = _sibling_categories(path)
    for lineno, d in _json_lines(path):
        custom = dict(d.get("custom") or {})
        if "recording" in d:  # a cut: category in the cut's custom field
            d = d["recording"]
        rid = d.get("id")
        sources = d.get("sources") or []
        if rid is None or not sources:
            raise DataError(f"{path}:{lineno}: not a lhotse Recording or Cut (no id/sources)")
        src = sources[0]
        if src.get("type") != "file":
            raise DataError(f"{path}: recording '{rid}' has a '{src.get('type')}' source; "
                            "only plain files are supported")
        custom.update(d.get("custom") or {})
        if "category" in d:
            custom["category"] = d["category"]
        if rid in sib and "category" not in custom:
            custom["category"] = sib[rid]
        file_path = _resolve(src["source"], path.parent)
        out.append(AudioFile(rid, file_path, _infer_category(rid, file_path, custom),
                             d.get("num_samples"), d.get("sampling_rate")))
    return out


def _load_kaldi_list(list_path: Path) -> List[AudioFile]:
    base = list_path.parent
    table = read_table(list_path)
    cats: Dict[str, str] = {}
    if (base / "utt2category").is_file():
        cats = read_table(base / "utt2category")
    elif (base / "files.tsv").is_file():
        with open(base / "files.tsv", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row.get("id") and row.get("category"):
                    cats[row["id"]] = row["category"]
    out = []
    for key, value in table.items():
        p = _resolve(_check_plain(value, key, list_path), base)
        custom = {"category": cats[key]} if key in cats else None
        out.append(AudioFile(key, p, _infer_category(key, p, custom)))
    return out


def load_audio_list(path: Union[str, os.PathLike]) -> List[AudioFile]:
    """Read a list of audio files with (when it can tell) their MUSAN category.

    Accepts a lhotse RecordingSet (``.jsonl``/``.jsonl.gz``; category from a ``custom.category``
    field, the id prefix ``noise-``/``music-``/``speech-`` as in lhotse's MUSAN recipe, or the parent
    folder name), a Kaldi ``wav.scp`` (+ ``utt2category`` next to it), a folder holding ``wav.scp`` or
    ``wav.list`` (+ ``utt2category`` or ``files.tsv``), or a plain folder of audio files (category
    from the folder names, e.g. ``musan/noise/...``).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"augmentation list not found: {p}")
    if p.is_dir():
        for name in ("wav.scp", "wav.list"):
            if (p / name).is_file():
                return _load_kaldi_list(p / name)
        files = sorted(q for q in p.rglob("*") if q.suffix.lower() in _AUDIO_EXT and q.is_file())
        if not files:
            raise DataError(f"no wav.scp, wav.list or audio files under {p}")
        out = []
        for q in files:
            rid = str(q.relative_to(p).with_suffix("")).replace(os.sep, "-")
            out.append(AudioFile(rid, str(q), _infer_category(rid, str(q))))
        return out
    if p.name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".json")):
        return _load_lhotse_recordings(p)
    return _load_kaldi_list(p)


# --------------------------------------------------------------------------------------------------
# signal helpers
# --------------------------------------------------------------------------------------------------
def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[0] >= n:
        return x[:n]
    return np.resize(x, n)  # wrap-repeat


def read_segment(path: str, num_samples: int, rng: np.random.Generator,
                 sample_rate: Optional[int] = None) -> np.ndarray:
    """A random ``num_samples`` segment of ``path`` (first channel, float32), read partially.

    Files shorter than the request are wrap-repeated. When the file's rate differs from
    ``sample_rate`` the needed span is read and resampled with ``resample_poly``.
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
        seg = _resample(seg, sr_file, sample_rate)
    return _fit_length(seg, num_samples)


def _read_rir(path: str, sample_rate: Optional[int]) -> np.ndarray:
    try:
        rir, sr_file = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as e:
        raise DataError(f"cannot read RIR file {path}: {e}") from None
    rir = rir[:, 0]
    if sample_rate is not None:
        rir = _resample(rir, sr_file, sample_rate)
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
class _TrainPool:
    """Utterances of the training set grouped by speaker, for babble from other speakers."""

    def __init__(self, wav_scp: Union[str, os.PathLike]):
        p = Path(wav_scp)
        if p.is_dir():
            p = p / "wav.scp" if (p / "wav.scp").is_file() or not (p / "wav.list").is_file() else p / "wav.list"
        base = p.parent
        wavs = read_table(p)
        if not (base / "utt2spk").is_file():
            raise DataError(f"babble from training speakers needs utt2spk next to {p}")
        utt2spk = read_table(base / "utt2spk")
        utts = sorted(u for u in wavs if u in utt2spk)
        if not utts:
            raise DataError(f"{p}: no utterance with a speaker in {base / 'utt2spk'}")
        spks = sorted({utt2spk[u] for u in utts})
        if len(spks) < 2:
            raise DataError(f"{p}: babble from training speakers needs at least 2 speakers, found {len(spks)}")
        self.spk2code = {s: i for i, s in enumerate(spks)}
        codes = np.array([self.spk2code[utt2spk[u]] for u in utts], dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        self.paths = [_resolve(_check_plain(wavs[utts[i]], utts[i], p), base) for i in order]
        self.codes = codes[order]
        self.utts = [utts[i] for i in order]
        self.spks = spks
        counts = np.bincount(codes, minlength=len(spks))
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

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
            if a.category is None:
                raise DataError(f"cannot tell the category (noise/music/speech) of recording '{a.id}' "
                                f"({a.path}): put it in the id prefix, a 'category' field, utt2category "
                                "or the parent folder name")
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
        import torch
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
# SpecAugment
# --------------------------------------------------------------------------------------------------
class SpecAugment:
    """Time and frequency masking on features ``[T, D]`` (or ``[B, T, D]``, masks drawn per item).

    # seed 003 §4.1 "SpecAugment ... time and frequency masking" (Park et al. 2019): each of
    # ``time_masks`` masks has width ``t ~ U{0..time_width}`` and start ``t0 ~ U{0..T-t}``; likewise
    # ``freq_masks`` masks of width ``f ~ U{0..freq_width}`` over the D bins. Masks may overlap.
    Masked cells take ``mask_value``: a number, or ``"mean"`` (the item's mean, which is 0 for
    mean-normalised features as in the paper). ``prob`` = probability an item is masked at all.
    """

    def __init__(self, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2, freq_width: int = 8,
                 mask_value: Union[float, str] = "mean", prob: float = 1.0):
        for name, v in (("time_masks", time_masks), ("time_width", time_width),
                        ("freq_masks", freq_masks), ("freq_width", freq_width)):
            if int(v) != v or v < 0:
                raise ValueError(f"spec_augment {name} must be a non-negative integer, got {v!r}")
        if not (mask_value == "mean" or isinstance(mask_value, (int, float))):
            raise ValueError(f"spec_augment mask_value must be a number or 'mean', got {mask_value!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"spec_augment prob must be in [0, 1], got {prob}")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.mask_value = mask_value
        self.prob = float(prob)

    def __repr__(self) -> str:
        return (f"SpecAugment(time_masks={self.time_masks}, time_width={self.time_width}, "
                f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
                f"mask_value={self.mask_value!r}, prob={self.prob})")

    @staticmethod
    def _band(length: int, n: int, width: int, rng: np.random.Generator, batch: int) -> np.ndarray:
        if n == 0 or length == 0:
            return np.zeros((batch, length), dtype=bool)
        w = rng.integers(0, min(width, length) + 1, size=(batch, n))
        s = rng.integers(0, length - w + 1)  # per-mask upper bound T - w (inclusive)
        ar = np.arange(length)
        return ((ar >= s[..., None]) & (ar < (s + w)[..., None])).any(axis=1)

    def make_masks(self, num_frames: int, dim: int, rng: np.random.Generator,
                   batch: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Boolean masks ``time [batch, T]`` and ``freq [batch, D]`` (True = masked)."""
        tm = self._band(num_frames, self.time_masks, self.time_width, rng, batch)
        fm = self._band(dim, self.freq_masks, self.freq_width, rng, batch)
        if self.prob < 1.0:
            keep = rng.random(batch) >= self.prob
            tm[keep] = False
            fm[keep] = False
        return tm, fm

    def __call__(self, feats, rng: Optional[np.random.Generator] = None):
        """Return a masked copy of ``feats`` (torch tensor or numpy array, ``[T, D]`` or ``[B, T, D]``)."""
        import torch

        if rng is None:
            rng = np.random.default_rng()
        single = feats.ndim == 2
        if feats.ndim not in (2, 3):
            raise ValueError(f"SpecAugment expects [T, D] or [B, T, D], got shape {tuple(feats.shape)}")
        x = feats[None] if single else feats
        b, t, d = x.shape
        tm, fm = self.make_masks(t, d, rng, batch=b)
        mask = tm[:, :, None] | fm[:, None, :]
        if isinstance(x, np.ndarray):
            fill = x.mean(axis=(1, 2), keepdims=True) if self.mask_value == "mean" else self.mask_value
            out = np.where(mask, fill, x).astype(x.dtype, copy=False)
        else:
            m = torch.from_numpy(mask).to(x.device)
            if self.mask_value == "mean":
                fill = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
                out = torch.where(m, fill, x)
            else:
                out = x.masked_fill(m, float(self.mask_value))
        return out[0] if single else out


# --------------------------------------------------------------------------------------------------
# config builders
# --------------------------------------------------------------------------------------------------
AUGMENT_KEYS = ("enabled", "musan", "rirs", "prob", "types", "weights", "noise_snr", "music_snr",
                "babble_snr", "babble_count", "babble_source", "babble_wav_scp", "sample_rate")
SPEC_AUGMENT_KEYS = ("enabled", "time_masks", "time_width", "freq_masks", "freq_width", "mask_value", "prob")


def _check_keys(cfg: Mapping[str, Any], allowed: Sequence[str], section: str) -> None:
    for k in cfg:
        if k not in allowed:
            raise ValueError(f"unknown key '{k}' in '{section}' config (allowed: {', '.join(allowed)})")


def build_augmentor(cfg: Optional[Mapping[str, Any]],
                    train_wav_scp: Optional[Union[str, os.PathLike]] = None) -> Optional[WaveformAugmentor]:
    """Build a :class:`WaveformAugmentor` from the ``augment:`` yaml section; None when disabled.

    Disabled: ``cfg`` is None / empty / False, or ``enabled: false``, or ``prob: 0``.
    ``train_wav_scp`` (or the ``babble_wav_scp`` key, which wins) is the training ``wav.scp`` (or its
    data dir, with ``utt2spk``) used for babble when the noise set has no ``speech`` category.
    """
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise ValueError(f"'augment' config must be a mapping, got {type(cfg).__name__}")
    _check_keys(cfg, AUGMENT_KEYS, "augment")
    if not cfg.get("enabled", True) or float(cfg.get("prob", 0.6)) == 0.0:
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


def build_spec_augment(cfg: Optional[Mapping[str, Any]]) -> Optional[SpecAugment]:
    """Build :class:`SpecAugment` from the ``spec_augment:`` yaml section; None when disabled
    (None / empty / False / ``enabled: false``). Unknown keys raise naming the key."""
    if not cfg:
        return None
    if not isinstance(cfg, Mapping):
        raise ValueError(f"'spec_augment' config must be a mapping, got {type(cfg).__name__}")
    _check_keys(cfg, SPEC_AUGMENT_KEYS, "spec_augment")
    if not cfg.get("enabled", True):
        return None
    kw = {k: v for k, v in cfg.items() if k != "enabled"}
    return SpecAugment(**kw)
