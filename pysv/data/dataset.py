"""Training datasets over Kaldi data dirs: fixed-length random crops of features or waveforms.

* :class:`SpeakerIndex` reads ``utt2spk`` + ``feats.scp``/``wav.scp`` (+ ``utt2num_frames``/``utt2dur``),
  validates them and maps speakers to integer labels in sorted order.
* :class:`FeatureCropDataset` crops ``[crop_frames, dim]`` from kaldiio arks (partial reads of
  uncompressed matrices through per-worker cached file handles), optional SpecAugment.
* :class:`WaveformCropDataset` crops ``[crop_samples]`` from audio with partial soundfile reads,
  optional waveform augmentation, optional on-the-fly features (+ SpecAugment).
* :func:`collate` stacks items into ``[B, T, D]`` / ``[B, S]`` and labels ``[B]``.

Randomness: item ``idx`` in epoch ``e`` draws from ``numpy.random.default_rng([seed, e, idx, k])``
(``k`` = how many times ``idx`` already occurred in the same batch), so crops and augmentation are
identical whatever ``num_workers`` is, and a resumed run replays the same data. The epoch lives in
shared memory, so :meth:`set_epoch` reaches persistent DataLoader workers too (call it before
``iter(loader)``).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import soundfile as sf
import torch
from lhotse.augmentation import Speed
from torch.utils.data import Dataset

from pysv.data.crop_windows import crop_or_wrap, random_crop
from pysv.utils.io import DataError, read_table

log = logging.getLogger(__name__)

__all__ = ["SpeakerIndex", "FeatureCropDataset", "WaveformCropDataset", "collate"]

PathLike = Union[str, os.PathLike]


def _parse_scp_entry(value: str, utt: str, scp: Path) -> Tuple[str, Optional[int]]:
    """``path:offset`` -> (path, offset); a plain path -> (path, None). Pipes are an error."""
    value = value.strip()
    if value.endswith("|") or len(value.split()) != 1:
        raise DataError(f"{scp}: entry for utterance '{utt}' is not a plain path ({value!r}); "
                        "pipes and extended filenames are not supported")
    if value.endswith("]"):  # kaldiio/Kaldi row-range syntax: let kaldiio handle it
        return value, None
    path, sep, off = value.rpartition(":")
    if sep and off.isdigit() and path:
        return path, int(off)
    return value, None


class SpeakerIndex:
    """Utterances of a Kaldi data dir with integer speaker labels.

    ``source``: ``"feats"`` (feats.scp), ``"wav"`` (wav.scp) or ``"auto"`` (feats.scp if present).
    ``spk2label``: an existing speaker->label map to reuse (e.g. from a checkpoint); speakers absent
    from it are an error. Default: sorted speaker ids -> ``0..S-1``.
    ``check_files``: check that every ark (feats) / audio file (wav) exists, naming the utterance.

    Attributes: ``utts`` (sorted), ``spks`` and ``labels`` (per utterance), ``spk2label``,
    ``num_classes``, ``entries`` (scp values), ``num_frames`` (int array from utt2num_frames or None),
    ``durations`` (seconds from utt2dur or None).
    """

    def __init__(self, data_dir: PathLike, source: str = "auto",
                 spk2label: Optional[Mapping[str, int]] = None, check_files: bool = True):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise DataError(f"data dir not found: {self.data_dir}")
        if source == "auto":
            source = "feats" if (self.data_dir / "feats.scp").is_file() else "wav"
        if source not in ("feats", "wav"):
            raise ValueError(f"source must be 'auto', 'feats' or 'wav', got {source!r}")
        self.source = source
        scp = self.data_dir / ("feats.scp" if source == "feats" else "wav.scp")
        if not scp.is_file():
            raise DataError(f"{self.data_dir}: no {scp.name} (needed to read {source})")
        utt2spk = read_table(self.data_dir / "utt2spk")
        if not utt2spk:
            raise DataError(f"{self.data_dir / 'utt2spk'} is empty")
        table = read_table(scp)
        self.utts: List[str] = sorted(utt2spk)
        missing = [u for u in self.utts if u not in table]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"utterance '{missing[0]}'{more} in {self.data_dir / 'utt2spk'} has no entry in {scp}")
        self.scp = scp
        self.entries: List[str] = [table[u] for u in self.utts]
        self.spks: List[str] = [utt2spk[u] for u in self.utts]

        speakers = sorted(set(self.spks))
        if spk2label is None:
            self.spk2label: Dict[str, int] = {s: i for i, s in enumerate(speakers)}
        else:
            self.spk2label = dict(spk2label)
            unknown = [s for s in speakers if s not in self.spk2label]
            if unknown:
                raise DataError(f"speaker '{unknown[0]}' of {self.data_dir} is not in the given spk2label "
                                f"({len(unknown)} unknown speakers)")
        self.labels: List[int] = [self.spk2label[s] for s in self.spks]
        self.num_classes = (max(self.spk2label.values()) + 1) if self.spk2label else 0

        self.num_frames = self._lengths("utt2num_frames", int)
        self.durations = self._lengths("utt2dur", float)
        if check_files:
            self._check_files()

    def _lengths(self, name: str, typ):
        p = self.data_dir / name
        if not p.is_file():
            return None
        t = read_table(p)
        missing = [u for u in self.utts if u not in t]
        if missing:
            log.warning("%s lacks %d utterances (first '%s'); ignoring it", p, len(missing), missing[0])
            return None
        try:
            return np.array([typ(t[u]) for u in self.utts])
        except ValueError as e:
            raise DataError(f"{p}: bad value ({e})") from None

    def _check_files(self) -> None:
        first_utt: Dict[str, str] = {}
        count: Dict[str, int] = {}
        for u, v in zip(self.utts, self.entries):
            path, _ = _parse_scp_entry(v, u, self.scp)
            if self.source == "feats" and path.endswith("]"):
                path = path[: path.rfind("[")].rpartition(":")[0] or path
            first_utt.setdefault(path, u)
            count[path] = count.get(path, 0) + 1
        for path, u in first_utt.items():
            if not os.path.isfile(path):
                kind = "ark file" if self.source == "feats" else "audio file"
                more = f" (and {count[path] - 1} more utterances)" if count[path] > 1 else ""
                raise DataError(f"{kind} {path} of utterance '{u}'{more} (listed in {self.scp}) does not exist")

    def __len__(self) -> int:
        return len(self.utts)

    def __repr__(self) -> str:
        return (f"SpeakerIndex({str(self.data_dir)!r}, source={self.source}, utts={len(self.utts)}, "
                f"speakers={len(set(self.spks))}, num_classes={self.num_classes})")


# --------------------------------------------------------------------------------------------------
class _CropDatasetBase(Dataset):
    """Shared: index, labels, epoch in shared memory, per-item RNG, batched fetch."""

    def __init__(self, data_dir: Union[PathLike, SpeakerIndex], source: str, seed: int,
                 spk2label: Optional[Mapping[str, int]], check_files: bool):
        if isinstance(data_dir, SpeakerIndex):
            if data_dir.source != source:
                raise ValueError(f"{type(self).__name__} needs a '{source}' SpeakerIndex, got '{data_dir.source}'")
            self.index = data_dir
        else:
            self.index = SpeakerIndex(data_dir, source=source, spk2label=spk2label, check_files=check_files)
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # compact per-utterance arrays for the hot path (no per-item Python objects shared with workers)
        self._labels = np.asarray(self.index.labels, dtype=np.int64)
        self._utt_ids = np.array(self.index.utts, dtype=np.bytes_)

    # -- public ------------------------------------------------------------------------------------
    @property
    def labels(self) -> List[int]:
        return self.index.labels

    @property
    def num_classes(self) -> int:
        return self.index.num_classes

    @property
    def spk2label(self) -> Dict[str, int]:
        return self.index.spk2label

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream; seen by (persistent) workers through shared memory."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def rng(self, idx: int, k: int = 0) -> np.random.Generator:
        """The generator of item ``idx`` (its ``k``-th occurrence in a batch) in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(idx), int(k)])

    def utt_id(self, idx: int) -> str:
        return self._utt_ids[idx].decode()

    def __getitem__(self, idx: int):
        return self._get(int(idx), 0)

    def __getitems__(self, indices: Sequence[int]) -> list:
        """Batched fetch (used by DataLoader with a batch sampler): repeated indices get distinct crops."""
        seen: Dict[int, int] = {}
        out = []
        for i in indices:
            i = int(i)
            k = seen.get(i, 0)
            seen[i] = k + 1
            out.append(self._get(i, k))
        return out

    def _get(self, idx: int, k: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_handles", None)
        state.pop("_handles_pid", None)
        return state


class _ArkHandles:
    """Per-process LRU cache of open ark files (re-opened after fork: never share a file offset)."""

    def __init__(self, max_open: int = 64):
        self.max_open = max_open
        self.pid = os.getpid()
        self.files: "OrderedDict[str, object]" = OrderedDict()

    def get(self, path: str):
        if self.pid != os.getpid():  # forked: drop the parent's handles without closing them
            self.files = OrderedDict()
            self.pid = os.getpid()
        f = self.files.get(path)
        if f is not None:
            self.files.move_to_end(path)
            return f
        f = open(path, "rb")
        self.files[path] = f
        if len(self.files) > self.max_open:
            _, old = self.files.popitem(last=False)
            old.close()
        return f


_HDR = struct.Struct("<xixi")  # b"\x04" int32 rows b"\x04" int32 cols


class FeatureCropDataset(_CropDatasetBase):
    """Random ``crop_frames`` crops of the features in ``data_dir/feats.scp``.

    An item is (``[crop_frames, D]`` float32, label).

    Uncompressed float32/float64 matrices are read partially (only the crop's rows) through cached
    file handles; other entries (compressed, row ranges) go through ``kaldiio.load_mat``. Utterances
    shorter than the crop are wrap-repeated (see :mod:`pysv.data.crop_windows`).
    ``spec_augment``: a callable ``(tensor [T, D], rng) -> tensor`` such as
    :class:`pysv.data.spec_augment.SpecAugment`, applied to every crop.
    """

    def __init__(self, data_dir: Union[PathLike, SpeakerIndex], crop_frames: int,
                 spec_augment: Optional[Callable] = None, seed: int = 0,
                 spk2label: Optional[Mapping[str, int]] = None, check_files: bool = True,
                 max_open_files: int = 64):
        super().__init__(data_dir, "feats", seed, spk2label, check_files)
        if int(crop_frames) <= 0:
            raise ValueError(f"crop_frames must be positive, got {crop_frames}")
        self.crop_frames = int(crop_frames)
        self.spec_augment = spec_augment
        self.max_open_files = max_open_files
        paths, offsets = [], []
        for u, v in zip(self.index.utts, self.index.entries):
            p, off = _parse_scp_entry(v, u, self.index.scp)
            paths.append(p)
            offsets.append(-1 if off is None else off)
        self._ark_names, ark_ids = np.unique(np.array(paths, dtype=object), return_inverse=True)
        self._ark_names = [str(a) for a in self._ark_names]
        self._ark_id = ark_ids.astype(np.int32)
        self._offset = np.asarray(offsets, dtype=np.int64)
        self._handles: Optional[_ArkHandles] = None

    def _file(self, path: str):
        if getattr(self, "_handles", None) is None:
            self._handles = _ArkHandles(self.max_open_files)
        return self._handles.get(path)

    def read_crop(self, idx: int, rng: np.random.Generator) -> np.ndarray:
        """The random crop ``[crop_frames, D]`` (float32) of utterance ``idx``."""
        path = self._ark_names[self._ark_id[idx]]
        off = int(self._offset[idx])
        crop = self.crop_frames
        try:
            if off >= 0:
                f = self._file(path)
                f.seek(off)
                head = f.read(5)
                if head in (b"\0BFM ", b"\0BDM "):
                    rows, cols = _HDR.unpack(f.read(_HDR.size))
                    dtype = np.dtype("<f4") if head == b"\0BFM " else np.dtype("<f8")
                    if rows <= 0:
                        raise DataError(f"utterance '{self.utt_id(idx)}' has 0 frames in {path}")
                    start = random_crop(rows, crop, rng)
                    n = min(crop, rows)
                    f.seek(off + 5 + _HDR.size + start * cols * dtype.itemsize)
                    mat = np.empty((n, cols), dtype=dtype)
                    if f.readinto(mat) != mat.nbytes:
                        raise DataError(f"ark {path} is truncated at utterance '{self.utt_id(idx)}' (offset {off})")
                    if n < crop:
                        mat = crop_or_wrap(mat, 0, crop)
                    return mat.astype(np.float32, copy=False)
                entry = f"{path}:{off}"
            else:
                entry = path
            mat = np.asarray(kaldiio.load_mat(entry), dtype=np.float32)
        except FileNotFoundError:
            raise DataError(f"ark file {path} of utterance '{self.utt_id(idx)}' does not exist") from None
        except DataError:
            raise
        except Exception as e:  # corrupted ark, wrong offset, ...
            raise DataError(f"cannot read features of utterance '{self.utt_id(idx)}' from {path}: {e}") from None
        if mat.ndim != 2 or mat.shape[0] == 0:
            raise DataError(f"utterance '{self.utt_id(idx)}': expected a [frames, dim] matrix, got {mat.shape}")
        start = random_crop(mat.shape[0], crop, rng)
        return np.ascontiguousarray(crop_or_wrap(mat, start, crop))

    def _get(self, idx: int, k: int):
        rng = self.rng(idx, k)
        mat = self.read_crop(idx, rng)
        if not mat.flags.writeable or not mat.flags.c_contiguous:
            mat = np.array(mat, dtype=np.float32, order="C")
        x = torch.from_numpy(mat)
        if self.spec_augment is not None:
            x = self.spec_augment(x, rng)
        return x, int(self._labels[idx])


class WaveformCropDataset(_CropDatasetBase):
    """Random ``crop_samples`` crops of the audio in ``data_dir/wav.scp``: item = (``[crop_samples]``, label).

    Audio is read partially with soundfile (seek + read of the crop only; first channel, float32 in
    [-1, 1]); shorter files are wrap-repeated. ``augment``: ``(samples, rng, spk=...) -> samples``
    (a :class:`pysv.data.waveform_augment.WaveformAugmentor`). ``feature_extractor``: ``(samples, sr) ->
    [frames, dim]`` (e.g. ``pysv.features.build("fbank40")``), applied after augmentation; the item
    is then ``[frames, dim]`` and ``spec_augment`` applies to it; an extractor whose call takes
    ``seed=`` (``pysv.features``) gets one from the item's stream, so dithered features are
    reproducible too. Size ``crop_samples`` with
    :func:`pysv.data.crop_windows.frames_to_samples` to get an exact number of frames.
    """

    def __init__(self, data_dir: Union[PathLike, SpeakerIndex], crop_samples: int,
                 augment: Optional[Callable] = None, seed: int = 0,
                 feature_extractor: Optional[Callable] = None, spec_augment: Optional[Callable] = None,
                 sample_rate: int = 16000, spk2label: Optional[Mapping[str, int]] = None,
                 check_files: bool = True, plan_augment: bool = False,
                 speed_factors: Sequence[float] = (), speed_new_speakers: bool = False):
        super().__init__(data_dir, "wav", seed, spk2label, check_files)
        if any(not 0.5 <= float(f) <= 2.0 for f in speed_factors):
            raise ValueError(f"speed factors must be in [0.5, 2], got {list(speed_factors)}")
        # speed perturbation (lhotse's Speed, a resampling): one factor per crop from the item's stream;
        # with speed_new_speakers the label of a crop at factors[k] is label + k * num_labels
        self.speed = [Speed(float(f)) if float(f) != 1.0 else None for f in speed_factors]
        self.speed_factors = [float(f) for f in speed_factors]
        self.speed_new_speakers = bool(speed_new_speakers)
        if self.speed_new_speakers and 1.0 not in self.speed_factors:
            raise ValueError("speed perturbation with new speakers needs the factor 1.0 (the original speakers)")
        others = itertools.count(1)
        #: label offset (in units of num_labels) of each factor: 0 for 1.0, then 1, 2, ... in order
        self.speed_offsets = [0 if f == 1.0 else next(others) for f in self.speed_factors]
        if plan_augment and (augment is None or feature_extractor is not None):
            raise ValueError("plan_augment needs an augmentor and no feature_extractor (the device applies both)")
        self.plan_augment = bool(plan_augment)
        if int(crop_samples) <= 0:
            raise ValueError(f"crop_samples must be positive, got {crop_samples}")
        if spec_augment is not None and feature_extractor is None:
            raise ValueError("spec_augment needs a feature_extractor (it masks features, not waveforms)")
        aug_sr = getattr(augment, "sample_rate", None)
        if aug_sr is not None and int(aug_sr) != int(sample_rate):
            raise ValueError(f"augmentor sample_rate {aug_sr} differs from the dataset's {sample_rate}")
        self.crop_samples = int(crop_samples)
        self.augment = augment
        self.feature_extractor = feature_extractor
        self._fx_seed = feature_extractor is not None and _accepts_seed(feature_extractor)
        self.spec_augment = spec_augment
        self.sample_rate = int(sample_rate)
        paths = [_parse_scp_entry(v, u, self.index.scp)[0] for u, v in zip(self.index.utts, self.index.entries)]
        self._paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        spk_names = sorted(set(self.index.spks))
        spk_code = {s: i for i, s in enumerate(spk_names)}
        self._spk_names = spk_names
        self._spk = np.array([spk_code[s] for s in self.index.spks], dtype=np.int32)

    def read_crop(self, idx: int, rng: np.random.Generator, speed: int = -1) -> np.ndarray:
        """The random crop ``[crop_samples]`` (float32) of utterance ``idx``, read partially; with
        ``speed`` >= 0 the audio is read at ``speed_factors[speed]`` (a crop of ``factor x crop``
        samples resampled to ``crop``)."""
        path = os.fsdecode(self._paths[idx])
        resampler = self.speed[speed] if speed >= 0 else None
        crop = self.crop_samples if resampler is None else int(math.ceil(self.crop_samples * self.speed_factors[speed]))
        try:
            with sf.SoundFile(path) as f:
                if f.samplerate != self.sample_rate:
                    raise DataError(f"utterance '{self.utt_id(idx)}': {path} is {f.samplerate} Hz, "
                                    f"expected {self.sample_rate} Hz")
                total = f.frames
                if total <= 0:
                    raise DataError(f"utterance '{self.utt_id(idx)}': {path} is empty")
                start = random_crop(total, crop, rng)
                if start:
                    f.seek(start)
                x = f.read(min(crop, total), dtype="float32", always_2d=True)[:, 0]
        except DataError:
            raise
        except (RuntimeError, OSError) as e:
            raise DataError(f"cannot read audio of utterance '{self.utt_id(idx)}' from {path}: {e}") from None
        if x.shape[0] < crop:
            if x.shape[0] == 0:
                raise DataError(f"utterance '{self.utt_id(idx)}': read 0 samples from {path}")
            x = crop_or_wrap(x, 0, crop)
        if resampler is not None:
            x = resampler(x[None], self.sample_rate)[0]
            x = x[:self.crop_samples] if x.shape[0] >= self.crop_samples else crop_or_wrap(x, 0, self.crop_samples)
        return np.ascontiguousarray(x)

    def _get(self, idx: int, k: int):
        rng = self.rng(idx, k)
        speed = int(rng.integers(len(self.speed))) if self.speed else -1
        x = self.read_crop(idx, rng, speed)
        label = int(self._labels[idx])
        if self.speed_new_speakers and speed >= 0:
            label += self.speed_offsets[speed] * self.index.num_classes
        if self.plan_augment:  # the device applies it (data.front_end: device): item = (crop, label, plan)
            plan = self.augment.plan(x.shape[0], rng, spk=self._spk_names[self._spk[idx]])
            return torch.as_tensor(np.asarray(x, dtype=np.float32)), label, plan
        if self.augment is not None:
            x = self.augment(x, rng, spk=self._spk_names[self._spk[idx]])
        if self.feature_extractor is not None:
            x = np.asarray(x, dtype=np.float32)
            if self._fx_seed:  # dither drawn from the item's stream: same features for any num_workers
                x = self.feature_extractor(x, self.sample_rate, seed=int(rng.integers(0, 2 ** 31 - 1)))
            else:
                x = self.feature_extractor(x, self.sample_rate)
            t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
            if self.spec_augment is not None:
                t = self.spec_augment(t, rng)
        else:
            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return t, label


def _accepts_seed(fn: Callable) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def collate(batch: Sequence[Tuple[torch.Tensor, int]]):
    """Stack fixed-length items: ``([B, T, D] or [B, S] float32, labels [B] int64)``, plus the list
    of augmentation plans when the items carry one (``plan_augment``)."""
    if not batch:
        raise ValueError("empty batch")
    xs = [b[0] for b in batch]
    shape = xs[0].shape
    for x in xs[1:]:
        if x.shape != shape:
            raise ValueError(f"collate needs equal-length items (fixed crops); got {tuple(shape)} and {tuple(x.shape)}")
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.int64)
    if len(batch[0]) == 3:
        return torch.stack(xs), labels, [b[2] for b in batch]
    return torch.stack(xs), labels
