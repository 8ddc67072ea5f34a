"""Embedding computation shared by per-epoch validation (stage 2) and extraction (stage 3).

Modes (``mode``):
- ``full``: the whole utterance in one forward pass. With ``batch_frames`` (> 0), utterances are
  read in windows of ``window`` utterances, sorted by length within the window and run as padded
  batches of at most ``batch_frames`` padded frames (samples for waveform encoders) with their
  ``lengths``: every encoder masks padding, so an embedding equals the unbatched one to float
  rounding (tested to 1e-4 relative), and memory holds one window, never the whole set.
- ``crops``: ``num_crops`` (10) evenly spaced crops of ``crop_len`` covering the utterance, kept as
  a ``[num_crops, D]`` matrix (MP-2021 §4.2, voxceleb_trainer's evaluation).
- ``tta``: crops of the training length with 20 % overlap, embeddings averaged (RawNet2 §4).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from pysv.data.crop_windows import even_crops, gather_crops, sliding_crops
from pysv.features import build as build_features
from pysv.train import precision as precision_lib
from pysv.utils.io import DataError, read_audio, read_table

MODES = ("full", "crops", "tta")


def archive_name(mode: str) -> str:
    """Base name of the embedding archive of ``mode`` (full: ``xvector``, else ``xvector_<mode>``)."""
    return "xvector" if mode == "full" else f"xvector_{mode}"


def resolve_protocol(cfg: dict, mode=None, crop_len=None, num_crops=None, overlap=None) -> dict:
    """The test protocol: explicit arguments over the config's ``extract:`` block (crop null =
    the training crop ``data.crop``); ``mode`` None = the config's mode."""
    ex = cfg.get("extract") or {}
    mode = ex.get("mode", "full") if mode is None else mode
    return {"mode": mode,
            "crop_len": int(crop_len or ex.get("crop") or cfg["data"]["crop"]),
            "num_crops": int(num_crops or ex.get("num_crops", 10)),
            "overlap": float(ex.get("overlap", 0.2) if overlap is None else overlap)}


class UtteranceReader:
    """Reads one utterance as features ``[frames, dim]`` (from ``feats.scp``) or samples (``wav.scp``).

    ``feature_extractor``: when given with an audio data dir, features are computed on the fly.
    """

    def __init__(self, data_dir, kind: str = "features", feature_extractor: Optional[Callable] = None,
                 sample_rate: int = 16000):
        self.data_dir = Path(data_dir)
        self.kind = kind
        self.sample_rate = sample_rate
        self.extractor = feature_extractor
        if kind == "features" and feature_extractor is None:
            scp = self.data_dir / "feats.scp"
            if not scp.is_file():
                raise DataError(f"missing features: {scp} (run stage 1 for this set)")
            self.table = read_table(scp)
            self._feats = kaldiio.load_scp(str(scp))
        else:
            scp = self.data_dir / "wav.scp"
            self.table = read_table(scp)
            self._feats = None
        self.utt2spk = read_table(self.data_dir / "utt2spk")

    @property
    def utts(self) -> List[str]:
        return sorted(self.utt2spk)

    def __call__(self, utt: str) -> np.ndarray:
        if utt not in self.table:
            src = "feats.scp" if self._feats is not None else "wav.scp"
            raise DataError(f"utterance '{utt}' has no entry in {self.data_dir / src}")
        if self._feats is not None:
            try:
                return np.asarray(self._feats[utt], dtype=np.float32)
            except Exception as e:  # missing or truncated ark
                raise DataError(f"cannot read features of utterance '{utt}' ({self.table[utt]}): {e}") from e
        path = self.table[utt]
        samples, sr = read_audio(path, utt)
        if sr != self.sample_rate:
            raise DataError(f"utterance '{utt}' ({path}) has sample rate {sr}, expected {self.sample_rate}")
        if samples.ndim == 2:
            samples = samples[:, 0]
        if self.extractor is not None:
            return np.asarray(self.extractor(samples, sr), dtype=np.float32)
        return samples


