#!/usr/bin/env python
"""Forward+backward throughput of every encoder at its paper input size.

Prints one markdown table per device: samples/s for a full batch, the same batch given as a ragged
padded batch with ``lengths`` (masked path), the masked/unmasked ratio, and each encoder's speed
relative to the x-vector measured in the same process. A second table times the shared masked
pooling layers against a per-utterance Python loop (the reference they replace).

On CPU the batch is small so the whole run takes a few minutes; on CUDA (when available) the
run uses AMP (fp16 autocast) and a larger batch.

    PYTHONPATH=. python bench/encoders.py                 # CPU, then CUDA if available
    PYTHONPATH=. python bench/encoders.py --devices cpu --cpu-batch 2 --iters 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext

import torch

from pysv.models import build, count_parameters
from pysv.models import pooling as P

# name, hparams, input size (frames of features, or samples), paper input
ENCODERS = [
    ("xvector", {}, 300, "300 frames x 30 MFCC"),
    ("thin_resnet34", {}, 200, "2 s = 200 frames x 40 mel"),
    ("saep", {}, 300, "300 frames x 90 MFCC+D+DD"),
    ("mla_resnet34", {}, 300, "300 frames x 64 mel"),
    ("rawnet2", {}, 59049, "59049 samples (3.69 s)"),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _make_input(model, batch, length, device, gen):
    if model.input_kind == "waveform":
        return (torch.randn(batch, length, generator=gen) * 0.1).to(device)
    return torch.randn(batch, length, model.feat_dim, generator=gen).to(device)


def time_train_step(model, x, lengths, device, amp, warmup, iters):
    """Seconds per forward+backward step: the fastest of ``iters`` steps after ``warmup``."""
    model.train()
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
    w = None

    def step():
        nonlocal w
        model.zero_grad(set_to_none=True)
        with ctx:
            y = model(x, lengths=lengths)
        if w is None:
            w = torch.randn(y.shape, device=device)
        (y.float() * w).sum().backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)  # best of N: robust to other load on a shared machine


def bench_encoders(device, batch, warmup, iters, amp, names):
    gen = torch.Generator().manual_seed(0)
    rows, ref = [], None
    for name, kw, length, desc in ENCODERS:
        if names and name not in names:
            continue
        model = build(name, **kw).to(device)
        x = _make_input(model, batch, length, device, gen)
        full = time_train_step(model, x, None, device, amp, warmup, iters)
        # ragged batch: rows from 60 % to 100 % of the length, padded, with masks
        lens = torch.linspace(0.6 * length, length, batch).long().clamp(max=length)
        lens[-1] = length
        masked = time_train_step(model, x, lens.to(device), device, amp, warmup, iters)
        sps = batch / full
        if name == "xvector":
            ref = sps
        rows.append((name, desc, count_parameters(model), sps, batch / masked, full / masked))
        print(f"  {name}: {sps:.1f} samples/s", file=sys.stderr, flush=True)
        del model, x
    print(f"\n### {device.type.upper()}{' + AMP (fp16)' if amp else ''}, batch {batch}, "
          f"forward+backward, best of {iters} steps after {warmup} warm-up\n")
    print("| encoder | input | params | samples/s | samples/s, ragged batch + masks | masked / full | vs x-vector |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, desc, n, sps, msps, ratio in rows:
        rel = f"{sps / ref:.2f}" if ref else "-"
        print(f"| {name} | {desc} | {n / 1e6:.2f} M | {sps:.1f} | {msps:.1f} | {ratio:.2f} | {rel} |")


def bench_pooling(device, iters, batch):
    """Vectorized masked pooling vs a per-utterance loop over the unpadded rows (same results),
    on the tensor each encoder actually pools for a ragged batch (50-100 % of the paper length)."""
    gen = torch.Generator().manual_seed(1)
    cases = [
        ("stats, x-vector frame5", P.StatisticsPooling(1500), 286, 1500),
        ("SAP, thin_resnet34", P.SelfAttentivePooling(128), 50, 128),
        ("ASP, thin_resnet34", P.AttentiveStatisticsPooling(128), 50, 128),
        ("SAEP eq. (5) (1 head)", P.MultiHeadAttentivePooling(90, 1, scale=False), 300, 90),
        ("SAP (hidden), MLA conv1", P.SelfAttentivePooling(32, value="hidden"), 300, 32),
        ("multi-head SAP (8), rawnet2", P.MultiHeadAttentivePooling(256, 8), 26, 256),
    ]
    print(f"\n### Masked pooling on {device.type.upper()}: batch {batch}, forward+backward, "
          f"ms per batch (best of {iters})\n")
    print("| pooling | frames x dims | vectorized + masks | per-utterance loop | loop / vectorized | max abs diff |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, layer, T, D in cases:
        layer = layer.to(device)
        x = torch.randn(batch, T, D, generator=gen).to(device).requires_grad_(True)
        lens = torch.randint(T // 2, T + 1, (batch,), generator=gen)
        lens[0] = T
        lens_dev = lens.to(device)
        lens_list = lens.tolist()

        def vec():
            return layer(x, lens_dev)

        def loop():
            return torch.cat([layer(x[i:i + 1, :L]) for i, L in enumerate(lens_list)])

        res = {}
        for fn_name, fn in (("vec", vec), ("loop", loop)):
            best = float("inf")
            for _ in range(iters + 1):  # first call is a warm-up
                _sync(device)
                t = time.perf_counter()
                out = fn()
                out.sum().backward()
                _sync(device)
                best = min(best, time.perf_counter() - t)
            res[fn_name] = (best * 1e3, out.detach())
        diff = (res["vec"][1] - res["loop"][1]).abs().max().item()
        print(f"| {name} | {T} x {D} | {res['vec'][0]:.2f} | {res['loop'][0]:.2f} | "
              f"{res['loop'][0] / res['vec'][0]:.1f} | {diff:.1e} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="cpu,cuda",
                    help="comma list of devices to run on; 'cuda' is skipped when not available "
                         "(default: cpu,cuda)")
    ap.add_argument("--cpu-batch", type=int, default=4, help="batch size on CPU (default 4)")
    ap.add_argument("--gpu-batch", type=int, default=64, help="batch size on CUDA (default 64)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps (default 1)")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per measurement (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    ap.add_argument("--models", default="", help="comma list of encoders to run (default: all)")
    ap.add_argument("--no-pooling", action="store_true", help="skip the pooling micro-benchmark")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads of {os.cpu_count()} "
          f"cores, 1-min load average at start {load:.1f}, cuda available: {torch.cuda.is_available()}")
    for dev in [d.strip() for d in args.devices.split(",") if d.strip()]:
        if dev == "cuda" and not torch.cuda.is_available():
            print("\n(CUDA not available: GPU rows skipped)")
            continue
        device = torch.device(dev)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            print(f"\nGPU: {torch.cuda.get_device_name(device)}")
            bench_encoders(device, args.gpu_batch, max(args.warmup, 2), max(args.iters, 10), True, names)
        else:
            bench_encoders(device, args.cpu_batch, args.warmup, args.iters, False, names)
        if not args.no_pooling:
            bench_pooling(device, max(args.iters, 5), 64)


if __name__ == "__main__":
    main()
