"""VoxCeleb-scale dry run: training start, epoch plans, loader memory and the back-end at full corpus size.

    python bench/scale.py [--sizes 10000,100000,1092009] [--workers 8] [--batches 100] [--batch-size 128]
                          [--valid-speakers 20] [--work-dir DIR] [--keep] [--out table.md] [--blas-threads N]
                          [--skip-backend] [--backend-utts 153516] [--backend-trials 580000]
                          [--cohort 5994] [--plda-utts 1092009] [--plda-speakers 5994] [--emb-dim 512]
                          [--extract-utts 3000]

Nothing is trained and no audio exists. For each size in ``--sizes`` a synthetic Kaldi data dir of
VoxCeleb2-dev shape is generated (:func:`make_corpus`, ~5 s at full size): 1,092,009 utterances of
5,994 speakers at full size and the same utterances per speaker at smaller sizes (10,000 -> 55
speakers), per-speaker counts from a lognormal scaled to the exact total (20-900, mean 182, median
~155), nominal durations of at least 4 s, mean 7.8 s, in ``utt2dur``, ids ``id00012-21Uxsk56VDQ-00001``
(speaker-video-number), ``utt2spk`` and ``spk2utt``. Its features dir ``<dir>_fbank40`` has a
``feats.scp`` whose entries all point into ONE small shared ark of 64 uncompressed 40-dim float32
matrices, one per duration quantile: every utterance reads the matrix nearest its nominal duration
and ``utt2num_frames`` holds that matrix's frames, so reads work and the features take ~8 MB at any
size. There is no ``wav.scp`` (feature systems train from the features dir).

Each step runs in a fresh subprocess, so its peak memory is its own (the peak resident set is reset
through ``/proc/self/clear_refs`` just before the step; "+x GiB" is the peak above the step's start),
and is timed in wall-clock and CPU seconds (on a loaded machine the CPU seconds are the step's own
cost; ``--blas-threads 1`` keeps spinning BLAS threads out of them):

* ``index``: ``pysv.data.loader.build_training_data`` of ``conf/thin_resnet34_angleproto.yaml`` with
  ``data.train=<dir>``, ``data.valid_speakers``, ``sampler.batch_size``, ``data.num_workers`` (one
  process, CPU): the speaker index, the crop dataset, the validation split and trials, the sampler
  and the DataLoader, as stage 2 builds them. Where a small corpus has fewer training speakers than
  ``batch / 2``, ``sampler.utts_per_spk`` is raised so that the batch size stays the same.
* ``plan <kind>``: sampler construction + one epoch's plan, for every kind in
  ``pysv.data.samplers.SAMPLERS``, over the training utterances' speakers.
* ``workers up, first batch`` and ``next N batches``: the index again and the epoch planned (not
  timed), then ``iter(loader)`` with ``--workers`` workers to the first batch and ``--batches`` more;
  meanwhile the PSS (``smaps_rollup``: shared pages counted once) of the main process and all its
  children is sampled every 0.1 s and the peak of the sum reported.
* ``training start`` = index + plan of the configured sampler + workers up to the first batch.
* ``validation``: what ``Trainer.validate`` does every epoch: an ``UtteranceReader`` over the training
  features dir and ``embed_utterances`` (a tiny encoder) over the validation trials' utterances; the
  resident set is sampled while utterances are read and its growth per utterance after the first
  quarter shows whether features are held (a feature matrix is ~125 kB, an embedding 2 kB).
* ``scaling``: exponents of CPU time and of the memory above the step's start between the two largest
  sizes (1 = linear).

Then, once (``--skip-backend`` skips it), stages 3-5 at VoxCeleb1 size: ``extraction``
(``UtteranceReader`` over a generated 153,516-utterance features dir, ``embed_utterances`` of its
first ``--extract-utts``, growth per utterance as above), ``write embeddings`` (153,516 x 512 float32,
``pysv.utils.stage.ArkWriter``), ``read embeddings`` (``pysv.backend.scorers.load_vectors``),
``AS-norm`` (``asnorm_cosine_trials``: 580,000 trials among those utterances, a 5,994-speaker cohort,
top 300) and ``PLDA fit`` (``PldaBackend`` as stage 4, LDA 200, on 1/10 of and all ``--plda-utts``
embeddings of ``--plda-speakers`` speakers).

Goals (issue #15): every step linear or better (exponent <= 1.2); the full-size training start
< 30 s; PSS of the main process + workers < 4 GiB; AS-norm of 580k trials with a 5,994 cohort < 30 s;
extraction and validation memory not growing with the utterances (< 16 kB per utterance). A time
goal met only in CPU seconds reads "cpu only". The markdown table is printed and, with ``--out``,
written there (all numbers in ``<out>.json``). Data goes under ``--work-dir`` (default: a temp dir);
what the run generated is removed at the end unless ``--keep``. ``--in-process`` runs every step in
this process (for tests: fast, but the memory figures are then not per step). The full default run
needs ~7 GB of memory (the PLDA fit) and ~1 GB of disk.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: VoxCeleb2-dev and VoxCeleb1 (all of it: the embeddings scored on VoxCeleb1-E/H)
VOX2_UTTS, VOX2_SPKS = 1_092_009, 5_994
VOX1_UTTS, VOX1_SPKS = 153_516, 1_251
FRAME_RATE = 100  # frames per second (10 ms shift)
NUM_SHARED = 64  # shared feature matrices (duration quantiles)
FEAT_DIM = 40
CONFIG = "conf/thin_resnet34_angleproto.yaml"
GiB = float(1 << 30)
ID_CHARS = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)

GOAL_START_S = 30.0
GOAL_PSS_GIB = 4.0
GOAL_ASNORM_S = 30.0
GOAL_GROWTH_KB = 16.0
GOAL_EXPONENT = 1.2


# ================================================================================================
# The synthetic corpus
# ================================================================================================
def speaker_counts(num_utts: int, num_spks: int, rng: np.random.Generator, lo: int = 20, hi: int = 900,
                   sigma: float = 0.55) -> np.ndarray:
    """Utterances per speaker: lognormal weights scaled (and clipped to ``[lo, hi]``) to sum to exactly
    ``num_utts`` (VoxCeleb2-dev: mean 182, skewed to the right)."""
    lo = min(lo, num_utts // num_spks)
    hi = max(hi, -(-num_utts // num_spks))
    w = rng.lognormal(0.0, sigma, num_spks)
    a, b = 0.0, 2.0 * hi / w.min()
    for _ in range(100):  # bisection on the scale: sum(clip(scale * w)) = num_utts
        mid = 0.5 * (a + b)
        if np.clip(mid * w, lo, hi).sum() < num_utts:
            a = mid
        else:
            b = mid
    x = np.clip(b * w, lo, hi)
    counts = np.floor(x).astype(np.int64)
    rest = num_utts - int(counts.sum())
    frac = np.where(counts < hi, x - counts, -1.0)
    step = 1 if rest > 0 else -1
    order = np.argsort(-frac if rest > 0 else np.where(counts > lo, x - counts, 2.0), kind="stable")
    counts[order[:abs(rest)]] += step
    assert counts.sum() == num_utts and counts.min() >= 1
    return counts


def nominal_durations(n: int, rng: np.random.Generator, mean: float = 7.8, minimum: float = 4.0,
                      sigma: float = 0.8, maximum: float = 60.0) -> np.ndarray:
    """Seconds: ``minimum`` + a lognormal excess of mean ``mean - minimum`` (clipped to ``maximum``)."""
    mu = math.log(mean - minimum) - 0.5 * sigma ** 2
    return np.minimum(minimum + rng.lognormal(mu, sigma, n), maximum)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """``[n, width]`` ASCII digits of non-negative ints (zero-padded)."""
    out = np.empty((values.size, width), dtype=np.uint8)
    v = values.astype(np.int64).copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = 48 + v % 10
        v //= 10
    return out


def _number(values: np.ndarray, width: int):
    """A column of non-negative ints without leading zeros: ``(digits [n, width], keep mask)``."""
    d = _digits(values, width)
    keep = np.ones(d.shape, dtype=bool)
    keep[:, :-1] = np.cumsum(d[:, :-1] != 48, axis=1) > 0
    return d, keep


def _const(text: bytes, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text)))


def _lines(*columns) -> bytes:
    """One line per row of byte columns ``[n, w]`` (or ``(bytes, keep mask)``: only the kept bytes),
    joined by spaces; built as one byte matrix, without a Python loop over rows."""
    n = (columns[0][0] if isinstance(columns[0], tuple) else columns[0]).shape[0]
    parts, masks = [], []
    for i, c in enumerate(columns):
        c, keep = c if isinstance(c, tuple) else (c, None)
        parts.append(c)
        masks.append(np.ones(c.shape, dtype=bool) if keep is None else keep)
        end = _const(b"\n" if i == len(columns) - 1 else b" ", n)
        parts.append(end)
        masks.append(np.ones(end.shape, dtype=bool))
    mat, keep = np.hstack(parts), np.hstack(masks)
    return mat[keep].tobytes() if not keep.all() else np.ascontiguousarray(mat).tobytes()


def make_corpus(root, num_utts: int, num_spks: Optional[int] = None, seed: int = 0,
                name: Optional[str] = None, feature: str = "fbank40") -> Dict[str, Any]:
    """Generate ``<root>/<name>`` (utt2spk, spk2utt, utt2dur, wav.scp) and its features dir
    ``<root>/<name>_<feature>`` (those + feats.scp into one shared ark, utt2num_frames).

    ``num_spks`` default: VoxCeleb2-dev's utterances per speaker (1,092,009 / 5,994). Returns the
    paths and the statistics of the corpus (nominal durations from utt2dur)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if num_spks is None:
        num_spks = max(2, int(round(num_utts * VOX2_SPKS / VOX2_UTTS)))
    name = name or f"vox2_dev_{num_utts}"
    root = Path(root)
    data, fdir = root / name, root / f"{name}_{feature}"
    data.mkdir(parents=True, exist_ok=True)
    fdir.mkdir(parents=True, exist_ok=True)

    counts = speaker_counts(num_utts, num_spks, rng)
    spk_nums = np.sort(rng.choice(max(10_000, 2 * num_spks), size=num_spks, replace=False))
    spk_ids = np.hstack([np.frombuffer(b"id" * num_spks, np.uint8).reshape(num_spks, 2), _digits(spk_nums, 5)])
    # videos: ~7.5 utterances per video (VoxCeleb2-dev: 145,569 videos), ids of 11 YouTube chars
    vids_per_spk = np.maximum(1, np.round(counts / 7.5).astype(np.int64))
    num_vids = int(vids_per_spk.sum())
    vid_spk = np.repeat(np.arange(num_spks), vids_per_spk)
    vid_chars = ID_CHARS[rng.integers(0, ID_CHARS.size, (num_vids, 11))]
    vid_keys = np.hstack([spk_ids[vid_spk], np.full((num_vids, 1), 45, np.uint8), vid_chars])
    order = np.argsort(np.ascontiguousarray(vid_keys).view(f"S{vid_keys.shape[1]}").ravel(), kind="stable")
    vid_keys, vid_spk = vid_keys[order], vid_spk[order]  # sorted by speaker, then video id
    first_vid = np.searchsorted(vid_spk, np.arange(num_spks))
    utt_spk = np.repeat(np.arange(num_spks), counts)
    utt_vid = np.sort(first_vid[utt_spk] + (rng.random(num_utts) * vids_per_spk[utt_spk]).astype(np.int64))
    start = np.searchsorted(utt_vid, utt_vid, side="left")
    number = np.arange(num_utts) - start + 1  # 00001, 00002, ... within a video
    utt_ids = np.hstack([vid_keys[utt_vid], np.full((num_utts, 1), 45, np.uint8), _digits(number, 5)])
    utt_spk = vid_spk[utt_vid]
    keys = np.ascontiguousarray(utt_ids).view(f"S{utt_ids.shape[1]}").ravel()
    assert np.all(keys[1:] > keys[:-1]), "utterance ids must be unique and sorted"

    dur = nominal_durations(num_utts, rng)
    # the shared matrices: one per duration quantile; an utterance reads the nearest one
    levels = np.round(np.quantile(dur, (np.arange(NUM_SHARED) + 0.5) / NUM_SHARED) * FRAME_RATE).astype(np.int64)
    levels = np.unique(levels)
    mid = (levels[1:] + levels[:-1]) / 2.0
    utt_level = np.searchsorted(mid, dur * FRAME_RATE)
    ark = (fdir / "shared.ark").resolve()
    import kaldiio
    offsets = []
    with open(ark, "wb") as f:
        mrng = np.random.default_rng(seed + 1)
        shape = np.linspace(6.0, 12.0, FEAT_DIM, dtype=np.float32)  # log-mel-like spectral tilt
        for k, frames in enumerate(levels):
            key = f"shared{k:03d}"
            offsets.append(f.tell() + len(key) + 1)
            mat = shape - 2.0 * np.abs(mrng.standard_normal((int(frames), FEAT_DIM), dtype=np.float32))
            kaldiio.save_ark(f, {key: mat.astype(np.float32)})

    spk_col = spk_ids[utt_spk]
    cs = np.round(dur * 100).astype(np.int64)  # centiseconds -> "7.80"
    whole, keep = _number(cs // 100, 2)
    dur_col = (np.hstack([whole, _const(b".", num_utts), _digits(cs % 100, 2)]),
               np.hstack([keep, np.ones((num_utts, 3), dtype=bool)]))
    text = {"utt2spk": _lines(utt_ids, spk_col), "utt2dur": _lines(utt_ids, dur_col)}
    spk_keys = np.ascontiguousarray(spk_ids).view("S7").ravel().tolist()
    bounds = np.concatenate([[0], np.cumsum(counts)])
    ukeys = keys.tolist()
    text["spk2utt"] = b"".join(s + b" " + b" ".join(ukeys[bounds[i]:bounds[i + 1]]) + b"\n"
                               for i, s in enumerate(spk_keys))
    for d in (data, fdir):
        for fname, blob in text.items():
            (d / fname).write_bytes(blob)
    off, keep = _number(np.asarray(offsets, dtype=np.int64)[utt_level], len(str(max(offsets))))
    prefix = _const(os.fsencode(str(ark)) + b":", num_utts)
    entry = (np.hstack([prefix, off]), np.hstack([np.ones(prefix.shape, dtype=bool), keep]))
    (fdir / "feats.scp").write_bytes(_lines(utt_ids, entry))
    (fdir / "utt2num_frames").write_bytes(_lines(utt_ids, _number(levels[utt_level], len(str(levels.max())))))
    return {"data": str(data), "features": str(fdir), "utts": num_utts, "speakers": num_spks,
            "utts_per_spk": {"mean": float(counts.mean()), "min": int(counts.min()),
                             "median": float(np.median(counts)), "max": int(counts.max())},
            "duration_s": {"mean": float(dur.mean()), "min": float(dur.min()), "max": float(dur.max()),
                           "total_h": float(dur.sum() / 3600)},
            "frames_mean": float(levels[utt_level].mean()), "ark_mb": ark.stat().st_size / 1e6,
            "seconds": time.perf_counter() - t0}


# ================================================================================================
# Measurements (in the child processes)
# ================================================================================================
def _status_kb(field: str, pid="self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_gib() -> float:
    return _status_kb("VmRSS") / (1 << 20)


def reset_peak() -> bool:
    """Reset the peak resident set (``VmHWM``) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_gib() -> float:
    """Peak resident set since :func:`reset_peak` (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    kb = _status_kb("VmHWM")
    if not kb:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1 << 20)


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``; 0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


class Stopwatch:
    """Wall-clock and CPU seconds of a block (CPU: this process, all threads; ``pids``: plus those
    processes' CPU, e.g. loader workers forked inside the block)."""

    def __enter__(self) -> "Stopwatch":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def _descendants(pid: int) -> List[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(v) for v in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def pss_kb(pid) -> int:
    """Proportional set size of a process (``smaps_rollup``; ``smaps`` summed where missing)."""
    for name in ("smaps_rollup", "smaps"):
        try:
            total = 0
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            return total
        except OSError:
            continue
    return 0


class PssSampler:
    """Samples the PSS of this process plus all its descendants every ``interval`` s (a thread)."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_kb = 0
        self.peak_main_kb = 0
        self.max_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        me = os.getpid()
        kids = _descendants(me)
        main = pss_kb(me)
        total = main + sum(pss_kb(p) for p in kids)
        self.peak_kb = max(self.peak_kb, total)
        self.peak_main_kb = max(self.peak_main_kb, main)
        self.max_procs = max(self.max_procs, 1 + len(kids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "PssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class RssTrace:
    """A reader wrapper recording the resident set every ``every`` utterances read."""

    def __init__(self, reader, every: int = 100):
        self.reader, self.every, self.n = reader, every, 0
        self.points: List[tuple] = []

    def __call__(self, utt: str):
        self.n += 1
        if self.n % self.every == 0:
            self.points.append((self.n, _status_kb("VmRSS")))
        return self.reader(utt)

    def growth_kb(self) -> float:
        """kB of resident set per utterance after the first quarter (least squares slope)."""
        pts = self.points[len(self.points) // 4:]
        if len(pts) < 2:
            return float("nan")
        n, kb = np.array(pts, dtype=np.float64).T
        return float(np.polyfit(n, kb, 1)[0])


def tiny_encoder(dim: int = 512):
    """A stand-in encoder (mean over frames -> linear): the pipeline, not the model, is measured."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(FEAT_DIM, dim)

        def forward(self, x, lengths=None):
            if lengths is None:
                return self.fc(x.mean(dim=1))
            mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)
            return self.fc((x * mask[..., None]).sum(1) / lengths[:, None].to(x.dtype))

    torch.manual_seed(0)
    return Tiny()


def _config(p: Dict[str, Any]):
    from pysv.train.config import load_config
    return load_config(str(REPO / CONFIG), overrides=[
        f"data.train={p['data']}", f"data.valid_speakers={p['valid_speakers']}",
        f"sampler.batch_size={p['batch_size']}", f"sampler.utts_per_spk={p['utts_per_spk']}",
        f"data.num_workers={p['workers']}"])


def _build(p: Dict[str, Any]):
    import torch
    from pysv.data.loader import build_training_data
    from pysv.train.distributed import DistInfo
    return build_training_data(_config(p), "features", DistInfo(), torch.device("cpu"))


def _measured(sw: Stopwatch, before: float, **extra) -> Dict[str, Any]:
    return {"seconds": sw.wall, "cpu": sw.cpu, "peak_gib": peak_gib(), "before_gib": before, **extra}


def child_index(p: Dict[str, Any]) -> Dict[str, Any]:
    import pysv.data.loader  # noqa: F401  (imports are not the step)
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        data = _build(p)
    valid_utts = sorted({u for a, b, _ in data.valid_trials or () for u in (a, b)})
    Path(p["valid_utts_file"]).write_text("\n".join(valid_utts) + "\n")
    Path(p["valid_spk_file"]).write_text("\n".join(data.valid_speakers) + "\n")
    return _measured(sw, before, train_utts=len(data.train_set), train_speakers=data.num_classes,
                     valid_utts=len(valid_utts), valid_trials=len(data.valid_trials or ()))


def child_plan(p: Dict[str, Any]) -> Dict[str, Any]:
    from pysv.data.samplers import build_sampler
    valid = set(Path(p["valid_spk_file"]).read_text().split())
    with open(Path(p["features"]) / "utt2spk") as f:
        spks = [line.split()[1] for line in f]  # sorted utterances (as SpeakerIndex orders them)
    labels = [s for s in spks if s not in valid]  # the training utterances' speakers, as stage 2 passes them
    del spks
    kind, batch = p["kind"], p["batch_size"]
    kw: Dict[str, Any] = {"seed": 1, "num_replicas": 1, "rank": 0}
    if kind == "balanced":
        kw["utts_per_spk"] = p["utts_per_spk"]
    elif kind == "shuffle":
        kw["drop_last"] = True
    elif kind == "mp_random":  # 2 or 3 utterances per speaker: batch / 2.5 speakers (fewer in a small corpus)
        kw["spks_per_batch"] = min(len(set(labels)), int(round(batch / 2.5)))
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        sampler = build_sampler(kind, labels, batch, **kw)
        sampler.set_epoch(1)
        n = len(sampler)  # plans the epoch
    return _measured(sw, before, batches=n)


def child_loader(p: Dict[str, Any]) -> Dict[str, Any]:
    import pysv.data.loader  # noqa: F401
    data = _build(p)
    data.sampler.set_epoch(1)
    data.train_set.set_epoch(1)
    n_batches = len(data.loader)  # the epoch's plan (timed in the plan step)
    before = rss_gib()
    reset_peak()
    me = os.getpid()
    with PssSampler() as pss:
        t0, c0 = time.perf_counter(), time.process_time()
        it = iter(data.loader)
        first = next(it)
        t_first = time.perf_counter() - t0
        workers = _descendants(me)
        c_workers = sum(proc_cpu_s(w) for w in workers)
        c_first = time.process_time() - c0 + c_workers
        t1, c1 = time.perf_counter(), time.process_time()
        items, k = first[0].shape[0], 0
        for k, batch in enumerate(it, 1):
            items += batch[0].shape[0]
            if k >= p["batches"]:
                break
        t_batches = time.perf_counter() - t1
        c_batches = time.process_time() - c1 + sum(proc_cpu_s(w) for w in workers) - c_workers
        pss.sample()
        del it
    return {"first_batch_s": t_first, "first_batch_cpu": c_first, "batches_s": t_batches, "batches_cpu": c_batches,
            "batches": k, "items": items, "pss_peak_gib": pss.peak_kb / (1 << 20),
            "pss_main_gib": pss.peak_main_kb / (1 << 20), "procs": pss.max_procs, "peak_gib": peak_gib(),
            "before_gib": before, "epoch_batches": n_batches, "crop_shape": list(first[0].shape[1:])}


def child_embed(p: Dict[str, Any]) -> Dict[str, Any]:
    """UtteranceReader over ``p['features']`` + embed_utterances of the listed (or first) utterances."""
    import torch
    from pysv.embed import UtteranceReader, embed_utterances
    torch.set_num_threads(1)
    model = tiny_encoder(p["emb_dim"])
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        with Stopwatch() as sw_reader:
            reader = UtteranceReader(p["features"], kind="features")
        rss_reader = rss_gib()
        utts = Path(p["utts_file"]).read_text().split() if p.get("utts_file") else reader.utts[:p["num_utts"]]
        trace = RssTrace(reader, every=max(10, len(utts) // 40))
        emb = embed_utterances(model, trace, utts, "cpu", mode="full", batch_frames=p.get("batch_frames", 0))
    return _measured(sw, before, reader_s=sw_reader.wall, reader_cpu=sw_reader.cpu, utts=len(emb),
                     reader_gib=rss_reader - before, growth_kb=trace.growth_kb())


def _random_embeddings(n: int, num_spks: int, dim: int, seed: int, chunk: int = 1 << 16):
    """float32 ``[n, dim]`` embeddings with speaker structure, and the (sorted) speaker of each row."""
    rng = np.random.default_rng(seed)
    spk = rng.integers(0, num_spks, n)
    spk[:num_spks] = np.arange(num_spks)  # every speaker present
    spk.sort()
    means = rng.standard_normal((num_spks, dim), dtype=np.float32)
    X = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        X[sl] = means[spk[sl]] + 1.5 * rng.standard_normal((X[sl].shape[0], dim), dtype=np.float32)
    return X, spk


def child_write_emb(p: Dict[str, Any]) -> Dict[str, Any]:
    from pysv.utils.stage import write_ark
    X, _ = _random_embeddings(p["utts"], p["speakers"], p["emb_dim"], 3)
    keys = [f"id{10000 + i // 123:05d}-emb{i:09d}" for i in range(p["utts"])]  # sorted, Kaldi style
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        write_ark(p["ark"], p["scp"], zip(keys, X))
    return _measured(sw, before, mb=Path(p["ark"]).stat().st_size / 1e6)


def child_read_emb(p: Dict[str, Any]) -> Dict[str, Any]:
    from pysv.backend.scorers import load_vectors
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        _, X = load_vectors(Path(p["scp"]), "embeddings")
    return _measured(sw, before, shape=list(X.shape))


def child_asnorm(p: Dict[str, Any]) -> Dict[str, Any]:
    from pysv.backend import asnorm_cosine_trials
    from pysv.backend.scorers import load_vectors
    _, E = load_vectors(Path(p["scp"]), "embeddings")
    rng = np.random.default_rng(5)
    cohort = _random_embeddings(p["cohort"], p["cohort"], E.shape[1], 7)[0]  # training-speaker means
    mean = E.mean(axis=0, dtype=np.float64)
    ei = rng.integers(0, E.shape[0], p["trials"])
    ti = rng.integers(0, E.shape[0], p["trials"])
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        s = asnorm_cosine_trials(E, E, ei, ti, cohort, top_n=p["top_n"], mean=mean)
    assert s.shape == (p["trials"],) and np.isfinite(s).all()
    return _measured(sw, before, distinct_utts=int(np.unique(np.concatenate([ei, ti])).size))


def child_plda(p: Dict[str, Any]) -> Dict[str, Any]:
    from pysv.backend import PldaBackend
    X, spk = _random_embeddings(p["utts"], p["speakers"], p["emb_dim"], 11)
    names = np.array([f"id{10000 + s:05d}" for s in range(p["speakers"])])
    labels = names[spk]  # speaker ids, as stage 4 passes them
    lda_dim = min(200, p["speakers"] - 1, p["emb_dim"])
    before = rss_gib()
    reset_peak()
    with Stopwatch() as sw:
        PldaBackend(lda_dim=lda_dim).fit(X, labels)
    return _measured(sw, before, lda_dim=lda_dim)


IN_PROCESS = False  # --in-process: every step in this process (fast; its memory figures are not clean)
BLAS_THREADS = 0  # --blas-threads: OMP/OpenBLAS/MKL threads of the child processes (0: the libraries' default)
CHILDREN = {"index": child_index, "plan": child_plan, "loader": child_loader, "embed": child_embed,
            "write_emb": child_write_emb, "read_emb": child_read_emb, "asnorm": child_asnorm, "plda": child_plda}


def run_child(step: str, params: Dict[str, Any], timeout: Optional[float] = None) -> Dict[str, Any]:
    """Run ``CHILDREN[step](params)`` in a fresh interpreter; its result (JSON on the last stdout line)."""
    if IN_PROCESS:
        return json.loads(json.dumps(CHILDREN[step](params)))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--params", json.dumps(params)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if BLAS_THREADS:
        env.update({k: str(BLAS_THREADS) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed (exit {proc.returncode}); params {params}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ================================================================================================
# The table
# ================================================================================================
def exponent(n1: float, v1: float, n2: float, v2: float) -> float:
    """Scaling exponent ``log(v2 / v1) / log(n2 / n1)`` (1 = linear)."""
    if n2 == n1 or v1 <= 0 or v2 <= 0:
        return float("nan")
    return math.log(v2 / v1) / math.log(n2 / n1)


class Table:
    HEADER = ("| step | size | wall s | cpu s | peak GiB | goal | met | notes |\n"
              "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |")

    def __init__(self):
        self.rows: List[tuple] = []

    def add(self, step, size, wall=None, cpu=None, gib=None, goal="", met="", notes=""):
        def num(v):
            return "" if v is None else f"{v:.2f}"
        row = (step, size, num(wall), num(cpu), num(gib), goal, met, notes)
        self.rows.append(row)
        print("| " + " | ".join(str(v) for v in row) + " |", flush=True)

    def markdown(self) -> str:
        return "\n".join([self.HEADER] + ["| " + " | ".join(str(v) for v in r) + " |" for r in self.rows])


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def within(wall: float, cpu: float, limit: float) -> str:
    """A time goal: met on the wall clock, or only on CPU time (a loaded machine), or not."""
    if wall < limit:
        return "yes"
    return "cpu only (wall **no**)" if cpu < limit else "**no**"


def fit_batch(train_spks: int, batch: int, m: int = 2) -> int:
    """The balanced sampler's utterances per speaker: 2, or more where a small corpus has fewer
    training speakers than ``batch / 2`` (the batch size stays the same at every size)."""
    while batch // m > train_spks or batch % m:
        m += 1
        if m > batch:
            raise ValueError(f"{train_spks} training speakers cannot fill a batch of {batch}")
    return m


def _plus(x: Dict[str, Any]) -> str:
    return f"+{x['peak_gib'] - x['before_gib']:.2f} GiB over the step's start"


def bench_size(n: int, args, work: Path, table: Table, results: Dict[str, Any], made: List[Path]) -> None:
    info = make_corpus(work, n)
    made += [Path(info["data"]), Path(info["features"])]
    spk = info["speakers"]
    u, d = info["utts_per_spk"], info["duration_s"]
    print(f"# corpus {n:,} utterances, {spk:,} speakers (per speaker mean {u['mean']:.0f}, min {u['min']}, "
          f"median {u['median']:.0f}, max {u['max']}), nominal durations mean {d['mean']:.2f} s "
          f"(min {d['min']:.2f}, max {d['max']:.1f}, {d['total_h']:.0f} h), "
          f"frames read mean {info['frames_mean']:.0f}, shared ark {info['ark_mb']:.1f} MB, "
          f"generated in {info['seconds']:.1f} s", flush=True)
    valid = min(args.valid_speakers, max(1, spk // 4))
    m = fit_batch(spk - valid, args.batch_size)
    p = {"data": info["data"], "features": info["features"], "valid_speakers": valid,
         "batch_size": args.batch_size, "utts_per_spk": m, "workers": args.workers, "batches": args.batches,
         "valid_utts_file": str(work / f"valid_utts_{n}"), "valid_spk_file": str(work / f"valid_spk_{n}"),
         "emb_dim": args.emb_dim}
    made += [Path(p["valid_utts_file"]), Path(p["valid_spk_file"])]
    size = f"{n:,} / {spk:,} spk"
    r: Dict[str, Any] = {"utts": n, "speakers": spk, "corpus": info, "utts_per_spk_in_batch": m}
    r["index"] = x = run_child("index", p)
    table.add("index (build_training_data)", size, x["seconds"], x["cpu"], x["peak_gib"],
              notes=f"{_plus(x)}; {x['train_utts']:,} train utts, {x['valid_trials']:,} valid trials")
    from pysv.data.samplers import SAMPLERS
    for kind in SAMPLERS.names():
        r[f"plan:{kind}"] = x = run_child("plan", dict(p, kind=kind))
        table.add(f"plan {kind}", size, x["seconds"], x["cpu"], x["peak_gib"],
                  notes=f"{_plus(x)}; {x['batches']:,} batches" + (f", M={m}" if kind == "balanced" else ""))
    r["loader"] = x = run_child("loader", p)
    table.add(f"{args.workers} workers up, first batch", size, x["first_batch_s"], x["first_batch_cpu"],
              x["pss_peak_gib"], notes=f"PSS summed over {x['procs']} processes (main {x['pss_main_gib']:.2f} GiB)"
                                       "; cpu includes the workers' prefetching")
    table.add(f"next {x['batches']} batches", size, x["batches_s"], x["batches_cpu"], None,
              notes=f"{x['items'] / max(1e-9, x['batches_s'] + x['first_batch_s']):.0f} crops/s "
                    f"of {'x'.join(map(str, x['crop_shape']))}")
    kind = _config(p)["sampler"]["kind"]
    parts = [r["index"], r[f"plan:{kind}"]]
    wall = sum(v["seconds"] for v in parts) + x["first_batch_s"]
    cpu = sum(v["cpu"] for v in parts) + x["first_batch_cpu"]
    r["start"] = {"seconds": wall, "cpu": cpu}
    big = n >= args.goal_size
    met = x["pss_peak_gib"] < GOAL_PSS_GIB
    time_met = within(wall, cpu, GOAL_START_S) if big else ""
    table.add(f"training start (index + plan {kind} + first batch)", size, wall, cpu, x["pss_peak_gib"],
              (f"< {GOAL_START_S:g} s, " if big else "") + f"PSS < {GOAL_PSS_GIB:g} GiB",
              (f"time {time_met}, " if big else "") + f"PSS {yes(met)}")
    if r["index"]["valid_utts"]:
        r["validation"] = x = run_child("embed", dict(p, utts_file=p["valid_utts_file"]))
        table.add("validation (reader + embed)", size, x["seconds"], x["cpu"], x["peak_gib"],
                  f"< {GOAL_GROWTH_KB:g} kB/utt", yes(x["growth_kb"] < GOAL_GROWTH_KB),
                  f"{x['utts']:,} utts, {x['growth_kb']:.1f} kB/utt; the reader {x['reader_s']:.1f} s "
                  f"+{x['reader_gib']:.2f} GiB")
    results[str(n)] = r


def scaling_rows(results: Dict[str, Any], table: Table) -> None:
    """Scaling exponents (CPU time; memory above the step's start) between the two largest sizes."""
    sizes = sorted(int(k) for k in results if k.isdigit())
    if len(sizes) < 2:
        return
    n1, n2 = sizes[-2], sizes[-1]
    a, b = results[str(n1)], results[str(n2)]
    span = f"{n1:,} -> {n2:,}"
    for key in ["index", *[k for k in a if k.startswith("plan:")], "validation"]:
        if key not in a or key not in b:
            continue
        et = exponent(n1, a[key]["cpu"], n2, b[key]["cpu"])
        em = exponent(n1, max(a[key]["peak_gib"] - a[key]["before_gib"], 1e-3),
                      n2, max(b[key]["peak_gib"] - b[key]["before_gib"], 1e-3))
        table.add(f"scaling {key.replace(':', ' ')}", span, goal=f"exponent <= {GOAL_EXPONENT}",
                  met=yes(et <= GOAL_EXPONENT and em <= GOAL_EXPONENT), notes=f"cpu time^{et:.2f}, memory^{em:.2f}")
    et = exponent(n1, a["loader"]["first_batch_cpu"], n2, b["loader"]["first_batch_cpu"])
    eb = exponent(n1, a["loader"]["batches_cpu"], n2, b["loader"]["batches_cpu"])
    em = exponent(n1, a["loader"]["pss_peak_gib"], n2, b["loader"]["pss_peak_gib"])
    table.add("scaling workers up / batches / PSS", span, goal=f"exponent <= {GOAL_EXPONENT}",
              met=yes(max(et, eb, em) <= GOAL_EXPONENT),
              notes=f"first batch cpu^{et:.2f}, batches cpu^{eb:.2f}, PSS^{em:.2f}")


def bench_backend(args, work: Path, table: Table, results: Dict[str, Any], made: List[Path]) -> None:
    n, spk = args.backend_utts, max(2, int(round(args.backend_utts * VOX1_SPKS / VOX1_UTTS)))
    if args.extract_utts:
        info = make_corpus(work, n, spk, seed=2, name=f"vox1_{n}")
        made += [Path(info["data"]), Path(info["features"])]
        results["extraction"] = x = run_child("embed", {"features": info["features"], "num_utts": args.extract_utts,
                                                        "emb_dim": args.emb_dim})
        table.add("extraction (reader + embed)", f"{n:,} / {spk:,} spk", x["seconds"], x["cpu"], x["peak_gib"],
                  f"< {GOAL_GROWTH_KB:g} kB/utt", yes(x["growth_kb"] < GOAL_GROWTH_KB),
                  f"first {x['utts']:,} utts, {x['growth_kb']:.1f} kB/utt; the reader {x['reader_s']:.1f} s "
                  f"+{x['reader_gib']:.2f} GiB")
    emb = work / "emb"
    emb.mkdir(exist_ok=True)
    made.append(emb)
    size = f"{n:,} x {args.emb_dim}"
    p = {"utts": n, "speakers": spk, "emb_dim": args.emb_dim, "ark": str(emb / "xvector.ark"),
         "scp": str(emb / "xvector.scp"), "cohort": args.cohort, "trials": args.backend_trials, "top_n": 300}
    results["write_emb"] = x = run_child("write_emb", p)
    table.add("write embeddings (ArkWriter)", size, x["seconds"], x["cpu"], x["peak_gib"], notes=f"{x['mb']:.0f} MB")
    results["read_emb"] = x = run_child("read_emb", p)
    table.add("read embeddings (load_vectors)", size, x["seconds"], x["cpu"], x["peak_gib"], notes=_plus(x))
    results["asnorm"] = x = run_child("asnorm", p)
    table.add("AS-norm (asnorm_cosine_trials, top 300)", f"{args.backend_trials:,} trials, cohort {args.cohort:,}",
              x["seconds"], x["cpu"], x["peak_gib"], f"< {GOAL_ASNORM_S:g} s",
              within(x["seconds"], x["cpu"], GOAL_ASNORM_S), f"{x['distinct_utts']:,} distinct utts; {_plus(x)}")
    sizes = [max(args.plda_speakers * 2, args.plda_utts // 10), args.plda_utts]
    for k in sizes:
        results[f"plda:{k}"] = x = run_child("plda", {"utts": k, "speakers": args.plda_speakers,
                                                       "emb_dim": args.emb_dim})
        table.add("PLDA fit (mean, LDA, PLDA)", f"{k:,} x {args.emb_dim}, {args.plda_speakers:,} spk",
                  x["seconds"], x["cpu"], x["peak_gib"], notes=f"LDA dim {x['lda_dim']}; {_plus(x)}")
    a, b = results[f"plda:{sizes[0]}"], results[f"plda:{sizes[1]}"]
    et = exponent(sizes[0], a["cpu"], sizes[1], b["cpu"])
    em = exponent(sizes[0], max(a["peak_gib"] - a["before_gib"], 1e-3), sizes[1],
                  max(b["peak_gib"] - b["before_gib"], 1e-3))
    table.add("scaling PLDA fit", f"{sizes[0]:,} -> {sizes[1]:,}", goal=f"exponent <= {GOAL_EXPONENT}",
              met=yes(et <= GOAL_EXPONENT and em <= GOAL_EXPONENT), notes=f"cpu time^{et:.2f}, memory^{em:.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=f"10000,100000,{VOX2_UTTS}", help="corpus sizes (utterances)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--batches", type=int, default=100, help="batches timed after the first")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--valid-speakers", type=int, default=20)
    p.add_argument("--goal-size", type=int, default=VOX2_UTTS, help="sizes from which the 30 s start goal applies")
    p.add_argument("--work-dir", default=None, help="where the corpora go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument("--out", default=None, help="also write the markdown table here (and all numbers to <out>.json)")
    p.add_argument("--skip-backend", action="store_true", help="skip stages 3-5")
    p.add_argument("--backend-utts", type=int, default=VOX1_UTTS, help="VoxCeleb1 embeddings / extraction corpus")
    p.add_argument("--backend-trials", type=int, default=580_000)
    p.add_argument("--cohort", type=int, default=VOX2_SPKS)
    p.add_argument("--plda-utts", type=int, default=VOX2_UTTS)
    p.add_argument("--plda-speakers", type=int, default=VOX2_SPKS)
    p.add_argument("--emb-dim", type=int, default=512, help="embedding dim (thin ResNet34: 512)")
    p.add_argument("--extract-utts", type=int, default=3000,
                   help="utterances embedded in the extraction step (0 = skip it)")
    p.add_argument("--blas-threads", type=int, default=0,
                   help="OMP / OpenBLAS / MKL threads of each step's process (default: the libraries' own); 1 "
                        "makes the CPU seconds of the numpy steps the work itself on a loaded machine")
    p.add_argument("--in-process", action="store_true",
                   help="run the steps in this process (fast, for tests; peak memory is then not per step)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--params", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    global IN_PROCESS, BLAS_THREADS
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.params))), flush=True)
        return 0
    saved = IN_PROCESS, BLAS_THREADS
    IN_PROCESS, BLAS_THREADS = args.in_process, args.blas_threads
    try:
        return _run(args)
    finally:
        IN_PROCESS, BLAS_THREADS = saved


def _run(args) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    temp = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pysv_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {os.cpu_count()} cpus, load average {load:.2f}, nice {os.nice(0)}; {CONFIG}, batch "
          f"{args.batch_size}, {args.workers} workers, {args.valid_speakers} validation speakers, "
          f"blas threads {args.blas_threads or 'default'}; "
          f"work dir {work}", flush=True)
    table = Table()
    results: Dict[str, Any] = {"args": vars(args)}
    made: List[Path] = []
    print(Table.HEADER, flush=True)
    try:
        for n in sizes:
            bench_size(n, args, work, table, results, made)
        scaling_rows(results, table)
        if not args.skip_backend:
            bench_backend(args, work, table, results, made)
    finally:
        if not args.keep:
            if temp:
                shutil.rmtree(work, ignore_errors=True)
            for path in made:  # only what this run generated
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.2f} at the end\n")
    print(table.markdown())
    if args.out:
        Path(args.out).write_text(table.markdown() + "\n")
        Path(str(args.out) + ".json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
