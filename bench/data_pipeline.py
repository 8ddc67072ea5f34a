"""The training front end: per-item features in loader workers against batched features on a device.

    python bench/data_pipeline.py [--device auto|cpu|cuda] [--batch 128] [--crop-seconds 2] [--rounds 5]
                                  [--features fbank40,fbank64,mfcc30]

For each feature config it alternates, round by round, the worker path (``FeatureExtractor`` called
on one crop at a time, as ``data.front_end: worker`` does in each DataLoader worker; measured here
in one process = one worker) and the device path (``FeatureExtractor.batch`` on a batch of crops on
``--device``, as ``data.front_end: device`` does in the trainer), both with the config's dither, and
prints crops/s (median over rounds) and the ratio. The batched path's crops/s on a GPU is the figure
to compare with the 2,000 two-second crops/s a GPU training step consumes.

A second table adds waveform augmentation with the Kaldi/wespeaker mix (a quarter each of noise at
0-15 dB, music at 5-15 dB, babble of 3-7 talkers at 13-20 dB, reverberation with a measured RIR from
``--rir-dir``, default ``../shared/data/rir``, or a synthetic 0.5 s decay): per item
``WaveformAugmentor.apply`` then features (the worker path) against ``WaveformAugmentor.apply_batch``
then ``FeatureExtractor.batch`` (the device path). The plans (random draws and noise segments) are made
beforehand for both, so file reading, which stays in the workers either way, is not timed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--crop-seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--features", default="fbank40,fbank64,mfcc30")
    p.add_argument("--rir-dir", default=str(REPO.parent / "shared" / "data" / "rir"))
    args = p.parse_args()
    from pysv import features

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    n = int(args.crop_seconds * 16000)
    rng = np.random.default_rng(0)
    crops = (0.1 * rng.standard_normal((args.batch, n))).astype(np.float32)
    on_device = torch.from_numpy(crops).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch} crops of "
          f"{args.crop_seconds:g} s, {args.rounds} alternating rounds")
    print("| features | worker path crops/s (1 worker) | device path crops/s (batched) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.features.split(","):
        fe = features.build(name)
        gen = torch.Generator().manual_seed(0)
        fe(crops[0], 16000)
        fe.batch(on_device, generator=gen)
        sync()
        per_item, batched = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for row in crops[: max(8, args.batch // 4)]:
                fe(row, 16000)
            per_item.append(max(8, args.batch // 4) / (time.perf_counter() - t0))
            sync()
            t0 = time.perf_counter()
            fe.batch(on_device, generator=gen)
            sync()
            batched.append(args.batch / (time.perf_counter() - t0))
        a, b = float(np.median(per_item)), float(np.median(batched))
        print(f"| {name} | {a:.0f} | {b:.0f} | {b / a:.2f}x |", flush=True)

    from pysv.data.waveform_augment import WaveformAugmentor
    plans = make_plans(args.batch, n, rng, Path(args.rir_dir))
    print()
    print("| augmentation + features | worker path crops/s (1 worker) | device path crops/s (batched) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.features.split(",")[:1]:
        fe = features.build(name)
        gen = torch.Generator().manual_seed(0)
        k = max(8, args.batch // 4)
        per_item, batched = [], []
        for _ in range(args.rounds + 1):
            t0 = time.perf_counter()
            for row, plan in zip(crops[:k], plans[:k]):
                fe(WaveformAugmentor.apply(row, plan), 16000)
            per_item.append(k / (time.perf_counter() - t0))
            sync()
            t0 = time.perf_counter()
            fe.batch(WaveformAugmentor.apply_batch(on_device, plans), generator=gen)
            sync()
            batched.append(args.batch / (time.perf_counter() - t0))
        a, b = float(np.median(per_item[1:])), float(np.median(batched[1:]))
        kinds = ", ".join(f"{kind} {sum(p.kind == kind for p in plans)}"
                          for kind in ("noise", "music", "babble", "reverb"))
        print(f"| {name} ({kinds}) | {a:.0f} | {b:.0f} | {b / a:.2f}x |", flush=True)


def make_plans(batch: int, n: int, rng: np.random.Generator, rir_dir: Path):
    """Augmentation plans of the Kaldi mix for ``batch`` crops of ``n`` samples (synthetic noise)."""
    import soundfile as sf
    from pysv.data.waveform_augment import AugmentPlan
    rirs = sorted(rir_dir.glob("*.flac")) + sorted(rir_dir.glob("*.wav")) if rir_dir.is_dir() else []
    plans = []
    for i in range(batch):
        kind = ("noise", "music", "babble", "reverb")[i % 4]
        if kind == "reverb":
            if rirs:
                h = sf.read(str(rirs[i % len(rirs)]), dtype="float32", always_2d=True)[0][:, 0]
            else:
                h = (rng.standard_normal(8000) * np.exp(-np.arange(8000) / 1200.0)).astype(np.float32)
            plans.append(AugmentPlan("reverb", None, None, h, {"type": kind}))
            continue
        k = int(rng.integers(3, 8)) if kind == "babble" else 1
        lo, hi = {"noise": (0, 15), "music": (5, 15), "babble": (13, 20)}[kind]
        plans.append(AugmentPlan(kind, (0.1 * rng.standard_normal((k, n))).astype(np.float32),
                                 rng.uniform(lo, hi, k), None, {"type": kind}))
    return plans


if __name__ == "__main__":
    main()