@torch.no_grad()
def embed_one(model: torch.nn.Module, x: np.ndarray, device, mode: str = "full",
              crop_len: Optional[int] = None, num_crops: int = 10, overlap: float = 0.2) -> np.ndarray:
    """Embedding(s) of one utterance: ``[D]`` for full / tta, ``[num_crops, D]`` for crops."""
    if mode == "full":
        t = torch.from_numpy(np.array(x, dtype=np.float32))[None].to(device)
        return model(t)[0].float().cpu().numpy()
    if crop_len is None:
        raise ValueError(f"mode '{mode}' needs crop_len")
    if mode == "crops":
        starts = even_crops(len(x), crop_len, num_crops)
    elif mode == "tta":
        starts = sliding_crops(len(x), crop_len, overlap)
    else:
        raise ValueError(f"unknown embedding mode '{mode}', expected one of {MODES}")
    batch = torch.from_numpy(np.array(gather_crops(x, starts, crop_len), dtype=np.float32)).to(device)
    emb = model(batch).float().cpu().numpy()
    return emb if mode == "crops" else emb.mean(axis=0)


def embed_utterances(model: torch.nn.Module, reader: UtteranceReader, utts: Iterable[str], device,
                     mode: str = "full", crop_len: Optional[int] = None, num_crops: int = 10,
                     overlap: float = 0.2, progress: bool = False, desc: str = "embeddings",
                     batch_frames: int = 0, window: int = 256, precision: str = "fp32") -> Dict[str, np.ndarray]:
    """Embeddings of ``utts`` (eval mode; the model's train/eval state is restored afterwards).

    ``batch_frames`` > 0 batches full-mode utterances by length (see the module doc); ``precision``
    (``fp32`` | ``bf16`` | ``auto``, :mod:`pysv.train.precision`) is the autocast of the forward."""
    device = torch.device(device)
    prec = precision_lib.resolve(precision, device)
    utts = list(utts)
    was_training = model.training
    model.eval()
    out: Dict[str, np.ndarray] = {}
    bar = tqdm(total=len(utts), desc=desc, disable=not progress, unit="utt")
    try:
        with precision_lib.autocast(prec, device):
            if mode == "full" and batch_frames > 0:
                for lo in range(0, len(utts), window):
                    part = utts[lo:lo + window]
                    for utt, emb in _embed_batched(model, [(u, reader(u)) for u in part], device, batch_frames):
                        out[utt] = _checked(utt, emb)
                    bar.update(len(part))
            else:
                for utt in utts:
                    out[utt] = _checked(utt, embed_one(model, reader(utt), device, mode, crop_len, num_crops, overlap))
                    bar.update(1)
    finally:
        bar.close()
        model.train(was_training)
    return out


def default_batch_seconds(device) -> float:
    """Padded audio per length-sorted batch: 120 s on CUDA; 0 (one utterance at a time) on a CPU,
    where padded batches measured slower (bench/extraction.py, RESULTS.md)."""
    return 120.0 if torch.device(device).type == "cuda" else 0.0


def units_per_second(cfg: dict, input_kind: str) -> int:
    """Frames (feature encoders) or samples (waveform encoders) per second of audio for a system's
    resolved config: what ``batch_frames`` counts."""
    if input_kind == "waveform":
        return int(cfg["model"]["hparams"].get("sample_rate", 16000))
    return int(round(1.0 / build_features(cfg["data"]["feature"]).frame_shift_seconds))


def _checked(utt: str, emb: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(emb)):
        raise DataError(f"non-finite embedding for utterance '{utt}'")
    return emb.astype(np.float32)


@torch.no_grad()
def _embed_batched(model: torch.nn.Module, items, device, batch_frames: int):
    """(utt, embedding) for ``items`` = [(utt, array)], as padded batches of similar length."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][1]))
    batch: List[int] = []

    def flush():
        longest = len(items[batch[-1]][1])
        first = np.asarray(items[batch[0]][1])
        x = np.zeros((len(batch), longest) + first.shape[1:], dtype=np.float32)
        for row, i in enumerate(batch):
            a = items[i][1]
            x[row, :len(a)] = a
        lengths = torch.tensor([len(items[i][1]) for i in batch], dtype=torch.long, device=device)
        emb = model(torch.from_numpy(x).to(device), lengths=lengths).float().cpu().numpy()
        return [(items[i][0], emb[row]) for row, i in enumerate(batch)]

    for i in order:
        # the batch is padded to its last (longest) member: close it before it exceeds the budget
        if batch and (len(batch) + 1) * len(items[i][1]) > batch_frames:
            yield from flush()
            batch = []
        batch.append(i)
    if batch:
        yield from flush()

